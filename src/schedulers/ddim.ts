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
import { DDPM_SCHEDULE_DEFAULTS, trainIndex } from './training-schedule.ts';
import { applyClipping, combine, PREDICTION_TYPES, predictionCoefficients, type PredictionType, readClipping, type SampleClipping } from './prediction.ts';
import { TimestepKeyedScheduler } from './timestep-keyed.ts';

export const DDIM_DEFAULTS = {
  ...DDPM_SCHEDULE_DEFAULTS,
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

export class DDIMScheduler extends TimestepKeyedScheduler {
  readonly className = 'DDIMScheduler';
  private readonly prediction: PredictionType;
  private readonly clipping: SampleClipping;

  constructor(settings: SchedulerSettings) {
    super(settings, { rescaleKey: true });
    this.prediction = settings.choice('prediction_type', PREDICTION_TYPES);
    this.clipping = readClipping(settings);
  }

  setTimesteps(numInferenceSteps: number): void {
    this.stepTimesteps = this.spacedGrid(numInferenceSteps);
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    this.checkStepInputs(modelOutput, sample);
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
}
