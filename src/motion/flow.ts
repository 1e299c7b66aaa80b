/**
 * Motion conventions shared by the protocol, the consistent mode and the batch score.
 *
 * A flow field is 2 planes of H×W pixel offsets from each pixel of the CURRENT frame to where the
 * same surface point was in the PREVIOUS frame: plane 0 is x (right), plane 1 is y (down, rows go
 * top to bottom). Pixel (x, y) has its centre at (x + 0.5, y + 0.5); it came from the previous
 * frame's continuous position (x + 0.5 + dx, y + 0.5 + dy). A backward warp samples the previous
 * frame there, so warp(previous) lines up with the current frame.
 */
import { DepthcastError } from '../errors.ts';

export interface FlowField {
  width: number;
  height: number;
  /** [2, H, W]: dx plane then dy plane, in pixels, current → previous. */
  data: Float32Array;
}

/**
 * Checks a flow field as the protocol receives it: 2·W·H values, all finite, and every target
 * within a frame's width of the frame (offsets further out than the frame itself are a sender's
 * bug, not motion). Throws BAD_FRAME naming the first offending pixel.
 */
export function checkFlow(flow: FlowField, width: number, height: number): void {
  if (flow.width !== width || flow.height !== height || flow.data.length !== 2 * width * height) {
    throw new DepthcastError('BAD_FRAME', `motion flow must be 2×${height}×${width} (the depth's size), got ${flow.data.length} values for ${flow.width}×${flow.height}`);
  }
  const plane = width * height;
  for (let i = 0; i < plane; i++) {
    const dx = flow.data[i]!;
    const dy = flow.data[plane + i]!;
    const x = i % width;
    const y = (i - x) / width;
    if (dx - dx !== 0 || dy - dy !== 0) throw new DepthcastError('BAD_FRAME', `motion flow has NaN or infinite offsets at pixel (${x}, ${y})`);
    const px = x + 0.5 + dx;
    const py = y + 0.5 + dy;
    if (px < -width || px > 2 * width || py < -height || py > 2 * height) {
      throw new DepthcastError('BAD_FRAME', `motion flow at pixel (${x}, ${y}) points to (${px.toFixed(1)}, ${py.toFixed(1)}), more than a frame beyond the ${width}×${height} frame`);
    }
  }
}

/** The four taps and weights of a bilinear sample at (px, py) (pixel centres at +0.5), clamped at the border. */
function bilinearTaps(width: number, height: number, px: number, py: number): { x0: number; y0: number; x1: number; y1: number; ax: number; ay: number } {
  const fx = Math.min(Math.max(px - 0.5, 0), width - 1);
  const fy = Math.min(Math.max(py - 0.5, 0), height - 1);
  const x0 = Math.floor(fx);
  const y0 = Math.floor(fy);
  return { x0, y0, x1: Math.min(x0 + 1, width - 1), y1: Math.min(y0 + 1, height - 1), ax: fx - x0, ay: fy - y0 };
}

/**
 * Bilinear sample of plane `c` of a [C,H,W] image at continuous position (px, py) (pixel centres
 * at +0.5), clamped at the border. Positions outside [0,W]×[0,H] are the caller's to reject.
 */
export function sampleBilinear(data: Float32Array, width: number, height: number, c: number, px: number, py: number): number {
  const { x0, y0, x1, y1, ax, ay } = bilinearTaps(width, height, px, py);
  const base = c * width * height;
  const a = data[base + y0 * width + x0]!;
  const b = data[base + y0 * width + x1]!;
  const d = data[base + y1 * width + x0]!;
  const e = data[base + y1 * width + x1]!;
  return (a * (1 - ax) + b * ax) * (1 - ay) + (d * (1 - ax) + e * ax) * ay;
}

/** Whether pixel i's source position lies inside the previous frame. */
export function inFrame(flow: FlowField, i: number): boolean {
  const { width, height, data } = flow;
  const x = i % width;
  const y = (i - x) / width;
  const px = x + 0.5 + data[i]!;
  const py = y + 0.5 + data[width * height + i]!;
  return px >= 0 && px <= width && py >= 0 && py <= height;
}

/**
 * Backward warp of a [C,H,W] image of the previous frame into the current one, bilinear. Pixels
 * whose source is outside the frame take the nearest border value (callers mask them).
 */
export function warpImage(previous: Float32Array, channels: number, flow: FlowField, out?: Float32Array): Float32Array {
  const { width, height, data } = flow;
  const plane = width * height;
  if (previous.length !== channels * plane) throw new DepthcastError('BAD_IMAGE', `image to warp has ${previous.length} values, expected ${channels}×${height}×${width}`);
  const result = out ?? new Float32Array(channels * plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const px = x + 0.5 + data[i]!;
      const py = y + 0.5 + data[plane + i]!;
      for (let c = 0; c < channels; c++) result[c * plane + i] = sampleBilinear(previous, width, height, c, px, py);
    }
  }
  return result;
}

/**
 * Valid pixels (1) of the current frame: the source is inside the previous frame and was not
 * hidden there. Hidden = the previous frame's depth around the source position disagrees with
 * the depth this surface point had in the previous frame (`expectedPrevious`; for pose
 * reprojection it is exact, for a flow field the current depth stands in for it). The four
 * bilinear taps bound the previous depth, so a tap on either side of a depth edge counts.
 * Depths are linear Z; background is +Infinity and matches only background.
 */
export function disocclusionMask(flow: FlowField, previousDepth: Float32Array, expectedPrevious: Float32Array, relativeTolerance = 0.03): Uint8Array {
  const { width, height, data } = flow;
  const plane = width * height;
  if (previousDepth.length !== plane || expectedPrevious.length !== plane) {
    throw new DepthcastError('BAD_DEPTH', `depth planes for the disocclusion mask must have ${width}×${height} values`);
  }
  const valid = new Uint8Array(plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const px = x + 0.5 + data[i]!;
      const py = y + 0.5 + data[plane + i]!;
      if (!(px >= 0 && px <= width && py >= 0 && py <= height)) continue;
      const { x0, y0, x1, y1 } = bilinearTaps(width, height, px, py);
      const expected = expectedPrevious[i]!;
      let ok = false;
      for (const j of [y0 * width + x0, y0 * width + x1, y1 * width + x0, y1 * width + x1]) {
        const d = previousDepth[j]!;
        // The nearest tap decides; a hidden point has something nearer at every tap.
        if (expected === Infinity ? d === Infinity : Math.abs(d - expected) <= relativeTolerance * expected) ok = true;
      }
      if (ok) valid[i] = 1;
    }
  }
  return valid;
}

export interface WarpError {
  /** mean |I_t − warp(I_{t−1})| over valid pixels and channels, in the images' units. */
  error: number;
  /** valid pixels / all pixels. */
  validFraction: number;
}

/** The per-pair score: mean absolute difference over valid pixels (images [C,H,W]). */
export function warpError(current: Float32Array, warpedPrevious: Float32Array, channels: number, valid: Uint8Array): WarpError {
  const plane = valid.length;
  let sum = 0;
  let n = 0;
  for (let i = 0; i < plane; i++) {
    if (!valid[i]) continue;
    n++;
    for (let c = 0; c < channels; c++) sum += Math.abs(current[c * plane + i]! - warpedPrevious[c * plane + i]!);
  }
  return { error: n ? sum / (n * channels) : 0, validFraction: n / plane };
}
