/**
 * Decoder output → interleaved RGB8 in WebAssembly SIMD (rgb8.wat): float32 arithmetic as the
 * reference does it, 16 pixels per iteration, where the JavaScript form (decoderOutputToRgb8 in
 * pipelines/steps.ts, which stays the reference and the fallback) takes ~2 ms at 512×512 for
 * its per-value Math.fround pairs and clamped stores. The planes are read from the module's
 * memory: the decoder writes them there (rgb8Staging) or they are copied in; the bytes are
 * copied out.
 *
 * The memory is never grown: growing detaches its old ArrayBuffer, and once a thread has
 * detached any ArrayBuffer, V8 guards its typed-array accesses against detachment from then on
 * (a tight loop ran ~2× slower in a micro-benchmark; the pipeline's own loops showed nothing
 * measurable). Images too large for it (over ~3.7 MP) go the JavaScript way instead.
 */
import { lazyWasm } from '../util/wasm.ts';
import { RGB8_WASM_BASE64 } from './rgb8-wasm.ts';

interface Rgb8Module {
  memory: WebAssembly.Memory;
  planarToRgb8(src: number, n: number, size: number, dst: number): void;
}

/** The module, or null where WebAssembly SIMD is missing (the caller then uses JavaScript). */
const rgb8Module = lazyWasm<Rgb8Module>(RGB8_WASM_BASE64);

/** Pixels the SIMD loop takes at a time. */
const LANES = 16;

/** Bytes of module memory a conversion of `plane` pixels uses: the float planes, the bytes, then the byte planes it interleaves. */
function bytesFor(plane: number): number {
  return 3 * plane * 4 + 2 * 3 * (plane - (plane % LANES));
}

/**
 * Where a decoder can write its planar output (3·plane floats) for planarToRgb8Simd to read in
 * place, saving the copy in; undefined where SIMD is missing or the image does not fit. Valid
 * until the next conversion.
 */
export function rgb8Staging(plane: number): Float32Array | undefined {
  const module = rgb8Module();
  if (!module || module.memory.buffer.byteLength < bytesFor(plane)) return undefined;
  return new Float32Array(module.memory.buffer, 0, 3 * plane);
}

/**
 * Writes the bytes of the first `plane - plane % 16` pixels of planar `data` (3·plane values)
 * into `rgb8` and returns how many pixels it converted: 0 when WebAssembly SIMD is unavailable.
 */
export function planarToRgb8Simd(data: Float32Array, plane: number, rgb8: Uint8Array): number {
  const module = rgb8Module();
  const n = plane - (plane % LANES);
  if (!module || n === 0) return 0;
  const floatBytes = 3 * plane * 4;
  const { memory } = module;
  if (memory.buffer.byteLength < bytesFor(plane)) return 0;
  const heap = new Uint8Array(memory.buffer);
  // The planes at 0, contiguous as the decoder gave them (already there when it wrote into
  // rgb8Staging); the bytes right after.
  if (data.buffer !== memory.buffer || data.byteOffset !== 0) heap.set(new Uint8Array(data.buffer, data.byteOffset, floatBytes), 0);
  module.planarToRgb8(0, n, plane, floatBytes);
  rgb8.set(heap.subarray(floatBytes, floatBytes + 3 * n), 0);
  return n;
}
