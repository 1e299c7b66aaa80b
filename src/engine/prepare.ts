/**
 * Turns a validated frame (header + raw parts) into pipeline input for a loaded model:
 * depth contract → model conditioning, init image, layout → region prompts, defaults.
 */
import { controlImageFromNearness, type DepthStats, depthForDepth2img, toNearness } from '../depth/convert.ts';
import { decodeDepthPixels, type ForegroundStats } from '../depth/scan.ts';
import { DepthcastError } from '../errors.ts';
import { decodeToPlanar } from '../image/codec.ts';
import type { LoadedModel } from '../models/load.ts';
import { randomSeed } from '../pipelines/noise.ts';
import { MAX_REGIONS } from '../pipelines/regions.ts';
import { planSize, requestedOutput, type SizePlan, UPSCALER } from '../pipelines/sizing.ts';
import type { GenerateInput, RegionPrompt } from '../pipelines/types.ts';
import { type FrameHeader, SCHEDULER_NAMES } from '../protocol/schemas.ts';
import { resolveDefaults } from '../models/defaults.ts';
import { schedulerConfigFor } from '../schedulers/index.ts';
import type { Scratch } from '../util/scratch.ts';

/**
 * The preset a frame's scheduler names; undefined for the model's own scheduler, which a frame
 * asks for by leaving it out or by naming the model's class (as results report it).
 */
function frameScheduler(scheduler: string | undefined, modelConfig: Readonly<Record<string, unknown>>): string | undefined {
  if (scheduler === undefined || !scheduler.endsWith('Scheduler')) return scheduler;
  if (scheduler === modelConfig._class_name) return undefined;
  throw new DepthcastError(
    'UNSUPPORTED_SCHEDULER',
    `scheduler "${scheduler}" is a class name, which means this model's own scheduler, and this model's is ${String(modelConfig._class_name)}; name a preset instead (${SCHEDULER_NAMES.join(', ')})`,
  );
}


export interface PreparedJob {
  input: GenerateInput;
  /** Output and generation sizes (src/pipelines/sizing.ts); the caller resamples when they differ. */
  size: SizePlan;
  /** Everything that decides the image, as reported with the result and embedded in the PNG. */
  params: Record<string, unknown>;
  depthStats: DepthStats;
}

function layoutRegions(header: FrameHeader, bytes: Uint8Array | undefined, outW: number, outH: number): RegionPrompt[] {
  const layout = header.layout;
  if (!layout || !bytes) return [];
  if (layout.width !== header.depth.width || layout.height !== header.depth.height) {
    throw new DepthcastError('BAD_LAYOUT', `layout map is ${layout.width}×${layout.height} but the depth is ${header.depth.width}×${header.depth.height}; send them at the same size`);
  }
  const count = layout.width * layout.height;
  if (bytes.byteLength !== count * 2) throw new DepthcastError('BAD_FRAME', `layout payload has ${bytes.byteLength} bytes, expected ${count} u16 ids = ${count * 2}`);
  const ids = new Uint16Array(bytes.slice().buffer);
  const objects = new Map(layout.objects.map((o) => [o.id, o]));
  for (let i = 0; i < count; i++) {
    const id = ids[i]!;
    if (id !== 0 && !objects.has(id)) throw new DepthcastError('BAD_LAYOUT', `layout map uses object id ${id}, which layout.objects does not list`);
  }
  const compose = header.params.regions?.composeFromLabels ?? false;
  const regions: RegionPrompt[] = [];
  for (const object of layout.objects) {
    const prompt = object.prompt ?? (compose ? object.label : undefined);
    if (!prompt) continue;
    // Nearest-neighbour resample of this object's mask to the output size.
    const mask = new Float32Array(outW * outH);
    for (let y = 0; y < outH; y++) {
      const sy = Math.min(Math.floor(((y + 0.5) * layout.height) / outH), layout.height - 1);
      for (let x = 0; x < outW; x++) {
        const sx = Math.min(Math.floor(((x + 0.5) * layout.width) / outW), layout.width - 1);
        if (ids[sy * layout.width + sx] === object.id) mask[y * outW + x] = 1;
      }
    }
    regions.push({ prompt, mask, weight: object.weight });
  }
  if (regions.length > MAX_REGIONS) {
    throw new DepthcastError('BAD_LAYOUT', `${regions.length} objects have prompts; at most ${MAX_REGIONS} regions are allowed`);
  }
  return regions;
}

/**
 * `scratch` (the engine's, reused across jobs) holds the full-resolution conditioning; without
 * it fresh arrays are used. With matching sizes, nearness is written straight into the control
 * image's first plane.
 */
export interface JobParts {
  depth: Uint8Array;
  init?: Uint8Array;
  layout?: Uint8Array;
  /** From the service's intake scan of these depth bytes (which also validated them). */
  depthForeground?: ForegroundStats;
}

export async function prepareJob(model: LoadedModel, header: FrameHeader, parts: JobParts, scratch?: Scratch): Promise<PreparedJob> {
  const { depth: depthBytes, init: initBytes, layout: layoutBytes } = parts;
  const { depth, params } = header;
  const f = model.pixelsPerLatent;
  // Limits were checked by the caller (service intake, `generate`, the batch runner) with checkRequestedSize.
  const size = planSize(requestedOutput(params, depth), params.sizing ?? 'native', { nativePixels: model.nativeSide ** 2, step: f });
  const { width, height } = size.generation;
  const pixels = decodeDepthPixels(depthBytes, depth.dtype, depth.kind, depth.near, depth.far, depth.width * depth.height);
  const depthPixels = depth.width * depth.height;
  const controlData = model.family === 'controlnet' ? (scratch?.controlImage.view(width * height) ?? new Float32Array(width * height)) : undefined;
  const nearnessOut = controlData && depthPixels === width * height && depth.width === width
    ? controlData.subarray(0, depthPixels)
    : (scratch?.nearness.view(depthPixels) ?? new Float32Array(depthPixels));
  const frame = { data: pixels, width: depth.width, height: depth.height, kind: depth.kind, near: depth.near, far: depth.far };
  const { nearness, stats } = toNearness(frame, params.depthRange, nearnessOut, parts.depthForeground);
  // What the frame leaves out comes from the model (registry entry, else its scheduler class).
  // A frame that names the model's own class asks for its own scheduler_config.json, whatever preset
  // the registry prefers: that is what a result reports, so sending it back reproduces the result.
  const named = frameScheduler(params.scheduler, model.schedulerConfig);
  const defaults = resolveDefaults(model.defaults, model.schedulerConfig._class_name, { ...params, scheduler: named });
  const schedulerName = params.scheduler !== undefined && named === undefined ? undefined : defaults.scheduler;
  const seed = params.seed ?? randomSeed();
  const input: GenerateInput = {
    prompt: params.prompt,
    negativePrompt: params.negativePrompt,
    width,
    height,
    steps: params.steps ?? defaults.steps,
    guidanceScale: params.guidance ?? defaults.guidance,
    seed,
    controlnetScale: params.controlnetScale ?? 1,
    schedulerConfig: schedulerName ? schedulerConfigFor(schedulerName, model.schedulerConfig) : undefined,
    previewEvery: params.previewEvery,
    regionFeather: params.regions?.feather,
    // Conditioning built below from depth that toNearness validated; images decoded by sharp.
    inputsValidated: true,
    output: 'rgb8',
    scratch,
  };
  if (model.family === 'depth2img') {
    input.depth = depthForDepth2img(nearness, depth.width, depth.height);
    input.depthNormalization = params.depthRange === 'fixed' ? 'fixed' : 'minmax';
  } else {
    input.controlImage = controlImageFromNearness(nearness, depth.width, depth.height, width, height, controlData, 1);
  }
  if (header.init && initBytes) {
    const raw = header.init.format === 'rgba8' ? { width: header.init.width ?? 0, height: header.init.height ?? 0 } : undefined;
    if (raw && (!raw.width || !raw.height || initBytes.byteLength !== raw.width * raw.height * 4)) {
      throw new DepthcastError('BAD_FRAME', `rgba8 init image needs width and height with width×height×4 bytes (got ${initBytes.byteLength})`);
    }
    input.initImage = await decodeToPlanar(initBytes, width, height, raw);
    input.strength = params.strength ?? 0.8;
  }
  const regions = layoutRegions(header, layoutBytes, width, height);
  if (regions.length) input.regions = regions;
  return {
    input,
    size,
    depthStats: stats,
    params: {
      prompt: params.prompt,
      negativePrompt: params.negativePrompt,
      width: size.output.width,
      height: size.output.height,
      sizing: params.sizing ?? 'native',
      generatedWidth: width,
      generatedHeight: height,
      upscaler: size.resampled ? UPSCALER : null,
      steps: input.steps,
      guidance: input.guidanceScale,
      strength: input.strength ?? null,
      seed,
      scheduler: schedulerName ?? String(model.schedulerConfig._class_name),
      controlnetScale: model.family === 'controlnet' ? input.controlnetScale : null,
      depthRange: params.depthRange,
      regions: regions.length,
      model: model.name,
    },
  };
}
