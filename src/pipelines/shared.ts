/** Pipeline steps that depend on GenerateInput: input checks, conditioning, scheduler, latents, decode. */
import { DepthcastError } from '../errors.ts';
import type { LoadedModel } from '../models/load.ts';
import { createScheduler } from '../schedulers/index.ts';
import type { NoiseSource, Scheduler } from '../schedulers/types.ts';
import { type LatentRegion, planPrediction, type PredictionPlan } from './guidance.ts';
import { randomSeed, SeededNoise } from './noise.ts';
import { prepareRegions } from './regions.ts';
import { throwIfCancelled } from './denoise.ts';
import { nearestSizes } from '../models/sizes.ts';
import { decodeLatents, encodeImage, encodePrompt, prepareTimesteps, type StageTimer } from './steps.ts';
import type { GenerateInput, GenerateOutput, PlanarImage } from './types.ts';

/** Indexed loop on purpose: for..of over a typed array is several times slower at 512×512. */
function allFinite(data: Float32Array): boolean {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v - v !== 0) return false;
  }
  return true;
}

function checkImage(name: string, image: PlanarImage | undefined, width: number, height: number, scan: boolean, greyAllowed = false): void {
  if (!image) return;
  const channelsOk = image.channels === 3 || (greyAllowed && image.channels === 1);
  if (!channelsOk || image.width !== width || image.height !== height || image.data.length !== image.channels * width * height) {
    throw new DepthcastError('BAD_IMAGE', `${name} must be 3×${height}×${width}${greyAllowed ? ` or 1×${height}×${width}` : ''} (the output size), got ${image.channels}×${image.height}×${image.width} with ${image.data.length} values`);
  }
  if (scan && !allFinite(image.data)) throw new DepthcastError('BAD_IMAGE', `${name} has NaN or infinite values`);
}

/** 1. Check inputs: sizes, ranges and the conditioning this model family needs. */
export function checkInputs(model: LoadedModel, input: GenerateInput): { h: number; w: number } {
  const f = model.pixelsPerLatent;
  if (!Number.isInteger(input.width) || !Number.isInteger(input.height) || input.width <= 0 || input.height <= 0 || input.width % f || input.height % f) {
    throw new DepthcastError('BAD_REQUEST', `width and height must be positive multiples of ${f}, got ${input.width}×${input.height}`);
  }
  const step = f * (model.latentMultiple ?? 1);
  if (step > f && (input.width % step || input.height % step)) {
    throw new DepthcastError(
      'BAD_REQUEST',
      `this model's UNet was exported with fixed-scale up-samplers and runs only sizes that are multiples of ${step} px; ${input.width}×${input.height} is not (nearest: ${nearestSizes(input.width, input.height, step)}). Re-export with tools/export_onnx.py to run every multiple of ${f}.`,
    );
  }
  if (!Number.isInteger(input.steps) || input.steps < 1) throw new DepthcastError('BAD_REQUEST', `steps must be a positive integer, got ${input.steps}`);
  if (!Number.isFinite(input.guidanceScale) || input.guidanceScale < 0) throw new DepthcastError('BAD_REQUEST', `guidance must be >= 0, got ${input.guidanceScale}`);
  if (input.strength !== undefined && !(input.strength > 0 && input.strength <= 1)) {
    throw new DepthcastError('BAD_REQUEST', `strength must be in (0, 1], got ${input.strength}`);
  }
  const scan = !input.inputsValidated;
  checkImage('init image', input.initImage, input.width, input.height, scan);
  checkImage('control image', input.controlImage, input.width, input.height, scan, true);
  if (input.depth) {
    const d = input.depth;
    if (d.channels !== 1 || d.data.length !== d.width * d.height || d.width < 1 || d.height < 1) {
      throw new DepthcastError('BAD_DEPTH', `depth map must be 1×H×W with H·W values, got ${d.channels}×${d.height}×${d.width} with ${d.data.length} values`);
    }
    if (scan && !allFinite(d.data)) throw new DepthcastError('BAD_DEPTH', 'depth map has NaN or infinite values');
  }
  return { h: input.height / f, w: input.width / f };
}

/** 2. Encode prompt: conditional, unconditional when guidance is on, and region prompts. */
export async function encodeConditioning(model: LoadedModel, input: GenerateInput, timer: StageTimer, h: number, w: number): Promise<PredictionPlan> {
  const cond = await encodePrompt(model, input.prompt, timer);
  // A guidance-embedding UNet (timestep_cond) takes the guidance as an input, not as a second batch entry.
  const guided = input.guidanceScale > 1 && model.guidanceEmbeddingDim === undefined;
  const uncond = guided ? await encodePrompt(model, input.negativePrompt ?? '', timer) : undefined;
  let regions: LatentRegion[] = [];
  if (input.regions?.length) {
    const merged = prepareRegions(input.regions, input.prompt, input.width, input.height, model.pixelsPerLatent, input.regionFeather ?? 2);
    regions = [];
    for (const r of merged) regions.push({ embeds: await encodePrompt(model, r.prompt, timer), weights: r.weights });
  }
  return planPrediction(cond, uncond, input.guidanceScale, regions, h * w);
}

export function prepareScheduler(model: LoadedModel, input: GenerateInput): { scheduler: Scheduler; timesteps: number[] } {
  const scheduler = createScheduler(input.schedulerConfig ?? model.schedulerConfig);
  const strength = input.initImage ? (input.strength ?? 0.8) : undefined;
  return { scheduler, timesteps: prepareTimesteps(scheduler, input.steps, strength) };
}

/**
 * 4. Prepare latents. The first noise draw is the latent noise: scaled by init_noise_sigma for
 * txt2img, or given to add_noise at the first timestep for img2img.
 */
export async function prepareLatents(
  model: LoadedModel,
  input: GenerateInput,
  scheduler: Scheduler,
  timesteps: number[],
  h: number,
  w: number,
  timer: StageTimer,
): Promise<{ latents: Float32Array; noise: NoiseSource; seed: number }> {
  const seed = input.seed ?? randomSeed();
  const noise = input.noise ?? new SeededNoise(seed);
  const length = model.latentChannels * h * w;
  const latentNoise = noise.next(length);
  if (input.initImage) {
    const init = input.latentBlend?.initLatents ?? await encodeImage(model, input.initImage, timer);
    input.latentBlend?.start(init, latentNoise);
    return { latents: scheduler.addNoise(init, latentNoise, timesteps[0]!), noise, seed };
  }
  const sigma = scheduler.initNoiseSigma;
  const latents = new Float32Array(length);
  for (let i = 0; i < length; i++) latents[i] = latentNoise[i]! * sigma;
  return { latents, noise, seed };
}

/** 6. Decode and report. */
export async function finish(
  model: LoadedModel,
  latents: Float32Array,
  timesteps: number[],
  seed: number,
  h: number,
  w: number,
  timer: StageTimer,
  started: number,
  input: GenerateInput,
): Promise<GenerateOutput> {
  // A frame superseded during its last step needs no image.
  throwIfCancelled(input, 'before decoding');
  const decoded = await decodeLatents(model, latents, h, w, timer, input.output, input.scratch);
  timer.timings.total = performance.now() - started;
  timer.timings.sessionRun = timer.sessionMs;
  return { ...decoded, latents, timesteps, seed, timings: timer.timings };
}
