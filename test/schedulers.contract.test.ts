/**
 * The Scheduler contract, run over every wire preset (on a Stable-Diffusion-style model config)
 * and a few variants. The "true noise" oracle below is independent of the implementation: it
 * knows x0, computes ᾱ(t) in float64 from the scaled_linear betas, and answers with the ε (or v)
 * that explains its input at that level. A sampler that keeps its latent on the path
 * x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε must then land on x0 (or on its last noise level).
 */
import { describe, expect, it } from 'vitest';
import { DepthcastError } from '../src/errors.ts';
import { SCHEDULER_NAMES } from '../src/protocol/schemas.ts';
import { SD_SCHEDULER_CONFIG } from './support/sd-scheduler.ts';
import { createScheduler, schedulerConfigFor, type NoiseSource, type Scheduler, type SchedulerConfig } from '../src/schedulers/index.ts';

const SD_DEFAULT = SD_SCHEDULER_CONFIG;

// ---- independent float64 reference for the SD noise schedule
const T = 1000;
const ABAR: number[] = (() => {
  const a = Math.sqrt(0.00085);
  const b = Math.sqrt(0.012);
  const out: number[] = [];
  let acc = 1;
  for (let i = 0; i < T; i++) {
    const beta = (a + (i * (b - a)) / (T - 1)) ** 2;
    acc *= 1 - beta;
    out.push(acc);
  }
  return out;
})();
const SIGMA = ABAR.map((v) => Math.sqrt((1 - v) / v));
/** σ at a possibly fractional timestep, linearly interpolated like the reference. */
function sigmaAt(t: number): number {
  const j = Math.min(Math.floor(t), T - 2);
  return SIGMA[j]! + (t - j) * (SIGMA[j + 1]! - SIGMA[j]!);
}
const abarAt = (t: number): number => 1 / (1 + sigmaAt(t) ** 2);

// ---- deterministic data
function gaussian(seed: number, n: number): Float32Array {
  let s = seed >>> 0;
  const uniform = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return (((z ^ (z >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

class CountingNoise implements NoiseSource {
  calls = 0;
  constructor(private readonly seed: number) {}
  next(length: number): Float32Array {
    this.calls++;
    return gaussian(this.seed + this.calls * 7919, length);
  }
}

const LATENT = 4 * 8 * 8;
const X0 = gaussian(1, LATENT).map((v) => v * 0.8);
const EPS = gaussian(2, LATENT);

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const allFinite = (a: ArrayLike<number>): boolean => Array.prototype.every.call(a, Number.isFinite);

/** Whether the latent is ᾱ-space (model input = latent) or σ-space (latent = x0 + σ·ε, input scaled by 1/√(σ²+1)). */
const SIGMA_SPACE = new Set(['EulerDiscreteScheduler', 'EulerAncestralDiscreteScheduler']);

/** The model: ε (or v) that explains `input` at timestep t given the known x0. */
function oracle(input: Float32Array, t: number, prediction: 'epsilon' | 'v_prediction'): Float32Array {
  const abar = abarAt(t);
  const a = Math.sqrt(abar);
  const s = Math.sqrt(1 - abar);
  const out = new Float32Array(input.length);
  for (let i = 0; i < out.length; i++) {
    const eps = (input[i]! - a * X0[i]!) / s;
    out[i] = prediction === 'epsilon' ? eps : a * eps - s * X0[i]!;
  }
  return out;
}

interface Variant {
  label: string;
  config: SchedulerConfig;
  steps: number;
  /** Bound on max |final − target| for the oracle loop. */
  bound: number;
  /** Bound for the img2img start, where it differs. */
  img2imgBound?: number;
}

const VARIANTS: Variant[] = [
  ...SCHEDULER_NAMES.map((name) => ({
    label: name,
    config: schedulerConfigFor(name, SD_DEFAULT),
    steps: name === 'lcm' ? 4 : 10,
    // Float32 rounding only (measured ≤ 3e-6). Karras σ sit between the integer timesteps the model sees, but the
    // last step starts from σ_min = σ(t=0) where the oracle is exact again.
    bound: 1e-4,
    // PNDM keeps no step index: after an img2img cut its second call still "redoes" the first step
    // (t + T//n -> t), so the third call treats a latent at level t_(k+1) as level t_(k+2), exactly as
    // the reference does. The path is no longer exact.
    img2imgBound: name === 'pndm' ? 0.15 : undefined,
  })),
  { label: 'euler karras', config: { ...schedulerConfigFor('euler', SD_DEFAULT), use_karras_sigmas: true }, steps: 12, bound: 1e-4 },
  // Trailing 7: DDIM steps to t − 142 while the grid goes 999 -> 856, a one-timestep mismatch the reference has too.
  { label: 'ddim trailing v', config: { ...schedulerConfigFor('ddim', SD_DEFAULT), timestep_spacing: 'trailing', prediction_type: 'v_prediction' }, steps: 7, bound: 3e-3 },
  { label: 'ddim linspace', config: { ...schedulerConfigFor('ddim', SD_DEFAULT), timestep_spacing: 'linspace', set_alpha_to_one: true }, steps: 7, bound: 1e-4 },
  // PLMS combines raw v outputs of different timesteps before converting to ε, so v is not exact even with a perfect model.
  { label: 'pndm v', config: { ...schedulerConfigFor('pndm', SD_DEFAULT), prediction_type: 'v_prediction' }, steps: 9, bound: 0.06, img2imgBound: 0.15 },
  { label: 'euler leading v', config: { ...schedulerConfigFor('euler', SD_DEFAULT), timestep_spacing: 'leading', prediction_type: 'v_prediction' }, steps: 10, bound: 1e-4 },
  { label: 'euler-a trailing', config: { ...schedulerConfigFor('euler-a', SD_DEFAULT), timestep_spacing: 'trailing' }, steps: 10, bound: 1e-4 },
  { label: 'dpm++ 3M v', config: { ...schedulerConfigFor('dpmpp-2m', SD_DEFAULT), solver_order: 3, prediction_type: 'v_prediction' }, steps: 20, bound: 1e-4 },
  { label: 'dpm++ 2M heun sigma_min', config: { ...schedulerConfigFor('dpmpp-2m', SD_DEFAULT), solver_type: 'heun', final_sigmas_type: 'sigma_min' }, steps: 16, bound: 1e-4 },
  { label: 'lcm 8 v', config: { ...schedulerConfigFor('lcm', SD_DEFAULT), prediction_type: 'v_prediction' }, steps: 8, bound: 1e-4 },
];

/**
 * Where an exact sampler ends: x0; for DDIM/PNDM the final ᾱ (ᾱ_0 without set_alpha_to_one) and
 * for DPM-Solver with final_sigmas_type sigma_min the level of t = 0, applied to the same ε.
 */
function target(s: Scheduler, config: SchedulerConfig): Float32Array {
  const endsAtZero = s.className === 'DPMSolverMultistepScheduler' ? config.final_sigmas_type !== 'sigma_min' : !['DDIMScheduler', 'PNDMScheduler'].includes(s.className);
  if (endsAtZero) return X0;
  const abar = config.set_alpha_to_one ? 1 : ABAR[0]!;
  return X0.map((v, i) => Math.sqrt(abar) * v + Math.sqrt(1 - abar) * EPS[i]!);
}

function runLoop(v: Variant, begin: number, noise?: NoiseSource): { final: Float32Array; scheduler: Scheduler } {
  const s = createScheduler(v.config);
  s.setTimesteps(v.steps);
  s.setBeginIndex(begin);
  const run = s.timesteps.slice(begin);
  const prediction = v.config.prediction_type === 'v_prediction' ? 'v_prediction' : 'epsilon';
  let latents = s.addNoise(X0, EPS, run[0]!);
  for (const t of run) {
    const input = s.scaleModelInput(latents, t);
    latents = s.step(oracle(input, t, prediction), t, latents, noise);
  }
  return { final: latents, scheduler: s };
}

describe.each(VARIANTS)('scheduler contract: $label', (v) => {
  const fresh = (): Scheduler => {
    const s = createScheduler(v.config);
    s.setTimesteps(v.steps);
    return s;
  };

  it('reports its class and order', () => {
    const s = fresh();
    expect(s.className).toBe(v.config._class_name);
    expect(s.order).toBe(1);
  });

  it('gives n (PNDM: n+1) finite non-increasing timesteps inside [0, num_train_timesteps)', () => {
    const s = fresh();
    const ts = s.timesteps;
    expect(ts.length).toBe(s.className === 'PNDMScheduler' ? v.steps + 1 : v.steps);
    for (let i = 0; i < ts.length; i++) {
      expect(Number.isFinite(ts[i])).toBe(true);
      expect(ts[i]).toBeGreaterThanOrEqual(0);
      expect(ts[i]).toBeLessThan(T);
      if (i > 0) expect(ts[i]!).toBeLessThanOrEqual(ts[i - 1]!);
    }
  });

  it('has a finite initNoiseSigma >= 1', () => {
    const sigma = fresh().initNoiseSigma;
    expect(Number.isFinite(sigma)).toBe(true);
    expect(sigma).toBeGreaterThanOrEqual(1);
  });

  it('scales the model input without changing its length (σ-space: by 1/√(σ²+1))', () => {
    const s = fresh();
    const t = s.timesteps[0]!;
    const out = s.scaleModelInput(X0, t);
    expect(out.length).toBe(X0.length);
    const scale = SIGMA_SPACE.has(s.className) ? 1 / Math.sqrt(sigmaAt(t) ** 2 + 1) : 1;
    expect(out[3]! / X0[3]!).toBeCloseTo(scale, 5);
  });

  it('steps to a finite array of the same length without mutating its inputs', () => {
    const s = fresh();
    const sample = Float32Array.from(X0);
    const output = Float32Array.from(EPS);
    const t = s.timesteps[0]!;
    s.scaleModelInput(sample, t);
    const out = s.step(output, t, sample, new CountingNoise(5));
    expect(out.length).toBe(sample.length);
    expect(allFinite(out)).toBe(true);
    expect(out).not.toBe(sample);
    expect(sample).toEqual(X0);
    expect(output).toEqual(EPS);
  });

  it('adds zero noise at the last timestep as a uniform scale of the original', () => {
    const s = fresh();
    const last = s.timesteps[s.timesteps.length - 1]!;
    const out = s.addNoise(X0, new Float32Array(LATENT), last);
    const scale = out[0]! / X0[0]!;
    // σ-space keeps x0 as is; ᾱ-space scales by √ᾱ_t of that timestep (Karras: of its σ, near the rounded t).
    const expected = SIGMA_SPACE.has(s.className) ? 1 : Math.sqrt(abarAt(last));
    expect(scale).toBeGreaterThan(0);
    expect(scale).toBeLessThanOrEqual(1);
    expect(scale).toBeCloseTo(expected, v.config.use_karras_sigmas ? 2 : 5);
    expect(maxAbsDiff(out, X0.map((x) => x * scale))).toBeLessThan(1e-6);
  });

  it('recovers x0 from addNoise(x0, ε, t0) with a true-noise model', () => {
    const noise = new CountingNoise(11);
    const { final, scheduler } = runLoop(v, 0, noise);
    expect(allFinite(final)).toBe(true);
    expect(maxAbsDiff(final, target(scheduler, v.config))).toBeLessThan(v.bound);
  });

  it('recovers x0 from an img2img start (setBeginIndex) as well', () => {
    const n = v.steps;
    const init = Math.min(Math.floor(n * 0.6), n);
    const begin = Math.max(n - init, 0);
    const { final, scheduler } = runLoop(v, begin, new CountingNoise(13));
    expect(maxAbsDiff(final, target(scheduler, v.config))).toBeLessThan(v.img2imgBound ?? v.bound);
  });

  it('draws noise only on the steps that need it, and fails without a source', () => {
    const s = fresh();
    const noise = new CountingNoise(17);
    let latents = s.addNoise(X0, EPS, s.timesteps[0]!);
    for (const t of s.timesteps) latents = s.step(oracle(s.scaleModelInput(latents, t), t, 'epsilon'), t, latents, noise);
    const expected = { EulerAncestralDiscreteScheduler: v.steps, LCMScheduler: v.steps - 1 }[s.className] ?? 0;
    expect(noise.calls).toBe(expected);

    const again = fresh();
    const t0 = again.timesteps[0]!;
    const call = (): Float32Array => again.step(EPS, t0, again.scaleModelInput(X0, t0));
    if (expected > 0) {
      expect(call).toThrow(DepthcastError);
      try {
        fresh().step(EPS, t0, X0);
      } catch (err) {
        expect((err as DepthcastError).code).toBe('OUT_OF_NOISE');
      }
    } else {
      expect(call).not.toThrow();
    }
  });

  it('noises at the level of the begin index (img2img start)', () => {
    const s = fresh();
    const k = Math.floor(s.timesteps.length / 2);
    s.setBeginIndex(k);
    const t = s.timesteps[k]!;
    const ones = new Float32Array(LATENT).fill(1);
    const out = s.addNoise(new Float32Array(LATENT), ones, t);
    const expected = SIGMA_SPACE.has(s.className) ? sigmaAt(t) : Math.sqrt(1 - abarAt(t));
    // Karras σ sit between grid points (DPM rounds its timesteps, Euler maps σ to t log-linearly): only roughly equal there.
    if (v.config.use_karras_sigmas) expect(Math.abs(out[0]! / expected - 1)).toBeLessThan(0.05);
    else expect(out[0]!).toBeCloseTo(expected, 5);
  });
});

describe('PNDM (PLMS) specifics', () => {
  it('re-runs the first transfer at the repeated timestep from the same starting sample', () => {
    const s = createScheduler(schedulerConfigFor('pndm', SD_DEFAULT));
    s.setTimesteps(10);
    expect(s.timesteps.slice(0, 3)).toEqual([901, 801, 801]);
    const x = s.addNoise(X0, EPS, 901);
    const first = s.step(EPS, 901, x);
    // Second call at 801: from 901 to 801 again, from x (not `first`), with (ε + ε)/2 = ε.
    const second = s.step(EPS, 801, first);
    expect(maxAbsDiff(first, second)).toBeLessThan(1e-6);
    // With the exact ε both equal the 801 noise level of the same x0 and ε.
    const at801 = s.addNoise(X0, EPS, 801);
    expect(maxAbsDiff(second, at801)).toBeLessThan(1e-5);
  });

  it('refuses the Runge-Kutta warm-up (skip_prk_steps false)', () => {
    expect(() => createScheduler({ ...schedulerConfigFor('pndm', SD_DEFAULT), skip_prk_steps: false })).toThrow(/skip_prk_steps/);
  });
});

describe('hand-derived values', () => {
  const ddim = (): Scheduler => {
    const s = createScheduler(schedulerConfigFor('ddim', SD_DEFAULT));
    s.setTimesteps(10);
    return s;
  };

  it('alphas_cumprod[999] of scaled_linear 0.00085..0.012 is about 0.00466', () => {
    const out = ddim().addNoise(new Float32Array([1]), new Float32Array([0]), 999);
    expect(out[0]! ** 2).toBeCloseTo(0.00466, 5);
    expect(ABAR[999]).toBeCloseTo(0.00466, 5);
  });

  it('σ_max of that schedule is about 14.6146 and is the Euler initNoiseSigma (√(σ²+1) for leading)', () => {
    const euler = createScheduler(schedulerConfigFor('euler', SD_DEFAULT));
    euler.setTimesteps(8);
    expect(euler.initNoiseSigma).toBeCloseTo(14.6146, 4);
    const leading = createScheduler({ ...schedulerConfigFor('euler', SD_DEFAULT), timestep_spacing: 'leading' });
    leading.setTimesteps(10);
    expect(leading.initNoiseSigma).toBeCloseTo(Math.sqrt(sigmaAt(901) ** 2 + 1), 4);
  });

  it('DDIM steps from t to t − T//n and lands on ᾱ_0 at the end without set_alpha_to_one', () => {
    const s = ddim();
    // With ε = 0 the step just rescales: x_prev = √(ᾱ_prev/ᾱ_t)·x.
    const x = new Float32Array([1]);
    expect(s.step(new Float32Array([0]), 901, x)[0]).toBeCloseTo(Math.sqrt(ABAR[801]! / ABAR[901]!), 5);
    expect(s.step(new Float32Array([0]), 1, x)[0]).toBeCloseTo(Math.sqrt(ABAR[0]! / ABAR[1]!), 6);
  });

  it('DDIM clip_sample clamps the x0 prediction to clip_sample_range', () => {
    const s = createScheduler({ ...schedulerConfigFor('ddim', SD_DEFAULT), clip_sample: true, clip_sample_range: 0.5 });
    s.setTimesteps(10);
    // Large sample with ε = 0: x0 = x/√ᾱ_t is clipped to 0.5, so x_prev = √ᾱ_prev·0.5.
    const out = s.step(new Float32Array([0]), 501, new Float32Array([10]));
    expect(out[0]).toBeCloseTo(Math.sqrt(ABAR[401]!) * 0.5, 5);
  });

  it('LCM boundary scalings use σ_data 0.5 and timestep_scaling', () => {
    const s = createScheduler({ ...schedulerConfigFor('lcm', SD_DEFAULT), timestep_scaling: 0.01 });
    s.setTimesteps(1);
    expect(s.timesteps).toEqual([999]);
    // One step is the last: denoised = c_out·x0 + c_skip·x, ε = 0 so x0 = x/√ᾱ.
    const st = 999 * 0.01;
    const cSkip = 0.25 / (st * st + 0.25);
    const cOut = st / Math.sqrt(st * st + 0.25);
    const out = s.step(new Float32Array([0]), 999, new Float32Array([1]));
    expect(out[0]).toBeCloseTo(cOut / Math.sqrt(ABAR[999]!) + cSkip, 3);
  });
});
