/**
 * Stable Diffusion 1.5 + ControlNet depth (StableDiffusionControlNetPipeline and its img2img
 * twin): the ControlNet turns the control image into residuals that the UNet adds.
 */
import { DepthcastError } from '../errors.ts';
import type { LoadedModel } from '../models/load.ts';
import type { Feed, ModelSession, OutputTensor } from '../runtime/ort.ts';
import { denoise, throwIfCancelled } from './denoise.ts';
import { checkInputs, encodeConditioning, finish, prepareLatents, prepareScheduler } from './shared.ts';
import { guidanceScaleEmbedding, timestepCondFeed } from './guidance.ts';
import { concatEmbeddings, StageTimer } from './steps.ts';
import type { GenerateInput, GenerateOutput, PlanarImage } from './types.ts';
import { float32ToFloat16 } from '../runtime/float16.ts';
import type { Scratch } from '../util/scratch.ts';
import { CONTROL_INPUTS } from '../models/compose.ts';

/**
 * The control image as the ControlNet's [batch, 3, H, W] input, repeated for each batch entry;
 * a one-channel (grey) image fills R, G and B. As raw halves for an fp16 ControlNet. Only the
 * image's own values are converted (once); the rest are copies (the session would convert the
 * whole batch, every entry the same, and a grey depth map is a third of the work).
 */
export function controlBatchFor(control: PlanarImage, batch: number, half: boolean, scratch?: Scratch): Float32Array | Uint16Array {
  const plane = control.width * control.height;
  const size = 3 * plane;
  let out: Float32Array | Uint16Array;
  if (half) {
    out = scratch?.controlBatchHalf.view(batch * size) ?? new Uint16Array(batch * size);
    float32ToFloat16(control.data, out.subarray(0, control.data.length));
  } else {
    out = scratch?.controlBatch.view(batch * size) ?? new Float32Array(batch * size);
    out.set(control.data, 0);
  }
  if (control.channels === 1) {
    out.copyWithin(plane, 0, plane);
    out.copyWithin(2 * plane, 0, plane);
  }
  for (let b = 1; b < batch; b++) out.copyWithin(b * size, 0, size);
  return out;
}

/**
 * The control image as the levels k of an 8- or 16-bit source, when every value is exactly
 * Math.fround(k / 255) or Math.fround(k / 65535): the composed graph decodes them to the same
 * float32 bits (compose.ts, CONTROL_INPUTS). Undefined for any other image (a float source):
 * it goes in as floats. Stops at the first value that does not fit.
 */
export function controlLevels(values: Float32Array, scratch?: Scratch): { input: typeof CONTROL_INPUTS.levels8; data: Uint8Array } | { input: typeof CONTROL_INPUTS.levels16; data: Uint16Array } | undefined {
  const n = values.length;
  const u8 = scratch?.controlLevels8.view(n) ?? new Uint8Array(n);
  let i = 0;
  for (; i < n; i++) {
    const v = values[i]!;
    const k = Math.round(v * 255);
    if (!(k >= 0 && k <= 255 && Math.fround(k / 255) === v)) break;
    u8[i] = k;
  }
  if (i === n) return { input: CONTROL_INPUTS.levels8, data: u8 };
  const u16 = scratch?.controlLevels16.view(n) ?? new Uint16Array(n);
  for (let j = 0; j < n; j++) {
    const v = values[j]!;
    const k = Math.round(v * 65535);
    if (!(k >= 0 && k <= 65535 && Math.fround(k / 65535) === v)) return undefined;
    u16[j] = k;
  }
  return { input: CONTROL_INPUTS.levels16, data: u16 };
}

export async function runControlnet(model: LoadedModel, input: GenerateInput): Promise<GenerateOutput> {
  const timer = new StageTimer();
  const started = performance.now();
  // 1. Check inputs.
  const { h, w } = checkInputs(model, input);
  const control = input.controlImage;
  if (!control) throw new DepthcastError('BAD_DEPTH', 'the ControlNet pipeline needs a control image (the depth map as near-is-white RGB)');
  const controlnet = model.sessions.controlnet!;
  const scale = input.controlnetScale ?? 1;
  // 2. Encode prompt.
  const plan = await encodeConditioning(model, input, timer, h, w);
  const L = model.tokenizer.modelMaxLength;
  const D = plan.embeddings[0]!.length / L;
  const batch = plan.embeddings.length;
  const embeddings = concatEmbeddings(plan.embeddings);
  // 3. Prepare the control image, repeated for the batch.
  // (The composed graph takes the image once and broadcasts it itself.)
  const controlBatch = model.controlnetUnet ? undefined : controlBatchFor(control, batch, controlnet.input('controlnet_cond')?.type === 'float16', input.scratch);
  // The stableFor key of what stays fixed for this generation only (the control image's buffer is borrowed: a later call may refill it).
  const generation = {};
  const controlFeeds = model.controlnetUnet ? composedControlFeeds(control, generation, input.scratch) : undefined;
  // 4. Timesteps and initial latents (img2img when there is an init image).
  const { scheduler, timesteps } = prepareScheduler(model, input);
  const { latents, noise, seed } = await prepareLatents(model, input, scheduler, timesteps, h, w, timer);
  const c = model.latentChannels;
  const dim = model.guidanceEmbeddingDim;
  const timestepCond = dim ? timestepCondFeed(guidanceScaleEmbedding(input.guidanceScale - 1, dim), batch) : undefined;
  const condFeed: Record<string, Feed> = timestepCond ? { timestep_cond: { ...timestepCond, stableFor: timestepCond } } : {};
  // 5. Denoise: ControlNet residuals feed the UNet, matched by name.
  const final = await denoise({
    model, scheduler, timesteps, latents, plan, h, w, noise, timer, input,
    async predict(scaled, n, t) {
      if (model.controlnetUnet) return predictComposed(model, model.controlnetUnet, timer, { scaled, n, t, h, w, L, D, embeddings, controlFeeds: controlFeeds!, scale, condFeed });
      // Both models take this step's latents: an fp16 pair converts them once.
      const step = {};
      const cnFeeds: Record<string, Feed> = {
        sample: { data: scaled, dims: [n, c, h, w], stableFor: step },
        timestep: { data: t, dims: [n] },
        encoder_hidden_states: { data: embeddings, dims: [n, L, D], stableFor: embeddings },
        // Already in the ControlNet input's own type (halves for fp16); stableFor lets a WebGPU session keep it.
        controlnet_cond: { data: controlBatch!, dims: [n, 3, input.height, input.width], stableFor: generation },
      };
      if (model.controlnetTakesScale) cnFeeds.conditioning_scale = { data: scale, dims: [] };
      if (controlnet.input('timestep_cond')) Object.assign(cnFeeds, condFeed);
      const residuals = await timer.time('controlnet', () => controlnet.run(cnFeeds, model.residualMap.map(([out]) => out)));
      // Half a step sooner for a superseded frame: the UNet is the other half.
      throwIfCancelled(input, 'between the ControlNet and the UNet');
      const unetFeeds: Record<string, Feed> = {
        sample: { data: scaled, dims: [n, c, h, w], stableFor: step },
        timestep: { data: t, dims: [n] },
        encoder_hidden_states: { data: embeddings, dims: [n, L, D], stableFor: embeddings },
        ...condFeed,
      };
      for (const [out, inp] of model.residualMap) {
        const r = residuals[out]!;
        if (!model.controlnetTakesScale && scale !== 1) {
          const scaledResidual = r.data;
          for (let i = 0; i < scaledResidual.length; i++) scaledResidual[i] = scaledResidual[i]! * scale;
          unetFeeds[inp] = { data: scaledResidual, dims: r.dims };
        } else {
          // fp16 residuals go from the ControlNet into the UNet as they are, with no round trip through float32.
          unetFeeds[inp] = { data: r.half ?? r.data, dims: r.dims };
        }
      }
      const out = await timer.time('unet', () => model.sessions.unet.run(unetFeeds, ['out_sample']));
      return out.out_sample!;
    },
  });
  // 6. Decode.
  return finish(model, final, timesteps, seed, h, w, timer, started, input);
}

interface ComposedStep {
  scaled: Float32Array;
  n: number;
  t: number;
  h: number;
  w: number;
  L: number;
  D: number;
  embeddings: Float32Array;
  controlFeeds: Record<string, Feed>;
  scale: number;
  /** `timestep_cond` when the UNet (or ControlNet) takes a guidance embedding. */
  condFeed: Record<string, Feed>;
}

/**
 * The composed graph's three control-image inputs for one generation: the image in the most
 * compact exact form (controlLevels), the other two a single zero. `key` is the generation's.
 */
function composedControlFeeds(control: PlanarImage, key: object, scratch?: Scratch): Record<string, Feed> {
  const dims = [1, control.channels, control.height, control.width];
  const zero = { data: 0, dims: [1, 1, 1, 1] };
  const feeds: Record<string, Feed> = { [CONTROL_INPUTS.float]: zero, [CONTROL_INPUTS.levels8]: zero, [CONTROL_INPUTS.levels16]: zero };
  const levels = controlLevels(control.data, scratch);
  if (levels) feeds[levels.input] = { data: levels.data, dims, stableFor: key };
  else feeds[CONTROL_INPUTS.float] = { data: control.data, dims, stableFor: key };
  return feeds;
}

/**
 * One step on the composed ControlNet + UNet graph: the residuals stay inside onnxruntime; the
 * graph applies the scale. Every entry of the step's batch holds the same latents, so one goes
 * in and the graph broadcasts it.
 */
async function predictComposed(model: LoadedModel, session: ModelSession, timer: StageTimer, s: ComposedStep): Promise<OutputTensor> {
  const c = model.latentChannels;
  const feeds: Record<string, Feed> = {
    sample: { data: s.scaled.subarray(0, c * s.h * s.w), dims: [1, c, s.h, s.w] },
    timestep: { data: s.t, dims: [s.n] },
    encoder_hidden_states: { data: s.embeddings, dims: [s.n, s.L, s.D], stableFor: s.embeddings },
    ...s.controlFeeds,
    conditioning_scale: { data: s.scale, dims: [] },
    ...(session.input('timestep_cond') ? s.condFeed : {}),
  };
  const out = await timer.time('controlnetUnet', () => session.run(feeds, ['out_sample']));
  return out.out_sample!;
}
