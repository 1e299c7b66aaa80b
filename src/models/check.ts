/** `models verify` and the hub import this entry point for the ONNX I/O check of a folder. */
export { checkModelFolder } from './load.ts';
