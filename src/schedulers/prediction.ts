/**
 * Prediction types (ε, x0, v) as linear combinations of sample and model output, and the x0
 * post-processing (clip_sample, dynamic thresholding).
 */
import { lin2 } from '../util/elementwise.ts';
import type { SchedulerSettings } from './config.ts';
import { f32 } from './precision.ts';

export const PREDICTION_TYPES = ['epsilon', 'sample', 'v_prediction'] as const;
export type PredictionType = (typeof PREDICTION_TYPES)[number];

/**
 * For a noisy sample x = α·x0 + σ·ε and a model output m, the coefficients [cx, cm] with
 * x0 = cx·x + cm·m (`which` = 'x0') or ε = cx·x + cm·m (`which` = 'eps').
 */
export function predictionCoefficients(type: PredictionType, which: 'x0' | 'eps', alpha: number, sigma: number): [number, number] {
  switch (type) {
    case 'epsilon':
      return which === 'x0' ? [1 / alpha, -sigma / alpha] : [0, 1];
    case 'sample':
      return which === 'x0' ? [0, 1] : [1 / sigma, -alpha / sigma];
    case 'v_prediction':
      return which === 'x0' ? [alpha, -sigma] : [sigma, alpha];
  }
}

/** out[i] = cx·x[i] + cm·m[i] */
export function combine(out: Float32Array | Float64Array, x: ArrayLike<number>, cx: number, m: ArrayLike<number>, cm: number): void {
  if (out instanceof Float32Array && x instanceof Float32Array && m instanceof Float32Array) return lin2(out, x, cx, m, cm);
  for (let i = 0; i < out.length; i++) out[i] = cx * x[i]! + cm * m[i]!;
}

/**
 * Dynamic thresholding (Imagen): s = the `ratio` quantile of |x0| (torch.quantile, linear
 * interpolation, float32), clamped to [1, maxValue]; x0 = clamp(x0, -s, s) / s. One image per call.
 */
export function thresholdInPlace(x0: Float32Array | Float64Array, ratio: number, maxValue: number): void {
  const sorted = Float32Array.from(x0, Math.abs).sort();
  const rank = f32(f32(ratio) * (sorted.length - 1));
  const below = Math.floor(rank);
  const weight = f32(rank - below);
  const a = sorted[below]!;
  const b = sorted[Math.min(below + 1, sorted.length - 1)]!;
  const q = weight < 0.5 ? f32(a + f32(weight * f32(b - a))) : f32(b - f32(f32(b - a) * f32(1 - weight)));
  const s = Math.min(Math.max(q, 1), maxValue);
  for (let i = 0; i < x0.length; i++) x0[i] = Math.min(Math.max(x0[i]!, -s), s) / s;
}

export function clipInPlace(x0: Float32Array | Float64Array, range: number): void {
  for (let i = 0; i < x0.length; i++) x0[i] = Math.min(Math.max(x0[i]!, -range), range);
}

/** The x0 post-processing keys shared by DDIM and LCM (thresholding wins over clip_sample, as in the reference). */
export interface SampleClipping {
  thresholding: boolean;
  ratio: number;
  maxValue: number;
  clip: boolean;
  clipRange: number;
}

export function readClipping(settings: SchedulerSettings): SampleClipping {
  return {
    thresholding: settings.flag('thresholding'),
    ratio: settings.finite('dynamic_thresholding_ratio', (v) => v >= 0 && v <= 1, 'a number in [0, 1]'),
    maxValue: settings.number('sample_max_value'),
    clip: settings.flag('clip_sample'),
    clipRange: settings.number('clip_sample_range'),
  };
}

export function applyClipping(x0: Float32Array | Float64Array, clipping: SampleClipping): void {
  if (clipping.thresholding) thresholdInPlace(x0, clipping.ratio, clipping.maxValue);
  else if (clipping.clip) clipInPlace(x0, clipping.clipRange);
}
