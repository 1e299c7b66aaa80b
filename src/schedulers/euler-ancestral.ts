/**
 * Euler ancestral, after diffusers 0.27.2's EulerAncestralDiscreteScheduler: an Euler step down to
 * σ_down followed by fresh noise of size σ_up, where σ_up² = σ_next²(σ² − σ_next²)/σ² and
 * σ_down² = σ_next² − σ_up². Draws one noise array on every step, the last one included.
 *
 * Honours beta options, rescale_betas_zero_snr, timestep_spacing + steps_offset (float32 timestep
 * grid, σ interpolated linearly), prediction_type epsilon / v_prediction. Refuses prediction_type
 * sample (the reference raises on it). The class has no Karras or interpolation options in 0.27.2.
 */
import type { SchedulerSettings } from './config.ts';
import { DDPM_SCHEDULE_DEFAULTS } from './training-schedule.ts';
import { drawNoise, sameLength } from './step-inputs.ts';
import { EulerFamily } from './euler.ts';
import { ancestral } from '../util/elementwise.ts';
import type { NoiseSource } from './types.ts';

export const EULER_ANCESTRAL_DEFAULTS = {
  ...DDPM_SCHEDULE_DEFAULTS,
  prediction_type: 'epsilon',
  timestep_spacing: 'linspace',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} as const;

export class EulerAncestralDiscreteScheduler extends EulerFamily {
  readonly className = 'EulerAncestralDiscreteScheduler';
  private readonly prediction: 'epsilon' | 'v_prediction';

  constructor(settings: SchedulerSettings) {
    super(settings);
    this.prediction = settings.choice('prediction_type', ['epsilon', 'v_prediction'] as const);
  }

  setTimesteps(numInferenceSteps: number): void {
    this.resetIndices(this.setGrid(numInferenceSteps));
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseSource): Float32Array {
    sameLength(this.className, modelOutput, sample, 'model output and sample');
    const index = this.currentIndex(t);
    const sigma = this.sigmas[index]!;
    const next = this.sigmas[index + 1]!;
    const up = Math.sqrt((next * next * (sigma * sigma - next * next)) / (sigma * sigma));
    const down = Math.sqrt(next * next - up * up);
    const [cx, cm] = this.x0Coefficients(this.prediction, sigma);
    const slope = (down - sigma) / sigma;
    const fresh = drawNoise(noise, sample.length, this.className, this.noiseScratch(sample.length));
    const out = new Float32Array(sample.length);
    ancestral(out, sample, modelOutput, fresh, cx, cm, slope, up);
    this.advance();
    return out;
  }
}
