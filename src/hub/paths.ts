/**
 * Where depthcast keeps models, and the one gate every hub- or folder-supplied file name passes
 * through before it touches the disk.
 *
 * Layout of the cache folder (`$DEPTHCAST_HOME`, default `~/.cache/depthcast`):
 *
 *   <home>/models/<name>/                 installed model folders (complete or absent, never half-written)
 *   <home>/models/.tmp-<name>-<rand>/     staging folder of an install in progress (renamed into place)
 *   <home>/downloads/<owner>--<repo>@<rev>/  verified and partial downloads of one repo revision
 */
import { lstat, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve, sep } from 'node:path';
import { DepthcastError } from '../errors.ts';

export function depthcastHome(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.DEPTHCAST_HOME?.trim();
  if (fromEnv) return resolve(fromEnv);
  return join(homedir(), '.cache', 'depthcast');
}

export function modelsRoot(home: string): string {
  return join(home, 'models');
}

export function downloadsRoot(home: string): string {
  return join(home, 'downloads');
}

const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A model name is one plain folder name: letters, digits, `.`, `_`, `-`; not starting with a dot. */
export function checkModelName(name: string): string {
  if (!MODEL_NAME.test(name) || name.includes('..')) {
    throw new DepthcastError(
      'BAD_REQUEST',
      `model name ${JSON.stringify(name)} is not allowed: use letters, digits, '.', '_' and '-' (up to 128, no '..', not starting with '.')`,
    );
  }
  return name;
}

export function modelDir(home: string, name: string): string {
  return join(modelsRoot(home), checkModelName(name));
}

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

/** `owner/name` (or a legacy bare `name`) as the hub spells it; no `..`, no extra slashes. */
export function checkRepoId(repo: string): string {
  const parts = repo.split('/');
  if (parts.length > 2 || !parts.every((p) => REPO_PART.test(p) && !p.includes('..'))) {
    throw new DepthcastError('BAD_REQUEST', `${JSON.stringify(repo)} is not a hub repository id: expected "owner/name"`);
  }
  return repo;
}

/** Folder name of one repo revision under `<home>/downloads/`: `owner--name@revision`, revision URI-encoded. */
export function downloadKey(repo: string, revision: string): string {
  checkRepoId(repo);
  if (!revision || revision.length > 255) throw new DepthcastError('BAD_REQUEST', `bad revision ${JSON.stringify(revision)}`);
  const rev = encodeURIComponent(revision).replace(/^\.+/, (dots) => '%2E'.repeat(dots.length));
  return `${repo.replace('/', '--')}@${rev}`;
}

/**
 * Validates a relative, `/`-separated file name that came from outside (a hub listing, an ONNX
 * external-data entry, a manifest). Returns its segments. Refuses empty names, absolute paths,
 * drive letters, backslashes, NUL and control characters, and `.`/`..`/empty segments.
 */
export function checkRelPath(rel: string, what = 'path'): string[] {
  const unsafe = (why: string): never => {
    throw new DepthcastError('UNSAFE_PATH', `refusing ${what} ${JSON.stringify(rel)}: ${why}`, { path: rel });
  };
  if (typeof rel !== 'string' || rel.length === 0) unsafe('it is empty');
  if (rel.length > 1024) unsafe('it is longer than 1024 characters');
  if (rel.startsWith('/')) unsafe('it is an absolute path');
  if (/^[A-Za-z]:/.test(rel)) unsafe('it starts with a drive letter');
  if (rel.includes('\\')) unsafe('it contains a backslash');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(rel)) unsafe('it contains NUL or a control character');
  const segments = rel.split('/');
  for (const s of segments) {
    if (s === '' || s === '.') unsafe('it has an empty or "." segment');
    if (s === '..') unsafe('it climbs out with ".."');
    if (s.length > 255) unsafe('a segment is longer than 255 characters');
  }
  return segments;
}

/**
 * Joins a checked relative name onto `root` and makes sure nothing on disk between `root` and the
 * result is a symbolic link (so an existing link can't redirect a write or read out of the root).
 * `root` itself may sit behind links (e.g. a symlinked home folder); only what is below it is checked.
 */
export async function safeJoin(root: string, rel: string, what = 'path'): Promise<string> {
  const segments = checkRelPath(rel, what);
  const base = resolve(root);
  let cur = base;
  for (const s of segments) {
    cur = join(cur, s);
    let st;
    try {
      st = await lstat(cur);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') break;
      throw err;
    }
    if (st.isSymbolicLink()) {
      throw new DepthcastError('UNSAFE_PATH', `refusing ${what} ${JSON.stringify(rel)}: ${cur} is a symbolic link; remove it`, { path: rel });
    }
  }
  const out = join(base, ...segments);
  if (out !== base && !out.startsWith(base + sep)) {
    throw new DepthcastError('UNSAFE_PATH', `refusing ${what} ${JSON.stringify(rel)}: it resolves outside ${base}`, { path: rel });
  }
  return out;
}

/** True when `child` is `root` or lies inside it (pure string check on resolved paths). */
export function isInside(root: string, child: string): boolean {
  const r = resolve(root);
  const c = resolve(child);
  return c === r || c.startsWith(r + sep);
}

/** Whether anything exists at `p` (following links). */
export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}
