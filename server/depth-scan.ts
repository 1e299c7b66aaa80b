/**
 * Cheap checks on raw depth payloads, straight from the received bytes (a DataView, no copy):
 * NaN / negative / all-background depth is refused before queueing (BAD_DEPTH), and the
 * similarity skip measures how far apart two frames are in nearness. The full conversion
 * (src/depth/convert.ts) still runs in the engine; these mirror its rules.
 */
import { DepthcastError } from '../src/errors.ts';
import { fromHalf } from '../src/runtime/float16.ts';

export interface DepthLayout {
  width: number;
  height: number;
  dtype: 'f32' | 'f16' | 'u16';
  kind: 'zdepth' | 'disparity' | 'normalized';
  near: number;
  far: number;
}

export const BYTES_PER_SAMPLE = { f32: 4, f16: 2, u16: 2 } as const;

/** A depth payload that passed the scan: the bytes (a view) plus what the similarity test needs. */
export interface ScannedDepth {
  part: DepthLayout;
  bytes: Uint8Array;
  /** Largest finite foreground value (scales disparity into [0,1]). */
  maxFinite: number;
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Sample i as the float the engine will see (u16 per docs/depth.md: 65535 = background for zdepth). */
function sample(view: DataView, part: DepthLayout, i: number): number {
  if (part.dtype === 'f32') return view.getFloat32(i * 4, true);
  const h = view.getUint16(i * 2, true);
  if (part.dtype === 'f16') return fromHalf(h);
  if (part.kind !== 'zdepth') return h / 65535;
  return h === 65535 ? Infinity : part.near + (h / 65535) * (part.far - part.near);
}

function isBackground(v: number, part: DepthLayout): boolean {
  if (!Number.isFinite(v)) return true;
  return part.kind === 'zdepth' ? v >= part.far : part.kind === 'disparity' ? v === 0 : v <= 0;
}

/** Throws BAD_DEPTH for NaN, negative or all-background depth; byte counts are checked before this. */
export function scanDepth(bytes: Uint8Array, part: DepthLayout): ScannedDepth {
  const view = viewOf(bytes);
  const n = part.width * part.height;
  let nan = 0;
  let negative = 0;
  let foreground = 0;
  let maxFinite = 0;
  for (let i = 0; i < n; i++) {
    const v = sample(view, part, i);
    if (v !== v) nan++;
    else if (v < 0) negative++;
    else if (!isBackground(v, part)) {
      foreground++;
      if (v > maxFinite) maxFinite = v;
    }
  }
  if (nan) throw new DepthcastError('BAD_DEPTH', `depth has ${nan} NaN values; write background as +inf or a value >= far`);
  if (negative) throw new DepthcastError('BAD_DEPTH', `depth has ${negative} negative values; ${part.kind} depth must be >= 0`);
  if (!foreground) {
    throw new DepthcastError('BAD_DEPTH', `depth has no foreground: every pixel is background (${part.kind === 'zdepth' ? `>= far = ${part.far} or infinite` : 'zero or infinite'})`);
  }
  return { part, bytes, maxFinite };
}

/** Nearness in [0,1] (near = 1, background = 0) with the frame's fixed near/far mapping. */
function nearness(v: number, part: DepthLayout, scale: number): number {
  if (isBackground(v, part)) return 0;
  if (part.kind === 'zdepth') {
    const z = Math.min(Math.max(v, part.near), part.far);
    return (1 / z - 1 / part.far) / (1 / part.near - 1 / part.far);
  }
  return Math.min(v / scale, 1);
}

/**
 * Mean absolute difference of nearness between two frames of the same layout. Stops early once
 * the mean cannot fall below `stopAbove`, returning a value >= it.
 */
export function meanNearnessDifference(a: ScannedDepth, b: ScannedDepth, stopAbove = Infinity): number {
  const n = a.part.width * a.part.height;
  const va = viewOf(a.bytes);
  const vb = viewOf(b.bytes);
  const scale = a.part.kind === 'disparity' ? Math.max(a.maxFinite, b.maxFinite) || 1 : 1;
  const budget = stopAbove * n;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    sum += Math.abs(nearness(sample(va, a.part, i), a.part, scale) - nearness(sample(vb, b.part, i), b.part, scale));
    if (sum > budget) return sum / n;
  }
  return sum / n;
}
