/**
 * Batch manifests (JSON or YAML): a defaults block plus scenes, validated with zod. Every error
 * names the field to fix as a path (`scenes[2].depth.near: ...`) and, where the parser knows it,
 * the line. `expandManifest` turns a manifest into the flat, stably named list of outputs that
 * the runner works through: scene × view (camera/frame) × variation × sweep point × seed.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, extname, resolve } from 'node:path';
import { LineCounter, isMap, isSeq, parseDocument, type Node as YamlNode } from 'yaml';
import { z } from 'zod';
import { DepthcastError } from '../errors.ts';
import { DepthKind, GenerationParams, LayoutObject, RegionOptions } from '../protocol/schemas.ts';

/** Scene, variation and camera labels become file names: keep them plain. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const Name = z.string().regex(NAME_RE, 'use 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit');
const FilePath = z.string().min(1, 'must not be empty');
const Seed = z.number().int().min(0).max(0xffffffff);

/** Manifests may not expand into more outputs than this (a typo in a sweep should not queue a million jobs). */
export const MAX_OUTPUTS = 100_000;

/**
 * The generation parameters a manifest may set, as the protocol schema declares them (without
 * their optional/default wrappers, since a manifest leaves unset what the run should default).
 */
const P = GenerationParams.shape;
const PARAM = {
  model: P.model.unwrap(),
  steps: P.steps.unwrap(),
  guidance: P.guidance.unwrap(),
  strength: P.strength.unwrap(),
  scheduler: P.scheduler.unwrap(),
  controlnetScale: P.controlnetScale.unwrap(),
  width: P.width.unwrap(),
  height: P.height.unwrap(),
  sizing: P.sizing.unwrap(),
  depthRange: P.depthRange.unwrap(),
  prompt: P.prompt,
};

export const ManifestParams = z.object({
  model: PARAM.model.optional(),
  steps: PARAM.steps.optional(),
  guidance: PARAM.guidance.optional(),
  strength: PARAM.strength.optional(),
  scheduler: PARAM.scheduler.optional(),
  controlnetScale: PARAM.controlnetScale.optional(),
  width: PARAM.width.optional(),
  height: PARAM.height.optional(),
  sizing: PARAM.sizing.optional(),
  depthRange: PARAM.depthRange.optional(),
  regions: RegionOptions.optional(),
  /**
   * `.blend` scenes with frames: run each camera's frames as a sequence (docs/batch.md,
   * "Animation without flicker"): 'consistent' continues each frame from the one before; both
   * values score every frame pair into the batch report.
   */
  consistency: z.enum(['per-frame', 'consistent']).optional(),
}).strict();
export type ManifestParams = z.infer<typeof ManifestParams>;

/** Parameter sweeps: every combination of the listed values becomes one variation. */
export const Sweep = z.object({
  model: z.array(PARAM.model).min(1).optional(),
  steps: z.array(PARAM.steps).min(1).optional(),
  guidance: z.array(PARAM.guidance).min(1).optional(),
  strength: z.array(PARAM.strength).min(1).optional(),
  scheduler: z.array(PARAM.scheduler).min(1).optional(),
  controlnetScale: z.array(PARAM.controlnetScale).min(1).optional(),
  width: z.array(PARAM.width).min(1).optional(),
  height: z.array(PARAM.height).min(1).optional(),
  depthRange: z.array(PARAM.depthRange).min(1).optional(),
}).strict().refine((s) => Object.keys(s).length > 0, { message: 'a sweep needs at least one parameter list' });

const nearFarRefine = <T extends { near?: number; far?: number }>(d: T) => d.near === undefined || d.far === undefined || d.far > d.near;

export const FileDepth = z.object({
  /** .npy (float32/float16/float64/uint16), 16-bit (or 8-bit) PNG, or OpenEXR. */
  file: FilePath,
  kind: DepthKind.optional(),
  near: z.number().positive().finite().optional(),
  far: z.number().positive().optional(),
}).strict().refine(nearFarRefine, { message: 'far must be greater than near', path: ['far'] });

const FrameRange = z.object({
  start: z.number().int(),
  end: z.number().int(),
  step: z.number().int().positive().default(1),
}).strict().refine((r) => r.end >= r.start, { message: 'end must be >= start', path: ['end'] });

export const BlendDepth = z.object({
  /** A .blend file, rendered headless by Blender (DEPTHCAST_BLENDER or `blender` on PATH). */
  blend: FilePath,
  camera: z.string().min(1).optional(),
  cameras: z.array(z.string().min(1)).min(1).optional(),
  /** Frame numbers, or {start, end, step}; default: the file's current frame. */
  frames: z.union([z.array(z.number().int()).min(1), FrameRange]).optional(),
  /** Render size [width, height]; default: the scene's render resolution. */
  resolution: z.tuple([z.number().int().min(8).max(8192), z.number().int().min(8).max(8192)]).optional(),
  /** near/far: 'camera' = the camera's clip range (default), 'scene' = fit to the geometry in view. */
  range: z.enum(['camera', 'scene']).optional(),
  near: z.number().positive().finite().optional(),
  far: z.number().positive().optional(),
  engine: z.enum(['auto', 'cycles', 'workbench']).optional(),
}).strict()
  .refine((d) => !(d.camera && d.cameras), { message: 'give camera or cameras, not both', path: ['cameras'] })
  .refine(nearFarRefine, { message: 'far must be greater than near', path: ['far'] });

export type FileDepth = z.infer<typeof FileDepth>;
export type BlendDepth = z.infer<typeof BlendDepth>;

/** `depth` is a path, a {file} object or a {blend} object; errors come from the schema the value is meant for. */
const DepthSpec = z.unknown().transform((value, ctx): FileDepth | BlendDepth => {
  const schema = value !== null && typeof value === 'object' && 'blend' in value ? BlendDepth : FileDepth;
  const parsed = schema.safeParse(typeof value === 'string' ? { file: value } : value);
  if (parsed.success) return parsed.data;
  if (value === undefined) {
    ctx.addIssue({ code: 'custom', message: 'missing: give a depth file (.npy, .png, .exr) or {blend: scene.blend, ...}' });
  } else {
    for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path as PropertyKey[], params: { issue } });
  }
  return z.NEVER;
});

export const Layout = z.object({
  /** u16 index map, same size as the depth: .npy (uint16, or integer floats) or PNG (8/16-bit); 0 = background. */
  file: FilePath,
  objects: z.array(LayoutObject).max(256),
}).strict();

export const Variation = z.object({
  name: Name,
  /** Replaces the scene prompt; `{prompt}` inside it stands for the scene prompt. */
  prompt: PARAM.prompt.optional(),
  negative: PARAM.prompt.optional(),
  params: ManifestParams.optional(),
}).strict();

export const Scene = z.object({
  name: Name,
  depth: DepthSpec,
  /** Init image (PNG or JPEG) for img2img. */
  init: FilePath.optional(),
  layout: Layout.optional(),
  prompt: PARAM.prompt,
  negative: PARAM.prompt.optional(),
  seeds: z.array(Seed).min(1).optional(),
  /** N seeds derived from the scene name, the same on every run. */
  seedCount: z.number().int().min(1).max(10_000).optional(),
  params: ManifestParams.optional(),
  variations: z.array(Variation).min(1).optional(),
  sweep: Sweep.optional(),
}).strict().refine((s) => !(s.seeds && s.seedCount), { message: 'give seeds or seedCount, not both', path: ['seedCount'] });
export type Scene = z.infer<typeof Scene>;

export const Defaults = z.object({
  negative: PARAM.prompt.optional(),
  params: ManifestParams.optional(),
  seeds: z.array(Seed).min(1).optional(),
  seedCount: z.number().int().min(1).max(10_000).optional(),
}).strict().refine((s) => !(s.seeds && s.seedCount), { message: 'give seeds or seedCount, not both', path: ['seedCount'] });

export const Manifest = z.object({
  version: z.literal(1).optional(),
  /** Output folder, relative to the manifest (the --out flag wins). */
  out: FilePath.optional(),
  defaults: Defaults.optional(),
  scenes: z.array(Scene).min(1, 'list at least one scene'),
}).strict().superRefine((m, ctx) => {
  const seen = new Map<string, number>();
  m.scenes.forEach((scene, i) => {
    const first = seen.get(scene.name);
    if (first !== undefined) ctx.addIssue({ code: 'custom', path: ['scenes', i, 'name'], message: `duplicate scene name "${scene.name}" (also scenes[${first}])` });
    else seen.set(scene.name, i);
    const names = new Set<string>();
    scene.variations?.forEach((v, j) => {
      if (names.has(v.name)) ctx.addIssue({ code: 'custom', path: ['scenes', i, 'variations', j, 'name'], message: `duplicate variation name "${v.name}"` });
      names.add(v.name);
    });
  });
});
export type Manifest = z.infer<typeof Manifest>;

// ---------------------------------------------------------------- errors with field paths

/** `scenes[2].depth.near` */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(root)';
}

function friendly(message: string): string {
  const m = /^Invalid input: expected (.+), received undefined$/.exec(message);
  if (m) return `required (expected ${m[1]})`;
  return message;
}

interface Located {
  path: PropertyKey[];
  message: string;
}

function flatten(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[] = []): Located[] {
  const out: Located[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...(issue.path as PropertyKey[])];
    const inner = issue.code === 'custom' ? (issue.params as { issue?: z.core.$ZodIssue } | undefined)?.issue : undefined;
    if (inner) {
      out.push(...flatten([{ ...inner, path: [] } as z.core.$ZodIssue], path));
    } else if (issue.code === 'invalid_union' && issue.errors.length) {
      // Report the alternative that got furthest into the value (a list of frames vs a range object).
      const depth = (branch: readonly z.core.$ZodIssue[]) => Math.max(...branch.map((i) => i.path.length));
      const best = issue.errors.reduce((a, b) => (depth(b) > depth(a) ? b : a));
      const deeper = depth(best) > 0;
      if (deeper) out.push(...flatten(best, path));
      else out.push({ path, message: friendly(issue.errors.map((b) => b.map((i) => i.message).join(', ')).join(' or ')) });
    } else if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: [...path, key], message: 'unknown field (check its spelling; see docs/batch.md)' });
    } else {
      out.push({ path, message: friendly(issue.message) });
    }
  }
  return out;
}

/** Line (1-based) of the node at `path` in a parsed YAML/JSON document, if it can be found. */
function lineOf(doc: ReturnType<typeof parseDocument> | undefined, counter: LineCounter | undefined, path: PropertyKey[]): number | undefined {
  if (!doc || !counter) return undefined;
  let node: unknown = doc.contents;
  let last: unknown = node;
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
      if (!pair) break;
      last = pair.key;
      node = pair.value;
    } else if (isSeq(node) && typeof key === 'number') {
      node = node.items[key];
    } else {
      break;
    }
    if (node) last = node;
  }
  const range = (last as YamlNode | undefined)?.range;
  return range ? counter.linePos(range[0]).line : undefined;
}

/** "scenes[2].depth.near (line 14): Invalid input: expected number, received string; ..." */
export function describeManifestError(error: z.ZodError, doc?: ReturnType<typeof parseDocument>, counter?: LineCounter): string {
  return flatten(error.issues)
    .map(({ path, message }) => {
      const line = lineOf(doc, counter, path);
      return `${formatPath(path)}${line ? ` (line ${line})` : ''}: ${message}`;
    })
    .join('; ');
}

// ---------------------------------------------------------------- loading

export interface LoadedManifest {
  file: string;
  /** Folder that relative paths in the manifest are resolved against. */
  baseDir: string;
  manifest: Manifest;
}

export function parseManifestText(text: string, file: string): Manifest {
  const isJson = extname(file).toLowerCase() === '.json';
  let data: unknown;
  let doc: ReturnType<typeof parseDocument> | undefined;
  const counter = new LineCounter();
  if (isJson) {
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new DepthcastError('BAD_MANIFEST', `${file}: not valid JSON (${(err as Error).message})`);
    }
    try {
      doc = parseDocument(text, { lineCounter: counter });
    } catch {
      doc = undefined;
    }
  } else {
    doc = parseDocument(text, { lineCounter: counter, prettyErrors: false });
    const first = doc.errors[0];
    if (first) {
      const pos = counter.linePos(first.pos[0]);
      throw new DepthcastError('BAD_MANIFEST', `${file}: YAML syntax error at line ${pos.line}, column ${pos.col}: ${first.message.split('\n')[0]}`);
    }
    data = doc.toJS({ maxAliasCount: 1000 });
  }
  if (data === null || data === undefined) throw new DepthcastError('BAD_MANIFEST', `${file}: the manifest is empty; it needs at least "scenes"`);
  const parsed = Manifest.safeParse(data);
  if (!parsed.success) throw new DepthcastError('BAD_MANIFEST', `${file}: ${describeManifestError(parsed.error, doc, counter)}`);
  return parsed.data;
}

export async function loadManifest(file: string): Promise<LoadedManifest> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new DepthcastError('BAD_MANIFEST', `cannot read manifest ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return { file: path, baseDir: dirname(path), manifest: parseManifestText(text, file) };
}

// ---------------------------------------------------------------- expansion

/** A seed for the i-th output of a scene that has only a seed count: the same on every run. */
export function deriveSeed(scene: string, index: number): number {
  return createHash('sha256').update(`depthcast-batch:${scene}:${index}`).digest().readUInt32LE(0);
}

export interface FileView {
  source: 'file';
  file: string;
  kind: 'zdepth' | 'disparity' | 'normalized';
  near?: number;
  far?: number;
}

export interface BlendView {
  source: 'blend';
  blend: string;
  /** undefined = the scene's active camera. */
  camera?: string;
  /** undefined = the file's current frame. */
  frame?: number;
  resolution?: [number, number];
  range: 'camera' | 'scene';
  near?: number;
  far?: number;
  engine: 'auto' | 'cycles' | 'workbench';
}

export type ViewSpec = FileView | BlendView;

export interface BatchOutput {
  /** Path of the output below the out folder, without extension: "<scene>/<view>_<variation>_s<seed>". */
  id: string;
  scene: string;
  sceneIndex: number;
  /** Camera/frame label of blend scenes ("Camera-f12"); undefined for depth files. */
  view?: string;
  /** Variation and/or sweep label ("warm_guidance5-steps20"); undefined without variations. */
  variation?: string;
  seed: number;
  prompt: string;
  negativePrompt: string;
  params: ManifestParams;
  depth: ViewSpec;
  init?: string;
  layout?: { file: string; objects: z.infer<typeof LayoutObject>[] };
}

function fileLabel(text: string): string {
  const cleaned = text.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[-_.]+/, '');
  return cleaned.slice(0, 64) || 'x';
}

function numberLabel(v: unknown): string {
  return typeof v === 'number' ? String(+v.toPrecision(6)) : String(v);
}

interface VariationPoint {
  label?: string;
  prompt?: string;
  negative?: string;
  params: ManifestParams;
}

function sweepPoints(sweep: z.infer<typeof Sweep> | undefined): VariationPoint[] {
  let points: VariationPoint[] = [{ params: {} }];
  if (!sweep) return points;
  for (const [key, values] of Object.entries(sweep) as [keyof ManifestParams, unknown[] | undefined][]) {
    if (!values) continue;
    const next: VariationPoint[] = [];
    for (const p of points) {
      for (const v of values) {
        const part = `${key}${fileLabel(numberLabel(v))}`;
        next.push({ label: p.label ? `${p.label}-${part}` : part, params: { ...p.params, [key]: v } });
      }
    }
    points = next;
  }
  return points;
}

function variationPoints(scene: Scene): VariationPoint[] {
  const base: VariationPoint[] = scene.variations
    ? scene.variations.map((v) => ({ label: v.name, prompt: v.prompt, negative: v.negative, params: v.params ?? {} }))
    : [{ params: {} }];
  const sweeps = sweepPoints(scene.sweep);
  const out: VariationPoint[] = [];
  for (const v of base) {
    for (const s of sweeps) {
      const label = [v.label, s.label].filter(Boolean).join('_') || undefined;
      out.push({ label, prompt: v.prompt, negative: v.negative, params: { ...v.params, ...s.params } });
    }
  }
  return out;
}

function viewsOf(scene: Scene, baseDir: string): { label?: string; spec: ViewSpec }[] {
  const d = scene.depth;
  if ('file' in d) {
    return [{ spec: { source: 'file', file: resolve(baseDir, d.file), kind: d.kind ?? 'zdepth', near: d.near, far: d.far } }];
  }
  const cameras: (string | undefined)[] = d.cameras ?? [d.camera];
  const namedCamera = d.cameras !== undefined || d.camera !== undefined;
  let frames: (number | undefined)[] = [undefined];
  if (Array.isArray(d.frames)) frames = d.frames;
  else if (d.frames) {
    frames = [];
    for (let f = d.frames.start; f <= d.frames.end; f += d.frames.step) {
      frames.push(f);
      if (frames.length > MAX_OUTPUTS) break;
    }
  }
  const views: { label?: string; spec: ViewSpec }[] = [];
  for (const camera of cameras) {
    for (const frame of frames) {
      const parts = [namedCamera && camera ? fileLabel(camera) : undefined, frame !== undefined ? `f${frame}` : undefined].filter(Boolean);
      views.push({
        label: parts.length ? parts.join('-') : undefined,
        spec: {
          source: 'blend', blend: resolve(baseDir, d.blend), camera, frame, resolution: d.resolution,
          range: d.range ?? 'camera', near: d.near, far: d.far, engine: d.engine ?? 'auto',
        },
      });
    }
  }
  return views;
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** The flat list of outputs, in manifest order, each with a stable id. */
export function expandManifest(loaded: LoadedManifest): BatchOutput[] {
  const { manifest, baseDir } = loaded;
  const defaults = manifest.defaults ?? {};
  const outputs: BatchOutput[] = [];
  const ids = new Map<string, string>();
  manifest.scenes.forEach((scene, sceneIndex) => {
    const seeds = scene.seeds
      ?? (scene.seedCount !== undefined ? Array.from({ length: scene.seedCount }, (_, i) => deriveSeed(scene.name, i)) : undefined)
      ?? defaults.seeds
      ?? Array.from({ length: defaults.seedCount ?? 1 }, (_, i) => deriveSeed(scene.name, i));
    const views = viewsOf(scene, baseDir);
    const variations = variationPoints(scene);
    if (outputs.length + views.length * variations.length * seeds.length > MAX_OUTPUTS) {
      throw new DepthcastError('BAD_MANIFEST', `scenes[${sceneIndex}]: the manifest expands to more than ${MAX_OUTPUTS} outputs; split it`);
    }
    for (const view of views) {
      for (const variation of variations) {
        for (const seed of seeds) {
          const name = [view.label, variation.label, `s${seed}`].filter(Boolean).join('_');
          const id = `${scene.name}/${name}`;
          const where = `scenes[${sceneIndex}]`;
          const clash = ids.get(id.toLowerCase());
          if (clash) throw new DepthcastError('BAD_MANIFEST', `${where}: two outputs would both be written to ${id}.png (${clash} and this one); rename a camera, variation or seed`);
          ids.set(id.toLowerCase(), where);
          const prompt = variation.prompt !== undefined ? variation.prompt.replaceAll('{prompt}', scene.prompt) : scene.prompt;
          outputs.push({
            id, scene: scene.name, sceneIndex, view: view.label, variation: variation.label, seed, prompt,
            negativePrompt: variation.negative ?? scene.negative ?? defaults.negative ?? '',
            params: stripUndefined({ ...defaults.params, ...scene.params, ...variation.params }),
            depth: view.spec,
            init: scene.init ? resolve(baseDir, scene.init) : undefined,
            layout: scene.layout ? { file: resolve(baseDir, scene.layout.file), objects: scene.layout.objects } : undefined,
          });
        }
      }
    }
  });
  return outputs;
}
