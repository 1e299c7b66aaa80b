/**
 * `models pull`: downloads the files a model folder needs from a hub repo (plus, optionally, a
 * ControlNet from a second repo), verifies each against the hub's hashes, and installs the
 * folder atomically.
 *
 *   <home>/downloads/<owner>--<repo>@<rev>/listing.json   the hub listing (used again offline)
 *                                         /state.json     verified files and their sha256
 *                                         /files/<path>   verified files
 *                                         /partial/<path>.part(.json)  resumable partial downloads
 *   <home>/models/.tmp-<name>-XXXX/   staging folder, renamed to <home>/models/<name> when complete
 *
 * Only the layout's files are fetched: model_index.json, scheduler config, tokenizer files, each
 * component's model.onnx and config.json, and exactly the external-data files (weights.pb,
 * model.onnx_data, ...) that those ONNX files reference — read from the downloaded protobuf, so
 * unrelated variants in the same repo (model_fp16.onnx, *.safetensors) are never downloaded.
 *
 * A diffusers-format repo (model_index.json + unet/config.json, no ONNX) is a checkpoint: only
 * the files a build reads are fetched (configs, tokenizer, scheduler, one safetensors variant per
 * component), then src/checkpoint/ builds the ONNX layout, it is loaded once as a check, and
 * installed with the manifest. `models import` does the same from a folder on disk.
 */
import { constants as fsc } from 'node:fs';
import { copyFile, link, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { buildFromCheckpoint, type CheckpointSource, isPipelineCheckpoint } from '../checkpoint/build.ts';
import { DepthcastError } from '../errors.ts';
import { checkModelFolder } from '../models/load.ts';
import { downloadRepoFile, hubConfigFromEnv, listRepoFiles, resolveCommit, sha256File, type HubConfig, type RemoteFile } from './hub-client.ts';
import { COMPONENTS, OPTIONAL_FILES, REQUIRED_COMPONENTS, REQUIRED_FILES, controlnetIndexFrom, type Component } from './layout.ts';
import { MANIFEST_FILE, readManifest, walk, type Manifest, type SourceRecord } from './manifest.ts';
import { readExternalRefs, resolveRefPath } from './onnx-external.ts';
import { checkModelName, checkRelPath, checkRepoId, depthcastHome, downloadKey, downloadsRoot, modelDir, modelsRoot, safeJoin } from './paths.ts';
import { pidAlive } from '../util/process.ts';
import { CLI } from '../cli/command.ts';

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

interface Ctx {
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

interface Placement {
  layout: string;
  local: string;
  size: number;
  sha256: string;
}

interface Fetched {
  record: SourceRecord;
  placements: Placement[];
  downloadDir: string;
  /** A diffusers checkpoint (config.json + safetensors) to build, not an ONNX layout. */
  checkpoint: boolean;
  /** Where the repo's files (below its subfolder) lie in the download cache. */
  filesDir: string;
}

interface Listing {
  repo: string;
  revision: string;
  commit: string | null;
  files: RemoteFile[];
}

type State = Record<string, { size: number; expect: string | null; sha256: string }>;

function makeCtx(o: CommonPullOptions): Ctx {
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

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Locking: one pull per repo revision at a time (the partial files are shared).

const heldLocks = new Set<string>();

/**
 * In this process a synchronous set; across processes a lock file holding the owner's pid,
 * created complete and atomically with link() (EEXIST if someone holds it). A lock whose process
 * is gone is taken over.
 */
async function withLock<T>(lockPath: string, what: string, fn: () => Promise<T>): Promise<T> {
  const busy = (pid: number | string): DepthcastError =>
    new DepthcastError('BUSY', `another pull of ${what} is running (pid ${pid}); wait for it to finish, or delete ${lockPath} if that process is gone`);
  if (heldLocks.has(lockPath)) throw busy(process.pid);
  heldLocks.add(lockPath);
  try {
    const tmp = `${lockPath}.${process.pid}.${Math.random().toString(36).slice(2)}`;
    await writeFile(tmp, String(process.pid));
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          await link(tmp, lockPath);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
          const pid = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim());
          if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) throw busy(pid);
          await rm(lockPath, { force: true }); // stale: its process died
        }
      }
    } finally {
      await rm(tmp, { force: true });
    }
    try {
      return await fn();
    } finally {
      await rm(lockPath, { force: true });
    }
  } finally {
    heldLocks.delete(lockPath);
  }
}

// ---------------------------------------------------------------------------------------------
// Selecting the layout's files from a repo listing.

interface Pick {
  layout: string;
  repo: string;
}

function normSub(sub: string | undefined): string {
  if (!sub) return '';
  const trimmed = sub.replace(/^\/+|\/+$/g, '');
  if (!trimmed) return '';
  checkRelPath(trimmed, 'subfolder');
  return trimmed;
}

function dirOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

function joinRel(dir: string, name: string): string {
  return dir ? `${dir}/${name}` : name;
}

function layoutMismatch(repo: string, revision: string, sub: string, missing: string[], files: Map<string, RemoteFile>): DepthcastError {
  const sample = [...files.keys()].slice(0, 12).join(', ');
  return new DepthcastError(
    'BAD_MODEL',
    `${repo}@${revision}${sub ? ` (subfolder ${sub})` : ''} does not fit the depthcast model layout: missing ${missing.join(', ')}. ` +
      `It has: ${sample || 'no files'}${files.size > 12 ? ', …' : ''}. If the ONNX folders sit in a subfolder pass --subfolder; see docs/models.md for the layout.`,
    { missing },
  );
}

function planModel(files: Map<string, RemoteFile>, spec: SourceSpec, skipControlnet: boolean, sub: string): Pick[] {
  const map = spec.map ?? {};
  for (const [k, v] of Object.entries(map)) {
    checkRelPath(k, 'layout path in map');
    checkRelPath(v, 'repo path in map');
  }
  const consumed = new Set(Object.values(map));
  const src = (layout: string): string | undefined => map[layout] ?? (consumed.has(layout) ? undefined : layout);
  const picks: Pick[] = [];
  const missing: string[] = [];
  for (const f of REQUIRED_FILES) {
    const s = src(f);
    if (s && files.has(s)) picks.push({ layout: f, repo: s });
    else missing.push(s ?? f);
  }
  for (const f of OPTIONAL_FILES) {
    const s = src(f);
    if (s && files.has(s)) picks.push({ layout: f, repo: s });
  }
  for (const c of COMPONENTS as readonly Component[]) {
    if (c === 'controlnet' && skipControlnet) continue;
    const onnx = `${c}/model.onnx`;
    const s = src(onnx);
    if (!s || !files.has(s)) {
      if ((REQUIRED_COMPONENTS as readonly string[]).includes(c)) missing.push(s ?? onnx);
      continue;
    }
    picks.push({ layout: onnx, repo: s });
    const cfgLayout = `${c}/config.json`;
    const cfgSrc = map[cfgLayout] ?? joinRel(dirOf(s), 'config.json');
    if (files.has(cfgSrc)) picks.push({ layout: cfgLayout, repo: cfgSrc });
  }
  if (missing.length) throw layoutMismatch(spec.repo, spec.revision ?? 'main', sub, missing, files);
  return picks;
}

function planControlnet(files: Map<string, RemoteFile>, spec: SourceSpec, sub: string): Pick[] {
  const candidates = spec.file ? [spec.file] : ['controlnet/model.onnx', 'model.onnx'];
  for (const c of candidates) checkRelPath(c, 'ControlNet file');
  const onnx = candidates.find((c) => files.has(c));
  if (!onnx) {
    throw new DepthcastError(
      'BAD_MODEL',
      `${spec.repo}@${spec.revision ?? 'main'}${sub ? ` (subfolder ${sub})` : ''} has no ControlNet ONNX file (looked for ${candidates.join(', ')}); pass --controlnet-file with its path in the repo`,
    );
  }
  const picks: Pick[] = [{ layout: 'controlnet/model.onnx', repo: onnx }];
  const cfg = joinRel(dirOf(onnx), 'config.json');
  if (files.has(cfg)) picks.push({ layout: 'controlnet/config.json', repo: cfg });
  return picks;
}

/** A diffusers-format repo: configs and safetensors weights, and no ONNX file at all (an ONNX export missing a file is not one). */
function isCheckpointListing(files: Map<string, RemoteFile>, role: SourceRecord['role']): boolean {
  if ([...files.keys()].some((p) => p.endsWith('.onnx'))) return false;
  const dir = role === 'controlnet' ? '' : 'unet/';
  const weights = [`${dir}diffusion_pytorch_model.safetensors`, `${dir}diffusion_pytorch_model.fp16.safetensors`].some((p) => files.has(p));
  return weights && files.has(`${dir}config.json`) && (role === 'controlnet' || files.has('model_index.json'));
}

/**
 * The files a checkpoint build reads, and no others: configs, tokenizer, scheduler, and per
 * component one weight file (`.safetensors`, or its fp16 variant when preferred or alone).
 */
function planCheckpoint(files: Map<string, RemoteFile>, role: SourceRecord['role'], preferFp16: boolean, repo: string): Pick[] {
  const picks: Pick[] = [];
  const need = (path: string) => {
    if (!files.has(path)) throw new DepthcastError('BAD_MODEL', `${repo} is missing ${path}, which a diffusers checkpoint has`, { missing: [path] });
    picks.push({ layout: path, repo: path });
  };
  const weights = (dir: string, stem: string) => {
    const names = [`${stem}.safetensors`, `${stem}.fp16.safetensors`].map((n) => joinRel(dir, n));
    if (preferFp16) names.reverse();
    const found = names.find((n) => files.has(n));
    if (!found) {
      throw new DepthcastError('BAD_MODEL', `${repo} has neither ${names.join(' nor ')}; the builder reads single-file safetensors (not .bin or sharded weights)`, { missing: names });
    }
    picks.push({ layout: found, repo: found });
  };
  if (role === 'controlnet') {
    need('config.json');
    weights('', 'diffusion_pytorch_model');
    return picks;
  }
  for (const f of ['model_index.json', 'scheduler/scheduler_config.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt']) need(f);
  for (const f of ['tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json']) if (files.has(f)) picks.push({ layout: f, repo: f });
  for (const [dir, stem] of [['text_encoder', 'model'], ['unet', 'diffusion_pytorch_model'], ['vae', 'diffusion_pytorch_model']] as const) {
    need(`${dir}/config.json`);
    weights(dir, stem);
  }
  return picks;
}

// ---------------------------------------------------------------------------------------------
// Downloading one repo revision into the cache.

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function fetchSource(ctx: Ctx, spec: SourceSpec, role: SourceRecord['role'], skipControlnet: boolean): Promise<Fetched> {
  const repo = checkRepoId(spec.repo);
  const revision = spec.revision ?? 'main';
  const sub = normSub(spec.subfolder);
  const root = join(downloadsRoot(ctx.home), downloadKey(repo, revision));
  const offlineMiss = (): DepthcastError =>
    new DepthcastError(
      'OFFLINE',
      `offline mode (DEPTHCAST_OFFLINE / HF_HUB_OFFLINE) is on and ${repo}@${revision} is not in the cache (${root}). Unset it to download, or copy a model folder into ${modelsRoot(ctx.home)}.`,
    );
  if (ctx.cfg.offline && !(await exists(join(root, 'listing.json')))) throw offlineMiss();
  await mkdir(root, { recursive: true });
  return withLock(`${root}.lock`, `${repo}@${revision}`, async () => {
    const listingPath = join(root, 'listing.json');
    let listing: Listing;
    if (ctx.cfg.offline) {
      const cached = await readJson<Listing>(listingPath);
      if (!cached || cached.repo !== repo || !Array.isArray(cached.files)) throw offlineMiss();
      for (const f of cached.files) checkRelPath(f.path, `file name in ${listingPath}`);
      listing = cached;
    } else {
      const commit = (await resolveCommit(repo, revision, ctx.cfg)) ?? null;
      const files = await listRepoFiles(repo, commit ?? revision, ctx.cfg);
      listing = { repo, revision, commit, files };
      await writeFile(listingPath, JSON.stringify(listing));
    }
    ctx.emit({ type: 'resolve', repo, revision, commit: listing.commit, offline: ctx.cfg.offline });

    const files = new Map<string, RemoteFile>();
    for (const f of listing.files) {
      if (!sub) files.set(f.path, f);
      else if (f.path.startsWith(`${sub}/`)) files.set(f.path.slice(sub.length + 1), f);
    }
    const statePath = join(root, 'state.json');
    const state: State = (await readJson<State>(statePath)) ?? {};
    const fetchRev = listing.commit ?? revision;

    const isCached = async (f: RemoteFile): Promise<boolean> => {
      const s = state[f.path];
      if (!s || s.size !== f.size || s.expect !== (f.sha256 ?? f.gitOid ?? null)) return false;
      try {
        const st = await stat(await safeJoin(join(root, 'files'), f.path, 'cached file'));
        return st.isFile() && st.size === f.size;
      } catch {
        return false;
      }
    };

    const placed = new Map<string, { repo: string; placement: Placement }>();

    const fetchAll = async (picks: Pick[]): Promise<void> => {
      const todo = picks.map((p) => ({ pick: p, file: files.get(p.repo)! }));
      const planFiles: { path: string; size: number; cached: boolean }[] = [];
      for (const { file } of todo) planFiles.push({ path: file.path, size: file.size, cached: await isCached(file) });
      if (ctx.cfg.offline) {
        const missing = planFiles.filter((f) => !f.cached).map((f) => f.path);
        if (missing.length) {
          throw new DepthcastError('OFFLINE', `offline mode (DEPTHCAST_OFFLINE / HF_HUB_OFFLINE) is on and ${repo}@${revision} is only partly cached: missing ${missing.join(', ')}. Unset it to finish the download.`, { missing });
        }
      }
      ctx.emit({
        type: 'plan',
        repo,
        files: planFiles,
        totalBytes: planFiles.reduce((a, f) => a + f.size, 0),
        cachedBytes: planFiles.filter((f) => f.cached).reduce((a, f) => a + f.size, 0),
      });
      for (const { pick, file } of todo) {
        const dest = await safeJoin(join(root, 'files'), file.path, 'download path');
        if (await isCached(file)) {
          ctx.emit({ type: 'file-done', repo, path: file.path, size: file.size, cached: true, resumedFrom: 0, transferred: 0 });
        } else {
          const partial = await safeJoin(join(root, 'partial'), `${file.path}.part`, 'download path');
          await mkdir(dirname(dest), { recursive: true });
          await mkdir(dirname(partial), { recursive: true });
          ctx.emit({ type: 'file-start', repo, path: file.path, size: file.size });
          for (let attempt = 0; ; attempt++) {
            try {
              const r = await downloadRepoFile({
                repo,
                revision: fetchRev,
                file,
                dest,
                partial,
                cfg: ctx.cfg,
                signal: ctx.signal,
                onBytes: (have) => ctx.emit({ type: 'bytes', repo, path: file.path, have, size: file.size }),
              });
              ctx.transferred += r.transferred;
              if (r.resumedFrom > 0) ctx.resumed = true;
              state[file.path] = { size: file.size, expect: file.sha256 ?? file.gitOid ?? null, sha256: r.sha256 };
              await writeFile(statePath, JSON.stringify(state));
              ctx.emit({ type: 'file-done', repo, path: file.path, size: file.size, cached: false, resumedFrom: r.resumedFrom, transferred: r.transferred });
              break;
            } catch (err) {
              const e = err as DepthcastError;
              if (e?.code !== 'DOWNLOAD_FAILED' || attempt >= ctx.retries || ctx.signal?.aborted) throw err;
              ctx.emit({ type: 'retry', repo, path: file.path, attempt: attempt + 1, message: e.message });
              await sleep(ctx.retryDelayMs * (attempt + 1));
            }
          }
        }
        const prev = placed.get(pick.layout);
        if (prev && prev.repo !== pick.repo) {
          throw new DepthcastError('BAD_MODEL', `${repo}: both ${prev.repo} and ${pick.repo} would be installed as ${pick.layout}; refusing the repo`);
        }
        placed.set(pick.layout, { repo: pick.repo, placement: { layout: pick.layout, local: dest, size: file.size, sha256: state[file.path]!.sha256 } });
      }
    };

    const checkpoint = isCheckpointListing(files, role);
    const picks = checkpoint
      ? planCheckpoint(files, role, ctx.preferFp16, `${repo}@${revision}`)
      : role === 'controlnet'
        ? planControlnet(files, spec, sub)
        : planModel(files, spec, skipControlnet, sub);
    await fetchAll(picks);

    // External data: exactly the files the downloaded ONNX models reference.
    const extra: Pick[] = [];
    for (const p of picks.filter((x) => x.layout.endsWith('.onnx'))) {
      const local = placed.get(p.layout)!.placement.local;
      const refs = await readExternalRefs(local, `${repo}: ${p.repo}`);
      for (const r of refs) {
        const repoRef = resolveRefPath(p.repo, r.location);
        const layoutRef = resolveRefPath(p.layout, r.location);
        if (role === 'controlnet' && !layoutRef.startsWith('controlnet/')) {
          throw new DepthcastError('UNSAFE_PATH', `${repo}: ${p.repo} keeps external data at ${JSON.stringify(r.location)}, outside its own folder; a ControlNet's external data must sit beside its ONNX file`, { path: r.location });
        }
        if (!files.has(repoRef)) {
          throw new DepthcastError('BAD_MODEL', `${repo}@${revision}: ${p.repo} needs the external-data file ${repoRef}, which the repo does not have; the export is incomplete`, { path: repoRef });
        }
        if (!extra.some((e) => e.layout === layoutRef) && !placed.has(layoutRef)) extra.push({ layout: layoutRef, repo: repoRef });
        else if (placed.has(layoutRef) && placed.get(layoutRef)!.repo !== repoRef) {
          throw new DepthcastError('BAD_MODEL', `${repo}: external data ${r.location} of ${p.repo} would overwrite ${layoutRef}; refusing the repo`);
        }
      }
    }
    if (extra.length) await fetchAll(extra);

    return {
      record: { role, repo, revision, commit: listing.commit, subfolder: sub || null },
      placements: [...placed.values()].map((v) => v.placement),
      downloadDir: root,
      checkpoint,
      filesDir: sub ? join(root, 'files', ...sub.split('/')) : join(root, 'files'),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Installing: stage beside the target, then rename.

async function linkOrCopy(src: string, dest: string): Promise<void> {
  try {
    await link(src, dest);
  } catch {
    await copyFile(src, dest, fsc.COPYFILE_FICLONE);
  }
}

interface Written {
  layout: string;
  content: string;
}

async function install(
  ctx: Ctx,
  name: string,
  placements: Placement[],
  written: Written[],
  sources: SourceRecord[],
  registry: string | null,
  force: boolean,
): Promise<string> {
  const root = modelsRoot(ctx.home);
  await mkdir(root, { recursive: true });
  const target = modelDir(ctx.home, name);
  const staging = await mkdtemp(join(root, `.tmp-${name}-`));
  try {
    const files: Manifest['files'] = {};
    for (const p of placements) {
      const dest = await safeJoin(staging, p.layout, 'model file');
      await mkdir(dirname(dest), { recursive: true });
      await linkOrCopy(p.local, dest);
      files[p.layout] = { size: p.size, sha256: p.sha256 };
    }
    for (const w of written) {
      const dest = await safeJoin(staging, w.layout, 'model file');
      await mkdir(dirname(dest), { recursive: true });
      await rm(dest, { force: true }); // never write through a hard link into the cache or another model
      await writeFile(dest, w.content);
      files[w.layout] = { size: Buffer.byteLength(w.content), sha256: createHash('sha256').update(w.content).digest('hex') };
    }
    const manifest: Manifest = {
      format: 'depthcast-manifest',
      version: 1,
      name,
      installed_at: new Date().toISOString(),
      registry,
      sources,
      files: Object.fromEntries(Object.entries(files).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    };
    await writeFile(join(staging, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
    ctx.emit({ type: 'install', name, dir: target });
    if (await exists(target)) {
      if (!force) throw new DepthcastError('BAD_REQUEST', `a model named ${name} appeared while pulling; pass --force to replace it`);
      const old = await mkdtemp(join(root, `.old-${name}-`));
      await rename(target, join(old, 'model'));
      await rename(staging, target);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(staging, target);
    }
    return target;
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
}

function modelIndexRewrite(placements: Placement[]): Promise<Written> {
  const p = placements.find((x) => x.layout === 'model_index.json');
  if (!p) throw new DepthcastError('BAD_MODEL', 'the base model has no model_index.json');
  return readFile(p.local, 'utf8').then((text) => {
    let index: unknown;
    try {
      index = JSON.parse(text);
    } catch {
      throw new DepthcastError('BAD_MODEL', "the base model's model_index.json is not valid JSON");
    }
    return { layout: 'model_index.json', content: `${JSON.stringify(controlnetIndexFrom(index), null, 2)}\n` };
  });
}

function depthcastJsonWritten(o: CommonPullOptions): Written[] {
  return o.depthcastJson ? [{ layout: 'depthcast.json', content: `${JSON.stringify(o.depthcastJson, null, 2)}\n` }] : [];
}

function alreadyInstalled(name: string, dir: string): PullResult {
  return { name, dir, installed: false, sources: [], files: 0, bytes: 0, transferred: 0, resumed: false };
}

function result(ctx: Ctx, name: string, dir: string, sources: SourceRecord[], placements: Placement[], written: Written[]): PullResult {
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
  const ctx = makeCtx(o);
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
  const ctx = makeCtx(o);
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

// ---------------------------------------------------------------------------------------------
// Diffusers checkpoints: build the ONNX layout, verify it, install it.

/** Builds `model` (+ `controlnet`) in a work folder beside the models, checks it loads, and installs it. */
async function buildAndInstall(
  ctx: Ctx,
  name: string,
  model: CheckpointSource,
  controlnet: CheckpointSource | undefined,
  sources: SourceRecord[],
  written: Written[],
  registry: string | null,
  force: boolean,
): Promise<{ dir: string; placements: Placement[] }> {
  const root = modelsRoot(ctx.home);
  await mkdir(root, { recursive: true });
  const work = await mkdtemp(join(root, `.build-${name}-`));
  try {
    await buildFromCheckpoint(model, controlnet, work, {
      ...ctx.build,
      onProgress: (p) => ctx.emit({ type: 'build', component: p.component, doneBytes: p.doneBytes, totalBytes: p.totalBytes }),
    });
    const check = await checkModelFolder(work);
    if (!check.ok) throw new DepthcastError('BAD_MODEL', `the built model does not load:\n  - ${check.problems.join('\n  - ')}`, { problems: check.problems });
    const placements: Placement[] = [];
    for (const e of await walk(work)) {
      if (e.kind !== 'file') continue;
      const local = join(work, ...e.rel.split('/'));
      placements.push({ layout: e.rel, local, size: e.size, sha256: await sha256File(local) });
    }
    const dir = await install(ctx, name, placements, written, sources, registry, force);
    return { dir, placements };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function pullCheckpoint(ctx: Ctx, o: PullOptions, name: string, base: Fetched): Promise<PullResult> {
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
  const ctx = makeCtx(o);
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
