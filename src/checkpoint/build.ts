/**
 * Builds a depthcast model folder (the ONNX layout src/models/ loads) from a diffusers-format
 * checkpoint folder, plus a ControlNet checkpoint for ControlNet models:
 *
 *   1. read model_index.json and decide the family (depth2img, or a base + ControlNet);
 *   2. pick each component's weights (`<stem>.safetensors`, else `<stem>.fp16.safetensors`);
 *   3. build text_encoder, unet, controlnet, vae_encoder, vae_decoder from their configs,
 *      streaming weights to disk (external data above the inline limit);
 *   4. copy tokenizer, scheduler and configs; write model_index.json and depthcast-build.json
 *      (what it was built from: repo, revision, sha256 of every source file).
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { buildClipText } from './clip-text.ts';
import { buildControlnet } from './controlnet.ts';
import { Net } from './nn.ts';
import { SafetensorsFile } from './safetensors.ts';
import { buildUnet } from './unet.ts';
import { buildVaeDecoder, buildVaeEncoder, resolveVae } from './vae.ts';
import { DEFAULT_INLINE_LIMIT_BYTES, ModelFileWriter } from './weights.ts';

/** Bumped whenever the graphs the builder writes change, so cached builds are rebuilt. */
export const BUILDER_VERSION = 1;
export const BUILD_RECORD_FILE = 'depthcast-build.json';
const TOKENIZER_FILES = ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'];

export interface CheckpointSource {
  dir: string;
  /** Hub repo and revision it came from (recorded in depthcast-build.json), if any. */
  repo?: string;
  revision?: string;
  /** Read `<stem>.fp16.safetensors` where both variants are present. */
  preferFp16?: boolean;
}

export interface BuildProgress {
  component: string;
  /** float32 weight bytes written so far, of `totalBytes` for the whole build. */
  doneBytes: number;
  totalBytes: number;
}

export interface BuildOptions {
  /** Components whose float32 weights exceed this keep them as external data (default just under 2 GiB). */
  inlineLimitBytes?: number;
  onProgress?: (p: BuildProgress) => void;
}

export interface BuildRecord {
  format: 'depthcast-build';
  version: 1;
  builder: { version: string; graphs: number };
  family: 'depth2img' | 'controlnet';
  sources: { role: 'model' | 'controlnet'; repo: string | null; revision: string | null; files: Record<string, { size: number; sha256: string }> }[];
}

/** A diffusers pipeline checkpoint: model_index.json and unet/config.json, without ONNX files. */
export function isPipelineCheckpoint(dir: string): boolean {
  return existsSync(join(dir, 'model_index.json')) && existsSync(join(dir, 'unet', 'config.json')) && !existsSync(join(dir, 'unet', 'model.onnx'));
}

/**
 * `<stem>.safetensors` if present, else `<stem>.fp16.safetensors` (upcast to float32 when read);
 * `preferFp16` takes the fp16 variant first (half the download; the values move by fp16 rounding).
 */
export function weightFile(dir: string, stem: string, preferFp16 = false): string {
  const names = [`${stem}.safetensors`, `${stem}.fp16.safetensors`];
  if (preferFp16) names.reverse();
  for (const name of names) if (existsSync(join(dir, name))) return join(dir, name);
  throw new DepthcastError('BAD_MODEL', `${dir} has neither ${stem}.safetensors nor ${stem}.fp16.safetensors (sharded and .bin weights are not supported)`);
}

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new DepthcastError('BAD_MODEL', `${path} ${missing ? 'is missing' : `is not valid JSON (${(err as Error).message})`}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new DepthcastError('BAD_MODEL', `${path} must hold a JSON object`);
  return value as Record<string, unknown>;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The files of a checkpoint the build reads (configs, tokenizer, scheduler, chosen weights), relative to its folder. */
export function sourceFiles(dir: string, role: 'model' | 'controlnet', preferFp16 = false): string[] {
  if (role === 'controlnet') return ['config.json', relative(dir, weightFile(dir, 'diffusion_pytorch_model', preferFp16))];
  const files = [
    'model_index.json',
    'scheduler/scheduler_config.json',
    ...TOKENIZER_FILES.map((f) => `tokenizer/${f}`).filter((f) => existsSync(join(dir, f))),
    'text_encoder/config.json',
    relative(dir, weightFile(join(dir, 'text_encoder'), 'model', preferFp16)),
    'unet/config.json',
    relative(dir, weightFile(join(dir, 'unet'), 'diffusion_pytorch_model', preferFp16)),
    'vae/config.json',
    relative(dir, weightFile(join(dir, 'vae'), 'diffusion_pytorch_model', preferFp16)),
  ];
  return files.map((f) => f.split('\\').join('/'));
}

async function describeSource(src: CheckpointSource, role: 'model' | 'controlnet'): Promise<BuildRecord['sources'][number]> {
  const files: Record<string, { size: number; sha256: string }> = {};
  for (const rel of sourceFiles(src.dir, role, src.preferFp16)) {
    const path = join(src.dir, rel);
    const { size } = await stat(path);
    files[rel] = { size, sha256: await sha256File(path) };
  }
  return { role, repo: src.repo ?? null, revision: src.revision ?? null, files };
}

/** A key over the builder version and every source file's hash: equal keys build equal folders. */
export function buildKey(sources: BuildRecord['sources']): string {
  const hash = createHash('sha256').update(`builder:${BUILDER_VERSION}\n`);
  for (const s of sources) for (const [rel, f] of Object.entries(s.files).sort()) hash.update(`${s.role}:${rel}:${f.sha256}\n`);
  return hash.digest('hex').slice(0, 24);
}

export async function describeSources(model: CheckpointSource, controlnet?: CheckpointSource): Promise<BuildRecord['sources']> {
  const out = [await describeSource(model, 'model')];
  if (controlnet) out.push(await describeSource(controlnet, 'controlnet'));
  return out;
}

function fp32Bytes(file: SafetensorsFile, keep: (name: string) => boolean): number {
  let total = 0;
  for (const t of file.tensors.values()) if (keep(t.name)) total += t.shape.reduce((a, b) => a * b, 1) * 4;
  return total;
}

/** Builds `<out>/<component>/model.onnx` with `build`, refusing checkpoints with weights the build never read. */
async function buildComponent<T>(
  out: string,
  component: string,
  file: SafetensorsFile,
  keep: (name: string) => boolean,
  options: BuildOptions,
  progress: { done: number; total: number },
  build: (net: Net) => Promise<T>,
): Promise<T> {
  const dir = join(out, component);
  await mkdir(dir, { recursive: true });
  const writer = await ModelFileWriter.create(dir, fp32Bytes(file, keep) > (options.inlineLimitBytes ?? DEFAULT_INLINE_LIMIT_BYTES));
  const net = new Net(component, file, writer);
  net.onWeight = (_name, bytes) => {
    progress.done += bytes;
    options.onProgress?.({ component, doneBytes: progress.done, totalBytes: progress.total });
  };
  try {
    const result = await build(net);
    const unused = net.unused().filter(keep);
    if (unused.length) {
      throw new DepthcastError(
        'BAD_MODEL',
        `${component}: ${file.path} holds ${unused.length} weights its config does not account for (${unused.slice(0, 5).join(', ')}${unused.length > 5 ? ', …' : ''}); this architecture is not supported by the builder`,
      );
    }
    await writer.finish(net.g.toBytes({ producer: 'depthcast-checkpoint', version: VERSION, doc: `${component} built from ${file.path.split(/[\\/]/).slice(-2).join('/')}` }));
    return result;
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Builds the model folder `out` (created; existing files are overwritten). */
export async function buildFromCheckpoint(model: CheckpointSource, controlnet: CheckpointSource | undefined, out: string, options: BuildOptions = {}): Promise<BuildRecord> {
  // 1. Family.
  const index = await readJsonObject(join(model.dir, 'model_index.json'));
  const className = String(index._class_name ?? '');
  const depth2img = /Depth2Img/.test(className);
  if (depth2img && controlnet) throw new DepthcastError('BAD_MODEL', `${className} takes its depth as a UNet input channel; it does not use a ControlNet`);
  if (!depth2img && !controlnet) {
    throw new DepthcastError('BAD_MODEL', `${className || 'this pipeline'} is not a depth model by itself: give a depth ControlNet checkpoint with it (--controlnet)`);
  }
  const family = depth2img ? 'depth2img' : 'controlnet';
  const sources = await describeSources(model, controlnet);

  // 2. Weights and configs.
  const unetConfig = await readJsonObject(join(model.dir, 'unet', 'config.json'));
  const textConfig = await readJsonObject(join(model.dir, 'text_encoder', 'config.json'));
  const vaeConfig = await readJsonObject(join(model.dir, 'vae', 'config.json'));
  const cnConfig = controlnet ? await readJsonObject(join(controlnet.dir, 'config.json')) : undefined;
  const vaeArch = resolveVae(vaeConfig);
  const files: SafetensorsFile[] = [];
  const openFile = async (path: string) => {
    const f = await SafetensorsFile.open(path);
    files.push(f);
    return f;
  };
  try {
    const textFile = await openFile(weightFile(join(model.dir, 'text_encoder'), 'model', model.preferFp16));
    const unetFile = await openFile(weightFile(join(model.dir, 'unet'), 'diffusion_pytorch_model', model.preferFp16));
    const vaeFile = await openFile(weightFile(join(model.dir, 'vae'), 'diffusion_pytorch_model', model.preferFp16));
    const cnFile = controlnet ? await openFile(weightFile(controlnet.dir, 'diffusion_pytorch_model', controlnet.preferFp16)) : undefined;
    const all = () => true;
    const isEncoder = (n: string) => n.startsWith('encoder.') || n.startsWith('quant_conv.');
    const isDecoder = (n: string) => n.startsWith('decoder.') || n.startsWith('post_quant_conv.');
    const progress = { done: 0, total: fp32Bytes(textFile, all) + fp32Bytes(unetFile, all) + fp32Bytes(vaeFile, all) + (cnFile ? fp32Bytes(cnFile, all) : 0) };
    const vaeLeft = [...vaeFile.tensors.keys()].filter((n) => !isEncoder(n) && !isDecoder(n));
    if (vaeLeft.length) throw new DepthcastError('BAD_MODEL', `vae: weights outside the encoder and decoder (${vaeLeft.slice(0, 5).join(', ')}) are not supported by the builder`);

    // 3. Graphs.
    const text = await buildComponent(out, 'text_encoder', textFile, all, options, progress, (net) => buildClipText(net, textConfig));
    const unet = await buildComponent(out, 'unet', unetFile, all, options, progress, (net) => buildUnet(net, unetConfig, { residuals: !!controlnet }));
    if (unet.crossAttentionDim !== text.hiddenSize) {
      throw new DepthcastError('BAD_MODEL', `unet cross_attention_dim ${unet.crossAttentionDim} differs from the text encoder's hidden_size ${text.hiddenSize}`);
    }
    const wantIn = depth2img ? vaeArch.latentChannels + 1 : vaeArch.latentChannels;
    if (unet.inChannels !== wantIn) throw new DepthcastError('BAD_MODEL', `unet in_channels is ${unet.inChannels}; a ${family} UNet over ${vaeArch.latentChannels} latent channels takes ${wantIn}`);
    if (cnFile && cnConfig) await buildComponent(out, 'controlnet', cnFile, all, options, progress, (net) => buildControlnet(net, cnConfig, unet));
    await buildComponent(out, 'vae_encoder', vaeFile, isEncoder, options, progress, (net) => buildVaeEncoder(net, vaeArch));
    await buildComponent(out, 'vae_decoder', vaeFile, isDecoder, options, progress, (net) => buildVaeDecoder(net, vaeArch));
  } finally {
    await Promise.all(files.map((f) => f.close()));
  }

  // 4. Everything else the folder needs.
  await mkdir(join(out, 'tokenizer'), { recursive: true });
  for (const f of TOKENIZER_FILES) if (existsSync(join(model.dir, 'tokenizer', f))) await writeFile(join(out, 'tokenizer', f), await readFile(join(model.dir, 'tokenizer', f)));
  await mkdir(join(out, 'scheduler'), { recursive: true });
  // Copied by content: the copies must stay writable whatever the source's permissions.
  await writeFile(join(out, 'scheduler', 'scheduler_config.json'), await readFile(join(model.dir, 'scheduler', 'scheduler_config.json')));
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  await writeFile(join(out, 'text_encoder', 'config.json'), json(textConfig));
  await writeFile(join(out, 'unet', 'config.json'), json(unetConfig));
  await writeFile(join(out, 'vae_encoder', 'config.json'), json(vaeConfig));
  await writeFile(join(out, 'vae_decoder', 'config.json'), json(vaeConfig));
  if (cnConfig) await writeFile(join(out, 'controlnet', 'config.json'), json(cnConfig));
  const onnx = ['diffusers', 'OnnxRuntimeModel'];
  await writeFile(
    join(out, 'model_index.json'),
    json({
      _class_name: depth2img ? 'StableDiffusionDepth2ImgPipeline' : 'StableDiffusionControlNetPipeline',
      _diffusers_version: index._diffusers_version ?? null,
      scheduler: index.scheduler ?? ['diffusers', 'PNDMScheduler'],
      tokenizer: ['transformers', 'CLIPTokenizer'],
      text_encoder: onnx,
      unet: onnx,
      vae_encoder: onnx,
      vae_decoder: onnx,
      ...(controlnet ? { controlnet: onnx } : {}),
    }),
  );
  const record: BuildRecord = { format: 'depthcast-build', version: 1, builder: { version: VERSION, graphs: BUILDER_VERSION }, family, sources };
  await writeFile(join(out, BUILD_RECORD_FILE), json(record));
  return record;
}
