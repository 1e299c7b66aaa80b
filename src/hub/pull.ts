/**
 * `models pull`: downloads the files a model folder needs from a hub repo (plus, optionally, a
 * ControlNet from a second repo), verifies each against the hub's hashes, and installs the
 * folder atomically. Three steps, one file each: plan (pull-plan.ts: which files the layout
 * needs), transfer (pull-transfer.ts: the download cache, resume, retry, locking) and install
 * (pull-install.ts: staging, manifest, rename into place).
 *
 * A diffusers-format repo (model_index.json + unet/config.json, no ONNX) is a checkpoint: only
 * the files a build reads are fetched (configs, tokenizer, scheduler, one safetensors variant per
 * component), then src/checkpoint/ builds the ONNX layout, it is loaded once as a check, and
 * installed with the manifest. `models import` does the same from a folder on disk.
 */
import { rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { type CheckpointSource, isPipelineCheckpoint } from '../checkpoint/build.ts';
import { DepthcastError } from '../errors.ts';
import { CLI } from '../cli/command.ts';
import { hubConfigFromEnv, sha256File, type HubConfig } from './hub-client.ts';
import { MANIFEST_FILE, readManifest, walk, type SourceRecord } from './manifest.ts';
import { checkModelName, depthcastHome, exists, modelDir, modelsRoot } from './paths.ts';
import { buildAndInstall, depthcastJsonWritten, install, modelIndexRewrite, type Written } from './pull-install.ts';
import { fetchSource, type Fetched, type Placement } from './pull-transfer.ts';

export interface SourceSpec {
  /** `owner/name` on the hub. */
  repo: string;
  /** Branch, tag or commit; default `main`. */
  revision?: string;
  /** Folder inside the repo that holds the layout (or the ControlNet file). */
  subfolder?: string;
  /** Layout path ← repo path overrides, e.g. `{"unet/model.onnx": "controlnet/model.onnx"}`. A repo path used here is not also installed under its own name. */
  map?: Record<string, string>;
  /** ControlNet repos: the ONNX file (default: `controlnet/model.onnx`, else `model.onnx`). */
  file?: string;
}

export type PullEvent =
  | { type: 'resolve'; repo: string; revision: string; commit: string | null; offline: boolean }
  | { type: 'plan'; repo: string; files: { path: string; size: number; cached: boolean }[]; totalBytes: number; cachedBytes: number }
  | { type: 'file-start'; repo: string; path: string; size: number }
  | { type: 'bytes'; repo: string; path: string; have: number; size: number }
  | { type: 'file-done'; repo: string; path: string; size: number; cached: boolean; resumedFrom: number; transferred: number }
  | { type: 'retry'; repo: string; path: string; attempt: number; message: string }
  | { type: 'build'; component: string; doneBytes: number; totalBytes: number }
  | { type: 'install'; name: string; dir: string }
  | { type: 'done'; name: string; dir: string };

export interface CommonPullOptions {
  /** Name of the installed folder under `<home>/models/`. */
  name: string;
  home?: string;
  env?: NodeJS.ProcessEnv;
  /** Overrides of the environment's hub settings (hubUrl, token, offline, fetch). */
  hub?: Partial<HubConfig>;
  /** Replace an installed model of the same name. */
  force?: boolean;
  /** Automatic resumed retries after a broken connection (default 3). */
  retries?: number;
  retryDelayMs?: number;
  /** Keep `<home>/downloads/<repo>@<rev>` after installing (default: delete it; the model folder holds the files). */
  keepDownloads?: boolean;
  /** Registry entry name, recorded in the manifest. */
  registry?: string | null;
  /** Written as the model's depthcast.json (e.g. the ControlNet residual name mapping). */
  depthcastJson?: Record<string, unknown>;
  onProgress?: (e: PullEvent) => void;
  signal?: AbortSignal;
  /** Diffusers checkpoints: fetch and build from `*.fp16.safetensors` where a repo has both variants. */
  preferFp16?: boolean;
  /** Diffusers checkpoints: builder options (the external-data limit). */
  build?: { inlineLimitBytes?: number };
}

export interface PullOptions extends CommonPullOptions {
  source: SourceSpec;
  /** Assemble a ControlNet model: the base from `source`, `controlnet/` from this repo. */
  controlnet?: SourceSpec;
}

export interface PullResult {
  name: string;
  dir: string;
  /** False when a model of that name was already installed (nothing was done). */
  installed: boolean;
  sources: SourceRecord[];
  files: number;
  bytes: number;
  /** Bytes transferred over the network by this pull. */
  transferred: number;
  /** Whether any file continued a partial download. */
  resumed: boolean;
}

/** One pull's settings and running totals, shared by its steps. */
export interface PullContext {
  home: string;
  cfg: HubConfig;
  retries: number;
  retryDelayMs: number;
  emit: (e: PullEvent) => void;
  signal?: AbortSignal;
  transferred: number;
  resumed: boolean;
  preferFp16: boolean;
  build: { inlineLimitBytes?: number };
}

function makeContext(o: CommonPullOptions): PullContext {
  const env = o.env ?? process.env;
  const cfg = { ...hubConfigFromEnv(env), ...o.hub };
  return {
    home: o.home ?? depthcastHome(env),
    cfg,
    retries: o.retries ?? 3,
    retryDelayMs: o.retryDelayMs ?? 1000,
    emit: o.onProgress ?? (() => {}),
    signal: o.signal,
    transferred: 0,
    resumed: false,
    preferFp16: o.preferFp16 ?? false,
    build: o.build ?? {},
  };
}

function alreadyInstalled(name: string, dir: string): PullResult {
  return { name, dir, installed: false, sources: [], files: 0, bytes: 0, transferred: 0, resumed: false };
}

function result(ctx: PullContext, name: string, dir: string, sources: SourceRecord[], placements: Placement[], written: Written[]): PullResult {
  const merged = new Map<string, number>();
  for (const p of placements) merged.set(p.layout, p.size);
  for (const w of written) merged.set(w.layout, Buffer.byteLength(w.content));
  return {
    name,
    dir,
    installed: true,
    sources,
    files: merged.size,
    bytes: [...merged.values()].reduce((a, b) => a + b, 0),
    transferred: ctx.transferred,
    resumed: ctx.resumed,
  };
}

/**
 * Pulls a model (or a base + ControlNet pair) and installs it as `<home>/models/<name>`.
 * If that folder already exists and `force` is not set, nothing is downloaded (works offline).
 */
export async function pullModel(o: PullOptions): Promise<PullResult> {
  const name = checkModelName(o.name);
  const ctx = makeContext(o);
  const target = modelDir(ctx.home, name);
  if (!o.force && (await exists(target))) return alreadyInstalled(name, target);

  const base = await fetchSource(ctx, o.source, o.controlnet ? 'base' : 'model', Boolean(o.controlnet));
  if (base.checkpoint) return pullCheckpoint(ctx, o, name, base);
  const fetched = [base];
  const written: Written[] = [];
  if (o.controlnet) {
    fetched.push(await fetchSource(ctx, o.controlnet, 'controlnet', false));
    written.push(await modelIndexRewrite(base.placements));
  }
  written.push(...depthcastJsonWritten(o));
  const placements = fetched.flatMap((f) => f.placements).filter((p) => !written.some((w) => w.layout === p.layout));
  const sources = fetched.map((f) => f.record);
  const dir = await install(ctx, name, placements, written, sources, o.registry ?? null, Boolean(o.force));
  if (!o.keepDownloads) for (const f of fetched) await rm(f.downloadDir, { recursive: true, force: true });
  ctx.emit({ type: 'done', name, dir });
  return result(ctx, name, dir, sources, placements, written);
}

export interface AssembleOptions extends CommonPullOptions {
  /** Name of an installed model to copy (hard links where the file system allows). */
  base: string;
  controlnet: SourceSpec;
}

/**
 * Builds a ControlNet model from an installed base model plus a ControlNet repo: a copy of the
 * base (without its own controlnet/) with the repo's ControlNet ONNX in `controlnet/` and
 * model_index.json switched to StableDiffusionControlNetPipeline. The base's unet must take the
 * `down_block_additional_residual_*` / `mid_block_additional_residual` inputs; `verify` checks that.
 */
export async function assembleControlnet(o: AssembleOptions): Promise<PullResult> {
  const name = checkModelName(o.name);
  const ctx = makeContext(o);
  const baseDir = modelDir(ctx.home, checkModelName(o.base));
  if (!(await exists(baseDir))) {
    throw new DepthcastError('MODEL_NOT_FOUND', `no installed model named ${o.base} (looked in ${baseDir}); pull it first with ${CLI} models pull`);
  }
  if (baseDir === modelDir(ctx.home, name)) throw new DepthcastError('BAD_REQUEST', 'the assembled model needs a name other than its base');
  const target = modelDir(ctx.home, name);
  if (!o.force && (await exists(target))) return alreadyInstalled(name, target);

  const manifest = await readManifest(baseDir);
  const basePlacements: Placement[] = [];
  for (const e of await walk(baseDir)) {
    if (e.kind === 'link' || e.kind === 'other') {
      throw new DepthcastError('UNSAFE_PATH', `the base model ${o.base} contains ${e.rel}, which is ${e.kind === 'link' ? 'a symbolic link' : 'not a regular file'}; replace it with a real file`, { path: e.rel });
    }
    if (e.kind !== 'file' || e.rel === MANIFEST_FILE || e.rel.startsWith('controlnet/')) continue;
    const local = join(baseDir, ...e.rel.split('/'));
    const known = manifest?.files[e.rel];
    const sha256 = known && known.size === e.size ? known.sha256 : await sha256File(local);
    basePlacements.push({ layout: e.rel, local, size: e.size, sha256 });
  }
  const cn = await fetchSource(ctx, o.controlnet, 'controlnet', false);
  const written = [await modelIndexRewrite(basePlacements), ...depthcastJsonWritten(o)];
  const placements = [...basePlacements, ...cn.placements].filter((p) => !written.some((w) => w.layout === p.layout));
  const sources: SourceRecord[] = [
    ...(manifest?.sources ?? []).map((s) => ({ ...s, role: 'base' as const })),
    cn.record,
  ];
  const dir = await install(ctx, name, placements, written, sources, o.registry ?? null, Boolean(o.force));
  if (!o.keepDownloads) await rm(cn.downloadDir, { recursive: true, force: true });
  ctx.emit({ type: 'done', name, dir });
  return result(ctx, name, dir, sources, placements, written);
}

async function pullCheckpoint(ctx: PullContext, o: PullOptions, name: string, base: Fetched): Promise<PullResult> {
  const cn = o.controlnet ? await fetchSource(ctx, o.controlnet, 'controlnet', false) : undefined;
  if (cn && !cn.checkpoint) {
    throw new DepthcastError('BAD_MODEL', `${o.source.repo} is a diffusers checkpoint, so its ControlNet must be one too (config.json + diffusion_pytorch_model.safetensors); ${o.controlnet!.repo} is not`);
  }
  const source = (f: Fetched): CheckpointSource => ({ dir: f.filesDir, repo: f.record.repo, revision: f.record.commit ?? f.record.revision, preferFp16: ctx.preferFp16 });
  const sources = [base.record, ...(cn ? [cn.record] : [])];
  const written = depthcastJsonWritten(o);
  const { dir, placements } = await buildAndInstall(ctx, name, source(base), cn && source(cn), sources, written, o.registry ?? null, Boolean(o.force));
  if (!o.keepDownloads) for (const f of [base, ...(cn ? [cn] : [])]) await rm(f.downloadDir, { recursive: true, force: true });
  ctx.emit({ type: 'done', name, dir });
  return result(ctx, name, dir, sources, placements, written);
}

export interface ImportOptions extends CommonPullOptions {
  /** A diffusers pipeline checkpoint folder on disk. */
  dir: string;
  /** A ControlNetModel checkpoint folder, for a ControlNet model. */
  controlnet?: string;
}

/** `models import`: builds a local diffusers checkpoint (+ ControlNet) and installs it like a pulled model. */
export async function importCheckpoint(o: ImportOptions): Promise<PullResult> {
  const name = checkModelName(o.name);
  const ctx = makeContext(o);
  const target = modelDir(ctx.home, name);
  if (!o.force && (await exists(target))) return alreadyInstalled(name, target);
  if (!isPipelineCheckpoint(o.dir)) {
    throw new DepthcastError('BAD_MODEL', `${o.dir} is not a diffusers pipeline checkpoint (model_index.json and unet/config.json with safetensors weights); for ONNX folders copy them into ${modelsRoot(ctx.home)}`);
  }
  if (o.controlnet && !(await exists(join(o.controlnet, 'config.json')))) {
    throw new DepthcastError('BAD_MODEL', `${o.controlnet} is not a ControlNet checkpoint folder (it has no config.json)`);
  }
  const local = (dir: string, role: SourceRecord['role']): SourceRecord => ({ role, repo: `local/${basename(dir) || 'checkpoint'}`, revision: 'local', commit: null, subfolder: null });
  const sources = [local(o.dir, o.controlnet ? 'base' : 'model'), ...(o.controlnet ? [local(o.controlnet, 'controlnet')] : [])];
  const written = depthcastJsonWritten(o);
  const { dir, placements } = await buildAndInstall(
    ctx, name, { dir: o.dir, preferFp16: ctx.preferFp16 }, o.controlnet ? { dir: o.controlnet, preferFp16: ctx.preferFp16 } : undefined, sources, written, o.registry ?? null, Boolean(o.force),
  );
  ctx.emit({ type: 'done', name, dir });
  return result(ctx, name, dir, sources, placements, written);
}
