/**
 * In-process figures at Stable Diffusion tensor sizes (latents 2×4×64×64, text 2×77×768,
 * 512×512 images) on models with those I/O shapes and trivial compute, so what is left
 * after subtracting session.run time is depthcast's own overhead.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { controlImageFromNearness, toNearness } from '../../src/depth/convert.ts';
import { decodeDepthPixels } from '../../src/depth/scan.ts';
import { encodeJpeg } from '../../src/image/codec.ts';
import { encodePng } from '../../src/image/png.ts';
import { type LoadedModel, loadModel } from '../../src/models/load.ts';
import { generate } from '../../src/pipelines/index.ts';
import { decoderOutputToRgb8, floatDecoderOutputToRgb8, latentPreview } from '../../src/pipelines/steps.ts';
import type { GenerateInput } from '../../src/pipelines/types.ts';
import type { SchedulerName } from '../../src/protocol/schemas.ts';
import type { Device } from '../../src/runtime/ort.ts';
import { schedulerConfigFor } from '../../src/schedulers/index.ts';
import { createTinyModel } from '../../src/tiny/build-tiny.ts';
import { Scratch } from '../../src/util/scratch.ts';
import { buildSdControlledUnet, buildSdControlnet } from './sd-controlnet.ts';
import { median, round } from './stats.ts';

export const SD = { width: 512, height: 512, latent: 64, hidden: 768 } as const;

/**
 * Bench model folders with SD 1.5's I/O at 512²; the ControlNet pairs hand over SD 1.5's 13
 * residuals in their real shapes (sd-controlnet.ts), the rest of each folder is a tiny model.
 */
export async function buildSdSizeModels(): Promise<Record<'controlnet' | 'controlnetFp16' | 'depth2img', string>> {
  const root = mkdtempSync(join(tmpdir(), 'depthcast-bench-'));
  const out = { controlnet: join(root, 'sd-controlnet'), controlnetFp16: join(root, 'sd-controlnet-fp16'), depth2img: join(root, 'sd-depth2img') };
  for (const [dir, dtype] of [[out.controlnet, 'fp32'], [out.controlnetFp16, 'fp16']] as const) {
    await createTinyModel(dir, { family: 'controlnet', hiddenSize: SD.hidden, dtype });
    writeFileSync(join(dir, 'controlnet/model.onnx'), buildSdControlnet(dtype));
    writeFileSync(join(dir, 'unet/model.onnx'), buildSdControlledUnet(dtype));
  }
  await createTinyModel(out.depth2img, { family: 'depth2img', hiddenSize: SD.hidden });
  return out;
}

/** A 512×512 linear-Z frame: ground plane, sky, a box. */
export function benchDepth(width = SD.width, height = SD.height): Float32Array {
  const z = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      z[y * width + x] = y < height * 0.35 ? Infinity : 2 + (30 * (height - y)) / height;
      if (x > width * 0.35 && x < width * 0.65 && y > height * 0.4 && y < height * 0.8) z[y * width + x] = 3;
    }
  }
  return z;
}

/** As the engine runs a live frame: RGB8 output, buffers reused across generations, conditioning it built itself. */
function inputFor(model: LoadedModel, steps: number, nearness: Float32Array, scheduler: SchedulerName = 'euler-a', scratch = new Scratch()): GenerateInput {
  const input: GenerateInput = {
    prompt: 'a timber house in a pine forest', negativePrompt: 'blurry', width: SD.width, height: SD.height,
    steps, guidanceScale: 7.5, seed: 1, schedulerConfig: schedulerConfigFor(scheduler, model.schedulerConfig), previewEvery: 1,
    output: 'rgb8', scratch,
    // The engine builds the conditioning itself from depth its intake validated, and says so.
    inputsValidated: true,
  };
  if (model.family === 'depth2img') {
    input.depth = { data: nearness, width: SD.width, height: SD.height, channels: 1 };
    input.depthNormalization = 'fixed';
  } else {
    // Grey, as the engine hands it over (prepare.ts): the pipeline spreads it over R, G and B.
    input.controlImage = controlImageFromNearness(nearness, SD.width, SD.height, SD.width, SD.height, undefined, 1);
  }
  return input;
}

export interface PipelineFigures {
  family: string;
  /** ControlNet models: one composed graph, or two sessions with the residuals passing through JavaScript. */
  graph?: 'composed' | 'separate';
  dtype: string;
  scheduler: SchedulerName;
  steps: number;
  /** Median per-stage milliseconds per image (unet/controlnet/scheduler also per step). */
  stages: Record<string, number>;
  perStep: { unet: number; controlnet: number; controlnetUnet: number; scheduler: number; overhead: number };
  perImage: { total: number; sessionRun: number; overhead: number };
  bare: { perImage: number; ratio: number };
  /**
   * Bytes fed to / taken from the denoising sessions per step (on a GPU, host↔device copies).
   * `uploadedPerImage`: stable feeds (embeddings, control image) sent to the GPU once per image
   * and kept there (WebGPU), not in `in`.
   */
  bytesPerStep: { in: number; out: number; uploadedPerImage: number };
  /** ControlNet models: the depth behind the control image (float, or an 8- or 16-bit source). */
  controlSource?: ControlSource;
}

/** Where the bench's control image comes from: float depth (as Blender sends), or depth quantized to 8 or 16 bits. */
export type ControlSource = 'float' | '8-bit' | '16-bit';

/** The denoising sessions' traffic so far: UNet, ControlNet, or the two composed. */
function denoiseTraffic(model: LoadedModel): { in: number; out: number; uploaded: number } {
  const s = model.sessions;
  const all = [s.unet, s.controlnet, model.controlnetUnet].filter((x) => x !== undefined);
  const sum = (k: 'bytesIn' | 'bytesOut' | 'bytesUploaded') => all.reduce((a, x) => a + x.traffic[k], 0);
  return { in: sum('bytesIn'), out: sum('bytesOut'), uploaded: sum('bytesUploaded') };
}

export async function benchPipeline(dir: string, device: Device, steps: number, repeats: number, scheduler: SchedulerName = 'euler-a', controlnetGraph?: 'composed' | 'separate', controlSource: ControlSource = 'float'): Promise<PipelineFigures> {
  const model = await loadModel(dir, { device, controlnetGraph });
  try {
    if (controlnetGraph === 'composed' && !model.controlnetUnet) throw new Error(`bench: the ControlNet did not compose: ${model.controlnetNotComposed}`);
    return await measurePipeline(model, steps, repeats, scheduler, controlSource);
  } finally {
    await model.release();
  }
}

async function measurePipeline(model: LoadedModel, steps: number, repeats: number, scheduler: SchedulerName, controlSource: ControlSource): Promise<PipelineFigures> {
  const nearness = toNearness({ data: benchDepth(), width: SD.width, height: SD.height, kind: 'zdepth', near: 1, far: 100 }, 'fixed').nearness;
  const levels = controlSource === '8-bit' ? 255 : controlSource === '16-bit' ? 65535 : 0;
  if (levels) for (let i = 0; i < nearness.length; i++) nearness[i] = Math.round(nearness[i]! * levels) / levels;
  const scratch = new Scratch();
  // Warm-up: a service that has been generating a while has its code optimised, buffers
  // allocated and prompts cached; one generation left the first figures noticeably colder.
  for (let i = 0; i < Math.min(3, repeats); i++) await generate(model, inputFor(model, steps, nearness, scheduler, scratch));
  const runs: Record<string, number>[] = [];
  const before = denoiseTraffic(model);
  for (let i = 0; i < repeats; i++) runs.push((await generate(model, inputFor(model, steps, nearness, scheduler, scratch))).timings);
  const after = denoiseTraffic(model);
  const perStepBytes = (k: 'in' | 'out') => Math.round((after[k] - before[k]) / (repeats * steps));
  const med = (k: string) => median(runs.map((r) => r[k] ?? 0));
  const stages: Record<string, number> = {};
  for (const k of new Set(runs.flatMap((r) => Object.keys(r)))) stages[k] = round(med(k));
  const total = med('total');
  const sessionRun = med('sessionRun');
  const perImageOverhead = median(runs.map((r) => r.total! - r.sessionRun!));

  // The floor: the same session calls, tensors built once, nothing else.
  const s = model.sessions;
  const L = model.tokenizer.modelMaxLength;
  const c = model.latentChannels;
  const hw = SD.latent;
  const emb = new Float32Array(2 * L * SD.hidden);
  const iters = Math.max(3, Math.min(steps, 10));
  const sampleChannels = model.family === 'depth2img' ? c + 1 : c;
  const unetFeeds: Record<string, { data: Float32Array | number; dims: number[] }> = {
    sample: { data: new Float32Array(2 * sampleChannels * hw * hw), dims: [2, sampleChannels, hw, hw] },
    timestep: { data: 500, dims: [2] },
    encoder_hidden_states: { data: emb, dims: [2, L, SD.hidden] },
  };
  let controlnetMs = 0;
  let unetMs: number;
  if (model.controlnetUnet) {
    const feeds: Record<string, { data: Float32Array | number; dims: number[] }> = {
      ...unetFeeds,
      sample: { data: new Float32Array(c * hw * hw), dims: [1, c, hw, hw] },
      control_image: { data: new Float32Array(SD.width * SD.height), dims: [1, 1, SD.height, SD.width] },
      control_image_u8: { data: 0, dims: [1, 1, 1, 1] },
      control_image_u16: { data: 0, dims: [1, 1, 1, 1] },
      conditioning_scale: { data: 1, dims: [] },
    };
    unetMs = await model.controlnetUnet.timeBareRuns(feeds, iters);
  } else if (s.controlnet) {
    const cnFeeds: Record<string, { data: Float32Array | number; dims: number[] }> = {
      sample: { data: new Float32Array(2 * c * hw * hw), dims: [2, c, hw, hw] },
      timestep: { data: 500, dims: [2] },
      encoder_hidden_states: { data: emb, dims: [2, L, SD.hidden] },
      controlnet_cond: { data: new Float32Array(2 * 3 * SD.width * SD.height), dims: [2, 3, SD.height, SD.width] },
    };
    if (model.controlnetTakesScale) cnFeeds.conditioning_scale = { data: 1, dims: [] };
    controlnetMs = await s.controlnet.timeBareRuns(cnFeeds, iters);
    const shapes = await s.controlnet.run(cnFeeds);
    for (const [out, inp] of model.residualMap) unetFeeds[inp] = { data: shapes[out]!.data, dims: shapes[out]!.dims };
    unetMs = await s.unet.timeBareRuns(unetFeeds, iters);
  } else {
    unetMs = await s.unet.timeBareRuns(unetFeeds, iters);
  }
  const decodeMs = await s.vaeDecoder.timeBareRuns({ latent_sample: { data: new Float32Array(c * hw * hw), dims: [1, c, hw, hw] } }, 3);
  const bare = steps * (unetMs + controlnetMs) + decodeMs;
  return {
    family: model.family,
    ...(model.family === 'controlnet' ? { graph: model.controlnetUnet ? 'composed' as const : 'separate' as const, controlSource } : {}),
    dtype: model.dtype,
    scheduler,
    steps,
    stages,
    bytesPerStep: { in: perStepBytes('in'), out: perStepBytes('out'), uploadedPerImage: Math.round((after.uploaded - before.uploaded) / repeats) },
    perStep: { unet: round(med('unet') / steps), controlnet: round(med('controlnet') / steps), controlnetUnet: round(med('controlnetUnet') / steps), scheduler: round(med('scheduler') / steps), overhead: round(perImageOverhead / steps) },
    perImage: { total: round(total), sessionRun: round(sessionRun), overhead: round(perImageOverhead) },
    bare: { perImage: round(bare), ratio: round(total / bare) },
  };
}

/**
 * Encoders and conversions that run once per frame or preview, timed alone at 512×512 in the
 * engine's configuration (reused buffers), after a warm-up, as the median of at least 30 runs.
 */
export async function benchCodecs(repeats: number): Promise<Record<string, number>> {
  const z = benchDepth();
  const bytes = new Uint8Array(z.buffer);
  const decoderOutput = new Float32Array(3 * SD.width * SD.height).map((_, i) => Math.sin(i * 0.001) * 1.1);
  const rgb = decoderOutputToRgb8(decoderOutput, SD.width * SD.height);
  const latents = new Float32Array(4 * SD.latent * SD.latent).map((_, i) => Math.sin(i));
  const scratch = new Scratch();
  const runs = Math.max(30, repeats);
  const time = async (fn: () => unknown) => {
    for (let i = 0; i < 5; i++) await fn();
    const xs: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await fn();
      xs.push(performance.now() - t);
    }
    return round(median(xs));
  };
  const plane = SD.width * SD.height;
  return {
    depthDecodeAndConvert: await time(() => {
      const px = decodeDepthPixels(bytes, 'f32', 'zdepth', 1, 100, plane);
      const control = scratch.controlImage.view(plane);
      const { nearness } = toNearness({ data: px, width: SD.width, height: SD.height, kind: 'zdepth', near: 1, far: 100 }, 'auto', control);
      controlImageFromNearness(nearness, SD.width, SD.height, SD.width, SD.height, control, 1);
    }),
    decodeToRgb8: await time(() => floatDecoderOutputToRgb8(decoderOutput, plane, scratch.rgb8.view(3 * plane))),
    // The JavaScript reference the WebAssembly form replaced (src/image/rgb8.ts), for comparison.
    decodeToRgb8Js: await time(() => decoderOutputToRgb8(decoderOutput, plane, scratch.rgb8.view(3 * plane))),
    latentPreview: await time(() => latentPreview(latents, SD.latent, SD.latent)),
    previewJpeg: await time(() => encodeJpeg(latentPreview(latents, SD.latent, SD.latent).rgb, SD.latent, SD.latent)),
    pngLive: await time(() => encodePng(rgb, SD.width, SD.height, {}, 0)),
    pngBatch: await time(() => encodePng(rgb, SD.width, SD.height)),
    jpeg512: await time(() => encodeJpeg(rgb, SD.width, SD.height)),
  };
}

export interface RegionFigures {
  regions: number;
  unetBatch: number;
  unetMsPerStep: number;
  totalMs: number;
}

/** Regional prompting cost: one extra UNet batch entry per distinct region prompt. */
export async function benchRegions(dir: string, device: Device, steps: number, repeats: number): Promise<RegionFigures[]> {
  const model = await loadModel(dir, { device });
  const nearness = toNearness({ data: benchDepth(), width: SD.width, height: SD.height, kind: 'zdepth', near: 1, far: 100 }, 'auto').nearness;
  const out: RegionFigures[] = [];
  for (const count of [0, 2, 4]) {
    const regions = Array.from({ length: count }, (_, r) => {
      const mask = new Float32Array(SD.width * SD.height);
      const x0 = Math.floor((r * SD.width) / count);
      const x1 = Math.floor(((r + 1) * SD.width) / count);
      for (let y = 0; y < SD.height; y++) mask.fill(1, y * SD.width + x0, y * SD.width + x1);
      return { prompt: `object ${r}`, mask, weight: 1 };
    });
    const runs: Record<string, number>[] = [];
    for (let i = 0; i <= repeats; i++) {
      const t = (await generate(model, { ...inputFor(model, steps, nearness), regions })).timings;
      if (i > 0) runs.push(t);
    }
    out.push({
      regions: count,
      unetBatch: 2 + count,
      unetMsPerStep: round(median(runs.map((r) => ((r.unet ?? 0) + (r.controlnet ?? 0) + (r.controlnetUnet ?? 0)) / steps))),
      totalMs: round(median(runs.map((r) => r.total!))),
    });
  }
  await model.release();
  return out;
}
