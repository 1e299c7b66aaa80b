/**
 * Builds of checkpoints kept for reuse (conformance runs build the same checkpoints again and
 * again): one folder per build key (the builder's own source files + sha256 of every checkpoint
 * file), written to a temporary folder first and renamed into place, so a half-written build or
 * one made by other builder code is never reused.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BuildOptions, buildFromCheckpoint, buildKey, BUILD_RECORD_FILE, type CheckpointSource, describeSources } from './build.ts';

/** DEPTHCAST_BUILD_CACHE, else depthcast-builds/ in the system temp folder. */
export function buildCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.DEPTHCAST_BUILD_CACHE || join(tmpdir(), 'depthcast-builds');
}

let builderHash: Promise<string> | undefined;

/** A hash of this folder's module files: any change to the builder makes new cache keys. */
function builderSourceHash(): Promise<string> {
  builderHash ??= (async () => {
    const dir = new URL('.', import.meta.url);
    const hash = createHash('sha256');
    for (const name of (await readdir(dir)).sort()) {
      if (/\.(ts|js|mjs)$/.test(name)) hash.update(name).update(await readFile(new URL(name, dir)));
    }
    return hash.digest('hex').slice(0, 12);
  })();
  return builderHash;
}

export async function cachedBuild(model: CheckpointSource, controlnet: CheckpointSource | undefined, options: BuildOptions & { root?: string } = {}): Promise<{ dir: string; built: boolean }> {
  const root = options.root ?? buildCacheRoot();
  const key = `${buildKey(await describeSources(model, controlnet))}-${await builderSourceHash()}`;
  const dir = join(root, key);
  if (existsSync(join(dir, BUILD_RECORD_FILE))) return { dir, built: false };
  await mkdir(root, { recursive: true });
  const partial = join(root, `${key}.partial-${process.pid}`);
  await rm(partial, { recursive: true, force: true });
  try {
    await buildFromCheckpoint(model, controlnet, partial, options);
    await rm(dir, { recursive: true, force: true });
    await rename(partial, dir);
  } catch (err) {
    await rm(partial, { recursive: true, force: true });
    throw err;
  }
  return { dir, built: true };
}
