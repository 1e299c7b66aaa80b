/**
 * Latent Consistency Model multistep sampling, after diffusers 0.27.2's LCMScheduler.
 *
 * Timesteps: the distillation schedule k·i − 1 (k = T // original_inference_steps, i = 1..original)
 * read from the top at n evenly spaced (floored) positions — e.g. 4 of 50 gives 999, 759, 499, 259.
 * timestep_spacing and steps_offset are accepted but unused, as in the reference.
 * Each step predicts x0, applies the consistency boundary condition
 * denoised = c_out·x0 + c_skip·x with c_skip = σ_d²/((t·s)² + σ_d²), c_out = t·s/√((t·s)² + σ_d²),
 * σ_d = 0.5, s = timestep_scaling, and (except on the last step) re-noises `denoised` to the next
 * timestep with a fresh noise draw.
 *
 * Honours beta options, rescale_betas_zero_snr, original_inference_steps, timestep_scaling,
 * prediction_type epsilon/sample/v_prediction, clip_sample(+range), thresholding, set_alpha_to_one.
 */
import { lcmNoisy } from '../util/elementwise.ts';
import { refuse, type SchedulerSettings } from './config.ts';
import { alphaBarAddNoise, trainIndex, trainingSchedule } from './training-schedule.ts';
import { checkStepCount, npLinspace } from './timesteps.ts';
import { applyClipping, combine, PREDICTION_TYPES, predictionCoefficients, type PredictionType, readClipping, type SampleClipping } from './prediction.ts';
import { drawNoise, sameLength } from './step-inputs.ts';
import { IndexedScheduler } from './indexed.ts';
import type { NoiseSource } from './types.ts';

export const LCM_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  trained_betas: null,
  original_inference_steps: 50,
  clip_sample: false,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: 'epsilon',
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  timestep_spacing: 'leading',
  timestep_scaling: 10.0,
  rescale_betas_zero_snr: false,
} as const;

const SIGMA_DATA = 0.5;

export class LCMScheduler extends IndexedScheduler {
  /** Scratch for step noise, consumed within the step that draws it. */
  private noiseBuffer?: Float32Array;

  readonly className = 'LCMScheduler';
  readonly initNoiseSigma = 1;
  private readonly numTrain: number;
  private readonly alphasCumprod: Float32Array;
  private readonly finalAlphaCumprod: number;
  private readonly originalSteps: number;
  private readonly timestepScaling: number;
  private readonly prediction: PredictionType;
  private readonly clipping: SampleClipping;

  constructor(settings: SchedulerSettings) {
    super();
    const schedule = trainingSchedule(settings, { rescaleKey: true, sigmaSpace: false });
    this.numTrain = schedule.numTrainTimesteps;
    this.alphasCumprod = schedule.alphasCumprod;
    this.finalAlphaCumprod = settings.flag('set_alpha_to_one') ? 1 : this.alphasCumprod[0]!;
    this.originalSteps = settings.integer('original_inference_steps', 1);
    if (this.originalSteps > this.numTrain) {
      refuse(this.className, `original_inference_steps ${this.originalSteps} exceeds num_train_timesteps ${this.numTrain}`);
    }
    this.timestepScaling = settings.finite('timestep_scaling');
    this.prediction = settings.choice('prediction_type', PREDICTION_TYPES);
    this.clipping = readClipping(settings);
    this.stepTimesteps = Array.from({ length: this.numTrain }, (_, i) => this.numTrain - 1 - i);
  }

  setTimesteps(numInferenceSteps: number): void {
    // The schedule is a subset of the original_inference_steps distillation timesteps.
    checkStepCount(this.className, numInferenceSteps, this.originalSteps);
    const k = Math.floor(this.numTrain / this.originalSteps);
    // Distillation timesteps from the top: k·original − 1, ..., k − 1.
    const origin = Array.from({ length: this.originalSteps }, (_, i) => (this.originalSteps - i) * k - 1);
    const picks = npLinspace(0, origin.length, numInferenceSteps, false).map(Math.floor);
    this.resetIndices(picks.map((p) => origin[p]!));
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseSource): Float32Array {
    sameLength(this.className, modelOutput, sample, 'model output and sample');
    const index = this.currentIndex(t);
    const last = index === this.stepTimesteps.length - 1;
    const prevT = last ? t : this.stepTimesteps[index + 1]!;
    const abarT = this.alphasCumprod[trainIndex(this.className, t, this.numTrain)]!;
    const abarPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;

    const scaled = t * this.timestepScaling;
    const spread = scaled * scaled + SIGMA_DATA * SIGMA_DATA;
    const cSkip = (SIGMA_DATA * SIGMA_DATA) / spread;
    const cOut = scaled / Math.sqrt(spread);

    const [cx, cm] = predictionCoefficients(this.prediction, 'x0', Math.sqrt(abarT), Math.sqrt(1 - abarT));
    const x0 = new Float32Array(sample.length);
    combine(x0, sample, cx, modelOutput, cm);
    applyClipping(x0, this.clipping);

    const out = new Float32Array(sample.length);
    if (last) {
      combine(out, x0, cOut, sample, cSkip);
    } else {
      this.noiseBuffer = this.noiseBuffer?.length === sample.length ? this.noiseBuffer : new Float32Array(sample.length);
      const fresh = drawNoise(noise, sample.length, this.className, this.noiseBuffer);
      const keep = Math.sqrt(abarPrev);
      const add = Math.sqrt(1 - abarPrev);
      lcmNoisy(out, x0, sample, fresh, cOut, cSkip, keep, add);
    }
    this.advance();
    return out;
  }

  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    return alphaBarAddNoise(this.className, this.alphasCumprod, original, noise, t);
  }
}
