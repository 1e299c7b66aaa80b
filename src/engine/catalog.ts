/**
 * The models a service may run: every folder with a model_index.json under the models
 * directory, plus one given by path at start-up. Clients name models from here, never by path.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { modelDefaults, type ModelDefaults } from '../models/defaults.ts';
import { type DepthcastModelConfig, familyOf, SESSION_FILES } from '../models/layout.ts';
import { CLI } from '../cli/command.ts';

export interface CatalogEntry {
  name: string;
  dir: string;
  family: 'depth2img' | 'controlnet';
  /** Built by `models create-tiny`: random weights, abstract images. */
  tiny: boolean;
  /** What a frame that names no steps/guidance/scheduler runs with. */
  defaults: ModelDefaults;
}

function readJsonOr<T>(path: string, fallback: T): T {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return fallback;
  }
}

function entryFor(name: string, dir: string): CatalogEntry | undefined {
  try {
    const index = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8')) as { _class_name?: string; depthcast_tiny?: boolean };
    const family = familyOf(index._class_name ?? '', existsSync(join(dir, SESSION_FILES.controlnet)));
    if (!family) return undefined;
    const config = readJsonOr<DepthcastModelConfig>(join(dir, 'depthcast.json'), {});
    const scheduler = readJsonOr<{ _class_name?: string }>(join(dir, 'scheduler/scheduler_config.json'), {});
    return { name, dir, family, tiny: index.depthcast_tiny === true, defaults: modelDefaults(config, scheduler._class_name) };
  } catch {
    return undefined;
  }
}

export class ModelCatalog {
  private readonly extra: CatalogEntry[] = [];
  readonly defaultName?: string;

  /** `model` is a name inside modelsDir, or a path to a model folder (registered under its folder name). */
  constructor(readonly modelsDir: string | undefined, model?: string) {
    if (model && (model.includes('/') || model.includes('\\') || model.startsWith('.'))) {
      const dir = resolve(model);
      const entry = entryFor(basename(dir), dir);
      if (!entry) throw new DepthcastError('MODEL_NOT_FOUND', `--model ${model} is not a depth model folder (no readable model_index.json of a depth2img or ControlNet pipeline)`);
      this.extra.push(entry);
      this.defaultName = entry.name;
    } else {
      this.defaultName = model;
    }
  }

  list(): CatalogEntry[] {
    const found = [...this.extra];
    if (this.modelsDir && existsSync(this.modelsDir)) {
      for (const d of readdirSync(this.modelsDir, { withFileTypes: true })) {
        if (!d.isDirectory() || found.some((e) => e.name === d.name)) continue;
        const entry = entryFor(d.name, join(this.modelsDir, d.name));
        if (entry) found.push(entry);
      }
    }
    return found.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The named model, else the default, else the only one; MODEL_NOT_FOUND says how to get one. */
  resolve(name?: string): CatalogEntry {
    const all = this.list();
    const wanted = name ?? this.defaultName;
    const found = wanted ? all.find((e) => e.name === wanted) : all.length >= 1 ? all[0] : undefined;
    if (found) return found;
    const known = all.length ? `available: ${all.map((e) => e.name).join(', ')}` : 'no model is installed';
    throw new DepthcastError(
      'MODEL_NOT_FOUND',
      `${wanted ? `model "${wanted}" not found` : 'no model to run'} (${known}). Get one with \`${CLI} models pull <id>\`, or make an offline demo model with \`${CLI} models create-tiny <models-dir>/tiny\``,
    );
  }
}
