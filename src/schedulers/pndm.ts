/**
 * PNDM in its PLMS form (skip_prk_steps), after diffusers 0.27.2's PNDMScheduler.
 *
 * Timesteps: the usual grid (linspace/leading/trailing, steps_offset) with its second entry
 * repeated, so n steps run n + 1 model evaluations. The first call takes an Euler-like step with ε₀;
 * the second (at the repeated timestep) redoes that step from the same sample with the average of
 * both outputs; later calls use the 2nd-, 3rd- and 4th-order Adams–Bashforth combinations of the
 * stored outputs. Honours beta options, prediction_type epsilon/v_prediction, set_alpha_to_one.
 * Refuses skip_prk_steps = false (the Runge–Kutta warm-up is not implemented) and prediction_type
 * sample (the reference refuses it too). Never draws noise.
 */
import { DepthcastError } from '../errors.ts';
import { refuse, type SchedulerSettings } from './config.ts';
import { DDPM_SCHEDULE_DEFAULTS } from './training-schedule.ts';
import { TimestepKeyedScheduler } from './timestep-keyed.ts';

export const PNDM_DEFAULTS = {
  ...DDPM_SCHEDULE_DEFAULTS,
  skip_prk_steps: false,
  set_alpha_to_one: false,
  prediction_type: 'epsilon',
  timestep_spacing: 'leading',
  steps_offset: 0,
} as const;

export class PNDMScheduler extends TimestepKeyedScheduler {
  readonly className = 'PNDMScheduler';
  private readonly vPrediction: boolean;
  /**
   * Up to the last four model outputs (ε or v), oldest first: copies in buffers this scheduler
   * owns, since `step`'s arguments are only borrowed (the pipeline reuses one guidance buffer).
   */
  private history: Float32Array[] = [];
  /** Spare owned buffers, recycled as history entries age out. */
  private spare: Float32Array[] = [];
  /** A copy of the sample the first step started from; the second step restarts from it. */
  private firstSample: Float32Array | null = null;
  private counter = 0;

  constructor(settings: SchedulerSettings) {
    super(settings, { rescaleKey: false });
    this.vPrediction = settings.choice('prediction_type', ['epsilon', 'v_prediction'] as const) === 'v_prediction';
    if (!settings.flag('skip_prk_steps')) {
      refuse(this.className, 'skip_prk_steps false (Runge-Kutta warm-up steps) is not supported; supported: skip_prk_steps true (PLMS)');
    }
  }

  setTimesteps(numInferenceSteps: number): void {
    const grid = this.spacedGrid(numInferenceSteps);
    // Descending grid with its second entry repeated (the reference's plms_timesteps); a one-step grid has nothing to repeat.
    this.stepTimesteps = grid.length >= 2 ? [grid[0]!, grid[1]!, ...grid.slice(1)] : grid;
    this.spare.push(...this.history);
    this.history = [];
    this.firstSample = null;
    this.counter = 0;
  }

  /** An owned copy of `source`, reusing a retired buffer of the same length when there is one. */
  private keep(source: Float32Array): Float32Array {
    let owned = this.spare.pop();
    if (!owned || owned.length !== source.length) owned = new Float32Array(source.length);
    owned.set(source);
    return owned;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    this.checkStepInputs(modelOutput, sample);
    const ratio = Math.floor(this.numTrain / this.numInferenceSteps);
    let from = t;
    let to = t - ratio;
    if (this.counter === 1) {
      // The repeated timestep: redo the first step (from t + ratio down to t) with the averaged output.
      from = t + ratio;
      to = t;
    } else {
      while (this.history.length > 3) this.spare.push(this.history.shift()!);
      this.history.push(this.keep(modelOutput));
    }

    let start = sample;
    let combined: Float32Array;
    const h = this.history;
    const n = sample.length;
    if (this.counter === 0 && h.length === 1) {
      combined = modelOutput;
      this.firstSample = new Float32Array(sample);
    } else if (this.counter === 1 && h.length === 1) {
      const prev = h[0]!;
      combined = new Float32Array(n);
      for (let i = 0; i < n; i++) combined[i] = (modelOutput[i]! + prev[i]!) / 2;
      start = this.firstSample ?? sample;
      this.firstSample = null;
    } else if (h.length === 2) {
      const [e1, e0] = [h[0]!, h[1]!];
      combined = new Float32Array(n);
      for (let i = 0; i < n; i++) combined[i] = (3 * e0[i]! - e1[i]!) / 2;
    } else if (h.length === 3) {
      const [e2, e1, e0] = [h[0]!, h[1]!, h[2]!];
      combined = new Float32Array(n);
      for (let i = 0; i < n; i++) combined[i] = (23 * e0[i]! - 16 * e1[i]! + 5 * e2[i]!) / 12;
    } else {
      const [e3, e2, e1, e0] = [h[0]!, h[1]!, h[2]!, h[3]!];
      combined = new Float32Array(n);
      for (let i = 0; i < n; i++) combined[i] = (55 * e0[i]! - 59 * e1[i]! + 37 * e2[i]! - 9 * e3[i]!) / 24;
    }

    const out = this.transfer(start, from, to, combined);
    this.counter += 1;
    return out;
  }

  /** PNDM's transfer from timestep `from` to `to` given an ε (or v) estimate (Liu et al. 2022, eq. 11). */
  private transfer(sample: Float32Array, from: number, to: number, output: Float32Array): Float32Array {
    if (!Number.isInteger(from) || from < 0 || from >= this.numTrain) {
      throw new DepthcastError('INTERNAL', `${this.className}: timestep ${from} is outside the training range`);
    }
    const abarT = this.alphasCumprod[from]!;
    const abarPrev = to >= 0 ? this.alphasCumprod[to]! : this.finalAlphaCumprod;
    const betaT = 1 - abarT;
    const betaPrev = 1 - abarPrev;
    const sampleGain = Math.sqrt(abarPrev / abarT);
    const denominator = abarT * Math.sqrt(betaPrev) + Math.sqrt(abarT * betaT * abarPrev);
    const outputGain = (abarPrev - abarT) / denominator;
    const out = new Float32Array(sample.length);
    if (this.vPrediction) {
      // v -> ε with the current timestep's coefficients, applied to the sample being transferred.
      const a = Math.sqrt(abarT);
      const s = Math.sqrt(betaT);
      for (let i = 0; i < out.length; i++) out[i] = sampleGain * sample[i]! - outputGain * (a * output[i]! + s * sample[i]!);
    } else {
      for (let i = 0; i < out.length; i++) out[i] = sampleGain * sample[i]! - outputGain * output[i]!;
    }
    return out;
  }
}
