/**
 * DDIM (Song et al. 2020) with η = 0, after diffusers 0.27.2's DDIMScheduler.
 *
 * Honours: every beta option, rescale_betas_zero_snr, timestep_spacing linspace/leading/trailing
 * with steps_offset, prediction_type epsilon/sample/v_prediction, clip_sample + clip_sample_range,
 * thresholding (dynamic_thresholding_ratio, sample_max_value), set_alpha_to_one.
 * The step goes from t to t − T // n whatever the spacing; below 0 it lands on the "final" ᾱ
 * (1, or ᾱ_0 without set_alpha_to_one). Never draws noise (η is fixed at 0).
 */
import type { SchedulerSettings } from './config.ts';
import { alphaBarAddNoise, trainIndex, trainingSchedule } from './training-schedule.ts';
import { checkStepCount, spacedTimesteps, TIMESTEP_SPACINGS, type TimestepSpacing } from './timesteps.ts';
import { applyClipping, combine, PREDICTION_TYPES, predictionCoefficients, type PredictionType, readClipping, type SampleClipping } from './prediction.ts';
import { sameLength } from './step-inputs.ts';
import { DepthcastError } from '../errors.ts';
import type { Scheduler } from './types.ts';

export const DDIM_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  clip_sample: true,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: 'epsilon',
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  clip_sample_range: 1.0,
  sample_max_value: 1.0,
  timestep_spacing: 'leading',
  rescale_betas_zero_snr: false,
} as const;

export class DDIMScheduler implements Scheduler {
  readonly className = 'DDIMScheduler';
  readonly order = 1;
  readonly initNoiseSigma = 1;
  private readonly numTrain: number;
  private readonly alphasCumprod: Float32Array;
  private readonly finalAlphaCumprod: number;
  private readonly prediction: PredictionType;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  private readonly clipping: SampleClipping;
  private numInferenceSteps = 0;
  private stepTimesteps: number[] = [];

  constructor(settings: SchedulerSettings) {
    const schedule = trainingSchedule(settings, { rescaleKey: true, sigmaSpace: false });
    this.numTrain = schedule.numTrainTimesteps;
    this.alphasCumprod = schedule.alphasCumprod;
    this.finalAlphaCumprod = settings.flag('set_alpha_to_one') ? 1 : this.alphasCumprod[0]!;
    this.prediction = settings.choice('prediction_type', PREDICTION_TYPES);
    this.spacing = settings.choice('timestep_spacing', TIMESTEP_SPACINGS);
    this.stepsOffset = settings.integer('steps_offset', 0);
    this.clipping = readClipping(settings);
  }

  get timesteps(): readonly number[] {
    return this.stepTimesteps;
  }

  setTimesteps(numInferenceSteps: number): void {
    checkStepCount(this.className, numInferenceSteps, this.numTrain);
    this.numInferenceSteps = numInferenceSteps;
    this.stepTimesteps = spacedTimesteps(this.spacing, this.numTrain, numInferenceSteps, this.stepsOffset, true);
  }

  /** DDIM works from the timestep alone; img2img needs nothing more. */
  setBeginIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0) throw new DepthcastError('INTERNAL', `${this.className}: bad begin index ${index}`);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    if (this.numInferenceSteps === 0) throw new DepthcastError('INTERNAL', `${this.className}: call setTimesteps before stepping`);
    sameLength(this.className, modelOutput, sample, 'model output and sample');
    const prevT = t - Math.floor(this.numTrain / this.numInferenceSteps);
    const abarT = this.alphasCumprod[trainIndex(this.className, t, this.numTrain)]!;
    const abarPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
    const alpha = Math.sqrt(abarT);
    const sigma = Math.sqrt(1 - abarT);

    const [x0FromX, x0FromM] = predictionCoefficients(this.prediction, 'x0', alpha, sigma);
    const [epsFromX, epsFromM] = predictionCoefficients(this.prediction, 'eps', alpha, sigma);
    const x0 = new Float64Array(sample.length);
    combine(x0, sample, x0FromX, modelOutput, x0FromM);
    applyClipping(x0, this.clipping);

    // x_prev = √ᾱ_prev·x0 + √(1−ᾱ_prev)·ε, with ε from the unclipped prediction as in the reference.
    const towardsX0 = Math.sqrt(abarPrev);
    const towardsEps = Math.sqrt(1 - abarPrev);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const eps = epsFromX * sample[i]! + epsFromM * modelOutput[i]!;
      out[i] = towardsX0 * x0[i]! + towardsEps * eps;
    }
    return out;
  }

  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    return alphaBarAddNoise(this.className, this.alphasCumprod, original, noise, t);
  }
}
