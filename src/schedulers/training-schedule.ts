/**
 * The training noise schedule: betas -> alphas_cumprod from the config's beta keys, float32 as torch
 * holds it (precision.ts), and the ᾱ-space noising the DDPM-family schedulers share.
 */
import { DepthcastError } from '../errors.ts';
import { refuse, type SchedulerSettings } from './config.ts';
import { f32 } from './precision.ts';
import { sameLength } from './step-inputs.ts';

export const BETA_SCHEDULES = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;

/** The training-schedule keys' class defaults (DDPM's linear betas) shared by every diffusers 0.27.2 class here but LCM. */
export const DDPM_SCHEDULE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
} as const;

/**
 * torch.linspace(start, end, steps, dtype=float32) on CPU: float32 step, the first half counted up
 * from `start` and the second half down from `end`. (torch's vectorised path can differ by one ulp
 * in some elements; that moves alphas_cumprod by at most ~1e-7 relative.)
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway ? f32(s + f32(step * i)) : f32(e - f32(step * (steps - i - 1)));
  }
  return out;
}

/** Glide's cosine schedule (diffusers' betas_for_alpha_bar, cosine), computed in float64 and stored as float32. */
export function cosineBetas(count: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * Math.PI * 0.5) ** 2;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.min(1 - alphaBar((i + 1) / count) / alphaBar(i / count), maxBeta);
  return out;
}

/** torch.cumprod on a CPU float32 tensor: accumulates in double, stores float32. */
export function cumprodF32(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  let acc = 1;
  for (let i = 0; i < values.length; i++) {
    acc *= values[i]!;
    out[i] = acc;
  }
  return out;
}

function oneMinusF32(values: Float32Array): Float32Array {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = 1 - values[i]!;
  return out;
}

/** Rescales betas to zero terminal SNR (Lin et al. 2023, algorithm 1), step by step in float32 like the reference. */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const rootBar = cumprodF32(oneMinusF32(betas)).map((v) => f32(Math.sqrt(v)));
  const first = rootBar[0]!;
  const last = rootBar[n - 1]!;
  const gain = f32(first / f32(first - last));
  const bar = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const shifted = f32(f32(rootBar[i]! - last) * gain);
    bar[i] = shifted * shifted;
  }
  const alphas = new Float32Array(n);
  alphas[0] = bar[0]!;
  for (let i = 1; i < n; i++) alphas[i] = bar[i]! / bar[i - 1]!;
  return oneMinusF32(alphas);
}

export interface TrainingSchedule {
  numTrainTimesteps: number;
  /** ᾱ_t for t = 0..numTrainTimesteps-1, float32 as the reference holds it. */
  alphasCumprod: Float32Array;
}

/**
 * betas -> alphas_cumprod from the shared config keys (num_train_timesteps, beta_start, beta_end,
 * beta_schedule, trained_betas, rescale_betas_zero_snr where the class has it). The sigma-space
 * schedulers (Euler family, DPM-Solver) replace a zero terminal ᾱ by 2^-24 so that σ_max stays finite.
 */
export function trainingSchedule(
  settings: SchedulerSettings,
  options: { rescaleKey: boolean; sigmaSpace: boolean },
): TrainingSchedule {
  const numTrainTimesteps = settings.integer('num_train_timesteps', 1);
  const trained = settings.numberList('trained_betas');
  let betas: Float32Array;
  if (trained !== null) {
    if (trained.length !== numTrainTimesteps) {
      refuse(settings.className, `trained_betas has ${trained.length} values but num_train_timesteps is ${numTrainTimesteps}`);
    }
    betas = Float32Array.from(trained);
  } else {
    const schedule = settings.choice('beta_schedule', BETA_SCHEDULES);
    if (schedule === 'squaredcos_cap_v2') {
      betas = cosineBetas(numTrainTimesteps);
    } else {
      const start = settings.finite('beta_start');
      const end = settings.finite('beta_end');
      if (schedule === 'linear') {
        betas = torchLinspaceF32(start, end, numTrainTimesteps);
      } else {
        betas = torchLinspaceF32(Math.sqrt(start), Math.sqrt(end), numTrainTimesteps);
        for (let i = 0; i < betas.length; i++) betas[i] = betas[i]! * betas[i]!;
      }
    }
  }
  const rescale = options.rescaleKey && settings.flag('rescale_betas_zero_snr');
  if (rescale) betas = rescaleZeroTerminalSnr(betas);
  const alphasCumprod = cumprodF32(oneMinusF32(betas));
  if (rescale && options.sigmaSpace) alphasCumprod[numTrainTimesteps - 1] = 2 ** -24;
  return { numTrainTimesteps, alphasCumprod };
}

/** ᾱ-space noising shared by DDIM, PNDM and LCM: √ᾱ_t·x0 + √(1−ᾱ_t)·n at an integer train timestep t. */
export function alphaBarAddNoise(
  className: string,
  alphasCumprod: Float32Array,
  original: Float32Array,
  noise: Float32Array,
  t: number,
): Float32Array {
  sameLength(className, original, noise, 'sample and noise');
  const a = alphasCumprod[trainIndex(className, t, alphasCumprod.length)]!;
  const signal = f32(Math.sqrt(a));
  const spread = f32(Math.sqrt(f32(1 - a)));
  const out = new Float32Array(original.length);
  for (let i = 0; i < out.length; i++) out[i] = signal * original[i]! + spread * noise[i]!;
  return out;
}

/** Validates an integer train timestep used as a table index. */
export function trainIndex(className: string, t: number, length: number): number {
  if (!Number.isInteger(t) || t < 0 || t >= length) {
    throw new DepthcastError('INTERNAL', `${className}: timestep ${t} is not an integer train timestep in [0, ${length})`);
  }
  return t;
}
