/**
 * Planning a pull: which files of a repo listing the model layout needs (docs/models.md). Only the
 * layout's files are chosen: model_index.json, scheduler config, tokenizer files, each component's
 * model.onnx and config.json (the external-data files those ONNX files reference are added once they
 * are downloaded and read, pull-transfer.ts); a diffusers checkpoint gets only the files a build
 * reads. Unrelated variants in the same repo (model_fp16.onnx, *.safetensors) are never chosen.
 */
import { DepthcastError } from '../errors.ts';
import type { RemoteFile } from './hub-client.ts';
import { COMPONENTS, OPTIONAL_FILES, REQUIRED_COMPONENTS, REQUIRED_FILES, type Component } from './layout.ts';
import type { SourceRecord } from './manifest.ts';
import { checkRelPath } from './paths.ts';
import type { SourceSpec } from './pull.ts';

/** One file to fetch: where it goes in the layout, and its path in the repo (below the subfolder). */
export interface PlannedFile {
  layout: string;
  repo: string;
}

export function normSub(sub: string | undefined): string {
  if (!sub) return '';
  const trimmed = sub.replace(/^\/+|\/+$/g, '');
  if (!trimmed) return '';
  checkRelPath(trimmed, 'subfolder');
  return trimmed;
}

export function dirOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

function joinRel(dir: string, name: string): string {
  return dir ? `${dir}/${name}` : name;
}

function layoutMismatch(repo: string, revision: string, sub: string, missing: string[], files: Map<string, RemoteFile>): DepthcastError {
  const sample = [...files.keys()].slice(0, 12).join(', ');
  return new DepthcastError(
    'BAD_MODEL',
    `${repo}@${revision}${sub ? ` (subfolder ${sub})` : ''} does not fit the depthcast model layout: missing ${missing.join(', ')}. ` +
      `It has: ${sample || 'no files'}${files.size > 12 ? ', …' : ''}. If the ONNX folders sit in a subfolder pass --subfolder; see docs/models.md for the layout.`,
    { missing },
  );
}

export function planModel(files: Map<string, RemoteFile>, spec: SourceSpec, skipControlnet: boolean, sub: string): PlannedFile[] {
  const map = spec.map ?? {};
  for (const [k, v] of Object.entries(map)) {
    checkRelPath(k, 'layout path in map');
    checkRelPath(v, 'repo path in map');
  }
  const consumed = new Set(Object.values(map));
  const src = (layout: string): string | undefined => map[layout] ?? (consumed.has(layout) ? undefined : layout);
  const picks: PlannedFile[] = [];
  const missing: string[] = [];
  for (const f of REQUIRED_FILES) {
    const s = src(f);
    if (s && files.has(s)) picks.push({ layout: f, repo: s });
    else missing.push(s ?? f);
  }
  for (const f of OPTIONAL_FILES) {
    const s = src(f);
    if (s && files.has(s)) picks.push({ layout: f, repo: s });
  }
  for (const c of COMPONENTS as readonly Component[]) {
    if (c === 'controlnet' && skipControlnet) continue;
    const onnx = `${c}/model.onnx`;
    const s = src(onnx);
    if (!s || !files.has(s)) {
      if ((REQUIRED_COMPONENTS as readonly string[]).includes(c)) missing.push(s ?? onnx);
      continue;
    }
    picks.push({ layout: onnx, repo: s });
    const cfgLayout = `${c}/config.json`;
    const cfgSrc = map[cfgLayout] ?? joinRel(dirOf(s), 'config.json');
    if (files.has(cfgSrc)) picks.push({ layout: cfgLayout, repo: cfgSrc });
  }
  if (missing.length) throw layoutMismatch(spec.repo, spec.revision ?? 'main', sub, missing, files);
  return picks;
}

export function planControlnet(files: Map<string, RemoteFile>, spec: SourceSpec, sub: string): PlannedFile[] {
  const candidates = spec.file ? [spec.file] : ['controlnet/model.onnx', 'model.onnx'];
  for (const c of candidates) checkRelPath(c, 'ControlNet file');
  const onnx = candidates.find((c) => files.has(c));
  if (!onnx) {
    throw new DepthcastError(
      'BAD_MODEL',
      `${spec.repo}@${spec.revision ?? 'main'}${sub ? ` (subfolder ${sub})` : ''} has no ControlNet ONNX file (looked for ${candidates.join(', ')}); pass --controlnet-file with its path in the repo`,
    );
  }
  const picks: PlannedFile[] = [{ layout: 'controlnet/model.onnx', repo: onnx }];
  const cfg = joinRel(dirOf(onnx), 'config.json');
  if (files.has(cfg)) picks.push({ layout: 'controlnet/config.json', repo: cfg });
  return picks;
}

/** A diffusers-format repo: configs and safetensors weights, and no ONNX file at all (an ONNX export missing a file is not one). */
export function isCheckpointListing(files: Map<string, RemoteFile>, role: SourceRecord['role']): boolean {
  if ([...files.keys()].some((p) => p.endsWith('.onnx'))) return false;
  const dir = role === 'controlnet' ? '' : 'unet/';
  const weights = [`${dir}diffusion_pytorch_model.safetensors`, `${dir}diffusion_pytorch_model.fp16.safetensors`].some((p) => files.has(p));
  return weights && files.has(`${dir}config.json`) && (role === 'controlnet' || files.has('model_index.json'));
}

/**
 * The files a checkpoint build reads, and no others: configs, tokenizer, scheduler, and per
 * component one weight file (`.safetensors`, or its fp16 variant when preferred or alone).
 */
export function planCheckpoint(files: Map<string, RemoteFile>, role: SourceRecord['role'], preferFp16: boolean, repo: string): PlannedFile[] {
  const picks: PlannedFile[] = [];
  const need = (path: string) => {
    if (!files.has(path)) throw new DepthcastError('BAD_MODEL', `${repo} is missing ${path}, which a diffusers checkpoint has`, { missing: [path] });
    picks.push({ layout: path, repo: path });
  };
  const weights = (dir: string, stem: string) => {
    const names = [`${stem}.safetensors`, `${stem}.fp16.safetensors`].map((n) => joinRel(dir, n));
    if (preferFp16) names.reverse();
    const found = names.find((n) => files.has(n));
    if (!found) {
      throw new DepthcastError('BAD_MODEL', `${repo} has neither ${names.join(' nor ')}; the builder reads single-file safetensors (not .bin or sharded weights)`, { missing: names });
    }
    picks.push({ layout: found, repo: found });
  };
  if (role === 'controlnet') {
    need('config.json');
    weights('', 'diffusion_pytorch_model');
    return picks;
  }
  for (const f of ['model_index.json', 'scheduler/scheduler_config.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt']) need(f);
  for (const f of ['tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json']) if (files.has(f)) picks.push({ layout: f, repo: f });
  for (const [dir, stem] of [['text_encoder', 'model'], ['unet', 'diffusion_pytorch_model'], ['vae', 'diffusion_pytorch_model']] as const) {
    need(`${dir}/config.json`);
    weights(dir, stem);
  }
  return picks;
}
