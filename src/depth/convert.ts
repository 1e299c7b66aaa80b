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

export interface DepthStats {
  min: number;
  max: number;
  mean: number;
  /** Share of pixels that are background (no geometry). */
  background: number;
}

/** Validates a frame and returns nearness in [0,1] (near = 1, background = 0) plus statistics of the foreground. */
export function toNearness(frame: DepthFrame, range: DepthRange): { nearness: Float32Array; stats: DepthStats } {
  const { data, width, height, kind, near, far } = frame;
  if (!(width > 0 && height > 0) || data.length !== width * height) {
    throw new DepthcastError('BAD_DEPTH', `depth has ${data.length} values, expected width×height = ${width}×${height} = ${width * height}`);
  }
  if (!(near > 0) || !(far > near)) throw new DepthcastError('BAD_DEPTH', `depth near/far must satisfy 0 < near < far (got ${near}, ${far})`);
  const n = data.length;
  // Background: zdepth at or beyond far (inf included); disparity 0; normalized <= 0; any +inf.
  // Written as one threshold test per kind so both passes stay tight loops over the frame.
  const zdepth = kind === 'zdepth';
  const bgAtOrBelow = kind === 'normalized' ? 0 : -1;
  const isBackground = (v: number) => (zdepth ? v >= far : v === Infinity || v <= bgAtOrBelow || (kind === 'disparity' && v === 0));
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  let fg = 0;
  let nan = 0;
  let negative = 0;
  for (let i = 0; i < n; i++) {
    const v = data[i]!;
    if (v !== v) { nan++; continue; }
    if (v < 0) { negative++; continue; }
    if (isBackground(v)) continue;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
    fg++;
  }
  if (nan) throw new DepthcastError('BAD_DEPTH', `depth has ${nan} NaN values; write background as +inf or a value >= far`);
  if (negative) throw new DepthcastError('BAD_DEPTH', `depth has ${negative} negative values; ${kind} depth must be >= 0`);
  if (fg === 0) throw new DepthcastError('BAD_DEPTH', `depth has no foreground: every pixel is background (>= far = ${far} or infinite); move the camera or raise far`);

  const nearness = new Float32Array(n);
  const bgCount = n - fg;
  if (zdepth) {
    // auto stretches the foreground to the frame, but where there is background (sky) the far
    // end stays at `far`, so the farthest object keeps a value above the background's 0.
    const zNear = range === 'auto' ? Math.max(min, near) : near;
    const zFar = range === 'auto' && bgCount === 0 ? Math.min(Math.max(max, zNear * (1 + 1e-6)), far) : far;
    // Inverse depth: what MiDaS-style depth models (and thus depth2img and the depth ControlNet) were trained on.
    const invFar = 1 / zFar;
    const scale = 1 / (1 / zNear - invFar);
    for (let i = 0; i < n; i++) {
      const v = data[i]!;
      if (v >= far) continue;
      const z = v < zNear ? zNear : v > zFar ? zFar : v;
      nearness[i] = (1 / z - invFar) * scale;
    }
  } else {
    const lo = range === 'auto' || kind === 'disparity' ? min : 0;
    const hi = range === 'auto' || kind === 'disparity' ? max : 1;
    const inv = 1 / (hi > lo ? hi - lo : 1);
    for (let i = 0; i < n; i++) {
      const v = data[i]!;
      if (isBackground(v)) continue;
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

/** ControlNet conditioning: RGB in [0,1], near = white, at the output size. */
export function controlImageFromNearness(nearness: Float32Array, width: number, height: number, outW: number, outH: number): PlanarImage {
  const size = outW * outH;
  const data = new Float32Array(3 * size);
  if (width === outW && height === outH) {
    // Nearness is already in [0,1]: three plane copies, no resampling or clamping.
    data.set(nearness, 0);
  } else {
    const plane = resizeBicubic(nearness, 1, height, width, outH, outW);
    for (let i = 0; i < size; i++) {
      const v = plane[i]!;
      data[i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
  data.copyWithin(size, 0, size);
  data.copyWithin(2 * size, 0, size);
  return { data, width: outW, height: outH, channels: 3 };
}

/** Decodes raw little-endian depth pixels of a wire dtype to float32 values (u16 and f16 documented in docs/depth.md). */
export function decodeDepthPixels(bytes: Uint8Array, dtype: 'f32' | 'f16' | 'u16', kind: DepthKind, near: number, far: number, count: number): Float32Array {
  const bytesPer = dtype === 'f32' ? 4 : 2;
  if (bytes.byteLength !== count * bytesPer) {
    throw new DepthcastError('BAD_FRAME', `depth payload has ${bytes.byteLength} bytes, expected ${count} pixels × ${bytesPer} bytes (${dtype}) = ${count * bytesPer}`);
  }
  const aligned = bytes.byteOffset % bytesPer === 0 ? bytes : bytes.slice();
  if (dtype === 'f32') return new Float32Array(aligned.buffer, aligned.byteOffset, count).slice();
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
