/**
 * 5. The denoising loop shared by both pipelines: scale, predict the batch, guide, step.
 * Buffers for the batched UNet input are allocated once per generation.
 */
import { DepthcastError } from '../errors.ts';
import type { LoadedModel } from '../models/load.ts';
import type { OutputTensor } from '../runtime/ort.ts';
import type { NoiseSource, Scheduler } from '../schedulers/types.ts';
import type { PredictionPlan } from './guidance.ts';
import { latentPreview, type StageTimer, tinyDecoderPreview } from './steps.ts';
import type { GenerateInput } from './types.ts';

export interface DenoiseContext {
  model: LoadedModel;
  scheduler: Scheduler;
  timesteps: number[];
  latents: Float32Array;
  plan: PredictionPlan;
  h: number;
  w: number;
  noise: NoiseSource;
  timer: StageTimer;
  input: GenerateInput;
  /** Runs the model(s) on the batched, scaled latents and returns the UNet's batched noise prediction. */
  predict(scaled: Float32Array, batch: number, t: number): Promise<OutputTensor>;
}

export async function denoise(ctx: DenoiseContext): Promise<Float32Array> {
  const { scheduler, timesteps, plan, timer, input, h, w } = ctx;
  const batch = plan.embeddings.length;
  const perImage = ctx.latents.length;
  const scaledBatch = new Float32Array(batch * perImage);
  // The UNet batch reduced to this image's noise prediction (guided, regions blended) each step.
  const noisePrediction = new Float32Array(perImage);
  // Where an fp16 UNet's halves are read back as float32 (an fp32 UNet's output is used as it is).
  let readBack: Float32Array | undefined;
  let latents = ctx.latents;
  const previewEvery = input.previewEvery ?? 0;

  for (let k = 0; k < timesteps.length; k++) {
    throwIfCancelled(input, `before step ${k + 1} of ${timesteps.length}`);
    const t = timesteps[k]!;
    let start = performance.now();
    const scaled = scheduler.scaleModelInput(latents, t);
    for (let b = 0; b < batch; b++) scaledBatch.set(scaled, b * perImage);
    timer.add('scheduler', performance.now() - start);

    const prediction = await ctx.predict(scaledBatch, batch, t);

    start = performance.now();
    readBack ??= input.scratch?.prediction.view(batch * perImage) ?? new Float32Array(batch * perImage);
    const values = prediction.float32Into(readBack);
    plan.reduceBatch(values, noisePrediction);
    input.onPrediction?.(k, values, noisePrediction);
    latents = scheduler.step(noisePrediction, t, latents, ctx.noise);
    if (input.latentBlend) latents = input.latentBlend.afterStep(latents, k, timesteps, scheduler);
    timer.add('scheduler', performance.now() - start);

    if (input.onStep) {
      const last = k === timesteps.length - 1;
      const wantPreview = previewEvery > 0 && ((k + 1) % previewEvery === 0 || last);
      let preview;
      if (wantPreview) {
        const t0 = performance.now();
        preview = ctx.model.sessions.tinyDecoder ? await tinyDecoderPreview(ctx.model, latents, h, w, timer) : latentPreview(latents, h, w);
        if (!ctx.model.sessions.tinyDecoder) timer.add('preview', performance.now() - t0);
      }
      await input.onStep({ step: k, total: timesteps.length, timestep: t, latents, preview });
    }
  }
  return latents;
}

/** Stops a generation whose signal says so, with where it stopped. */
export function throwIfCancelled(input: GenerateInput, where: string): void {
  if (input.signal?.aborted) throw new DepthcastError('CANCELLED', `cancelled ${where}`);
}
