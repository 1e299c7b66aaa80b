/**
 * IEEE half <-> single conversion for fp16 model boundaries (Node 20 has no Float16Array).
 * Round-to-nearest-even, with subnormals, inf and NaN, like numpy's astype(float16).
 */
import { lazyWasm } from '../util/wasm.ts';
import { FLOAT16_WASM_BASE64 } from './float16-wasm.ts';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let h = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  return sign | h;
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Bulk float32 → half over the raw bits: the same rounding as toHalf. Results that are normal
 * halves (|x| in [2^-14, 2^16)) take a branchless round-to-nearest-even: adding 0xfff plus the
 * lowest kept bit carries into the kept bits exactly when the dropped ones round up, and a
 * carry out of the mantissa correctly bumps the exponent (up to infinity). The version with a
 * rounding branch mispredicted on about half the values: 1.5M values (an fp16 ControlNet's CFG
 * control image at 512×512) took ~11 ms, now ~4.
 */
export function float32ToFloat16Js(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i]!;
    const m = x & 0x7fffffff;
    if (m >= 0x38800000 && m < 0x47800000) {
      // Rebias the exponent from 127 to 15: (127 - 15) << 10 = 0x1c000.
      out[i] = ((x >>> 16) & 0x8000) | (((m + 0x0fff + ((m >>> 13) & 1)) >>> 13) - 0x1c000);
    } else {
      out[i] = toHalf(src[i]!);
    }
  }
  return out;
}

/** The float32 value of each of the 65536 halves. */
export const HALF_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = fromHalf(i);
  return t;
})();

/** Bulk half → float32 through HALF_TABLE: the reference for the SIMD form. */
export function float16ToFloat32Js(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) out[i] = HALF_TABLE[src[i]!]!;
  return out;
}

interface Float16Module {
  memory: WebAssembly.Memory;
  toFloat(src: number, dst: number, n: number): void;
  toHalf(src: number, dst: number, n: number): void;
}

const float16Module = lazyWasm<Float16Module>(FLOAT16_WASM_BASE64);

/** Values per call into the module: their floats and halves fill its 1 MiB. */
const CHUNK = 131072;
const SECOND = 4 * CHUNK;

type Values = Float32Array | Uint16Array;

/**
 * Converts `src` into `out` through the module's memory, a chunk at a time: each chunk is
 * copied into `input` (at 0), `convert(n)` writes n values into `output` (at SECOND), and those
 * are copied out.
 */
function throughModule<T extends Values>(src: Values, out: T, input: Values, output: Values, convert: (n: number) => void): T {
  for (let at = 0; at < src.length; at += CHUNK) {
    const n = Math.min(CHUNK, src.length - at);
    input.set(src.subarray(at, at + n));
    convert(n);
    out.set(output.subarray(0, n), at);
  }
  return out;
}

/**
 * float32 → half, the bits of float32ToFloat16Js, in WebAssembly SIMD (float16.wat) where it
 * is available: at fp16 model boundaries (the latents every step, the control image every
 * frame) the JavaScript took ~2.7 ns a value on this project's VM.
 */
export function float32ToFloat16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const module = float16Module();
  if (!module) return float32ToFloat16Js(src, out);
  const { buffer } = module.memory;
  return throughModule(src, out, new Float32Array(buffer, 0, CHUNK), new Uint16Array(buffer, SECOND, CHUNK), (n) => module.toHalf(0, SECOND, n));
}

/** half → float32, the values of HALF_TABLE, in WebAssembly SIMD where it is available. */
export function float16ToFloat32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  const module = float16Module();
  if (!module) return float16ToFloat32Js(src, out);
  const { buffer } = module.memory;
  return throughModule(src, out, new Uint16Array(buffer, 0, CHUNK), new Float32Array(buffer, SECOND, CHUNK), (n) => module.toFloat(0, SECOND, n));
}
