/**
 * Stable Diffusion 2 depth (StableDiffusionDepth2ImgPipeline): the depth map is a fifth UNet
 * input channel. Img2img with `strength` when there is an init image, pure noise otherwise.
 */
import { resizeBicubic } from '../depth/resize.ts';
import { DepthcastError } from '../errors.ts';
import type { LoadedModel } from '../models/load.ts';
import { denoise } from './denoise.ts';
import { checkInputs, encodeConditioning, prepareLatents, prepareScheduler, finish } from './shared.ts';
import { guidanceScaleEmbedding, timestepCondFeed } from './guidance.ts';
import { concatEmbeddings, StageTimer } from './steps.ts';
import type { GenerateInput, GenerateOutput, PlanarImage } from './types.ts';

/** 3. Prepare depth: bicubic to latent size, then to [-1, 1] (per-map min/max, or fixed from [0,1]). */
export function prepareDepth(depth: PlanarImage, h: number, w: number, normalization: 'minmax' | 'fixed'): Float32Array {
  const resized = resizeBicubic(depth.data, 1, depth.height, depth.width, h, w);
  if (normalization === 'fixed') {
    for (let i = 0; i < resized.length; i++) resized[i] = 2 * resized[i]! - 1;
    return resized;
  }
  let min = Infinity;
  let max = -Infinity;
  for (const v of resized) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (!(max > min)) throw new DepthcastError('BAD_DEPTH', 'depth map is constant after resizing; depth2img needs some depth variation (or use depthRange "fixed")');
  const fmin = Math.fround(min);
  const range = Math.fround(max - min);
  for (let i = 0; i < resized.length; i++) resized[i] = Math.fround((2 * Math.fround(resized[i]! - fmin)) / range) - 1;
  return resized;
}

export async function runDepth2Img(model: LoadedModel, input: GenerateInput): Promise<GenerateOutput> {
  const timer = new StageTimer();
  const started = performance.now();
  // 1. Check inputs.
  const { h, w } = checkInputs(model, input);
  if (!input.depth) throw new DepthcastError('BAD_DEPTH', 'depth2img needs a depth map');
  // 2. Encode prompt (and negative prompt, and region prompts).
  const plan = await encodeConditioning(model, input, timer, h, w);
  // 3. Prepare depth conditioning.
  let t0 = performance.now();
  const depth = prepareDepth(input.depth, h, w, input.depthNormalization ?? 'minmax');
  timer.add('depthPrep', performance.now() - t0);
  // 4. Timesteps and initial latents.
  const { scheduler, timesteps } = prepareScheduler(model, input);
  const { latents, noise, seed } = await prepareLatents(model, input, scheduler, timesteps, h, w, timer);
  // 5. Denoise, with depth as channel C of every batch entry.
  const c = model.latentChannels;
  const plane = h * w;
  const L = model.tokenizer.modelMaxLength;
  const embeddings = concatEmbeddings(plan.embeddings);
  let sampleBuf: Float32Array | undefined;
  const dim = model.guidanceEmbeddingDim;
  const timestepCond = dim ? timestepCondFeed(guidanceScaleEmbedding(input.guidanceScale - 1, dim), plan.embeddings.length) : undefined;
  const final = await denoise({
    model, scheduler, timesteps, latents, plan, h, w, noise, timer, input,
    async predict(scaled, batch, t) {
      t0 = performance.now();
      sampleBuf ??= new Float32Array(batch * (c + 1) * plane);
      for (let b = 0; b < batch; b++) {
        sampleBuf.set(scaled.subarray(b * c * plane, (b + 1) * c * plane), b * (c + 1) * plane);
        sampleBuf.set(depth, b * (c + 1) * plane + c * plane);
      }
      timer.add('scheduler', performance.now() - t0);
      const out = await timer.time('unet', () =>
        model.sessions.unet.run({
          sample: { data: sampleBuf!, dims: [batch, c + 1, h, w] },
          timestep: { data: t, dims: [batch] },
          encoder_hidden_states: { data: embeddings, dims: [batch, L, plan.embeddings[0]!.length / L], stableFor: embeddings },
          ...(timestepCond ? { timestep_cond: { ...timestepCond, stableFor: timestepCond } } : {}),
        }, ['out_sample']),
      );
      return out.out_sample!;
    },
  });
  // 6. Decode.
  return finish(model, final, timesteps, seed, h, w, timer, started, input);
}
