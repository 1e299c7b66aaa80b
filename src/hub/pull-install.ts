/**
 * Install: a model folder is staged beside its target (<home>/models/.tmp-<name>-XXXX), written
 * with its manifest, then renamed into place, so it is complete or absent. Cached files are hard
 * linked where the file system allows. Diffusers checkpoints are built into a work folder first,
 * checked to load, and installed the same way.
 */
import { constants as fsc } from 'node:fs';
import { copyFile, link, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { buildFromCheckpoint, type CheckpointSource } from '../checkpoint/build.ts';
import { DepthcastError } from '../errors.ts';
import { checkModelFolder } from '../models/load.ts';
import { sha256File } from './hub-client.ts';
import { controlnetIndexFrom } from './layout.ts';
import { MANIFEST_FILE, walk, type Manifest, type SourceRecord } from './manifest.ts';
import { exists, modelDir, modelsRoot, safeJoin } from './paths.ts';
import type { CommonPullOptions, PullContext } from './pull.ts';
import type { Placement } from './pull-transfer.ts';

async function linkOrCopy(src: string, dest: string): Promise<void> {
  try {
    await link(src, dest);
  } catch {
    await copyFile(src, dest, fsc.COPYFILE_FICLONE);
  }
}

/** A file depthcast writes into the model (not a download). */
export interface Written {
  layout: string;
  content: string;
}

export async function install(
  ctx: PullContext,
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

/** The base model's model_index.json switched to the ControlNet pipeline. */
export function modelIndexRewrite(placements: Placement[]): Promise<Written> {
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

export function depthcastJsonWritten(o: CommonPullOptions): Written[] {
  return o.depthcastJson ? [{ layout: 'depthcast.json', content: `${JSON.stringify(o.depthcastJson, null, 2)}\n` }] : [];
}

/** Builds `model` (+ `controlnet`) in a work folder beside the models, checks it loads, and installs it. */
export async function buildAndInstall(
  ctx: PullContext,
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
