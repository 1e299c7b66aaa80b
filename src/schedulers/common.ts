/**
 * Numerics shared by the schedulers: reading a diffusers scheduler config, the training noise
 * schedule (betas -> alphas_cumprod), numpy-compatible timestep grids, sigma tables and their
 * interpolation, Karras sigmas, prediction-type conversion, x0 clipping/thresholding and the
 * step-index bookkeeping of the index-keeping schedulers.
 *
 * Precision policy: the reference (diffusers 0.27.2) builds betas and alphas_cumprod as torch
 * float32 tensors and derives sigma tables from them in float32; timestep grids come from numpy in
 * float64 (cast to float32 for the Euler family). We reproduce the float32 values where they decide
 * a discrete outcome (timestep values, their rounding and truncation, table lookups) and use float64
 * for per-step arithmetic, which stays far inside the conformance tolerance.
 */
import { DepthcastError } from '../errors.ts';
import { lin2 } from '../util/elementwise.ts';
import type { NoiseSource, Scheduler } from './types.ts';

export const f32 = Math.fround;

export function refuse(className: string, message: string): never {
  throw new DepthcastError('UNSUPPORTED_SCHEDULER', `${className}: ${message}`);
}

// ---------------------------------------------------------------------------------------------
// Config reading

/** Parses a config number; JSON cannot carry non-finite values, so "Infinity", "-Infinity" and "NaN" arrive as strings. */
export function configNumber(value: unknown): number | undefined {
  if (typeof value === 'number') return value;
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (/^[+]?(inf|infinity)$/i.test(text)) return Infinity;
  if (/^-(inf|infinity)$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  if (text === '') return undefined;
  const parsed = Number(text);
  return Number.isNaN(parsed) ? undefined : parsed;
}

const show = (value: unknown): string => (typeof value === 'string' ? `"${value}"` : JSON.stringify(value));

/**
 * A scheduler config resolved the way diffusers' `from_config` does it: keys listed in
 * `_use_default_values` are dropped, keys this class does not take are ignored, missing keys take
 * the class defaults. Every accessor validates and refuses with UNSUPPORTED_SCHEDULER.
 */
export class SchedulerSettings {
  private readonly values: Record<string, unknown>;
  /** Every non-private key of the given config, including ones this class does not take (diffusers keeps them as hidden config). */
  private readonly extra: Record<string, unknown>;

  constructor(
    readonly className: string,
    config: Readonly<Record<string, unknown>>,
    defaults: Readonly<Record<string, unknown>>,
  ) {
    const usedDefaults = Array.isArray(config._use_default_values) ? new Set(config._use_default_values) : new Set();
    this.values = { ...defaults };
    this.extra = {};
    for (const [key, value] of Object.entries(config)) {
      if (key.startsWith('_') || usedDefaults.has(key) || value === undefined) continue;
      this.extra[key] = value;
      if (Object.hasOwn(defaults, key)) this.values[key] = value;
    }
  }

  private raw(key: string): unknown {
    if (!Object.hasOwn(this.values, key)) throw new Error(`${this.className}: no default registered for config key ${key}`);
    return this.values[key];
  }

  number(key: string): number {
    const value = configNumber(this.raw(key));
    if (value === undefined) refuse(this.className, `config ${key} must be a number, got ${show(this.raw(key))}`);
    return value;
  }

  finite(key: string, check: (v: number) => boolean = () => true, what = 'a finite number'): number {
    const value = this.number(key);
    if (!Number.isFinite(value) || !check(value)) refuse(this.className, `config ${key} must be ${what}, got ${show(this.raw(key))}`);
    return value;
  }

  integer(key: string, min: number): number {
    return this.finite(key, (v) => Number.isInteger(v) && v >= min, `an integer >= ${min}`);
  }

  optionalNumber(key: string): number | null {
    const raw = this.raw(key);
    return raw === null || raw === undefined ? null : this.number(key);
  }

  /** Python truthiness for the values a JSON config can hold; null means False as in diffusers. */
  flag(key: string): boolean {
    const raw = this.raw(key);
    if (raw === null || raw === undefined || raw === false || raw === 0) return false;
    if (raw === true || raw === 1) return true;
    return refuse(this.className, `config ${key} must be true or false, got ${show(raw)}`);
  }

  choice<T extends string>(key: string, supported: readonly T[]): T {
    const raw = this.raw(key);
    if (typeof raw === 'string' && (supported as readonly string[]).includes(raw)) return raw as T;
    return refuse(this.className, `${key} ${show(raw)} is not supported; supported: ${supported.join(', ')}`);
  }

  optionalString(key: string): string | null {
    const raw = this.raw(key);
    if (raw === null || raw === undefined) return null;
    if (typeof raw !== 'string') refuse(this.className, `config ${key} must be a string or null, got ${show(raw)}`);
    return raw;
  }

  numberList(key: string): number[] | null {
    const raw = this.raw(key);
    if (raw === null || raw === undefined) return null;
    const list = Array.isArray(raw) ? raw.map(configNumber) : undefined;
    if (!list || list.some((v) => v === undefined || !Number.isFinite(v))) {
      refuse(this.className, `config ${key} must be null or a list of finite numbers`);
    }
    return list as number[];
  }

  /** A key this class does not take but diffusers still exposes on `self.config` (e.g. sigma_min for DPM-Solver's Karras sigmas). */
  hiddenNumber(key: string): number | null {
    const raw = this.extra[key];
    if (raw === null || raw === undefined) return null;
    const value = configNumber(raw);
    if (value === undefined) refuse(this.className, `config ${key} must be a number or null, got ${show(raw)}`);
    return value;
  }
}

// ---------------------------------------------------------------------------------------------
// Training noise schedule

export const BETA_SCHEDULES = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;
export const PREDICTION_TYPES = ['epsilon', 'sample', 'v_prediction'] as const;
export type PredictionType = (typeof PREDICTION_TYPES)[number];
export const TIMESTEP_SPACINGS = ['linspace', 'leading', 'trailing'] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

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

// ---------------------------------------------------------------------------------------------
// numpy-compatible grids

/** numpy's round(): half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace in float64: i*step + start, the last element set to `stop` when endpoint. */
export function npLinspace(start: number, stop: number, num: number, endpoint = true): number[] {
  const div = endpoint ? num - 1 : num;
  const delta = stop - start;
  const out: number[] = new Array(num);
  if (div <= 0) {
    for (let i = 0; i < num; i++) out[i] = i * delta + start;
    return out;
  }
  const step = delta / div;
  for (let i = 0; i < num; i++) out[i] = (step === 0 ? (i / div) * delta : i * step) + start;
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) with a float step: length ceil((stop-start)/step), element i = start + i*((start+step)-start). */
export function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const out: number[] = new Array(length);
  if (length === 0) return out;
  out[0] = start;
  if (length === 1) return out;
  out[1] = start + step;
  const delta = out[1] - start;
  for (let i = 2; i < length; i++) out[i] = start + i * delta;
  return out;
}

/**
 * The descending timestep grid of DDIM / PNDM / Euler-type schedulers, before their cast:
 * - linspace: np.linspace(0, T-1, n) (float64; DDIM and PNDM round it, Euler keeps float32 values)
 * - leading: arange(n) * (T // n) + steps_offset
 * - trailing: round(arange(T, 0, -T/n)) - 1
 */
export function spacedTimesteps(spacing: TimestepSpacing, numTrain: number, n: number, stepsOffset: number, integer: boolean): number[] {
  if (spacing === 'linspace') {
    return npLinspace(0, numTrain - 1, n)
      .map((v) => (integer ? roundHalfEven(v) : f32(v)))
      .reverse();
  }
  if (spacing === 'leading') {
    const ratio = Math.floor(numTrain / n);
    const out: number[] = [];
    for (let i = n - 1; i >= 0; i--) out.push(i * ratio + stepsOffset);
    return out;
  }
  return npArange(numTrain, 0, -numTrain / n).map((v) => roundHalfEven(v) - 1);
}

// ---------------------------------------------------------------------------------------------
// Sigmas

/** σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) for every train timestep, ascending in t, each op rounded to float32 as torch does. */
export function sigmaTable(alphasCumprod: Float32Array): Float32Array {
  const out = new Float32Array(alphasCumprod.length);
  for (let i = 0; i < out.length; i++) {
    const a = alphasCumprod[i]!;
    out[i] = Math.sqrt(f32(f32(1 - a) / a));
  }
  return out;
}

/** np.interp(x, arange(len(table)), table) for one x. */
export function interpTable(x: number, table: ArrayLike<number>): number {
  const last = table.length - 1;
  if (Number.isNaN(x)) return NaN;
  if (x <= 0) return table[0]!;
  if (x >= last) return table[last]!;
  const j = Math.floor(x);
  if (j === x) return table[j]!;
  const slope = table[j + 1]! - table[j]!;
  return slope * (x - j) + table[j]!;
}

/** Karras et al. (2022) sigmas, ρ = 7, from σ_max down to σ_min in n points (float64). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/** Natural log of each float32 sigma, kept in float32 (numpy's log of a float32 array). */
export function logTable(sigmas: Float32Array): Float32Array {
  return sigmas.map((s) => Math.log(s));
}

/**
 * Fractional train timestep whose log-sigma matches `sigma`, by linear interpolation in log-sigma
 * between neighbouring table entries (diffusers' _sigma_to_t): the lower neighbour is the last
 * entry not above log σ (index 0 if none), capped so a higher neighbour exists; the weight is clipped to [0, 1].
 * The log-σ table is float32 (numpy's log of a float32 array); σ itself is float64.
 */
export function sigmaToTimestep(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  let low = 0;
  for (let i = 0; i < n; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, n - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  // numpy subtracts the two float32 table entries in float32; the numerator is float64.
  const w = Math.min(Math.max((lo - logSigma) / f32(lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}

// ---------------------------------------------------------------------------------------------
// Prediction types and x0 post-processing

/**
 * For a noisy sample x = α·x0 + σ·ε and a model output m, the coefficients [cx, cm] with
 * x0 = cx·x + cm·m (`which` = 'x0') or ε = cx·x + cm·m (`which` = 'eps').
 */
export function predictionCoefficients(type: PredictionType, which: 'x0' | 'eps', alpha: number, sigma: number): [number, number] {
  switch (type) {
    case 'epsilon':
      return which === 'x0' ? [1 / alpha, -sigma / alpha] : [0, 1];
    case 'sample':
      return which === 'x0' ? [0, 1] : [1 / sigma, -alpha / sigma];
    case 'v_prediction':
      return which === 'x0' ? [alpha, -sigma] : [sigma, alpha];
  }
}

/** out[i] = cx·x[i] + cm·m[i] */
export function combine(out: Float32Array | Float64Array, x: ArrayLike<number>, cx: number, m: ArrayLike<number>, cm: number): void {
  if (out instanceof Float32Array && x instanceof Float32Array && m instanceof Float32Array) return lin2(out, x, cx, m, cm);
  for (let i = 0; i < out.length; i++) out[i] = cx * x[i]! + cm * m[i]!;
}

/**
 * Dynamic thresholding (Imagen): s = the `ratio` quantile of |x0| (torch.quantile, linear
 * interpolation, float32), clamped to [1, maxValue]; x0 = clamp(x0, -s, s) / s. One image per call.
 */
export function thresholdInPlace(x0: Float32Array | Float64Array, ratio: number, maxValue: number): void {
  const sorted = Float32Array.from(x0, Math.abs).sort();
  const rank = f32(f32(ratio) * (sorted.length - 1));
  const below = Math.floor(rank);
  const weight = f32(rank - below);
  const a = sorted[below]!;
  const b = sorted[Math.min(below + 1, sorted.length - 1)]!;
  const q = weight < 0.5 ? f32(a + f32(weight * f32(b - a))) : f32(b - f32(f32(b - a) * f32(1 - weight)));
  const s = Math.min(Math.max(q, 1), maxValue);
  for (let i = 0; i < x0.length; i++) x0[i] = Math.min(Math.max(x0[i]!, -s), s) / s;
}

export function clipInPlace(x0: Float32Array | Float64Array, range: number): void {
  for (let i = 0; i < x0.length; i++) x0[i] = Math.min(Math.max(x0[i]!, -range), range);
}

/** The x0 post-processing keys shared by DDIM and LCM (thresholding wins over clip_sample, as in the reference). */
export interface SampleClipping {
  thresholding: boolean;
  ratio: number;
  maxValue: number;
  clip: boolean;
  clipRange: number;
}

export function readClipping(settings: SchedulerSettings): SampleClipping {
  return {
    thresholding: settings.flag('thresholding'),
    ratio: settings.finite('dynamic_thresholding_ratio', (v) => v >= 0 && v <= 1, 'a number in [0, 1]'),
    maxValue: settings.number('sample_max_value'),
    clip: settings.flag('clip_sample'),
    clipRange: settings.number('clip_sample_range'),
  };
}

export function applyClipping(x0: Float32Array | Float64Array, clipping: SampleClipping): void {
  if (clipping.thresholding) thresholdInPlace(x0, clipping.ratio, clipping.maxValue);
  else if (clipping.clip) clipInPlace(x0, clipping.clipRange);
}

// ---------------------------------------------------------------------------------------------
// Noise and misc checks

/** One standard-normal draw of `length` values for a step that needs noise; fails loudly without a source. */
/** Draws one step's noise; into `scratch` when the source can fill, so a step allocates nothing for it. */
export function drawNoise(noise: NoiseSource | undefined, length: number, who: string, scratch?: Float32Array): Float32Array {
  if (!noise) throw new DepthcastError('OUT_OF_NOISE', `${who} draws noise on this step but no noise source was given`);
  if (scratch && scratch.length === length && noise.fill) {
    noise.fill(scratch);
    return scratch;
  }
  const drawn = noise.next(length);
  if (drawn.length !== length) {
    throw new DepthcastError('OUT_OF_NOISE', `${who} asked the noise source for ${length} values and got ${drawn.length}`);
  }
  return drawn;
}

export function sameLength(className: string, a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new DepthcastError('INTERNAL', `${className}: ${what} lengths differ (${a.length} vs ${b.length})`);
}

export function checkStepCount(className: string, n: number, max: number): void {
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new DepthcastError('BAD_REQUEST', `${className}: num_inference_steps must be an integer in [1, ${max}], got ${n}`);
  }
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

// ---------------------------------------------------------------------------------------------
// Index-keeping schedulers

/**
 * The step-index bookkeeping of diffusers' index-keeping schedulers (Euler, Euler ancestral,
 * DPM-Solver, LCM): `setTimesteps` clears both indices; the first `scaleModelInput`/`step` takes the
 * begin index if one was set, else looks the timestep up; each `step` advances by one. `addNoise`
 * uses the lookup without a begin index, the current step index once stepping has started, and the
 * begin index before that (0.27.2, including the add_noise fix of diffusers#7386).
 */
export abstract class IndexedScheduler implements Scheduler {
  abstract readonly className: string;
  readonly order = 1;
  abstract readonly initNoiseSigma: number;
  protected stepTimesteps: number[] = [];
  protected stepIndex: number | null = null;
  protected beginIndex: number | null = null;
  protected ready = false;

  get timesteps(): readonly number[] {
    return this.stepTimesteps;
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract scaleModelInput(sample: Float32Array, t: number): Float32Array;
  abstract step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseSource): Float32Array;
  abstract addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array;

  protected resetIndices(timesteps: number[]): void {
    this.stepTimesteps = timesteps;
    this.stepIndex = null;
    this.beginIndex = null;
    this.ready = true;
  }

  setBeginIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index > this.stepTimesteps.length) {
      throw new DepthcastError('INTERNAL', `${this.className}: begin index ${index} is outside [0, ${this.stepTimesteps.length}]`);
    }
    this.beginIndex = index;
  }

  /** diffusers' index_for_timestep: the only match, or the second of several. Subclasses may override the no-match case. */
  protected indexForTimestep(t: number): number {
    let first = -1;
    for (let i = 0; i < this.stepTimesteps.length; i++) {
      if (this.stepTimesteps[i] === t) {
        if (first >= 0) return i;
        first = i;
      }
    }
    if (first < 0) return this.missingTimestep(t);
    return first;
  }

  protected missingTimestep(t: number): number {
    throw new DepthcastError('INTERNAL', `${this.className}: timestep ${t} is not in this scheduler's timesteps`);
  }

  /** The step index for the step about to run at `t` (initialising it on the first call). */
  protected currentIndex(t: number): number {
    if (!this.ready) throw new DepthcastError('INTERNAL', `${this.className}: call setTimesteps before stepping`);
    if (this.stepIndex === null) this.stepIndex = this.beginIndex ?? this.indexForTimestep(t);
    if (this.stepIndex >= this.stepTimesteps.length) {
      throw new DepthcastError('INTERNAL', `${this.className}: step ${this.stepIndex} is past the last of ${this.stepTimesteps.length} timesteps`);
    }
    return this.stepIndex;
  }

  protected advance(): void {
    this.stepIndex = (this.stepIndex ?? 0) + 1;
  }

  /** Which schedule index add_noise uses for timestep `t`. */
  protected noiseIndex(t: number): number {
    if (!this.ready) throw new DepthcastError('INTERNAL', `${this.className}: call setTimesteps before addNoise`);
    if (this.beginIndex === null) return this.indexForTimestep(t);
    return this.stepIndex ?? this.beginIndex;
  }
}
