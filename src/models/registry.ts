/**
 * The registry of known published ONNX models (models/registry.json): what each is, where it
 * lives on the hub, how its files map onto the depthcast layout, and its ControlNet residual
 * name mapping. Entries are marked `verified: false` until someone has pulled and verified them.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { DepthcastError } from '../errors.ts';

export const REGISTRY_URL = new URL('../../models/registry.json', import.meta.url);

const Name = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,127}$/, 'lowercase letters, digits, ".", "_", "-"');
const RelPath = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith('/') && !p.includes('\\') && !p.split('/').some((s) => s === '' || s === '.' || s === '..'), 'a relative path without "..", "." or empty segments');

const Source = z.strictObject({
  repo: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/, 'owner/name'),
  revision: z.string().min(1).default('main'),
  subfolder: RelPath.optional(),
  /** layout path ← repo path */
  map: z.record(RelPath, RelPath).optional(),
  file: RelPath.optional(),
});

const Defaults = z.strictObject({
  steps: z.number().int().positive(),
  guidance: z.number().nonnegative(),
  scheduler: z.string().min(1),
  strength: z.number().gt(0).lte(1).optional(),
  controlnet_conditioning_scale: z.number().nonnegative().optional(),
});

const Io = z.strictObject({
  dtype: z.enum(['float32', 'float16']).optional(),
  unet_residual_inputs: z.boolean().optional(),
  /** For exports without vae_decoder/config.json: written to depthcast.json as vae.scaling_factor at install. */
  vae_scaling_factor: z.number().positive().optional(),
  /** ControlNet output name → unet input name, written to depthcast.json as controlnet.outputs. */
  controlnet_outputs: z.record(z.string().min(1), z.string().min(1)).nullable().optional(),
});

const Entry = z.strictObject({
  name: Name,
  kind: z.enum(['pipeline', 'base', 'controlnet']),
  title: z.string().min(1),
  family: z.enum(['sd15', 'sd15-lcm', 'sd2-depth', 'sd21', 'sd21-turbo']),
  pipeline: z.enum(['depth2img', 'controlnet']).optional(),
  source: Source.optional(),
  base: Name.optional(),
  controlnet: Name.optional(),
  export: z.string().min(1).optional(),
  dtype: z.enum(['fp32', 'fp16']),
  io: Io.optional(),
  defaults: Defaults.optional(),
  license: z.string().optional(),
  verified: z.boolean(),
  note: z.string().min(1),
});
export type RegistryEntry = z.infer<typeof Entry>;
export type RegistrySource = z.infer<typeof Source>;

const Registry = z
  .strictObject({
    $comment: z.string().optional(),
    version: z.literal(1),
    models: z.array(Entry),
  })
  .superRefine((reg, ctx) => {
    const byName = new Map<string, RegistryEntry>();
    for (const [i, e] of reg.models.entries()) {
      if (byName.has(e.name)) ctx.addIssue({ code: 'custom', message: `duplicate name ${e.name}`, path: ['models', i, 'name'] });
      byName.set(e.name, e);
    }
    for (const [i, e] of reg.models.entries()) {
      const at = (field: string, message: string): void => ctx.addIssue({ code: 'custom', message: `${e.name}: ${message}`, path: ['models', i, field] });
      if (e.kind === 'pipeline') {
        if (!e.pipeline) at('pipeline', 'a pipeline entry needs "pipeline"');
        if (!e.defaults) at('defaults', 'a pipeline entry needs "defaults"');
        const ways = [Boolean(e.source), Boolean(e.base || e.controlnet), Boolean(e.export)].filter(Boolean).length;
        if (ways !== 1) at('source', 'a pipeline entry has exactly one of "source", "base"+"controlnet", or "export"');
        if ((e.base && !e.controlnet) || (!e.base && e.controlnet)) at('base', '"base" and "controlnet" go together');
        if (e.base && byName.get(e.base)?.kind !== 'base') at('base', `"${e.base}" is not a base entry of the registry`);
        if (e.controlnet && byName.get(e.controlnet)?.kind !== 'controlnet') at('controlnet', `"${e.controlnet}" is not a controlnet entry of the registry`);
        if (e.controlnet && e.pipeline !== 'controlnet') at('pipeline', 'an entry with a ControlNet has pipeline "controlnet"');
      } else {
        if (!e.source) at('source', `a ${e.kind} entry needs "source"`);
        if (e.base || e.controlnet || e.export) at('base', `a ${e.kind} entry has only "source"`);
      }
    }
  });
export type Registry = z.infer<typeof Registry>;

export function parseRegistry(json: unknown, where = 'registry'): Registry {
  const r = Registry.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new DepthcastError('BAD_MODEL', `${where} is invalid: ${issues}`);
  }
  return r.data;
}

let cached: Registry | undefined;

/** Loads and validates models/registry.json (or another file). */
export async function loadRegistry(file: string | URL = REGISTRY_URL): Promise<Registry> {
  if (file === REGISTRY_URL && cached) return cached;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new DepthcastError('NOT_FOUND', `cannot read the model registry ${String(file)}: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new DepthcastError('BAD_MODEL', `the model registry ${String(file)} is not valid JSON: ${(err as Error).message}`);
  }
  const reg = parseRegistry(json, String(file));
  if (file === REGISTRY_URL) cached = reg;
  return reg;
}

export interface ResolvedModel {
  entry: RegistryEntry;
  /** Self-contained repo, or the base of a ControlNet assembly. */
  source?: RegistrySource;
  controlnet?: RegistrySource;
  /** Content of the model's depthcast.json, when the registry knows the residual names. */
  depthcastJson?: Record<string, unknown>;
  /** Export-only entries: the command that produces the model. */
  export?: string;
}

/** Resolves a registry name to what pull needs. `revision` overrides the base (or only) source's revision. */
export function resolveModel(reg: Registry, name: string, revision?: string): ResolvedModel {
  const entry = reg.models.find((m) => m.name === name);
  if (!entry) {
    const names = reg.models.filter((m) => m.kind === 'pipeline').map((m) => m.name);
    throw new DepthcastError('MODEL_NOT_FOUND', `${name} is not in the model registry; known models: ${names.join(', ')}. A hub repo can be pulled directly as owner/name.`);
  }
  const withRev = (s: RegistrySource): RegistrySource => (revision ? { ...s, revision } : s);
  if (entry.kind === 'controlnet') {
    throw new DepthcastError('BAD_REQUEST', `${name} is a ControlNet alone; pull a pipeline that uses it, or pass it as --controlnet to a base model`);
  }
  if (entry.export) return { entry, export: entry.export };
  if (entry.source) return { entry, source: withRev(entry.source), depthcastJson: depthcastJsonOf(entry, undefined, entry.defaults) };
  const base = reg.models.find((m) => m.name === entry.base)!;
  const cn = reg.models.find((m) => m.name === entry.controlnet)!;
  return {
    entry,
    source: withRev(base.source!),
    controlnet: cn.source!,
    depthcastJson: depthcastJsonOf(base, cn, entry.defaults),
  };
}

/** What the registry knows that the export's own files do not say: defaults, the VAE scaling factor, the residual names. */
export function depthcastJsonOf(base: RegistryEntry | undefined, controlnet?: RegistryEntry, defaults?: RegistryEntry['defaults']): Record<string, unknown> | undefined {
  const scaling = base?.io?.vae_scaling_factor;
  const outputs = controlnet?.io?.controlnet_outputs;
  if (scaling === undefined && !outputs && !defaults) return undefined;
  return {
    ...(defaults ? { defaults: { steps: defaults.steps, guidance: defaults.guidance, scheduler: defaults.scheduler } } : {}),
    ...(scaling !== undefined ? { vae: { scaling_factor: scaling } } : {}),
    ...(outputs ? { controlnet: { outputs } } : {}),
  };
}
