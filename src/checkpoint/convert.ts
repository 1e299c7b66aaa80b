/**
 * `depthcast models convert <dir> <out> --fp16`: a model folder's ONNX components rewritten as
 * fp16 graphs with float32 I/O (fp16.ts); every other file (tokenizer, scheduler, configs) copied.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { SESSION_FILES } from '../models/layout.ts';
import { decodeModel } from '../models/onnx-decode.ts';
import { convertModelFileToFp16, type Fp16Report } from './fp16.ts';

async function filesUnder(dir: string, root = dir): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path, root)));
    else if (entry.isFile()) out.push(relative(root, path));
  }
  return out;
}

/** External-data files an ONNX file names (relative to the model folder). */
async function externalFilesOf(dir: string, onnxRel: string): Promise<string[]> {
  const model = decodeModel(await readFile(join(dir, onnxRel)));
  const names = new Set<string>();
  for (const t of model.graph?.initializer ?? []) {
    const location = t.externalData?.find((e) => e.key === 'location')?.value;
    if (location) names.add(join(dirname(onnxRel), location));
  }
  return [...names];
}

export async function convertFolderToFp16(src: string, dst: string, log: (line: string) => void = () => {}): Promise<Record<string, Fp16Report>> {
  if (!existsSync(join(src, SESSION_FILES.unet))) throw new DepthcastError('BAD_MODEL', `${src} is not a model folder (no ${SESSION_FILES.unet})`);
  if (existsSync(dst) && (await readdir(dst)).length > 0) throw new DepthcastError('BAD_REQUEST', `${dst} exists and is not empty`);
  const components = Object.entries(SESSION_FILES).filter(([, rel]) => existsSync(join(src, rel)));
  const skip = new Set<string>(components.map(([, rel]) => rel));
  for (const [, rel] of components) for (const f of await externalFilesOf(src, rel)) skip.add(f);
  const reports: Record<string, Fp16Report> = {};
  try {
    await convertAll();
  } catch (err) {
    // No half-converted folder is left behind.
    await rm(dst, { recursive: true, force: true });
    throw err;
  }
  return reports;

  async function convertAll(): Promise<void> {
    for (const [name, rel] of components) {
      const report = await convertModelFileToFp16(join(src, rel), join(dst, rel));
      reports[name] = report;
      log(`${name}: ${report.converted} weights to fp16 (${(report.weightBytesBefore / 1e6).toFixed(1)} → ${(report.weightBytesAfter / 1e6).toFixed(1)} MB)${report.keptFloat32 ? `, ${report.keptFloat32} kept float32` : ''}${report.clamped ? `, ${report.clamped} values clamped to ±65504` : ''}`);
    }
    for (const rel of await filesUnder(src)) {
      if (skip.has(rel) || !(await stat(join(src, rel))).isFile()) continue;
      await mkdir(dirname(join(dst, rel)), { recursive: true });
      await copyFile(join(src, rel), join(dst, rel));
    }
  }
}
