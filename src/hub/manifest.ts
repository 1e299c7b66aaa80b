/**
 * `depthcast-manifest.json`: written into every model folder at install time with the size and
 * sha256 of each file, so `verify` can later tell a damaged or edited folder from a good one.
 * Also the folder walk shared by install, verify and list (it never follows links).
 */
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { DepthcastError } from '../errors.ts';
import { checkRelPath } from './paths.ts';
import { CLI } from '../cli/command.ts';

export const MANIFEST_FILE = 'depthcast-manifest.json';

const SourceRecord = z.object({
  role: z.enum(['model', 'base', 'controlnet']),
  repo: z.string(),
  revision: z.string(),
  commit: z.string().nullable(),
  subfolder: z.string().nullable().optional(),
});
export type SourceRecord = z.infer<typeof SourceRecord>;

const Manifest = z.object({
  format: z.literal('depthcast-manifest'),
  version: z.literal(1),
  name: z.string(),
  installed_at: z.string(),
  registry: z.string().nullable(),
  sources: z.array(SourceRecord),
  files: z.record(z.string(), z.object({ size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
});
export type Manifest = z.infer<typeof Manifest>;

export async function readManifest(dir: string): Promise<Manifest | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new DepthcastError('BAD_MODEL', `${join(dir, MANIFEST_FILE)} is not valid JSON; re-install the model (${CLI} models pull … --force)`);
  }
  const r = Manifest.safeParse(parsed);
  if (!r.success) {
    throw new DepthcastError('BAD_MODEL', `${join(dir, MANIFEST_FILE)} is malformed (${r.error.issues[0]?.message ?? 'invalid'}); re-install the model`);
  }
  for (const p of Object.keys(r.data.files)) checkRelPath(p, `file name in ${MANIFEST_FILE}`);
  return r.data;
}

export interface WalkEntry {
  rel: string;
  kind: 'file' | 'dir' | 'link' | 'other';
  size: number;
}

/** Every entry below `root` (not following links), `/`-separated, sorted. */
export async function walk(root: string): Promise<WalkEntry[]> {
  const out: WalkEntry[] = [];
  const visit = async (dir: string, prefix: string): Promise<void> => {
    const names = (await readdir(dir)).sort();
    for (const name of names) {
      const rel = prefix ? `${prefix}/${name}` : name;
      const st = await lstat(join(dir, name));
      if (st.isSymbolicLink()) out.push({ rel, kind: 'link', size: 0 });
      else if (st.isDirectory()) {
        out.push({ rel, kind: 'dir', size: 0 });
        await visit(join(dir, name), rel);
      } else if (st.isFile()) out.push({ rel, kind: 'file', size: st.size });
      else out.push({ rel, kind: 'other', size: 0 });
    }
  };
  await visit(root, '');
  return out;
}
