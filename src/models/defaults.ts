/**
 * The steps / guidance / scheduler a model runs with when the user names none: the registry
 * entry's defaults (written to depthcast.json at install), else what the model's own scheduler
 * class needs (LCM: 4 steps at guidance 1.0; the rest: 20 steps at 7.5).
 */
import type { SCHEDULER_NAMES } from '../protocol/schemas.ts';
import type { DepthcastModelConfig } from './layout.ts';

export type SchedulerPreset = (typeof SCHEDULER_NAMES)[number];

export interface ModelDefaults {
  steps: number;
  guidance: number;
  /** A wire preset name; absent: the model's own scheduler_config.json. */
  scheduler?: SchedulerPreset;
  /** Where they came from: the registry entry (depthcast.json) or the scheduler class. */
  from: 'registry' | 'scheduler';
}

/** diffusers class → the wire preset that runs it (the registry names classes). */
const PRESET_OF_CLASS: Readonly<Record<string, SchedulerPreset>> = {
  DDIMScheduler: 'ddim',
  PNDMScheduler: 'pndm',
  EulerDiscreteScheduler: 'euler',
  EulerAncestralDiscreteScheduler: 'euler-a',
  DPMSolverMultistepScheduler: 'dpmpp-2m',
  LCMScheduler: 'lcm',
};
const PRESETS = new Set<string>(Object.values(PRESET_OF_CLASS).concat('dpmpp-2m-karras'));

/** A wire name or a diffusers class name as the preset; undefined when it is neither. */
export function presetOf(name: string | undefined): SchedulerPreset | undefined {
  if (!name) return undefined;
  if (PRESETS.has(name)) return name as SchedulerPreset;
  return PRESET_OF_CLASS[name];
}

/** Steps and guidance a scheduler needs when nothing else says: few-step LCM differs. */
export function schedulerDefaults(scheduler: SchedulerPreset | undefined): { steps: number; guidance: number } {
  return scheduler === 'lcm' ? { steps: 4, guidance: 1 } : { steps: 20, guidance: 7.5 };
}

/** A model's defaults from its depthcast.json and the `_class_name` of its scheduler config. */
export function modelDefaults(config: DepthcastModelConfig, schedulerClass: string | undefined): ModelDefaults {
  const d = config.defaults;
  const scheduler = presetOf(d?.scheduler);
  const own = presetOf(schedulerClass);
  const fallback = schedulerDefaults(scheduler ?? own);
  const steps = typeof d?.steps === 'number' && Number.isInteger(d.steps) && d.steps > 0 ? d.steps : undefined;
  const guidance = typeof d?.guidance === 'number' && d.guidance >= 0 ? d.guidance : undefined;
  return {
    steps: steps ?? fallback.steps,
    guidance: guidance ?? fallback.guidance,
    ...(scheduler ? { scheduler } : {}),
    from: steps !== undefined || guidance !== undefined || scheduler ? 'registry' : 'scheduler',
  };
}

/**
 * What a generation runs with: the user's values first. A scheduler the user names that is not
 * the model's default brings its own class defaults; otherwise the model's defaults apply.
 */
export function resolveDefaults(model: ModelDefaults, modelClass: string | undefined, requested: { scheduler?: string; steps?: number; guidance?: number }): { scheduler?: SchedulerPreset; steps: number; guidance: number } {
  const named = presetOf(requested.scheduler);
  const modelScheduler = model.scheduler ?? presetOf(modelClass);
  const base = named && named !== modelScheduler ? schedulerDefaults(named) : model;
  const scheduler = named ?? model.scheduler;
  return { ...(scheduler ? { scheduler } : {}), steps: requested.steps ?? base.steps, guidance: requested.guidance ?? base.guidance };
}
