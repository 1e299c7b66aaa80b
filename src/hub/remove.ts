/** `models remove`: deletes an installed model folder (moved aside first, so it vanishes at once). */
import { lstat, mkdtemp, rename, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { readManifest, walk } from './manifest.ts';
import { checkModelName, downloadKey, downloadsRoot, modelDir, modelsRoot } from './paths.ts';
import { CLI } from '../cli/command.ts';

export interface RemoveOptions {
  home: string;
  /** Also delete cached downloads of the model's source repos. */
  cache?: boolean;
}

export interface RemoveResult {
  name: string;
  dir: string;
  bytes: number;
  cacheRemoved: string[];
}

export async function removeModel(name: string, o: RemoveOptions): Promise<RemoveResult> {
  checkModelName(name);
  const dir = modelDir(o.home, name);
  let st;
  try {
    st = await lstat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new DepthcastError('MODEL_NOT_FOUND', `no installed model named ${name} (looked in ${dir}); see ${CLI} models list`);
    }
    throw err;
  }
  const res: RemoveResult = { name, dir, bytes: 0, cacheRemoved: [] };
  if (st.isSymbolicLink()) {
    await unlink(dir); // the link only, never what it points to
    return res;
  }
  if (!st.isDirectory()) throw new DepthcastError('BAD_REQUEST', `${dir} is not a model folder; remove it by hand`);
  let sources: { repo: string; revision: string }[] = [];
  try {
    sources = (await readManifest(dir))?.sources ?? [];
  } catch {
    sources = [];
  }
  for (const e of await walk(dir)) if (e.kind === 'file') res.bytes += e.size;
  const trash = await mkdtemp(join(modelsRoot(o.home), `.rm-${name}-`));
  await rename(dir, join(trash, 'model'));
  await rm(trash, { recursive: true, force: true });
  if (o.cache) {
    for (const s of sources) {
      const d = join(downloadsRoot(o.home), downloadKey(s.repo, s.revision));
      try {
        await lstat(d);
        await rm(d, { recursive: true, force: true });
        res.cacheRemoved.push(d);
      } catch {
        /* not cached */
      }
    }
  }
  return res;
}
