/**
 * The depth contract. Clients (Blender, three.js, files) send what they render: linear camera
 * Z in scene units with the camera's near/far (background = +inf or any z >= far). The service
 * turns it into "nearness" n in [0,1] (near = 1, background = 0), then into each model's
 * convention: a disparity-like map for depth2img, a near-is-white RGB image for the ControlNet.
 * 'auto' (the default) stretches each frame to its own foreground range, as the reference
 * pipelines' per-map min/max does; 'fixed' depends only on near/far, so brightness stays steady
 * across the frames of a moving camera: set near/far to the range the subject occupies, since
 * inverse depth from a 0.1 clip plane leaves everything past a few metres near black.
 */
import { DepthcastError } from '../errors.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';
import type { PlanarImage } from '../pipelines/types.ts';
import { lazyWasm } from '../util/wasm.ts';
import { NEARNESS_WASM_BASE64 } from './nearness-wasm.ts';
import { resizeBicubic } from './resize.ts';

export type DepthKind = 'zdepth' | 'disparity' | 'normalized';
export type DepthRange = 'fixed' | 'auto';

export interface DepthFrame {
  /** Row-major, row 0 = top of the image. */
  data: Float32Array;
  width: number;
  height: number;
  kind: DepthKind;
  near: number;
  far: number;
}

/**
 * Foreground totals of a frame's decoded values (background excluded, as toNearness defines it).
 * The service's intake scan computes them on its way through the frame; handing them to
 * toNearness spares the engine a second full-resolution pass.
 */
export interface ForegroundStats {
  min: number;
  max: number;
  sum: number;
  count: number;
}

export interface DepthStats {
  min: number;
  max: number;
  mean: number;
  /** Share of pixels that are background (no geometry). */
  background: number;
}

/**
 * acc = [min, max, sum, foreground, invalid]; zdepth foreground is 0 <= v < far, invalid is NaN
 * or negative. Kept apart from otherStats on purpose: every live frame takes this path, and one
 * loop testing the kind per pixel measured ~15% slower.
 */
function zdepthStats(data: Float32Array, far: number, acc: Float64Array): void {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let fg = 0;
  let invalid = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v >= 0 && v < far) {
      if (v < min) min = v;
      if (v > max) max = v;
      sum += v;
      fg++;
    } else if (!(v >= 0)) {
      invalid++;
    }
  }
  acc.set([min, max, sum, fg, invalid]);
}

/** Disparity and normalized depth: background is +inf, or <= bgAtOrBelow, or 0 for disparity. */
function isOtherBackground(v: number, bgAtOrBelow: number, disparity: boolean): boolean {
  return v === Infinity || v <= bgAtOrBelow || (disparity && v === 0);
}

function otherStats(data: Float32Array, bgAtOrBelow: number, disparity: boolean, acc: Float64Array): void {
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let fg = 0;
  let invalid = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!(v >= 0)) {
      invalid++;
      continue;
    }
    if (isOtherBackground(v, bgAtOrBelow, disparity)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
    fg++;
  }
  acc.set([min, max, sum, fg, invalid]);
}

interface NearnessModule {
  memory: WebAssembly.Memory;
  zdepthToNearness(src: number, dst: number, n: number, far: number, zNear: number, zFar: number, invFar: number, scale: number): void;
}

const loadNearness = lazyWasm<NearnessModule>(NEARNESS_WASM_BASE64);

/**
 * zdepthToNearness in WebAssembly (nearness.wat), the same float32 results, ~2× the speed of
 * the JavaScript loop; false when unavailable or when the frame does not fit its fixed memory.
 */
export function zdepthToNearnessInWasm(data: Float32Array, out: Float32Array, far: number, zNear: number, zFar: number, invFar: number, scale: number): boolean {
  const module = loadNearness();
  if (!module || module.memory.buffer.byteLength < 2 * data.byteLength) return false;
  const { buffer } = module.memory;
  new Float32Array(buffer, 0, data.length).set(data);
  module.zdepthToNearness(0, data.byteLength, data.length, far, zNear, zFar, invFar, scale);
  out.set(new Float32Array(buffer, data.byteLength, data.length));
  return true;
}

/** Inverse depth between zNear and zFar, 0 for background (z >= far); the reference for nearness.wat. */
export function zdepthToNearness(data: Float32Array, out: Float32Array, far: number, zNear: number, zFar: number, invFar: number, scale: number): void {
  // Written without an early `continue`: this form measured ~1.5× faster in V8.
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    const z = Math.min(Math.max(v, zNear), zFar);
    out[i] = v >= far ? 0 : (1 / z - invFar) * scale;
  }
}

/**
 * Validates a frame and returns nearness in [0,1] (near = 1, background = 0) plus statistics of
 * the foreground; written into `out` (width×height values, every one overwritten) when given.
 * With `known` (from a scan of these same values that also refused NaN and negatives) the
 * statistics pass is skipped.
 */
export function toNearness(frame: DepthFrame, range: DepthRange, out?: Float32Array, known?: ForegroundStats): { nearness: Float32Array; stats: DepthStats } {
  const { data, width, height, kind, near, far } = frame;
  if (!(width > 0 && height > 0) || data.length !== width * height) {
    throw new DepthcastError('BAD_DEPTH', `depth has ${data.length} values, expected width×height = ${width}×${height} = ${width * height}`);
  }
  if (!(near > 0) || !(far > near)) throw new DepthcastError('BAD_DEPTH', `depth near/far must satisfy 0 < near < far (got ${near}, ${far})`);
  const n = data.length;
  // Background: zdepth at or beyond far (inf included); disparity 0; normalized <= 0; any +inf.
  // Written as one threshold test per kind so both passes stay tight loops over the frame.
  // No closures over these locals: a captured variable lives in a heap context, and loading it
  // on every pixel made these loops 3-4× slower (2-3.5 ms instead of ~0.5 at 512×512).
  const zdepth = kind === 'zdepth';
  const bgAtOrBelow = kind === 'normalized' ? 0 : -1;
  const acc = new Float64Array(5);
  if (known) acc.set([known.min, known.max, known.sum, known.count, 0]);
  else if (zdepth) zdepthStats(data, far, acc);
  else otherStats(data, bgAtOrBelow, kind === 'disparity', acc);
  const min = acc[0]!;
  const max = acc[1]!;
  const sum = acc[2]!;
  const fg = acc[3]!;
  const invalid = acc[4]!;
  let nan = 0;
  let negative = 0;
  if (invalid) for (let i = 0; i < n; i++) { const v = data[i]!; if (v !== v) nan++; else if (v < 0) negative++; }
  if (nan) throw new DepthcastError('BAD_DEPTH', `depth has ${nan} NaN values; write background as +inf or a value >= far`);
  if (negative) throw new DepthcastError('BAD_DEPTH', `depth has ${negative} negative values; ${kind} depth must be >= 0`);
  if (fg === 0) throw new DepthcastError('BAD_DEPTH', `depth has no foreground: every pixel is background (>= far = ${far} or infinite); move the camera or raise far`);

  if (out && out.length !== n) throw new RangeError(`toNearness: out has ${out.length} values, expected ${n}`);
  const nearness = out ?? new Float32Array(n);
  const bgCount = n - fg;
  if (zdepth) {
    // auto stretches the foreground to the frame, but where there is background (sky) the far
    // end stays at `far`, so the farthest object keeps a value above the background's 0.
    const zNear = range === 'auto' ? Math.max(min, near) : near;
    const zFar = range === 'auto' && bgCount === 0 ? Math.min(Math.max(max, zNear * (1 + 1e-6)), far) : far;
    // Inverse depth: what MiDaS-style depth models (and thus depth2img and the depth ControlNet) were trained on.
    const invFar = 1 / zFar;
    const scale = 1 / (1 / zNear - invFar);
    if (!zdepthToNearnessInWasm(data, nearness, far, zNear, zFar, invFar, scale)) zdepthToNearness(data, nearness, far, zNear, zFar, invFar, scale);
  } else {
    const lo = range === 'auto' || kind === 'disparity' ? min : 0;
    const hi = range === 'auto' || kind === 'disparity' ? max : 1;
    const inv = 1 / (hi > lo ? hi - lo : 1);
    const disparity = kind === 'disparity';
    for (let i = 0; i < n; i++) {
      const v = data[i]!;
      if (isOtherBackground(v, bgAtOrBelow, disparity)) {
        nearness[i] = 0;
        continue;
      }
      const t = (v - lo) * inv;
      nearness[i] = t < 0 ? 0 : t > 1 ? 1 : t;
    }
  }
  return { nearness, stats: { min, max, mean: sum / fg, background: bgCount / n } };
}

/** depth2img conditioning: a 1-channel near-is-high map (the pipeline resizes it to latent size). */
export function depthForDepth2img(nearness: Float32Array, width: number, height: number): PlanarImage {
  return { data: nearness, width, height, channels: 1 };
}

/**
 * ControlNet conditioning: near = white in [0,1], at the output size, as RGB (3 planes) or as
 * one grey plane, which the ControlNet pipeline spreads over R, G and B when it builds its batch
 * (the engine's choice: two fewer full-size copies per frame). Written into `out`
 * (channels·outW·outH values) when given; when the sizes match and `nearness` already is the
 * first plane of `out` (toNearness wrote it there), nothing is resampled or copied but the other planes.
 */
export function controlImageFromNearness(nearness: Float32Array, width: number, height: number, outW: number, outH: number, out?: Float32Array, channels: 1 | 3 = 3): PlanarImage {
  const size = outW * outH;
  if (out && out.length !== channels * size) throw new RangeError(`controlImageFromNearness: out has ${out.length} values, expected ${channels * size}`);
  const data = out ?? new Float32Array(channels * size);
  if (width === outW && height === outH) {
    // Nearness is already in [0,1]: three plane copies, no resampling or clamping.
    if (nearness.buffer !== data.buffer || nearness.byteOffset !== data.byteOffset) data.set(nearness, 0);
  } else {
    const plane = resizeBicubic(nearness, 1, height, width, outH, outW);
    for (let i = 0; i < size; i++) {
      const v = plane[i]!;
      data[i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
  if (channels === 3) {
    data.copyWithin(size, 0, size);
    data.copyWithin(2 * size, 0, size);
  }
  return { data, width: outW, height: outH, channels };
}

/** Decodes raw little-endian depth pixels of a wire dtype to float32 values (u16 and f16 documented in docs/depth.md). */
export function decodeDepthPixels(bytes: Uint8Array, dtype: 'f32' | 'f16' | 'u16', kind: DepthKind, near: number, far: number, count: number): Float32Array {
  const bytesPer = dtype === 'f32' ? 4 : 2;
  if (bytes.byteLength !== count * bytesPer) {
    throw new DepthcastError('BAD_FRAME', `depth payload has ${bytes.byteLength} bytes, expected ${count} pixels × ${bytesPer} bytes (${dtype}) = ${count * bytesPer}`);
  }
  const aligned = bytes.byteOffset % bytesPer === 0 ? bytes : bytes.slice();
  // f32 is read in place (a view of the caller's bytes); nothing downstream writes to it.
  if (dtype === 'f32') return new Float32Array(aligned.buffer, aligned.byteOffset, count);
  const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, count);
  if (dtype === 'f16') return float16ToFloat32(u16);
  // u16: 0..65535 spans near..far for zdepth (65535 = background); [0,1] otherwise.
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const v = u16[i]! / 65535;
    out[i] = kind === 'zdepth' ? (u16[i] === 65535 ? Infinity : near + v * (far - near)) : v;
  }
  return out;
}

/** Whether toNearness runs its linear-Z pass in WebAssembly here, for the tests that compare it with the JavaScript loop. */
export function nearnessInWasm(): boolean {
  return loadNearness() !== null;
}
