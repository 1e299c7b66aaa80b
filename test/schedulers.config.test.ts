/**
 * Scheduler configs: class selection, diffusers 0.27.2 class defaults, value parsing, presets,
 * and UNSUPPORTED_SCHEDULER errors that say what is supported.
 */
import { describe, expect, it } from 'vitest';
import { DepthcastError } from '../src/errors.ts';
import { SCHEDULER_NAMES } from '../src/protocol/schemas.ts';
import {
  createScheduler,
  schedulerConfigFor,
  SCHEDULER_PRESETS,
  SUPPORTED_SCHEDULER_CLASSES,
  type NoiseSource,
  type SchedulerConfig,
} from '../src/schedulers/index.ts';
import { SD_SCHEDULER_CONFIG } from './support/sd-scheduler.ts';

function failure(fn: () => unknown): DepthcastError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DepthcastError);
    return err as DepthcastError;
  }
  throw new Error('expected a DepthcastError');
}

const unsupported = (config: Record<string, unknown>): string => {
  const err = failure(() => createScheduler(config as SchedulerConfig));
  expect(err.code).toBe('UNSUPPORTED_SCHEDULER');
  return err.message;
};

describe('config errors', () => {
  it('an unknown or missing _class_name lists the supported classes', () => {
    for (const config of [{ _class_name: 'HeunDiscreteScheduler' }, {}, { _class_name: 42 }]) {
      const message = unsupported(config);
      for (const name of SUPPORTED_SCHEDULER_CLASSES) expect(message).toContain(name);
    }
    expect(unsupported({ _class_name: 'HeunDiscreteScheduler' })).toContain('HeunDiscreteScheduler');
  });

  it('an unknown beta_schedule lists the supported schedules', () => {
    for (const cls of SUPPORTED_SCHEDULER_CLASSES) {
      const message = unsupported({ _class_name: cls, beta_schedule: 'sigmoid' });
      expect(message).toContain('sigmoid');
      expect(message).toMatch(/linear, scaled_linear, squaredcos_cap_v2/);
    }
  });

  it('an unsupported prediction_type lists what the class supports', () => {
    expect(unsupported({ _class_name: 'DDIMScheduler', prediction_type: 'flow' })).toMatch(/epsilon, sample, v_prediction/);
    // The reference itself refuses these:
    expect(unsupported({ _class_name: 'EulerAncestralDiscreteScheduler', prediction_type: 'sample' })).toMatch(/epsilon, v_prediction/);
    expect(unsupported({ _class_name: 'PNDMScheduler', skip_prk_steps: true, prediction_type: 'sample' })).toMatch(/epsilon, v_prediction/);
  });

  it('other values it cannot honour', () => {
    expect(unsupported({ _class_name: 'DDIMScheduler', timestep_spacing: 'karras' })).toMatch(/linspace, leading, trailing/);
    expect(unsupported({ _class_name: 'PNDMScheduler' })).toMatch(/skip_prk_steps/); // class default is PRK warm-up
    expect(unsupported({ _class_name: 'DPMSolverMultistepScheduler', algorithm_type: 'sde-dpmsolver++' })).toMatch(/dpmsolver\+\+/);
    expect(unsupported({ _class_name: 'DPMSolverMultistepScheduler', solver_order: 4 })).toMatch(/solver_order/);
    expect(unsupported({ _class_name: 'DPMSolverMultistepScheduler', variance_type: 'learned_range' })).toMatch(/variance_type/);
    expect(unsupported({ _class_name: 'DPMSolverMultistepScheduler', final_sigmas_type: 'denoise_to_zero' })).toMatch(/zero, sigma_min/);
    expect(unsupported({ _class_name: 'EulerDiscreteScheduler', interpolation_type: 'cubic' })).toMatch(/linear, log_linear/);
    expect(unsupported({ _class_name: 'DDIMScheduler', beta_start: 'NaN' })).toMatch(/beta_start/);
    expect(unsupported({ _class_name: 'DDIMScheduler', num_train_timesteps: 10.5 })).toMatch(/num_train_timesteps/);
    expect(unsupported({ _class_name: 'DDIMScheduler', trained_betas: [0.1, 0.2] })).toMatch(/trained_betas/);
    expect(unsupported({ _class_name: 'DDIMScheduler', clip_sample: 'yes' })).toMatch(/clip_sample/);
  });

  it('an unknown preset name lists the presets', () => {
    const err = failure(() => schedulerConfigFor('heun', {}));
    expect(err.code).toBe('UNSUPPORTED_SCHEDULER');
    for (const name of SCHEDULER_NAMES) expect(err.message).toContain(name);
  });

  it('bad step counts are bad requests', () => {
    const s = createScheduler({ _class_name: 'DDIMScheduler' });
    expect(failure(() => s.setTimesteps(0)).code).toBe('BAD_REQUEST');
    expect(failure(() => s.setTimesteps(1001)).code).toBe('BAD_REQUEST');
    expect(failure(() => s.setTimesteps(2.5)).code).toBe('BAD_REQUEST');
  });
});

describe('config values', () => {
  it('missing keys take the 0.27.2 class defaults', () => {
    // DDIM: linear 1e-4..0.02, leading without offset, clip_sample true, set_alpha_to_one true.
    const ddim = createScheduler({ _class_name: 'DDIMScheduler' });
    ddim.setTimesteps(10);
    expect(ddim.timesteps).toEqual([900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
    // √ᾱ_999 of the linear schedule is ≈ 0.00635 (ᾱ_999 ≈ 4.04e-5)
    expect(ddim.addNoise(new Float32Array([1]), new Float32Array([0]), 999)[0]! ** 2).toBeCloseTo(4.036e-5, 7);
    // clip_sample true clamps x0 to [-1, 1]: with ε = 0 at t = 0 the step returns √ᾱ_final·clamp(x/√ᾱ_0) = 1·1.
    expect(ddim.step(new Float32Array([0]), 0, new Float32Array([5]))[0]).toBeCloseTo(1, 6);

    // LCM defaults to the SD betas.
    const lcm = createScheduler({ _class_name: 'LCMScheduler' });
    lcm.setTimesteps(4);
    expect(lcm.timesteps).toEqual([999, 759, 499, 259]);
    expect(lcm.addNoise(new Float32Array([1]), new Float32Array([0]), 999)[0]! ** 2).toBeCloseTo(0.00466, 5);

    // Euler: linspace spacing.
    const euler = createScheduler({ _class_name: 'EulerDiscreteScheduler' });
    euler.setTimesteps(3);
    expect(euler.timesteps).toEqual([999, 499.5, 0]);
  });

  it('non-finite numbers may come as strings, numbers as numeric strings', () => {
    const a = createScheduler({ _class_name: 'DPMSolverMultistepScheduler', lambda_min_clipped: '-Infinity', beta_start: '0.0001' });
    const b = createScheduler({ _class_name: 'DPMSolverMultistepScheduler' });
    a.setTimesteps(10);
    b.setTimesteps(10);
    expect(a.timesteps).toEqual(b.timesteps);
  });

  it('trained_betas win over beta_schedule, as in diffusers', () => {
    const betas = Array.from({ length: 1000 }, (_, i) => 0.0001 + (i * (0.02 - 0.0001)) / 999);
    const s = createScheduler({ _class_name: 'DDIMScheduler', trained_betas: betas, beta_schedule: 'whatever' });
    const ref = createScheduler({ _class_name: 'DDIMScheduler' });
    const x = new Float32Array([1]);
    const z = new Float32Array([0]);
    expect(s.addNoise(x, z, 500)[0]).toBeCloseTo(ref.addNoise(x, z, 500)[0]!, 6);
  });

  it('keys listed in _use_default_values are dropped; keys of other classes are ignored', () => {
    const s = createScheduler({
      _class_name: 'DDIMScheduler',
      timestep_spacing: 'trailing',
      steps_offset: 1,
      _use_default_values: ['timestep_spacing'],
      use_karras_sigmas: true,
      solver_order: 3,
    });
    s.setTimesteps(10);
    expect(s.timesteps[0]).toBe(901);
  });

  it('squaredcos_cap_v2 and rescale_betas_zero_snr build a usable schedule', () => {
    const cos = createScheduler({ _class_name: 'DDIMScheduler', beta_schedule: 'squaredcos_cap_v2', rescale_betas_zero_snr: true, prediction_type: 'v_prediction' });
    cos.setTimesteps(10);
    // Zero terminal SNR: ᾱ_999 = 0, so t = 999 is pure noise.
    expect(cos.addNoise(new Float32Array([1]), new Float32Array([0]), 999)[0]).toBe(0);
    const euler = createScheduler({ _class_name: 'EulerDiscreteScheduler', rescale_betas_zero_snr: true, timestep_spacing: 'trailing' });
    euler.setTimesteps(10);
    // σ_max is finite because ᾱ_999 is set to 2^-24 in σ-space: √((1 − 2^-24)/2^-24) ≈ 4096.
    expect(euler.initNoiseSigma).toBeCloseTo(4096, 0);
  });

  it('DPM-Solver accepts the aliases the reference maps (deis -> dpmsolver++, logrho/bh1/bh2 -> midpoint)', () => {
    const base = createScheduler({ _class_name: 'DPMSolverMultistepScheduler' });
    const aliased = createScheduler({ _class_name: 'DPMSolverMultistepScheduler', algorithm_type: 'deis', solver_type: 'bh2' });
    for (const s of [base, aliased]) s.setTimesteps(5);
    const x = Float32Array.from({ length: 8 }, (_, i) => i / 4 - 1);
    let p: Float32Array = x;
    let q: Float32Array = x;
    for (const t of base.timesteps) {
      p = base.step(x, t, p);
      q = aliased.step(x, t, q);
    }
    expect(q).toEqual(p);
  });

  it('a noise source that runs short is OUT_OF_NOISE', () => {
    const short: NoiseSource = { next: (length) => new Float32Array(length - 1) };
    const s = createScheduler(schedulerConfigFor('euler-a', {}));
    s.setTimesteps(4);
    const t = s.timesteps[0]!;
    const x = new Float32Array(16);
    expect(failure(() => s.step(x, t, s.scaleModelInput(x, t), short)).code).toBe('OUT_OF_NOISE');
  });
});

describe('presets', () => {
  const SD = SD_SCHEDULER_CONFIG;

  it('cover every wire name and build', () => {
    expect(Object.keys(SCHEDULER_PRESETS).sort()).toEqual([...SCHEDULER_NAMES].sort());
    for (const name of SCHEDULER_NAMES) {
      const s = createScheduler(schedulerConfigFor(name, SD));
      expect(s.className).toBe(SCHEDULER_PRESETS[name]._class_name);
    }
  });

  it('switch the class like from_config: model betas kept, class defaults for the rest, preset settings on top', () => {
    const karras = schedulerConfigFor('dpmpp-2m-karras', SD);
    expect(karras).toMatchObject({
      _class_name: 'DPMSolverMultistepScheduler',
      beta_schedule: 'scaled_linear',
      beta_start: 0.00085,
      beta_end: 0.012,
      steps_offset: 1,
      use_karras_sigmas: true,
      algorithm_type: 'dpmsolver++',
      solver_order: 2,
      timestep_spacing: 'linspace',
      lambda_min_clipped: '-Infinity',
      final_sigmas_type: 'zero',
    });
    expect(schedulerConfigFor('dpmpp-2m', { ...SD, use_karras_sigmas: true }).use_karras_sigmas).toBe(false);
    expect(schedulerConfigFor('lcm', SD)).toMatchObject({ _class_name: 'LCMScheduler', timestep_spacing: 'leading', original_inference_steps: 50, set_alpha_to_one: false });
    expect(schedulerConfigFor('euler', SD)).toMatchObject({ timestep_spacing: 'linspace', steps_offset: 1 });
    // A model config that sets spacing keeps it across the switch; one that only defaulted it does not.
    expect(schedulerConfigFor('euler', { ...SD, timestep_spacing: 'leading' }).timestep_spacing).toBe('leading');
    expect(schedulerConfigFor('euler', { ...SD, timestep_spacing: 'leading', _use_default_values: ['timestep_spacing'] }).timestep_spacing).toBe('linspace');
  });

  it('round-trip through JSON', () => {
    for (const name of SCHEDULER_NAMES) {
      const config = JSON.parse(JSON.stringify(schedulerConfigFor(name, SD))) as SchedulerConfig;
      const s = createScheduler(config);
      s.setTimesteps(4);
      expect(s.timesteps.length).toBeGreaterThanOrEqual(4);
    }
  });
});
