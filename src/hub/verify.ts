/**
 * `models verify`: is an installed (or any) model folder complete, unmodified and safe to load?
 *
 *  1. no symbolic links or special files anywhere in the folder (UNSAFE_PATH);
 *  2. the layout's required files are present (BAD_MODEL);
 *  3. sizes and sha256 against depthcast-manifest.json written at install time (HASH_MISMATCH);
 *  4. every ONNX file's external-data locations stay inside the folder and exist (UNSAFE_PATH / BAD_MODEL);
 *  5. on the requested device, the model loads (every contrib operator the provider lacks is
 *     named) and one tiny generation runs through every component (src/models/dry-run.ts), so
 *     verify never says ok about a model that generate refuses.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DepthcastError, type ErrorCode } from '../errors.ts';
import type { Device } from '../runtime/ort.ts';
import { sha256File } from './hub-client.ts';
import { REQUIRED_COMPONENTS, REQUIRED_FILES, isControlnetIndex } from './layout.ts';
import { MANIFEST_FILE, readManifest, walk } from './manifest.ts';
import { checkExternalData } from './onnx-external.ts';
import { checkModelName, depthcastHome, modelDir } from './paths.ts';
import { CLI } from '../cli/command.ts';

export interface VerifyProblem {
  code: Extract<ErrorCode, 'UNSAFE_PATH' | 'BAD_MODEL' | 'HASH_MISMATCH'>;
  message: string;
  path?: string;
}

export interface VerifyReport {
  dir: string;
  ok: boolean;
  problems: VerifyProblem[];
  /** Non-fatal remarks (no manifest, extra files, I/O check unavailable). */
  notes: string[];
  files: number;
  hashed: number;
  onnx: number;
  io: { ran: boolean; ok: boolean; problems: string[] };
}

export interface VerifyOptions {
  home?: string;
  env?: NodeJS.ProcessEnv;
  /** Re-hash files against the manifest (default true; the slow part for multi-GB models). */
  hashes?: boolean;
  /** Run the load + dry-run check of src/models/dry-run.ts (default true). */
  io?: boolean;
  /** Where that check runs (default cpu): verify on the device generate will use. */
  device?: Device;
  onProgress?: (e: { type: 'hash'; path: string; index: number; total: number }) => void;
}

type CheckFn = (dir: string, device?: Device) => Promise<{ ok: boolean; problems: string[] }>;

/** Loads dryRunModel lazily: it pulls in onnxruntime, which list/pull/remove don't need. */
async function loadIoCheck(): Promise<CheckFn | string> {
  try {
    return (await import('../models/dry-run.ts')).dryRunModel;
  } catch (err) {
    return `the ONNX I/O check could not be loaded: ${(err as Error).message}`;
  }
}

/** A model name (installed under `<home>/models/`) or a folder path (anything with a `/` or starting with `.`). */
export function resolveModelArg(nameOrDir: string, home: string): string {
  if (nameOrDir.includes('/') || nameOrDir.includes('\\') || nameOrDir.startsWith('.')) return nameOrDir;
  return modelDir(home, checkModelName(nameOrDir));
}

export async function verifyModel(nameOrDir: string, o: VerifyOptions = {}): Promise<VerifyReport> {
  const home = o.home ?? depthcastHome(o.env ?? process.env);
  const dir = resolveModelArg(nameOrDir, home);
  const report: VerifyReport = { dir, ok: false, problems: [], notes: [], files: 0, hashed: 0, onnx: 0, io: { ran: false, ok: false, problems: [] } };
  const problem = (code: VerifyProblem['code'], message: string, path?: string): void => {
    report.problems.push(path ? { code, message, path } : { code, message });
  };

  let entries;
  try {
    entries = await walk(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw new DepthcastError('MODEL_NOT_FOUND', `no model folder at ${dir}; see ${CLI} models list`);
    }
    throw err;
  }
  const files = new Map<string, number>();
  for (const e of entries) {
    if (e.kind === 'link') problem('UNSAFE_PATH', `${e.rel} is a symbolic link; model folders must hold real files (a link can point anywhere). Replace it with the file itself.`, e.rel);
    else if (e.kind === 'other') problem('UNSAFE_PATH', `${e.rel} is not a regular file or folder; remove it`, e.rel);
    else if (e.kind === 'file') files.set(e.rel, e.size);
  }
  report.files = files.size;

  // 2. layout
  for (const f of REQUIRED_FILES) if (!files.has(f)) problem('BAD_MODEL', `missing ${f}`, f);
  for (const c of REQUIRED_COMPONENTS) if (!files.has(`${c}/model.onnx`)) problem('BAD_MODEL', `missing ${c}/model.onnx`, `${c}/model.onnx`);
  if (files.has('model_index.json')) {
    try {
      const index = JSON.parse(await readFile(join(dir, 'model_index.json'), 'utf8'));
      if (isControlnetIndex(index) && !files.has('controlnet/model.onnx')) problem('BAD_MODEL', 'model_index.json describes a ControlNet model but controlnet/model.onnx is missing', 'controlnet/model.onnx');
    } catch {
      problem('BAD_MODEL', 'model_index.json is not valid JSON', 'model_index.json');
    }
  }
  if (files.has('depthcast.json')) {
    try {
      JSON.parse(await readFile(join(dir, 'depthcast.json'), 'utf8'));
    } catch {
      problem('BAD_MODEL', 'depthcast.json is not valid JSON', 'depthcast.json');
    }
  }

  // 3. manifest
  let manifest;
  try {
    manifest = await readManifest(dir);
  } catch (err) {
    const e = err as DepthcastError;
    problem(e.code === 'UNSAFE_PATH' ? 'UNSAFE_PATH' : 'BAD_MODEL', e.message, MANIFEST_FILE);
  }
  if (!manifest) {
    if (!report.problems.some((p) => p.path === MANIFEST_FILE)) report.notes.push(`no ${MANIFEST_FILE} (not installed by ${CLI} models pull): file hashes were not checked`);
  } else {
    const listed = Object.entries(manifest.files);
    let i = 0;
    for (const [rel, want] of listed) {
      i++;
      const size = files.get(rel);
      if (size === undefined) {
        if (!report.problems.some((p) => p.path === rel)) problem('BAD_MODEL', `${rel} is listed in ${MANIFEST_FILE} but missing; re-pull the model`, rel);
        continue;
      }
      if (size !== want.size) {
        problem('HASH_MISMATCH', `${rel} has ${size} bytes, the manifest says ${want.size}; the file was changed or truncated, re-pull the model (--force)`, rel);
        continue;
      }
      if (o.hashes !== false) {
        o.onProgress?.({ type: 'hash', path: rel, index: i, total: listed.length });
        const got = await sha256File(join(dir, ...rel.split('/')));
        report.hashed++;
        if (got !== want.sha256) problem('HASH_MISMATCH', `${rel} does not match its recorded sha256 (expected ${want.sha256}, got ${got}); re-pull the model (--force)`, rel);
      }
    }
    const extra = [...files.keys()].filter((f) => f !== MANIFEST_FILE && !(f in manifest.files));
    if (extra.length) report.notes.push(`files not in the manifest (added after install): ${extra.join(', ')}`);
  }

  // 4. external data
  for (const rel of files.keys()) {
    if (!rel.endsWith('.onnx')) continue;
    report.onnx++;
    const r = await checkExternalData(dir, rel);
    for (const p of r.problems) problem(p.code, p.message, p.path);
  }

  // 5. I/O, only when the folder is otherwise sound (the checker loads the ONNX files).
  if (o.io !== false) {
    if (report.problems.length) {
      report.notes.push('ONNX I/O check skipped because of the problems above');
    } else {
      const check = await loadIoCheck();
      if (typeof check === 'string') report.notes.push(`ONNX I/O check not run: ${check}`);
      else {
        report.io.ran = true;
        try {
          const r = await check(dir, o.device ?? 'cpu');
          report.io.ok = r.ok;
          report.io.problems = r.problems;
        } catch (err) {
          report.io.ok = false;
          report.io.problems = [(err as Error).message];
        }
        for (const p of report.io.problems) problem('BAD_MODEL', `I/O: ${p}`);
        if (!report.io.ok && report.io.problems.length === 0) problem('BAD_MODEL', 'I/O: the ONNX inputs/outputs do not fit the layout');
      }
    }
  }
  report.ok = report.problems.length === 0;
  return report;
}

const SEVERITY: VerifyProblem['code'][] = ['UNSAFE_PATH', 'HASH_MISMATCH', 'BAD_MODEL'];

/** Throws the most serious problem of a failed report as a DepthcastError (UNSAFE_PATH > HASH_MISMATCH > BAD_MODEL). */
export function assertVerified(report: VerifyReport): void {
  if (report.ok) return;
  const code = SEVERITY.find((c) => report.problems.some((p) => p.code === c)) ?? 'BAD_MODEL';
  const lines = report.problems.map((p) => `  ${p.code}: ${p.message}`).join('\n');
  throw new DepthcastError(code, `model folder ${report.dir} failed verification:\n${lines}`, { problems: report.problems });
}
