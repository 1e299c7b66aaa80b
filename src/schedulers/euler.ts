/**
 * Euler (Karras et al. 2022, algorithm 2 with s_churn = 0), after diffusers 0.27.2's
 * EulerDiscreteScheduler, plus the sigma-space base it shares with Euler ancestral.
 *
 * Timesteps are float32 (np.linspace(..., dtype=float32) for linspace spacing), σ is interpolated
 * linearly in the float32 σ table at those values and ends with 0. Honours beta options,
 * rescale_betas_zero_snr, timestep_spacing + steps_offset, prediction_type epsilon / v_prediction /
 * sample (= original_sample), interpolation_type linear / log_linear, use_karras_sigmas with
 * sigma_min / sigma_max, timestep_type discrete / continuous (continuous with v_prediction feeds
 * 0.25·ln σ as the timestep). 0.27.2 has no final_sigmas_type for this class. Never draws noise
 * (the reference draws a tensor every step but ignores it when s_churn = 0).
 */
import { euler as eulerStep, scale as scaleValues } from '../util/elementwise.ts';
import type { SchedulerSettings } from './config.ts';
import { f32 } from './precision.ts';
import { DDPM_SCHEDULE_DEFAULTS, torchLinspaceF32, trainingSchedule } from './training-schedule.ts';
import { checkStepCount, spacedTimesteps, TIMESTEP_SPACINGS, type TimestepSpacing } from './timesteps.ts';
import { interpTable, karrasSigmas, logTable, sigmaTable, sigmaToTimestep } from './sigmas.ts';
import { sameLength } from './step-inputs.ts';
import { IndexedScheduler } from './indexed.ts';

export const EULER_DEFAULTS = {
  ...DDPM_SCHEDULE_DEFAULTS,
  prediction_type: 'epsilon',
  interpolation_type: 'linear',
  use_karras_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  timestep_spacing: 'linspace',
  timestep_type: 'discrete',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} as const;

export interface EulerGridOptions {
  numTrain: number;
  spacing: TimestepSpacing;
  stepsOffset: number;
  /** σ for every train timestep (float32, ascending in t). */
  table: Float32Array;
  logLinear?: boolean;
  karras?: { sigmaMin: number | null; sigmaMax: number | null };
}

/** Timesteps (float32 values) and sigmas (float32, with the trailing 0) of the Euler family. */
export function eulerGrid(n: number, o: EulerGridOptions): { timesteps: number[]; sigmas: Float32Array } {
  let timesteps = spacedTimesteps(o.spacing, o.numTrain, n, o.stepsOffset, false);
  let sigmas: number[];
  if (o.logLinear) {
    const top = Math.log(o.table[o.table.length - 1]!);
    const bottom = Math.log(o.table[0]!);
    sigmas = Array.from(torchLinspaceF32(top, bottom, n + 1), (v) => f32(Math.exp(v)));
  } else {
    sigmas = timesteps.map((t) => interpTable(t, o.table));
  }
  if (o.karras) {
    const sigmaMin = o.karras.sigmaMin ?? sigmas[sigmas.length - 1]!;
    const sigmaMax = o.karras.sigmaMax ?? sigmas[0]!;
    sigmas = karrasSigmas(sigmaMin, sigmaMax, n);
    const logs = logTable(o.table);
    timesteps = sigmas.map((s) => f32(sigmaToTimestep(s, logs)));
  }
  const out = new Float32Array(sigmas.length + 1);
  out.set(sigmas);
  return { timesteps, sigmas: out };
}

/** State and methods shared by Euler and Euler ancestral: σ per step, input scaling, x0 + σ·n noising. */
export abstract class EulerFamily extends IndexedScheduler {
  protected readonly numTrain: number;
  protected readonly table: Float32Array;
  protected readonly spacing: TimestepSpacing;
  protected readonly stepsOffset: number;
  protected sigmas: Float32Array;

  constructor(settings: SchedulerSettings) {
    super();
    const schedule = trainingSchedule(settings, { rescaleKey: true, sigmaSpace: true });
    this.numTrain = schedule.numTrainTimesteps;
    this.table = sigmaTable(schedule.alphasCumprod);
    const table = this.table;
    this.spacing = settings.choice('timestep_spacing', TIMESTEP_SPACINGS);
    this.stepsOffset = settings.integer('steps_offset', 0);
    // Before setTimesteps the reference holds the full train table (σ_max first, then 0) and every train timestep, descending.
    this.sigmas = new Float32Array(table.length + 1);
    this.sigmas.set(table.slice().reverse());
    this.stepTimesteps = Array.from({ length: this.numTrain }, (_, i) => this.numTrain - 1 - i);
  }

  get initNoiseSigma(): number {
    let max = 0;
    for (const s of this.sigmas) if (s > max) max = s;
    return this.spacing === 'leading' ? f32(Math.sqrt(f32(f32(max * max) + 1))) : max;
  }

  /** Checks the step count, sets this run's sigmas from the family's grid and returns its timesteps. */
  protected setGrid(n: number, shape: Pick<EulerGridOptions, 'logLinear' | 'karras'> = {}): number[] {
    checkStepCount(this.className, n, this.numTrain);
    const grid = eulerGrid(n, { numTrain: this.numTrain, spacing: this.spacing, stepsOffset: this.stepsOffset, table: this.table, ...shape });
    this.sigmas = grid.sigmas;
    return grid.timesteps;
  }

  /** Reused by scaleModelInput: a fresh 64 KiB typed array per step costs more than the multiply. */
  private scaled?: Float32Array;

  scaleModelInput(sample: Float32Array, t: number): Float32Array {
    const sigma = this.sigmas[this.currentIndex(t)]!;
    const scale = 1 / Math.sqrt(sigma * sigma + 1);
    if (this.scaled?.length !== sample.length) this.scaled = new Float32Array(sample.length);
    scaleValues(this.scaled, sample, scale);
    return this.scaled;
  }

  /** Scratch for step noise, consumed within the step that draws it. */
  protected noiseScratch(length: number): Float32Array {
    if (this.noiseBuffer?.length !== length) this.noiseBuffer = new Float32Array(length);
    return this.noiseBuffer;
  }

  private noiseBuffer?: Float32Array;

  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    sameLength(this.className, original, noise, 'sample and noise');
    const sigma = this.sigmas[this.noiseIndex(t)]!;
    const out = new Float32Array(original.length);
    for (let i = 0; i < out.length; i++) out[i] = original[i]! + noise[i]! * sigma;
    return out;
  }

  /**
   * x0 predicted from the model output. In σ-space the latent is x = x0 + σ·ε, i.e. the ᾱ-space
   * sample divided by α = 1/√(σ²+1). Returns [cx, cm] with x0 = cx·x + cm·m.
   */
  protected x0Coefficients(kind: 'epsilon' | 'v_prediction' | 'sample', sigma: number): [number, number] {
    if (kind === 'epsilon') return [1, -sigma];
    if (kind === 'v_prediction') return [1 / (sigma * sigma + 1), -sigma / Math.sqrt(sigma * sigma + 1)];
    return [0, 1];
  }
}

/** The timestep a continuous-time v-prediction model is fed for σ: 0.25·ln σ, in float32. */
const continuousTimestep = (sigma: number): number => f32(0.25 * f32(Math.log(sigma)));

export class EulerDiscreteScheduler extends EulerFamily {
  readonly className = 'EulerDiscreteScheduler';
  private readonly prediction: 'epsilon' | 'v_prediction' | 'sample';
  private readonly logLinear: boolean;
  private readonly karras: { sigmaMin: number | null; sigmaMax: number | null } | undefined;
  private readonly continuousTimesteps: boolean;

  constructor(settings: SchedulerSettings) {
    super(settings);
    const prediction = settings.choice('prediction_type', ['epsilon', 'v_prediction', 'sample', 'original_sample'] as const);
    this.prediction = prediction === 'original_sample' ? 'sample' : prediction;
    this.logLinear = settings.choice('interpolation_type', ['linear', 'log_linear'] as const) === 'log_linear';
    this.karras = settings.flag('use_karras_sigmas')
      ? { sigmaMin: settings.optionalNumber('sigma_min'), sigmaMax: settings.optionalNumber('sigma_max') }
      : undefined;
    const timestepType = settings.choice('timestep_type', ['discrete', 'continuous'] as const);
    this.continuousTimesteps = timestepType === 'continuous' && this.prediction === 'v_prediction';
    if (this.continuousTimesteps) this.stepTimesteps = Array.from(this.table, continuousTimestep).reverse();
  }

  setTimesteps(numInferenceSteps: number): void {
    const timesteps = this.setGrid(numInferenceSteps, { logLinear: this.logLinear, karras: this.karras });
    this.resetIndices(
      this.continuousTimesteps ? Array.from(this.sigmas.subarray(0, this.sigmas.length - 1), continuousTimestep) : timesteps,
    );
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    sameLength(this.className, modelOutput, sample, 'model output and sample');
    const index = this.currentIndex(t);
    const sigma = this.sigmas[index]!;
    const next = this.sigmas[index + 1]!;
    const [cx, cm] = this.x0Coefficients(this.prediction, sigma);
    // x_next = x + (x − x0)/σ · (σ_next − σ)
    const slope = (next - sigma) / sigma;
    const out = new Float32Array(sample.length);
    eulerStep(out, sample, modelOutput, cx, cm, slope);
    this.advance();
    return out;
  }
}
