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
import { describeMissingOps, missingContribOps } from './contrib-ops.ts';
import { modelDefaults, type ModelDefaults } from './defaults.ts';
import { openComposedControlnet } from './compose.ts';
import { mapControlnetResiduals } from './controlnet-map.ts';
import { fixedScaleUpsamplers, latentMultipleOf } from './sizes.ts';
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
  /** Steps / guidance / scheduler when the user names none (src/models/defaults.ts). */
  defaults: ModelDefaults;
  /** Latents = VAE encoding × this (the VAE config's `scaling_factor`, 0.18215 for SD 1.5). */
  latentScalingFactor: number;
  /** Image pixels per latent cell along each side (diffusers' `vae_scale_factor`): 2^(len(block_out_channels)-1). */
  pixelsPerLatent: number;
  /**
   * Latent sides must be multiples of this (1 = any): a UNet exported with fixed-scale
   * up-samplers runs only these sizes (src/models/sizes.ts). Checked for UNet files up to
   * EXTERNAL_CHECK_MAX_BYTES (all external-data exports); larger single-file UNets are not scanned.
   */
  latentMultiple: number;
  /** Side of the model's native square generation size in pixels: unet sample_size × pixelsPerLatent (src/pipelines/sizing.ts). */
  nativeSide: number;
  latentChannels: number;
  sessions: ModelSessions;
  /** ControlNet output → UNet input. */
  residualMap: [string, string][];
  /** Whether the ControlNet applies conditioning_scale itself (else the pipeline multiplies). */
  controlnetTakesScale: boolean;
  /**
   * Set when the UNet takes `timestep_cond` (LCM distilled with a guidance embedding): its width.
   * The pipeline then feeds diffusers' guidance-scale embedding of w = guidance − 1 and runs no
   * classifier-free guidance, as diffusers does when unet.config.time_cond_proj_dim is set.
   */
  guidanceEmbeddingDim?: number;
  /**
   * ControlNet and UNet composed into one graph (src/models/compose.ts), so residuals stay in
   * onnxruntime; `sessions.unet` and `sessions.controlnet` are then released (their specs stay).
   */
  controlnetUnet?: ModelSession;
  /** Why a ControlNet model runs two sessions instead (not composable, or asked for). */
  controlnetNotComposed?: string;
  /** Prompt embeddings cache (prompt → last_hidden_state [77,D]). */
  textCache: Map<string, Float32Array>;
  release(): Promise<void>;
}

export interface LoadOptions {
  device?: Device;
  /** The latent scaling factor for a folder whose VAE config and depthcast.json do not give one (for library callers). */
  latentScalingFactor?: number;
  /** Hears about devices `auto` skipped. */
  onFallback?: (device: string, reason: string) => void;
  /** ControlNet models: one composed graph (default, when the pair composes) or two sessions. */
  controlnetGraph?: 'composed' | 'separate';
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
  latentScalingFactor: number;
  pixelsPerLatent: number;
  nativeSide: number;
  latentChannels: number;
  depthcastConfig: DepthcastModelConfig;
}

/** Reads configs and checks files; collects problems instead of stopping at the first. */
async function readFolderConfig(dir: string, problems: string[], options: LoadOptions): Promise<FolderConfig | undefined> {
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
  let depthcastConfig: DepthcastModelConfig = {};
  if (existsSync(join(dir, 'depthcast.json'))) {
    depthcastConfig = ((await readJson(join(dir, 'depthcast.json'), problems, 'depthcast.json')) ?? {}) as DepthcastModelConfig;
  }
  // The VAE config's value, else depthcast.json's (written at install from the registry), else the caller's.
  const scaling = [vaeConfig?.scaling_factor, depthcastConfig.vae?.scaling_factor, options.latentScalingFactor].find((v) => v !== undefined);
  if (typeof scaling !== 'number' || !(scaling > 0)) {
    problems.push(
      scaling === undefined
        ? 'no VAE "scaling_factor": vae_decoder/config.json must give it, or depthcast.json {"vae": {"scaling_factor": ...}} (0.18215 for SD 1.5/2.x; pull writes it from the registry entry); depthcast never guesses it'
        : `VAE "scaling_factor" must be a positive number, got ${JSON.stringify(scaling)}`,
    );
  }
  const blocks = vaeConfig?.block_out_channels;
  const pixelsPerLatent = Array.isArray(blocks) && blocks.length > 0 ? 2 ** (blocks.length - 1) : 8;
  const latentChannels = typeof vaeConfig?.latent_channels === 'number' ? vaeConfig.latent_channels : 4;

  // diffusers' pipelines generate at unet sample_size × VAE factor by default. Exports without
  // unet/config.json get their family's published size: SD 1.5 (ControlNet) 64, SD 2 depth 96.
  const unetConfig = existsSync(join(dir, 'unet/config.json')) ? await readJson(join(dir, 'unet/config.json'), problems, 'unet/config.json') : undefined;
  const sampleSize = unetConfig?.sample_size ?? (family === 'depth2img' ? 96 : 64);
  if (typeof sampleSize !== 'number' || !Number.isInteger(sampleSize) || sampleSize < 1) problems.push(`unet/config.json sample_size must be a positive integer, got ${JSON.stringify(sampleSize)}`);

  if (!family || !sched || typeof scaling !== 'number') return undefined;
  return {
    family,
    schedulerConfig: sched as SchedulerConfig,
    latentScalingFactor: scaling,
    pixelsPerLatent,
    nativeSide: nativeSide(sampleSize as number, pixelsPerLatent),
    latentChannels,
    depthcastConfig,
  };
}

const FLOAT = ['float32', 'float16'];
/** One-value inputs (conditioning_scale) may be any float width; published exports use all three. */
const ANY_FLOAT = ['float32', 'float16', 'float64'];

/** The width of a `timestep_cond` [B, dim] input, or a problem when it cannot be fed. */
function guidanceEmbeddingDim(problems: string[], s: ModelSession): number | undefined {
  const spec = expectInput(problems, s, 'timestep_cond', FLOAT, 2);
  const dim = spec?.shape[1];
  if (spec && !(typeof dim === 'number' && dim > 0)) {
    problems.push(`${s.name}: input "timestep_cond" has no fixed width (shape [${spec.shape.join(', ')}]); depthcast needs it to build the guidance embedding`);
    return undefined;
  }
  return dim as number | undefined;
}

/** A one-value float input: any float width, shape [] or one element. */
function expectScalar(problems: string[], s: ModelSession, name: string): void {
  const spec = expectInput(problems, s, name, ANY_FLOAT);
  if (spec && (spec.shape.length > 1 || (spec.shape.length === 1 && typeof spec.shape[0] === 'number' && spec.shape[0] > 1))) {
    problems.push(`${s.name}: input "${name}" has shape [${spec.shape.join(', ')}], expected a scalar ([] or [1])`);
  }
}

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
    if (s.controlnet.input('conditioning_scale')) expectScalar(problems, s.controlnet, 'conditioning_scale');
  }
  // Every other input must be one depthcast knows how to feed: refuse at load, not mid-run.
  const known = new Set(['input_ids', 'sample', 'timestep', 'encoder_hidden_states', 'latent_sample', 'controlnet_cond', 'conditioning_scale', 'timestep_cond']);
  for (const session of [s.textEncoder, s.unet, s.controlnet, s.vaeEncoder, s.vaeDecoder, s.tinyDecoder]) {
    for (const input of session?.inputs ?? []) {
      if (!known.has(input.name) && !/resid|down_block|mid_block/i.test(input.name)) problems.push(`${session!.name}: input "${input.name}" is not one depthcast knows how to feed`);
    }
  }
}

/** The `timestep_cond` width the UNet (and a ControlNet) declare; they must agree. */
function readGuidanceEmbedding(s: Partial<ModelSessions>, problems: string[]): number | undefined {
  const dims = [s.unet, s.controlnet].filter((x) => x?.input('timestep_cond')).map((x) => guidanceEmbeddingDim(problems, x!));
  if (dims.length === 2 && dims[0] !== dims[1]) problems.push(`unet and controlnet take timestep_cond of different widths (${dims[0]} vs ${dims[1]})`);
  if (dims.length === 1 && s.controlnet && !s.unet?.input('timestep_cond')) {
    problems.push('the controlnet takes timestep_cond but the unet does not: a guidance-embedding ControlNet needs a guidance-embedding UNet');
  }
  return dims[0];
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

/** Opens the composed ControlNet + UNet unless asked not to; on success the two separate sessions are released. */
async function composeControlnet(dir: string, s: ModelSessions, residualMap: [string, string][], device: Exclude<Device, 'auto'>, options: LoadOptions): Promise<Pick<LoadedModel, 'controlnetUnet' | 'controlnetNotComposed'>> {
  if (options.controlnetGraph === 'separate') return { controlnetNotComposed: 'two sessions were asked for' };
  const { session, notComposed } = await openComposedControlnet(dir, residualMap, device);
  if (!session) return { controlnetNotComposed: notComposed };
  await Promise.all([s.unet.release(), s.controlnet!.release()]);
  return { controlnetUnet: session };
}

export async function loadModel(dirInput: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const dir = resolve(dirInput);
  const problems: string[] = [];
  const config = await readFolderConfig(dir, problems, options);
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

  // Fixed-scale up-samplers restrict the sizes; found now so a request is refused before work.
  let latentMultiple = 1;
  const unetPath = join(dir, SESSION_FILES.unet);
  if ((await stat(unetPath)).size <= EXTERNAL_CHECK_MAX_BYTES) {
    try {
      latentMultiple = latentMultipleOf(fixedScaleUpsamplers(await readFile(unetPath)));
    } catch (err) {
      problems.push(`unet: ${(err as Error).message}`);
    }
  }

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
      // ORT names only the first operator it has no kernel for; name them all.
      const path = join(dir, SESSION_FILES[component]);
      const ops = /implementation for|Kernel not found/i.test((err as Error).message) && device !== 'auto' ? await missingContribOps(path, device).catch(() => []) : [];
      problems.push(ops.length ? describeMissingOps(component, device, ops) : (err as Error).message);
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
  const guidanceEmbedding = readGuidanceEmbedding(sessions, problems);

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
  const composed = all.controlnet ? await composeControlnet(dir, all, residualMap, device as Exclude<Device, 'auto'>, options) : {};
  return {
    name: basename(dir),
    dir,
    family: config.family,
    dtype: all.unet.input('sample')!.type === 'float16' ? 'fp16' : 'fp32',
    device: device as Exclude<Device, 'auto'>,
    hash: await fingerprint(dir),
    tokenizer: tokenizer!,
    schedulerConfig: config.schedulerConfig,
    defaults: modelDefaults(config.depthcastConfig, config.schedulerConfig._class_name),
    latentScalingFactor: config.latentScalingFactor,
    pixelsPerLatent: config.pixelsPerLatent,
    latentMultiple,
    nativeSide: config.nativeSide,
    latentChannels: config.latentChannels,
    sessions: all,
    residualMap,
    controlnetTakesScale: !!all.controlnet?.input('conditioning_scale'),
    ...(guidanceEmbedding ? { guidanceEmbeddingDim: guidanceEmbedding } : {}),
    ...composed,
    textCache: new Map(),
    async release() {
      await Promise.all([...Object.values(opened), composed.controlnetUnet].map((s) => s?.release()));
    },
  };
}
