/** Instantiates a WebAssembly module from its committed base64 bytes (tools/build-wasm.mjs); null where this runtime cannot run it. */
export function instantiateWasm<Exports>(base64: string): Exports | null {
  const bytes = Buffer.from(base64, 'base64');
  if (!WebAssembly.validate(bytes)) return null;
  return new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as Exports;
}
