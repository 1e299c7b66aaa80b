/**
 * Transfer: downloads the planned files of one repo revision into the cache, verifying each against
 * the hub's hashes, resuming partial files and retrying broken connections.
 *
 *   <home>/downloads/<owner>--<repo>@<rev>/listing.json   the hub listing (used again offline)
 *                                         /state.json     verified files and their sha256
 *                                         /files/<path>   verified files
 *                                         /partial/<path>.part(.json)  resumable partial downloads
 *
 * The external-data files (weights.pb, model.onnx_data, ...) are exactly those the downloaded ONNX
 * files reference, read from their protobuf.
 */
import { link, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { pidAlive } from '../util/process.ts';
import { downloadRepoFile, listRepoFiles, resolveCommit, type RemoteFile } from './hub-client.ts';
import type { SourceRecord } from './manifest.ts';
import { readExternalRefs, resolveRefPath } from './onnx-external.ts';
import { checkRelPath, checkRepoId, downloadKey, downloadsRoot, exists, modelsRoot, safeJoin } from './paths.ts';
import { isCheckpointListing, normSub, planCheckpoint, planControlnet, planModel, type PlannedFile } from './pull-plan.ts';
import type { PullContext, SourceSpec } from './pull.ts';

/** A verified file in the cache, to be placed at `layout` in a model folder. */
export interface Placement {
  layout: string;
  local: string;
  size: number;
  sha256: string;
}

export interface Fetched {
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

/** Plans and fetches one repo revision (the base model, or a ControlNet) into the download cache. */
export async function fetchSource(ctx: PullContext, spec: SourceSpec, role: SourceRecord['role'], skipControlnet: boolean): Promise<Fetched> {
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

    const fetchAll = async (picks: PlannedFile[]): Promise<void> => {
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
    const extra: PlannedFile[] = [];
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
