/**
 * Timestep schedules: the conformance cases' `expected.timesteps` (when ../shared/conformance is
 * present), plus lists derived by hand from the diffusers 0.27.2 formulas (numpy round-half-even,
 * float32 Euler grids, Karras ρ = 7, LCM skipping, PNDM's repeated timestep).
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createScheduler, schedulerConfigFor, type SchedulerConfig } from '../src/schedulers/index.ts';

const SD = {
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
};

function timesteps(config: Omit<SchedulerConfig, '_class_name'> & { _class_name: string }, n: number): number[] {
  const s = createScheduler(config as SchedulerConfig);
  s.setTimesteps(n);
  return [...s.timesteps];
}

// ---------------------------------------------------------------------------------------------
// Conformance cases

const here = dirname(fileURLToPath(import.meta.url));
const conformance = join(here, '..', '..', 'shared', 'conformance');
const casesDir = join(conformance, 'cases');
const caseNames = existsSync(casesDir) ? readdirSync(casesDir).filter((d) => existsSync(join(casesDir, d, 'case.json'))) : [];
if (caseNames.length === 0) console.log(`schedulers.timesteps: no conformance cases at ${casesDir}; case checks skipped`);

/** The wire preset each conformance scheduler config corresponds to. */
function presetFor(config: Record<string, unknown>): string | undefined {
  switch (config._class_name) {
    case 'DDIMScheduler':
      return 'ddim';
    case 'PNDMScheduler':
      return 'pndm';
    case 'EulerDiscreteScheduler':
      return 'euler';
    case 'EulerAncestralDiscreteScheduler':
      return 'euler-a';
    case 'DPMSolverMultistepScheduler':
      return config.use_karras_sigmas ? 'dpmpp-2m-karras' : 'dpmpp-2m';
    case 'LCMScheduler':
      return 'lcm';
  }
  return undefined;
}

describe.skipIf(caseNames.length === 0)('conformance case timesteps', () => {
  it.each(caseNames)('%s runs the expected timesteps', (name) => {
    const c = JSON.parse(readFileSync(join(casesDir, name, 'case.json'), 'utf8'));
    const s = createScheduler(c.scheduler);
    const n: number = c.num_inference_steps;
    s.setTimesteps(n);
    let start = 0;
    if (c.strength !== null && c.strength !== undefined) {
      const init = Math.min(Math.floor(n * c.strength), n);
      start = Math.max(n - init, 0);
      s.setBeginIndex(start);
    }
    expect(s.timesteps.slice(start * s.order)).toEqual(c.expected.timesteps);
  });

  // The public cases' configs are diffusers' from_config of the model default; our preset mapping must give the same.
  it.each(caseNames)('%s: schedulerConfigFor(preset, model default) reproduces the case config', (name) => {
    const c = JSON.parse(readFileSync(join(casesDir, name, 'case.json'), 'utf8'));
    const modelConfig = join(casesDir, name, c.model, 'scheduler', 'scheduler_config.json');
    const preset = presetFor(c.scheduler);
    if (!preset || !existsSync(modelConfig)) return;
    expect(schedulerConfigFor(preset, JSON.parse(readFileSync(modelConfig, 'utf8')))).toEqual(c.scheduler);
  });
});

// ---------------------------------------------------------------------------------------------
// Hand-derived schedules

describe('DDIM timesteps', () => {
  it('leading with steps_offset 1, 10 steps: 901..1', () => {
    expect(timesteps({ _class_name: 'DDIMScheduler', ...SD }, 10)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
  });
  it('leading without offset (class defaults), 10 steps: 900..0', () => {
    expect(timesteps({ _class_name: 'DDIMScheduler' }, 10)).toEqual([900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
  });
  it('linspace rounds half to even: 999/6 steps give 832 (832.5) and 500 (499.5)', () => {
    expect(timesteps({ _class_name: 'DDIMScheduler', ...SD, timestep_spacing: 'linspace' }, 7)).toEqual([999, 832, 666, 500, 333, 166, 0]);
  });
  it('trailing: round(arange(1000, 0, -1000/n)) - 1', () => {
    expect(timesteps({ _class_name: 'DDIMScheduler', ...SD, timestep_spacing: 'trailing' }, 7)).toEqual([999, 856, 713, 570, 428, 285, 142]);
    expect(timesteps({ _class_name: 'DDIMScheduler', ...SD, timestep_spacing: 'trailing' }, 3)).toEqual([999, 666, 332]);
    expect(timesteps({ _class_name: 'DDIMScheduler', ...SD, timestep_spacing: 'trailing' }, 10)).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
  });
});

describe('PNDM (skip_prk_steps) timesteps repeat the second entry', () => {
  it('leading, 10 steps: 901, 801, 801, 701..1', () => {
    expect(timesteps({ _class_name: 'PNDMScheduler', ...SD }, 10)).toEqual([901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
  });
  it('linspace and trailing', () => {
    expect(timesteps({ _class_name: 'PNDMScheduler', ...SD, timestep_spacing: 'linspace' }, 7)).toEqual([999, 832, 832, 666, 500, 333, 166, 0]);
    expect(timesteps({ _class_name: 'PNDMScheduler', ...SD, timestep_spacing: 'trailing' }, 7)).toEqual([999, 856, 856, 713, 570, 428, 285, 142]);
  });
  it('one and two steps (nothing / the last entry to repeat)', () => {
    expect(timesteps({ _class_name: 'PNDMScheduler', ...SD }, 1)).toEqual([1]);
    expect(timesteps({ _class_name: 'PNDMScheduler', ...SD }, 2)).toEqual([501, 1, 1]);
  });
});

describe('Euler timesteps (float32 grid)', () => {
  const euler = { _class_name: 'EulerDiscreteScheduler', ...SD };
  it('linspace 8: float32 values of 999·i/7', () => {
    expect(timesteps(euler, 8)).toEqual([
      999, 856.2857055664062, 713.5714111328125, 570.8571166992188, 428.1428527832031, 285.4285583496094, 142.7142791748047, 0,
    ]);
    // the unet's int64 cast truncates the float32 value
    expect(Math.trunc(timesteps(euler, 8)[1]!)).toBe(856);
  });
  it('linspace 124: 333 and 666 come out exact in float32 (float64 gives 332.99999999999994)', () => {
    const ts = timesteps(euler, 124);
    expect(ts[123 - 41]).toBe(333);
    expect(ts[123 - 82]).toBe(666);
  });
  it('linspace 1 is np.linspace(0, 999, 1) = [0]', () => {
    expect(timesteps(euler, 1)).toEqual([0]);
  });
  it('leading with offset and trailing are integer grids', () => {
    expect(timesteps({ ...euler, timestep_spacing: 'leading' }, 10)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    expect(timesteps({ ...euler, timestep_spacing: 'trailing' }, 7)).toEqual([999, 856, 713, 570, 428, 285, 142]);
  });
  it('Euler ancestral uses the same grid', () => {
    expect(timesteps({ ...euler, _class_name: 'EulerAncestralDiscreteScheduler' }, 8)).toEqual(timesteps(euler, 8));
  });
  it('Karras, linspace 10: σ ramp mapped back to fractional timesteps', () => {
    const expected = [999, 916.2840576171875, 815.0449829101562, 687.1532592773438, 523.1989135742188, 327.1472473144531, 145.9390411376953, 40.85687255859375, 6.732409954071045, 0];
    const got = timesteps({ ...euler, use_karras_sigmas: true }, 10);
    // numpy's SIMD float32 log can be 1-2 ulp off the correctly rounded log we use, which moves these by a few float32 ulps.
    got.forEach((t, i) => expect(Math.abs(t - expected[i]!)).toBeLessThan(3e-6 * Math.max(1, expected[i]!)));
  });
  it('continuous timesteps with v_prediction are 0.25·ln σ', () => {
    const ts = timesteps({ ...euler, timestep_type: 'continuous', prediction_type: 'v_prediction' }, 8);
    expect(ts[0]).toBeCloseTo(0.25 * Math.log(14.6146), 4);
    expect(ts[7]).toBeCloseTo(0.25 * Math.log(0.0291675), 4);
  });
});

describe('DPM-Solver++ timesteps', () => {
  const dpm = { _class_name: 'DPMSolverMultistepScheduler', ...SD };
  it('linspace over n+1 points without the last, rounded half to even', () => {
    expect(timesteps(dpm, 10)).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
  });
  it('leading uses last // (n+1) plus steps_offset', () => {
    expect(timesteps({ ...dpm, timestep_spacing: 'leading' }, 10)).toEqual([901, 811, 721, 631, 541, 451, 361, 271, 181, 91]);
  });
  it('trailing', () => {
    expect(timesteps({ ...dpm, timestep_spacing: 'trailing' }, 7)).toEqual([999, 856, 713, 570, 428, 285, 142]);
  });
  it('Karras ρ=7, timesteps rounded from log-σ interpolation, ending at 0', () => {
    expect(timesteps({ ...dpm, use_karras_sigmas: true }, 10)).toEqual([999, 916, 815, 687, 523, 327, 146, 41, 7, 0]);
    expect(timesteps({ ...dpm, use_karras_sigmas: true }, 12)).toEqual([999, 933, 854, 761, 646, 506, 345, 190, 78, 23, 4, 0]);
    expect(timesteps({ ...dpm, use_karras_sigmas: true }, 25)).toEqual([
      999, 970, 938, 905, 868, 829, 786, 739, 687, 630, 568, 500, 427, 352, 278, 207, 146, 96, 59, 34, 18, 9, 4, 1, 0,
    ]);
  });
  it('lambda_min_clipped cuts the top of the grid (string "-Infinity" keeps all)', () => {
    expect(timesteps({ ...dpm, lambda_min_clipped: '-Infinity' }, 10)).toEqual(timesteps(dpm, 10));
    // λ(t) = ln √(ᾱ/(1−ᾱ)) is below −2.5 for the top timesteps, so the grid ends lower.
    const clipped = timesteps({ ...dpm, lambda_min_clipped: -2.5 }, 10);
    expect(clipped[0]).toBeLessThan(999);
  });
});

describe('LCM timesteps', () => {
  const lcm = (n: number, original = 50): number[] => timesteps({ _class_name: 'LCMScheduler', ...SD, original_inference_steps: original }, n);
  it('4 of 50: [999, 759, 499, 259]', () => expect(lcm(4)).toEqual([999, 759, 499, 259]));
  it('8 of 50: floor(linspace(0, 50, 8, endpoint=False)) = 0,6,12,18,25,31,37,43', () => {
    expect(lcm(8)).toEqual([999, 879, 759, 639, 499, 379, 259, 139]);
  });
  it('6 of 25 (k = 40) and 2 of 100 (k = 10)', () => {
    expect(lcm(6, 25)).toEqual([999, 839, 679, 519, 359, 199]);
    expect(lcm(2, 100)).toEqual([999, 499]);
  });
  it('1 step and all 50', () => {
    expect(lcm(1)).toEqual([999]);
    expect(lcm(50)).toEqual(Array.from({ length: 50 }, (_, i) => 999 - 20 * i));
  });
  it('more steps than original_inference_steps is refused', () => {
    expect(() => lcm(51)).toThrow(/num_inference_steps/);
  });
});
