/**
 * Opens a model folder: reads its configs, checks every file and session I/O it needs, and
 * reports all problems in one error, so a user fixes a broken folder in one pass.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { nativeSide } from '../pipelines/sizing.ts';
import { type Device, type ModelSession, openSession, type TensorSpec } from '../runtime/ort.ts';
import type { SchedulerConfig } from '../schedulers/types.ts';
import { checkExternalData } from '../hub/onnx-external.ts';
import { ClipTokenizer } from '../tokenizer/clip.ts';
import { mapControlnetResiduals } from './controlnet-map.ts';
import { type ComponentName, type DepthcastModelConfig, familyOf, type ModelFamily, REQUIRED_FILES, SESSION_FILES } from './layout.ts';

/** ONNX files up to this size get their external-data locations checked at every load. */
const EXTERNAL_CHECK_MAX_BYTES = 256 * 2 ** 20;

export interface ModelSessions {
  textEncoder: ModelSession;
  unet: ModelSession;
  vaeEncoder: ModelSession;
  vaeDecoder: ModelSession;
  controlnet?: ModelSession;
  tinyDecoder?: ModelSession;
}

export interface LoadedModel {
  name: string;
  dir: string;
  family: ModelFamily;
  dtype: 'fp32' | 'fp16';
  device: Exclude<Device, 'auto'>;
  /** Fingerprint of the folder's files, reported with every result. */
  hash: string;
  tokenizer: ClipTokenizer;
  schedulerConfig: SchedulerConfig;
  /** VAE latent scaling (config `scaling_factor`). */
  vaeScalingFactor: number;
  /** Pixels per latent pixel: 2^(len(block_out_channels)-1). */
  vaeScaleFactor: number;
  /** Side of the model's native square generation size in pixels: unet sample_size × vaeScaleFactor (src/pipelines/sizing.ts). */
  nativeSide: number;
  latentChannels: number;
  sessions: ModelSessions;
  /** ControlNet output → UNet input. */
  residualMap: [string, string][];
  /** Whether the ControlNet applies conditioning_scale itself (else the pipeline multiplies). */
  controlnetTakesScale: boolean;
  /** Prompt embeddings cache (prompt → last_hidden_state [77,D]). */
  textCache: Map<string, Float32Array>;
  release(): Promise<void>;
}

export interface LoadOptions {
  device?: Device;
  /** Hears about devices `auto` skipped. */
  onFallback?: (device: string, reason: string) => void;
}

async function readJson(path: string, problems: string[], what: string): Promise<Record<string, unknown> | undefined> {
  try {
    const value = JSON.parse(await readFile(path, 'utf8'));
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
    problems.push(`${what} is not a JSON object`);
  } catch (err) {
    problems.push(`${what}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : `not valid JSON (${(err as Error).message})`}`);
  }
  return undefined;
}

interface FolderConfig {
  family: ModelFamily;
  schedulerConfig: SchedulerConfig;
  vaeScalingFactor: number;
  vaeScaleFactor: number;
  nativeSide: number;
  latentChannels: number;
  depthcastConfig: DepthcastModelConfig;
}

/** Reads configs and checks files; collects problems instead of stopping at the first. */
async function readFolderConfig(dir: string, problems: string[]): Promise<FolderConfig | undefined> {
  if (!existsSync(dir)) {
    problems.push(`model folder ${dir} does not exist`);
    return undefined;
  }
  const hasControlnet = existsSync(join(dir, SESSION_FILES.controlnet));
  for (const f of REQUIRED_FILES) if (!existsSync(join(dir, f))) problems.push(`missing file ${f}`);
  const index = await readJson(join(dir, 'model_index.json'), problems, 'model_index.json');
  const className = typeof index?._class_name === 'string' ? index._class_name : '';
  const family = index ? familyOf(className, hasControlnet) : null;
  if (index && !family) {
    problems.push(`model_index.json _class_name "${className}" is not a depth model: depthcast runs StableDiffusionDepth2ImgPipeline, or a Stable Diffusion model with a controlnet/ folder`);
  }
  if (family === 'controlnet' && !hasControlnet) problems.push(`missing file ${SESSION_FILES.controlnet} (a ControlNet pipeline needs its ControlNet)`);

  const sched = existsSync(join(dir, 'scheduler/scheduler_config.json'))
    ? await readJson(join(dir, 'scheduler/scheduler_config.json'), problems, 'scheduler/scheduler_config.json')
    : undefined;
  if (sched && typeof sched._class_name !== 'string') problems.push('scheduler/scheduler_config.json has no _class_name');

  let vaeConfig: Record<string, unknown> | undefined;
  for (const f of ['vae_decoder/config.json', 'vae_encoder/config.json']) {
    if (existsSync(join(dir, f))) {
      vaeConfig = await readJson(join(dir, f), problems, f);
      if (vaeConfig) break;
    }
  }
  const scaling = vaeConfig?.scaling_factor;
  if (typeof scaling !== 'number' || !(scaling > 0)) {
    problems.push('vae_decoder/config.json must give the VAE "scaling_factor" (0.18215 for SD 1.5/2.x); depthcast never guesses it');
  }
  const blocks = vaeConfig?.block_out_channels;
  const vaeScaleFactor = Array.isArray(blocks) && blocks.length > 0 ? 2 ** (blocks.length - 1) : 8;
  const latentChannels = typeof vaeConfig?.latent_channels === 'number' ? vaeConfig.latent_channels : 4;

  // diffusers' pipelines generate at unet sample_size × VAE factor by default. Exports without
  // unet/config.json get their family's published size: SD 1.5 (ControlNet) 64, SD 2 depth 96.
  const unetConfig = existsSync(join(dir, 'unet/config.json')) ? await readJson(join(dir, 'unet/config.json'), problems, 'unet/config.json') : undefined;
  const sampleSize = unetConfig?.sample_size ?? (family === 'depth2img' ? 96 : 64);
  if (typeof sampleSize !== 'number' || !Number.isInteger(sampleSize) || sampleSize < 1) problems.push(`unet/config.json sample_size must be a positive integer, got ${JSON.stringify(sampleSize)}`);

  let depthcastConfig: DepthcastModelConfig = {};
  if (existsSync(join(dir, 'depthcast.json'))) {
    depthcastConfig = ((await readJson(join(dir, 'depthcast.json'), problems, 'depthcast.json')) ?? {}) as DepthcastModelConfig;
  }
  if (!family || !sched || typeof scaling !== 'number') return undefined;
  return {
    family,
    schedulerConfig: sched as SchedulerConfig,
    vaeScalingFactor: scaling,
    vaeScaleFactor,
    nativeSide: nativeSide(sampleSize as number, vaeScaleFactor),
    latentChannels,
    depthcastConfig,
  };
}

const FLOAT = ['float32', 'float16'];

function expectInput(problems: string[], s: ModelSession, name: string, types: string[], rank?: number): TensorSpec | undefined {
  const spec = s.input(name);
  if (!spec) {
    problems.push(`${s.name}: missing input "${name}" (it has ${s.inputs.map((i) => i.name).join(', ')})`);
    return undefined;
  }
  if (!types.includes(spec.type)) problems.push(`${s.name}: input "${name}" is ${spec.type}, expected ${types.join(' or ')}`);
  if (rank !== undefined && spec.shape.length && spec.shape.length !== rank) problems.push(`${s.name}: input "${name}" has rank ${spec.shape.length}, expected ${rank}`);
  return spec;
}

function expectOutput(problems: string[], s: ModelSession, name: string): void {
  if (!s.outputs.some((o) => o.name === name)) {
    problems.push(`${s.name}: missing output "${name}" (it has ${s.outputs.map((o) => o.name).join(', ')})`);
  }
}

/** Checks the I/O of open sessions against the layout; returns the problems found. */
function checkSessions(family: ModelFamily, latentChannels: number, s: Partial<ModelSessions>, problems: string[]): void {
  if (s.textEncoder) {
    expectInput(problems, s.textEncoder, 'input_ids', ['int32', 'int64'], 2);
    expectOutput(problems, s.textEncoder, 'last_hidden_state');
  }
  if (s.unet) {
    const sample = expectInput(problems, s.unet, 'sample', FLOAT, 4);
    expectInput(problems, s.unet, 'timestep', ['int64', 'float32', 'float16']);
    expectInput(problems, s.unet, 'encoder_hidden_states', FLOAT, 3);
    expectOutput(problems, s.unet, 'out_sample');
    const channels = sample?.shape[1];
    const want = family === 'depth2img' ? latentChannels + 1 : latentChannels;
    if (typeof channels === 'number' && channels > 0 && channels !== want) {
      problems.push(`unet: input "sample" has ${channels} channels, a ${family} UNet takes ${want}${family === 'depth2img' ? ' (latents + depth)' : ''}`);
    }
  }
  for (const vae of [s.vaeEncoder, s.vaeDecoder, s.tinyDecoder]) {
    if (!vae) continue;
    const isEncoder = vae === s.vaeEncoder;
    expectInput(problems, vae, isEncoder ? 'sample' : 'latent_sample', FLOAT, 4);
    expectOutput(problems, vae, isEncoder ? 'latent_sample' : 'sample');
  }
  if (s.controlnet) {
    expectInput(problems, s.controlnet, 'sample', FLOAT, 4);
    expectInput(problems, s.controlnet, 'timestep', ['int64', 'float32', 'float16']);
    expectInput(problems, s.controlnet, 'encoder_hidden_states', FLOAT, 3);
    expectInput(problems, s.controlnet, 'controlnet_cond', FLOAT, 4);
  }
}

/** A fingerprint of the folder: the install manifest's hash when there is one, else sizes and heads of every ONNX file. */
async function fingerprint(dir: string): Promise<string> {
  const hash = createHash('sha256');
  const manifest = join(dir, 'depthcast-manifest.json');
  if (existsSync(manifest)) {
    hash.update(await readFile(manifest));
  } else {
    for (const rel of ['model_index.json', ...Object.values(SESSION_FILES)]) {
      const path = join(dir, rel);
      if (!existsSync(path)) continue;
      const { size } = await stat(path);
      hash.update(`${rel}:${size}:`);
      const fh = await open(path, 'r');
      try {
        const head = Buffer.alloc(Math.min(size, 1 << 20));
        await fh.read(head, 0, head.length, 0);
        hash.update(head);
      } finally {
        await fh.close();
      }
    }
  }
  return hash.digest('hex').slice(0, 16);
}

/** Checks a model folder without keeping anything open (used by `models verify`). */
export async function checkModelFolder(dir: string): Promise<{ ok: boolean; problems: string[] }> {
  const problems: string[] = [];
  try {
    const model = await loadModel(dir, { device: 'cpu' });
    await model.release();
  } catch (err) {
    if (err instanceof DepthcastError && Array.isArray(err.details?.problems)) problems.push(...(err.details.problems as string[]));
    else problems.push((err as Error).message);
  }
  return { ok: problems.length === 0, problems };
}

export async function loadModel(dirInput: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const dir = resolve(dirInput);
  const problems: string[] = [];
  const config = await readFolderConfig(dir, problems);
  const fail = () =>
    new DepthcastError('BAD_MODEL', `model folder ${dir} is not usable:\n  - ${problems.join('\n  - ')}`, { problems: [...problems] });
  if (!config || problems.length) throw fail();

  let tokenizer: ClipTokenizer | undefined;
  try {
    tokenizer = await ClipTokenizer.fromFolder(join(dir, 'tokenizer'));
  } catch (err) {
    problems.push(`tokenizer: ${(err as Error).message}`);
  }

  // External-data locations must stay inside the folder. Parsing costs a read of the file, so
  // files above EXTERNAL_CHECK_MAX_BYTES are left to `models verify` (pull runs it on install).
  for (const rel of Object.values(SESSION_FILES)) {
    const path = join(dir, rel);
    if (!existsSync(path) || (await stat(path)).size > EXTERNAL_CHECK_MAX_BYTES) continue;
    const check = await checkExternalData(dir, rel);
    for (const p of check.problems) problems.push(p.message);
  }
  if (problems.length) throw fail();

  // Resolve `auto` once, on the first session, so every component runs on the same device.
  let device = options.device ?? 'auto';
  const opened: Partial<Record<ComponentName, ModelSession>> = {};
  const components: ComponentName[] = ['unet', 'text_encoder', 'vae_encoder', 'vae_decoder'];
  if (config.family === 'controlnet') components.push('controlnet');
  if (existsSync(join(dir, SESSION_FILES.vae_decoder_tiny))) components.push('vae_decoder_tiny');
  for (const component of components) {
    try {
      const session = await openSession(component, join(dir, SESSION_FILES[component]), device, options.onFallback);
      opened[component] = session;
      device = session.device;
    } catch (err) {
      if (err instanceof DepthcastError && err.code === 'UNSUPPORTED_DEVICE') {
        await Promise.all(Object.values(opened).map((s) => s.release()));
        throw err;
      }
      problems.push((err as Error).message);
    }
  }
  const sessions: Partial<ModelSessions> = {
    textEncoder: opened.text_encoder,
    unet: opened.unet,
    vaeEncoder: opened.vae_encoder,
    vaeDecoder: opened.vae_decoder,
    controlnet: opened.controlnet,
    tinyDecoder: opened.vae_decoder_tiny,
  };
  checkSessions(config.family, config.latentChannels, sessions, problems);

  let residualMap: [string, string][] = [];
  if (sessions.controlnet && sessions.unet) {
    try {
      residualMap = mapControlnetResiduals(
        sessions.controlnet.outputs.map((o) => o.name),
        sessions.unet.inputs.map((i) => i.name),
        config.depthcastConfig.controlnet?.outputs,
      );
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length) {
    await Promise.all(Object.values(opened).map((s) => s.release()));
    throw fail();
  }
  const all = sessions as ModelSessions;
  return {
    name: basename(dir),
    dir,
    family: config.family,
    dtype: all.unet.input('sample')!.type === 'float16' ? 'fp16' : 'fp32',
    device: device as Exclude<Device, 'auto'>,
    hash: await fingerprint(dir),
    tokenizer: tokenizer!,
    schedulerConfig: config.schedulerConfig,
    vaeScalingFactor: config.vaeScalingFactor,
    vaeScaleFactor: config.vaeScaleFactor,
    nativeSide: config.nativeSide,
    latentChannels: config.latentChannels,
    sessions: all,
    residualMap,
    controlnetTakesScale: !!all.controlnet?.input('conditioning_scale'),
    textCache: new Map(),
    async release() {
      await Promise.all(Object.values(opened).map((s) => s.release()));
    },
  };
}
