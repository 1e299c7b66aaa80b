/**
 * Builds of checkpoints kept for reuse (conformance runs build the same checkpoints again and
 * again): one folder per build key (builder version + sha256 of every source file), written to a
 * temporary folder first and renamed into place, so a half-written build is never reused.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BuildOptions, buildFromCheckpoint, buildKey, BUILD_RECORD_FILE, type CheckpointSource, describeSources } from './build.ts';

/** DEPTHCAST_BUILD_CACHE, else depthcast-builds/ in the system temp folder. */
export function buildCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.DEPTHCAST_BUILD_CACHE || join(tmpdir(), 'depthcast-builds');
}

export async function cachedBuild(model: CheckpointSource, controlnet: CheckpointSource | undefined, options: BuildOptions & { root?: string } = {}): Promise<{ dir: string; built: boolean }> {
  const root = options.root ?? buildCacheRoot();
  const key = buildKey(await describeSources(model, controlnet));
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
