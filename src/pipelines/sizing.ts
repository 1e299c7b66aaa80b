/**
 * The one sizing rule of every path (WebSocket, HTTP, `depthcast generate`, batch manifests,
 * Blender's batch script): the requested size is the OUTPUT size. The model generates at its
 * native pixel count with the output's aspect (multiples of the VAE factor), and the result is
 * resampled to the output size (Lanczos-3; see src/image/lanczos.ts). An output that fits the native pixel count is
 * generated at its own size (rounded down to the VAE factor). `sizing: "exact"` generates at
 * exactly the requested size instead, within the service's generation-pixel limit.
 */
import { DepthcastError } from '../errors.ts';
import { checkLimit } from '../protocol/limits.ts';

export type SizingMode = 'native' | 'exact';

export interface Size {
  width: number;
  height: number;
}

export interface SizePlan {
  /** What the caller gets: the requested size (or the depth frame's). */
  output: Size;
  /** What the model computes; equal to `output` when no resampling happens. */
  generation: Size;
  /** Whether the generated image is resampled to the output size. */
  resampled: boolean;
}

/** How a generated image reaches its output size, as results and PNG parameters name it. */
export const UPSCALER = 'lanczos3';

/** Smallest side of an output or a generation, in pixels: one latent pixel of an SD VAE. */
export const MIN_SIDE = 8;

/** Sides generated with sizing "exact" must be multiples of this (the SD VAE factor). */
export const EXACT_STEP = 8;

export interface SizeLimits {
  /** Output pixels per image (the requested size). */
  maxOutputPixels: number;
  /** Pixels generated with sizing "exact" (native sizing stays at the model's own size). */
  maxGenerationPixels: number;
}

/**
 * Checks a request's sizes against the limits before any work: the output size, and for
 * sizing "exact" the multiples and the generation limit. Returns the output size.
 */
export function checkRequestedSize(params: { width?: number; height?: number; sizing?: SizingMode }, depth: Size, limits: SizeLimits): Size {
  const out = requestedOutput(params, depth);
  checkLimit(`output size ${out.width}×${out.height}`, out.width * out.height, limits.maxOutputPixels, 'pixels');
  if (params.sizing === 'exact') {
    for (const key of ['width', 'height'] as const) {
      if (out[key] % EXACT_STEP !== 0) throw new DepthcastError('BAD_REQUEST', `sizing "exact" needs params.${key} in a multiple of ${EXACT_STEP}, got ${out[key]}; leave sizing at "native" for any output size`);
    }
    checkLimit(`sizing "exact" at ${out.width}×${out.height}`, out.width * out.height, limits.maxGenerationPixels, 'generated pixels');
  }
  return out;
}

/**
 * The output size a request asks for: params.width/height, else the depth frame's size. Either
 * side alone keeps the depth's aspect for the other. Throws BAD_REQUEST below MIN_SIDE.
 */
export function requestedOutput(params: { width?: number; height?: number }, depth: Size): Size {
  let { width, height } = params;
  if (width === undefined && height === undefined) ({ width, height } = depth);
  else if (width === undefined) width = Math.max(1, Math.round((height! * depth.width) / depth.height));
  else if (height === undefined) height = Math.max(1, Math.round((width * depth.height) / depth.width));
  if (width! < MIN_SIDE || height! < MIN_SIDE) {
    throw new DepthcastError('BAD_REQUEST', `output size ${width}×${height} is too small; it must be at least ${MIN_SIDE}×${MIN_SIDE}`);
  }
  return { width: width!, height: height! };
}

/**
 * A model's native generation size: unet/config.json `sample_size` × the VAE scale factor
 * (512² for SD 1.5, 768² for SD 2 depth), as diffusers' pipelines default to.
 */
export function nativeSide(sampleSize: number, pixelsPerLatent: number): number {
  return sampleSize * pixelsPerLatent;
}

/**
 * Plans a job's sizes (after checkRequestedSize). `nativePixels` is the model's native side
 * squared; `step` is the VAE scale factor (generation sides are multiples of it). Native plans
 * never exceed the model's native pixel count.
 */
export function planSize(output: Size, mode: SizingMode, opts: { nativePixels: number; step: number }): SizePlan {
  const { step } = opts;
  if (mode === 'exact') {
    if (output.width % step || output.height % step) {
      throw new DepthcastError('BAD_REQUEST', `sizing "exact" needs width and height in multiples of ${step} for this model, got ${output.width}×${output.height}; leave sizing at "native" for any output size`);
    }
    return { output, generation: { ...output }, resampled: false };
  }
  const pixels = output.width * output.height;
  // Within the native budget the output's own size (down to the VAE grid); above it, the native
  // pixel count at the output's aspect, rounded down so the budget is never exceeded.
  const scale = pixels <= opts.nativePixels ? 1 : Math.sqrt(opts.nativePixels / pixels);
  const side = (v: number) => Math.max(step, Math.floor((v * scale) / step) * step);
  const generation = { width: side(output.width), height: side(output.height) };
  const resampled = generation.width !== output.width || generation.height !== output.height;
  return { output, generation, resampled };
}
