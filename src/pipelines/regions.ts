/**
 * Regional prompts (issue 8): frame-size object masks → latent-size soft weights.
 * A box blur with integer tap counts keeps the inside of a region at exactly 1 and the far
 * outside at exactly 0, so away from the feathered edge a region's prediction is its own.
 */
import { DepthcastError } from '../errors.ts';
import type { RegionPrompt } from './types.ts';

export const MAX_REGIONS = 8;

/** Area-average a width×height mask down by `factor` (exact for factor-aligned sizes). */
function downsample(mask: Float32Array, width: number, height: number, factor: number): Float32Array {
  const w = width / factor;
  const h = height / factor;
  const out = new Float32Array(w * h);
  const area = factor * factor;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let sum = 0;
      for (let dy = 0; dy < factor; dy++) {
        const row = (y * factor + dy) * width + x * factor;
        for (let dx = 0; dx < factor; dx++) sum += mask[row + dx]!;
      }
      out[y * w + x] = sum / area;
    }
  }
  return out;
}

/** One box-blur pass along rows (horizontal) or columns, averaging only the taps inside the image. */
function blurPass(src: Float32Array, w: number, h: number, radius: number, horizontal: boolean): Float32Array {
  const out = new Float32Array(src.length);
  const length = horizontal ? w : h;
  const stride = horizontal ? 1 : w;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const at = horizontal ? x : y;
      let sum = 0;
      let count = 0;
      for (let d = -radius; d <= radius; d++) {
        if (at + d >= 0 && at + d < length) { sum += src[y * w + x + d * stride]!; count++; }
      }
      out[y * w + x] = sum / count;
    }
  }
  return out;
}

function boxBlur(src: Float32Array, w: number, h: number, radius: number): Float32Array {
  if (radius <= 0) return src;
  return blurPass(blurPass(src, w, h, radius, true), w, h, radius, false);
}

export interface MergedRegion {
  prompt: string;
  weights: Float32Array;
}

/**
 * Validates regions, merges those sharing a prompt, drops those whose prompt is the global
 * prompt (they change nothing), and returns latent-size weights.
 */
export function prepareRegions(
  regions: RegionPrompt[],
  globalPrompt: string,
  width: number,
  height: number,
  factor: number,
  feather: number,
): MergedRegion[] {
  const byPrompt = new Map<string, Float32Array>();
  regions.forEach((region, i) => {
    if (region.mask.length !== width * height) {
      throw new DepthcastError('BAD_LAYOUT', `region ${i} ("${region.prompt.slice(0, 40)}") mask has ${region.mask.length} values, expected the output size ${width}×${height} = ${width * height}`);
    }
    if (region.prompt === globalPrompt) return;
    const weighted = new Float32Array(region.mask.length);
    for (let p = 0; p < weighted.length; p++) weighted[p] = Math.min(Math.max(region.mask[p]! * region.weight, 0), 1);
    const prev = byPrompt.get(region.prompt);
    if (prev) for (let p = 0; p < prev.length; p++) prev[p] = Math.max(prev[p]!, weighted[p]!);
    else byPrompt.set(region.prompt, weighted);
  });
  if (byPrompt.size > MAX_REGIONS) {
    throw new DepthcastError('BAD_LAYOUT', `${byPrompt.size} distinct region prompts; at most ${MAX_REGIONS} are allowed (each adds a UNet evaluation per step)`);
  }
  const w = width / factor;
  const h = height / factor;
  return [...byPrompt].map(([prompt, mask]) => ({ prompt, weights: boxBlur(downsample(mask, width, height, factor), w, h, Math.round(feather)) }));
}
