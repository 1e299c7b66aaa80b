/**
 * Talks to a Hugging Face–style hub. Listing, revision lookup and the download probe go through
 * @huggingface/hub (`listFiles`, `modelInfo`, `fileDownloadInfo`, all with a custom `hubUrl`);
 * the transfer itself is our own `fetch` with `Range`/`If-Range` against the URL the probe
 * resolved (`<hub>/<repo>/resolve/<rev>/<path>` or its redirect).
 *
 * Why not `downloadFile()` for the transfer: it returns a lazy Blob whose `slice(n).stream()` does
 * send `Range: bytes=n-…`, but it never shows us the response, so a server (or proxy) that ignores
 * the range and answers 200 with the whole file would be appended after the bytes we already have
 * and silently corrupt the resumed file; it also has no `If-Range`, so a file that changed upstream
 * between two attempts can't be detected. We need the status and `Content-Range` to resume safely.
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as fsc, createReadStream } from 'node:fs';
import { open, rename, rm, stat, writeFile, readFile } from 'node:fs/promises';
import { fileDownloadInfo, InvalidApiResponseFormatError, listFiles, modelInfo } from '@huggingface/hub';
import { DepthcastError } from '../errors.ts';
import { checkRelPath, checkRepoId } from './paths.ts';

export const DEFAULT_HUB_URL = 'https://huggingface.co';

export interface HubConfig {
  hubUrl: string;
  token?: string;
  offline: boolean;
  /** Injected in tests; defaults to the global fetch. */
  fetch?: typeof fetch;
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && /^(1|true|yes|on)$/i.test(v.trim());
}

/** Hub settings from the environment: HF_ENDPOINT, HF_TOKEN / HUGGING_FACE_HUB_TOKEN, DEPTHCAST_OFFLINE / HF_HUB_OFFLINE. */
export function hubConfigFromEnv(env: NodeJS.ProcessEnv = process.env): HubConfig {
  const token = (env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN || '').trim() || undefined;
  return {
    hubUrl: (env.HF_ENDPOINT || DEFAULT_HUB_URL).replace(/\/+$/, ''),
    token,
    offline: truthy(env.DEPTHCAST_OFFLINE) || truthy(env.HF_HUB_OFFLINE),
  };
}

export interface RemoteFile {
  /** `/`-separated path inside the repo, already checked by checkRelPath. */
  path: string;
  size: number;
  /** LFS sha256 (hex) when the file is stored in LFS/Xet. */
  sha256?: string;
  /** git blob sha1 of a regular (non-LFS) file. */
  gitOid?: string;
}

function credentials(cfg: HubConfig): { accessToken?: string } {
  if (!cfg.token) return {};
  if (!cfg.token.startsWith('hf_')) {
    throw new DepthcastError('BAD_REQUEST', 'HF_TOKEN / HUGGING_FACE_HUB_TOKEN does not look like a Hugging Face token (it must start with "hf_"); fix or unset it');
  }
  return { accessToken: cfg.token };
}

function hubFailure(err: unknown, what: string, repo: string): DepthcastError {
  if (err instanceof DepthcastError) return err;
  const status = (err as { statusCode?: number }).statusCode;
  const msg = err instanceof Error ? err.message : String(err);
  if (status === 401 || status === 403) {
    return new DepthcastError('DOWNLOAD_FAILED', `${what}: the hub refused access to ${repo} (HTTP ${status}). If the repo is gated or private, accept its terms on the hub and set HF_TOKEN.`, { status });
  }
  if (status === 404) {
    return new DepthcastError('MODEL_NOT_FOUND', `${what}: the hub has no repo ${repo} at that revision (HTTP 404). Check the id and --revision.`, { status });
  }
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const detail = cause?.code ?? cause?.message;
  return new DepthcastError(
    'DOWNLOAD_FAILED',
    `${what} for ${repo} failed: ${msg}${detail ? ` (${detail})` : ''}. Check your connection or HF_ENDPOINT; set DEPTHCAST_OFFLINE=1 to use only what is cached.`,
    status ? { status } : undefined,
  );
}

/** Resolves a branch/tag to its commit id with `modelInfo`, so every file comes from one commit. Undefined if the hub doesn't say. */
export async function resolveCommit(repo: string, revision: string, cfg: HubConfig): Promise<string | undefined> {
  checkRepoId(repo);
  if (/^[0-9a-f]{40}$/.test(revision)) return revision;
  try {
    const info = await modelInfo({ name: repo, revision, hubUrl: cfg.hubUrl, fetch: cfg.fetch, additionalFields: ['sha'], ...credentials(cfg) });
    const sha = (info as { sha?: unknown }).sha;
    return typeof sha === 'string' && /^[0-9a-f]{40}$/.test(sha) ? sha : undefined;
  } catch (err) {
    throw hubFailure(err, 'looking up the revision', repo);
  }
}

/**
 * Lists every file of a repo revision (recursive, follows pagination). Any unsafe or duplicate
 * path in the listing fails the whole listing with UNSAFE_PATH / BAD_MODEL: a hub that returns
 * such names is not trusted for the rest either.
 */
export async function listRepoFiles(repo: string, revision: string, cfg: HubConfig): Promise<RemoteFile[]> {
  checkRepoId(repo);
  const out: RemoteFile[] = [];
  const seen = new Set<string>();
  try {
    for await (const entry of listFiles({ repo, revision, recursive: true, hubUrl: cfg.hubUrl, fetch: cfg.fetch, ...credentials(cfg) })) {
      if (entry.type === 'directory') continue;
      checkRelPath(entry.path, `file name from ${repo}'s listing`);
      if (seen.has(entry.path)) throw new DepthcastError('BAD_MODEL', `the listing of ${repo} names ${entry.path} twice; refusing it`);
      seen.add(entry.path);
      const size = entry.lfs?.size ?? entry.size;
      if (!Number.isSafeInteger(size) || size < 0) throw new DepthcastError('BAD_MODEL', `the listing of ${repo} gives ${entry.path} an invalid size`);
      const f: RemoteFile = { path: entry.path, size };
      if (entry.lfs?.oid && /^[0-9a-f]{64}$/i.test(entry.lfs.oid)) f.sha256 = entry.lfs.oid.toLowerCase();
      else if (!entry.lfs && entry.oid && /^[0-9a-f]{40}$/i.test(entry.oid)) f.gitOid = entry.oid.toLowerCase();
      out.push(f);
    }
  } catch (err) {
    throw hubFailure(err, 'listing files', repo);
  }
  return out;
}

export interface DownloadParams {
  repo: string;
  /** Commit (preferred) or branch the file is fetched at. */
  revision: string;
  file: RemoteFile;
  /** Final path of the verified file (renamed into place only after the hash matched). */
  dest: string;
  /** Partial file of earlier/current attempts, default `${dest}.part`; its ETag and expected hash are kept in `${partial}.json`. */
  partial?: string;
  cfg: HubConfig;
  /** Called with the bytes of the file on disk so far (including resumed bytes). */
  onBytes?: (have: number) => void;
  signal?: AbortSignal;
}

export interface DownloadResult {
  sha256: string;
  size: number;
  /** Bytes already on disk when this attempt started (0 = fresh). */
  resumedFrom: number;
  /** Bytes transferred by this attempt. */
  transferred: number;
}

interface PartMeta {
  etag: string;
  size: number;
  sha256?: string;
  gitOid?: string;
}

function encodePath(p: string): string {
  return p.split('/').map(encodeURIComponent).join('/');
}

async function sizeOf(path: string): Promise<number> {
  try {
    const st = await stat(path);
    return st.isFile() ? st.size : -1;
  } catch {
    return -1;
  }
}

async function hashPrefix(path: string, hashes: Hash[], length: number): Promise<void> {
  if (length === 0) return;
  for await (const chunk of createReadStream(path, { start: 0, end: length - 1 })) {
    for (const h of hashes) h.update(chunk as Buffer);
  }
}

/** sha256 of a whole file (streamed). */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Downloads one file into `dest` with resume: an existing `dest.part` from an earlier attempt is
 * continued with `Range: bytes=<have>-` + `If-Range: <etag>` when its recorded ETag and expected
 * hash still match. The finished file must have the listed size and LFS sha256 (or git blob sha1
 * for small non-LFS files); otherwise the partial is deleted and HASH_MISMATCH is thrown. A cut
 * connection leaves the partial in place and throws DOWNLOAD_FAILED (run the pull again to resume).
 */
export async function downloadRepoFile(p: DownloadParams): Promise<DownloadResult> {
  const { repo, revision, file, dest, cfg } = p;
  const part = p.partial ?? `${dest}.part`;
  const metaPath = `${part}.json`;
  let info: { size: number; etag: string; url: string } | null;
  try {
    info = await fileDownloadInfo({ repo, revision, path: encodePath(file.path), hubUrl: cfg.hubUrl, fetch: cfg.fetch, ...credentials(cfg) });
  } catch (err) {
    if (err instanceof InvalidApiResponseFormatError) {
      // The 1-byte probe came back without Content-Range/ETag (a server or proxy that ignores
      // Range). Fall back to the plain resolve URL; the listing's size and hash still decide.
      info = { size: file.size, etag: '', url: `${cfg.hubUrl}/${repo}/resolve/${encodeURIComponent(revision)}/${encodePath(file.path)}` };
    } else {
      const e = hubFailure(err, `fetching ${file.path}`, repo);
      if (e.code === 'MODEL_NOT_FOUND') {
        throw new DepthcastError('NOT_FOUND', `${repo} lists ${file.path} but the hub returned 404 for it at ${revision}; the repo may be broken or changed. Try again or pick another --revision.`, { path: file.path });
      }
      throw e;
    }
  }
  if (!info) {
    throw new DepthcastError('NOT_FOUND', `${repo} lists ${file.path} but the hub has no such file at ${revision}; the repo may be broken or changed. Try again or pick another --revision.`, { path: file.path });
  }
  if (info.size !== file.size) {
    throw new DepthcastError('DOWNLOAD_FAILED', `${file.path}: the listing says ${file.size} bytes but the hub serves ${info.size}; the repo changed while pulling, run the pull again`, { path: file.path });
  }
  const etag = info.etag;

  // Decide whether the partial from an earlier attempt can be continued.
  let have = await sizeOf(part);
  if (have >= 0) {
    let meta: PartMeta | undefined;
    try {
      meta = JSON.parse(await readFile(metaPath, 'utf8')) as PartMeta;
    } catch {
      meta = undefined;
    }
    const same = meta && meta.etag === etag && meta.size === file.size && meta.sha256 === file.sha256 && meta.gitOid === file.gitOid;
    if (!same || have > file.size) have = -1;
  }
  if (have < 0) {
    await rm(part, { force: true });
    have = 0;
  }
  const meta: PartMeta = { etag, size: file.size, sha256: file.sha256, gitOid: file.gitOid };
  await writeFile(metaPath, JSON.stringify(meta));

  const sha = createHash('sha256');
  const blob = file.gitOid ? createHash('sha1').update(`blob ${file.size}\0`) : undefined;
  const hashes = blob ? [sha, blob] : [sha];
  const resumedFrom = have;
  let transferred = 0;

  if (have < file.size) {
    const headers: Record<string, string> = {};
    if (have > 0) {
      headers.Range = `bytes=${have}-`;
      if (etag) headers['If-Range'] = etag;
    }
    // Send the token only to the hub itself, never to a CDN the probe was redirected to.
    if (cfg.token && new URL(info.url).origin === new URL(cfg.hubUrl).origin) headers.Authorization = `Bearer ${cfg.token}`;
    let res: Response;
    try {
      res = await (cfg.fetch ?? fetch)(info.url, { headers, signal: p.signal });
    } catch (err) {
      throw hubFailure(err, `downloading ${file.path}`, repo);
    }
    if (res.status === 206 && have > 0) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== have || (m[3] !== '*' && Number(m[3]) !== file.size)) {
        await res.body?.cancel();
        await rm(part, { force: true });
        throw new DepthcastError('DOWNLOAD_FAILED', `${file.path}: the hub answered the resume request with an unexpected range (${res.headers.get('content-range') ?? 'none'}); the partial was discarded, run the pull again`, { path: file.path });
      }
    } else if (res.status === 200) {
      have = 0; // range ignored or file changed (If-Range): start over
    } else {
      await res.body?.cancel().catch(() => {});
      if (res.status === 404) throw new DepthcastError('NOT_FOUND', `${file.path} is missing on the hub (HTTP 404) although ${repo} lists it`, { path: file.path });
      if (res.status === 416) {
        await rm(part, { force: true });
        throw new DepthcastError('DOWNLOAD_FAILED', `${file.path}: the hub refused the resume range (HTTP 416); the partial was discarded, run the pull again`, { path: file.path });
      }
      throw hubFailure(Object.assign(new Error(`HTTP ${res.status}`), { statusCode: res.status }), `downloading ${file.path}`, repo);
    }
    if (have > 0) await hashPrefix(part, hashes, have);

    // O_NOFOLLOW: a link planted at the partial's name can't redirect the write.
    const flags = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_NOFOLLOW | (have > 0 ? fsc.O_APPEND : fsc.O_TRUNC);
    const fh = await open(part, flags, 0o644);
    try {
      if (!res.body) throw new Error('empty response body');
      p.onBytes?.(have);
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        if (have + chunk.byteLength > file.size) {
          throw new DepthcastError('DOWNLOAD_FAILED', `${file.path}: the hub sent more than the listed ${file.size} bytes; refusing it`, { path: file.path });
        }
        await fh.write(chunk);
        for (const h of hashes) h.update(chunk);
        have += chunk.byteLength;
        transferred += chunk.byteLength;
        p.onBytes?.(have);
      }
    } catch (err) {
      if (err instanceof DepthcastError) {
        await fh.close();
        await rm(part, { force: true });
        throw err;
      }
      if ((err as Error)?.name === 'AbortError') throw new DepthcastError('CANCELLED', 'the pull was cancelled; run it again to resume');
      throw new DepthcastError(
        'DOWNLOAD_FAILED',
        `the connection broke while downloading ${file.path} (${have} of ${file.size} bytes kept): ${(err as Error)?.message ?? err}. Run the pull again to resume.`,
        { path: file.path, have },
      );
    } finally {
      await fh.close().catch(() => {});
    }
    if (have !== file.size) {
      throw new DepthcastError('DOWNLOAD_FAILED', `the download of ${file.path} ended early (${have} of ${file.size} bytes kept). Run the pull again to resume.`, { path: file.path, have });
    }
  } else {
    await hashPrefix(part, hashes, have);
  }

  const digest = sha.digest('hex');
  const blobDigest = blob?.digest('hex');
  const bad = (file.sha256 && digest !== file.sha256) || (file.gitOid && blobDigest !== file.gitOid);
  if (bad) {
    await rm(part, { force: true });
    await rm(metaPath, { force: true });
    const expected = file.sha256 ? `sha256 ${file.sha256}` : `git oid ${file.gitOid}`;
    const actual = file.sha256 ? `sha256 ${digest}` : `git oid ${blobDigest}`;
    throw new DepthcastError(
      'HASH_MISMATCH',
      `${file.path} from ${repo} does not match the hub's hash (expected ${expected}, got ${actual}); the bad download was deleted. Run the pull again; if it keeps failing the hub or a proxy is serving corrupt data.`,
      { path: file.path, expected: file.sha256 ?? file.gitOid, actual: file.sha256 ? digest : blobDigest },
    );
  }
  await rename(part, dest);
  await rm(metaPath, { force: true });
  return { sha256: digest, size: file.size, resumedFrom, transferred };
}
