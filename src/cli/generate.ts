/** `depthcast generate`: one image from a depth file, through the same engine the service uses. */
import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { depthRangeOf, readDepthFile } from '../depth/read.ts';
import { Engine, resultPng } from '../engine/engine.ts';
import { type CatalogEntry, ModelCatalog } from '../engine/catalog.ts';
import { DepthcastError } from '../errors.ts';
import { checkRequestedSize } from '../pipelines/sizing.ts';
import { DEFAULT_LIMITS } from '../protocol/limits.ts';
import { depthcastHome, modelsRoot } from '../hub/paths.ts';
import { FrameHeader, describeZodError } from '../protocol/schemas.ts';
import type { Device } from '../runtime/ort.ts';

export interface GenerateOptions {
  /** A model name in the models folder, or a model folder (a path: has a slash or starts with '.'), as `serve --model` takes. */
  model: string;
  modelsDir?: string;
  depth: string;
  prompt: string;
  negative: string;
  init?: string;
  strength?: number;
  steps?: number;
  guidance?: number;
  scheduler?: string;
  seed?: number;
  width?: number;
  height?: number;
  sizing: 'native' | 'exact';
  controlnetScale?: number;
  depthKind: 'zdepth' | 'disparity' | 'normalized';
  near?: number;
  far?: number;
  depthRange: 'fixed' | 'auto';
  device: Device;
  out: string;
}

/** The model as `serve --model` finds it: a name in the models folder, or a folder given by path. */
function resolveModel(model: string, modelsDir: string | undefined): CatalogEntry {
  const isPath = model.includes('/') || model.includes('\\') || model.startsWith('.');
  if (isPath && !existsSync(resolve(model))) throw new DepthcastError('MODEL_NOT_FOUND', `model folder ${resolve(model)} does not exist`);
  const dir = resolve(modelsDir ?? process.env.DEPTHCAST_MODELS_DIR?.trim() ?? modelsRoot(depthcastHome()));
  try {
    return new ModelCatalog(dir, model).resolve();
  } catch (err) {
    if (!isPath && existsSync(model)) {
      throw new DepthcastError('MODEL_NOT_FOUND', `${(err as Error).message}. A folder named ${model} is here: write ./${model} to use it by path`);
    }
    throw err;
  }
}

export async function generateCommand(opts: GenerateOptions): Promise<void> {
  const model = resolveModel(opts.model, opts.modelsDir);
  const depth = await readDepthFile(opts.depth);
  const { near, far } = depthRangeOf(depth, opts.depthKind, opts, opts.depth);
  const init = opts.init ? new Uint8Array(await readFile(opts.init)) : undefined;
  const depthBytes = new Uint8Array(depth.data.buffer, depth.data.byteOffset, depth.data.byteLength);
  const parsed = FrameHeader.safeParse({
    type: 'frame',
    protocol: 1,
    jobId: 'cli',
    mode: 'batch',
    depth: { width: depth.width, height: depth.height, dtype: depth.dtype, kind: opts.depthKind, near, far, byteLength: depthBytes.byteLength },
    init: init ? { format: /\.jpe?g$/i.test(opts.init!) ? 'jpeg' : 'png', byteLength: init.byteLength } : undefined,
    params: {
      prompt: opts.prompt, negativePrompt: opts.negative, steps: opts.steps, guidance: opts.guidance, strength: opts.strength,
      scheduler: opts.scheduler, seed: opts.seed, width: opts.width, height: opts.height, sizing: opts.sizing,
      controlnetScale: opts.controlnetScale, depthRange: opts.depthRange, previewEvery: 1,
    },
  });
  if (!parsed.success) throw new DepthcastError('BAD_REQUEST', describeZodError(parsed.error));
  // The same size rule and limits as the service (src/pipelines/sizing.ts).
  checkRequestedSize(parsed.data.params, parsed.data.depth, DEFAULT_LIMITS);
  const engine = new Engine(opts.device, (line) => process.stderr.write(`${line}\n`));
  try {
    const result = await engine.run(
      { jobId: 'cli', model: { name: model.name, dir: model.dir }, header: parsed.data, depth: depthBytes, init },
      { onProgress: (p) => process.stderr.write(`step ${p.step}/${p.total} (t=${+p.timestep.toFixed(2)})\n`) },
    );
    const out = resolve(opts.out);
    await writeFile(`${out}.partial`, resultPng(result));
    await rename(`${out}.partial`, out);
    const t = result.timings;
    const size = result.width === result.generated.width && result.height === result.generated.height
      ? `${result.width}×${result.height}`
      : `${result.width}×${result.height}, generated at ${result.generated.width}×${result.generated.height} and upscaled`;
    process.stderr.write(`wrote ${out} (${size}, seed ${result.seed}, ${t.total?.toFixed(0)} ms, model ${result.model.name} ${result.model.hash} on ${engine.loaded?.device})\n`);
  } finally {
    await engine.close();
  }
}
