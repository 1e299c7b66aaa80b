/** `models list`: installed model folders, partial downloads, and the registry's entries. */
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readManifest, walk, type SourceRecord } from './manifest.ts';
import { downloadsRoot, modelsRoot } from './paths.ts';
import { CONTROLNET_PIPELINE, DEPTH2IMG_PIPELINE, isControlnetIndex } from './layout.ts';

export interface InstalledModel {
  name: string;
  dir: string;
  /** `depth2img`, `controlnet`, or `other` (from model_index.json). */
  pipeline: 'depth2img' | 'controlnet' | 'other';
  className: string | null;
  registry: string | null;
  sources: SourceRecord[];
  installedAt: string | null;
  files: number;
  bytes: number;
  /** Set when the entry can't be used as is (a link, no model_index.json, unreadable manifest). */
  problem?: string;
}

export interface PartialDownload {
  key: string;
  dir: string;
  bytes: number;
}

async function entries(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

export async function listInstalled(home: string): Promise<InstalledModel[]> {
  const root = modelsRoot(home);
  const out: InstalledModel[] = [];
  for (const name of await entries(root)) {
    if (name.startsWith('.')) continue; // staging / old folders of installs in progress
    const dir = join(root, name);
    const st = await lstat(dir);
    const m: InstalledModel = { name, dir, pipeline: 'other', className: null, registry: null, sources: [], installedAt: null, files: 0, bytes: 0 };
    if (st.isSymbolicLink()) {
      out.push({ ...m, problem: 'is a symbolic link; depthcast refuses linked model folders (move the real folder here)' });
      continue;
    }
    if (!st.isDirectory()) continue;
    try {
      const index = JSON.parse(await readFile(join(dir, 'model_index.json'), 'utf8')) as Record<string, unknown>;
      m.className = typeof index._class_name === 'string' ? index._class_name : null;
      m.pipeline = isControlnetIndex(index) || m.className === CONTROLNET_PIPELINE ? 'controlnet' : m.className === DEPTH2IMG_PIPELINE ? 'depth2img' : 'other';
    } catch {
      m.problem = 'no readable model_index.json';
    }
    try {
      const manifest = await readManifest(dir);
      if (manifest) {
        m.registry = manifest.registry;
        m.sources = manifest.sources;
        m.installedAt = manifest.installed_at;
      }
    } catch (err) {
      m.problem ??= (err as Error).message;
    }
    for (const e of await walk(dir)) {
      if (e.kind === 'file') {
        m.files++;
        m.bytes += e.size;
      }
    }
    out.push(m);
  }
  return out;
}

export async function listPartialDownloads(home: string): Promise<PartialDownload[]> {
  const root = downloadsRoot(home);
  const out: PartialDownload[] = [];
  for (const key of await entries(root)) {
    const dir = join(root, key);
    const st = await lstat(dir);
    if (!st.isDirectory()) continue;
    let bytes = 0;
    for (const e of await walk(dir)) if (e.kind === 'file') bytes += e.size;
    out.push({ key, dir, bytes });
  }
  return out;
}
