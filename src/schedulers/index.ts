/**
 * Scheduler construction from diffusers configs, and the short preset names used on the wire.
 *
 * `createScheduler` picks the class by `_class_name` and resolves the config like diffusers 0.27.2's
 * `from_config`: keys missing take that class's defaults, keys it does not take are ignored, keys
 * listed in `_use_default_values` are dropped. Anything it cannot honour throws UNSUPPORTED_SCHEDULER
 * with what is supported.
 */
import { DepthcastError } from '../errors.ts';
import type { SCHEDULER_NAMES } from '../protocol/schemas.ts';
import { SchedulerSettings } from './config.ts';
import { DDIM_DEFAULTS, DDIMScheduler } from './ddim.ts';
import { DPM_SOLVER_DEFAULTS, DPMSolverMultistepScheduler } from './dpmpp-2m.ts';
import { EULER_ANCESTRAL_DEFAULTS, EulerAncestralDiscreteScheduler } from './euler-ancestral.ts';
import { EULER_DEFAULTS, EulerDiscreteScheduler } from './euler.ts';
import { LCM_DEFAULTS, LCMScheduler } from './lcm.ts';
import { PNDM_DEFAULTS, PNDMScheduler } from './pndm.ts';
import type { Scheduler, SchedulerConfig } from './types.ts';

export type { NoiseSource, Scheduler, SchedulerConfig } from './types.ts';

interface SchedulerClass {
  /** The class's __init__ defaults in diffusers 0.27.2. */
  defaults: Readonly<Record<string, unknown>>;
  build(settings: SchedulerSettings): Scheduler;
}

const CLASSES: Readonly<Record<string, SchedulerClass>> = {
  DDIMScheduler: { defaults: DDIM_DEFAULTS, build: (s) => new DDIMScheduler(s) },
  PNDMScheduler: { defaults: PNDM_DEFAULTS, build: (s) => new PNDMScheduler(s) },
  EulerDiscreteScheduler: { defaults: EULER_DEFAULTS, build: (s) => new EulerDiscreteScheduler(s) },
  EulerAncestralDiscreteScheduler: { defaults: EULER_ANCESTRAL_DEFAULTS, build: (s) => new EulerAncestralDiscreteScheduler(s) },
  DPMSolverMultistepScheduler: { defaults: DPM_SOLVER_DEFAULTS, build: (s) => new DPMSolverMultistepScheduler(s) },
  LCMScheduler: { defaults: LCM_DEFAULTS, build: (s) => new LCMScheduler(s) },
};

export const SUPPORTED_SCHEDULER_CLASSES: readonly string[] = Object.keys(CLASSES);

export type SchedulerPresetName = (typeof SCHEDULER_NAMES)[number];

/** Wire names -> the class and the settings that define the preset; everything else comes from the model's config. */
export const SCHEDULER_PRESETS: Readonly<Record<SchedulerPresetName, Readonly<SchedulerConfig>>> = {
  ddim: { _class_name: 'DDIMScheduler' },
  // Only the PLMS form is implemented; the Runge-Kutta warm-up (skip_prk_steps false) is refused.
  pndm: { _class_name: 'PNDMScheduler', skip_prk_steps: true },
  euler: { _class_name: 'EulerDiscreteScheduler', use_karras_sigmas: false },
  'euler-a': { _class_name: 'EulerAncestralDiscreteScheduler' },
  'dpmpp-2m': {
    _class_name: 'DPMSolverMultistepScheduler',
    algorithm_type: 'dpmsolver++',
    solver_order: 2,
    solver_type: 'midpoint',
    use_karras_sigmas: false,
  },
  'dpmpp-2m-karras': {
    _class_name: 'DPMSolverMultistepScheduler',
    algorithm_type: 'dpmsolver++',
    solver_order: 2,
    solver_type: 'midpoint',
    use_karras_sigmas: true,
  },
  lcm: { _class_name: 'LCMScheduler' },
};

const describe = (value: unknown): string => (typeof value === 'string' ? `"${value}"` : String(value));

function unknownClass(name: unknown): never {
  throw new DepthcastError(
    'UNSUPPORTED_SCHEDULER',
    `unknown scheduler class ${describe(name)}; supported classes: ${SUPPORTED_SCHEDULER_CLASSES.join(', ')}`,
  );
}

/** Builds the scheduler a diffusers scheduler config describes. */
export function createScheduler(config: SchedulerConfig): Scheduler {
  const name: unknown = config?._class_name;
  if (typeof name !== 'string' || !Object.hasOwn(CLASSES, name)) unknownClass(name);
  const entry = CLASSES[name]!;
  return entry.build(new SchedulerSettings(name, config, entry.defaults));
}

/** JSON has no non-finite numbers; write them the way diffusers configs in this project carry them. */
function jsonSafe(value: unknown): unknown {
  return typeof value === 'number' && !Number.isFinite(value) ? String(value) : value;
}

/**
 * The scheduler config for a wire preset on a model: like diffusers' `Class.from_config(model
 * config)`, the model's values are kept (betas, steps_offset, ...; keys listed in its
 * `_use_default_values` are not), the preset's settings are applied on top, and every key the
 * class takes but neither gave is filled with the class default. Keys other classes use stay in
 * (diffusers keeps them as hidden config); they are ignored.
 */
export function schedulerConfigFor(name: string, modelDefaultConfig: Readonly<Record<string, unknown>> = {}): SchedulerConfig {
  if (!Object.hasOwn(SCHEDULER_PRESETS, name)) {
    throw new DepthcastError(
      'UNSUPPORTED_SCHEDULER',
      `unknown scheduler "${name}"; supported: ${Object.keys(SCHEDULER_PRESETS).join(', ')}`,
    );
  }
  const preset = SCHEDULER_PRESETS[name as SchedulerPresetName];
  const entry = CLASSES[preset._class_name]!;
  const usedDefaults = new Set(Array.isArray(modelDefaultConfig._use_default_values) ? modelDefaultConfig._use_default_values : []);
  const config: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(entry.defaults)) config[key] = jsonSafe(value);
  for (const [key, value] of Object.entries(modelDefaultConfig)) {
    if (key === '_class_name' || key === '_use_default_values' || usedDefaults.has(key)) continue;
    config[key] = value;
  }
  return { ...config, ...preset };
}
