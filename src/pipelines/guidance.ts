/**
 * How the UNet batch is laid out and its predictions combined: classifier-free guidance
 * ([uncond, cond] in one call) and regional prompting (issue 8: one extra batch entry per
 * distinct region prompt, blended by soft latent-size masks, the global prompt covering the rest).
 */
import { guide } from '../util/elementwise.ts';

export interface LatentRegion {
  embeds: Float32Array;
  /** Weight per latent pixel in [0,1]. */
  weights: Float32Array;
}

export interface PredictionPlan {
  /** Text embeddings of the UNet batch, in batch order. */
  embeddings: Float32Array[];
  /** Reduces the UNet batch to one image's noise prediction in `out`: guidance applied, regions blended. */
  reduceBatch(batch: Float32Array, out: Float32Array): void;
}

export function planPrediction(
  cond: Float32Array,
  uncond: Float32Array | undefined,
  guidanceScale: number,
  regions: LatentRegion[] = [],
  plane = 0,
): PredictionPlan {
  const guided = uncond !== undefined;
  const embeddings = guided ? [uncond, cond] : [cond];
  for (const r of regions) embeddings.push(r.embeds);
  const g = Math.fround(guidanceScale);

  if (regions.length === 0) {
    return {
      embeddings,
      reduceBatch(batch, out) {
        const n = out.length;
        if (!guided) {
          out.set(batch.subarray(0, n));
          return;
        }
        guide(out, batch.subarray(0, n), batch.subarray(n, 2 * n), g);
      },
    };
  }

  // Per latent pixel: region weights, normalised when they overlap past 1; the global prompt takes what is left.
  const k = regions.length;
  const weights = new Float32Array((k + 1) * plane);
  for (let p = 0; p < plane; p++) {
    let sum = 0;
    for (let r = 0; r < k; r++) sum += regions[r]!.weights[p]!;
    const norm = sum > 1 ? 1 / sum : 1;
    for (let r = 0; r < k; r++) weights[(r + 1) * plane + p] = regions[r]!.weights[p]! * norm;
    weights[p] = sum >= 1 ? 0 : 1 - sum;
  }
  const condOffset = guided ? 1 : 0;
  return {
    embeddings,
    reduceBatch(batch, out) {
      const n = out.length;
      const channels = n / plane;
      for (let c = 0; c < channels; c++) {
        for (let p = 0; p < plane; p++) {
          const i = c * plane + p;
          let blended = weights[p]! * batch[condOffset * n + i]!;
          for (let r = 0; r < k; r++) {
            const w = weights[(r + 1) * plane + p]!;
            if (w !== 0) blended += w * batch[(condOffset + 1 + r) * n + i]!;
          }
          if (guided) {
            const u = batch[i]!;
            out[i] = u + g * (blended - u);
          } else {
            out[i] = blended;
          }
        }
      }
    },
  };
}

/**
 * diffusers' get_guidance_scale_embedding (LCM): the guidance weight w as sinusoidal features,
 * [sin(1000·w·f_i) ‖ cos(1000·w·f_i)] with f_i = exp(−i·ln(10000)/(dim/2 − 1)), zero-padded to
 * an odd `dim`; computed in float32 as the reference does. The pipelines pass w = guidance − 1.
 */
export function guidanceScaleEmbedding(w: number, dim: number): Float32Array {
  const half = Math.floor(dim / 2);
  const out = new Float32Array(dim);
  const step = Math.fround(Math.log(10000) / (half - 1));
  const scaled = Math.fround(Math.fround(w) * 1000);
  for (let i = 0; i < half; i++) {
    const f = Math.fround(Math.exp(Math.fround(i * -step)));
    const arg = Math.fround(scaled * f);
    out[i] = Math.sin(arg);
    out[half + i] = Math.cos(arg);
  }
  return out;
}

/** The `timestep_cond` feed for a batch of `n`: the embedding repeated per batch entry. */
export function timestepCondFeed(embedding: Float32Array, n: number): { data: Float32Array; dims: number[] } {
  const data = new Float32Array(n * embedding.length);
  for (let b = 0; b < n; b++) data.set(embedding, b * embedding.length);
  return { data, dims: [n, embedding.length] };
}
