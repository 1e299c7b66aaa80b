import { DepthcastError } from '../errors.ts';
import type { SchedulerSettings } from './config.ts';
import { sameLength } from './step-inputs.ts';
import { checkStepCount, spacedTimesteps, TIMESTEP_SPACINGS, type TimestepSpacing } from './timesteps.ts';
import { alphaBarAddNoise, trainingSchedule } from './training-schedule.ts';
import type { NoiseSource, Scheduler } from './types.ts';

/**
 * The base of diffusers' timestep-keyed schedulers (DDIM, PNDM): ᾱ-space throughout, an integer
 * timestep grid from timestep_spacing + steps_offset, no input scaling, and steps that find their
 * place from the timestep alone (PLMS also from its own call counter, which starts at whatever step
 * runs first), so an img2img begin index needs nothing beyond a check.
 */
export abstract class TimestepKeyedScheduler implements Scheduler {
  abstract readonly className: string;
  readonly order = 1;
  readonly initNoiseSigma = 1;
  protected readonly numTrain: number;
  protected readonly alphasCumprod: Float32Array;
  /** ᾱ a step lands on below timestep 0: 1 with set_alpha_to_one, else ᾱ_0. */
  protected readonly finalAlphaCumprod: number;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  protected numInferenceSteps = 0;
  protected stepTimesteps: number[] = [];

  constructor(settings: SchedulerSettings, options: { rescaleKey: boolean }) {
    const schedule = trainingSchedule(settings, { rescaleKey: options.rescaleKey, sigmaSpace: false });
    this.numTrain = schedule.numTrainTimesteps;
    this.alphasCumprod = schedule.alphasCumprod;
    this.finalAlphaCumprod = settings.flag('set_alpha_to_one') ? 1 : this.alphasCumprod[0]!;
    this.spacing = settings.choice('timestep_spacing', TIMESTEP_SPACINGS);
    this.stepsOffset = settings.integer('steps_offset', 0);
  }

  get timesteps(): readonly number[] {
    return this.stepTimesteps;
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseSource): Float32Array;

  /** Checks and records the step count; returns the descending integer grid for it. */
  protected spacedGrid(numInferenceSteps: number): number[] {
    checkStepCount(this.className, numInferenceSteps, this.numTrain);
    this.numInferenceSteps = numInferenceSteps;
    return spacedTimesteps(this.spacing, this.numTrain, numInferenceSteps, this.stepsOffset, true);
  }

  /** What every step checks first: timesteps are set and the two arrays match. */
  protected checkStepInputs(modelOutput: Float32Array, sample: Float32Array): void {
    if (this.numInferenceSteps === 0) throw new DepthcastError('INTERNAL', `${this.className}: call setTimesteps before stepping`);
    sameLength(this.className, modelOutput, sample, 'model output and sample');
  }

  setBeginIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0) throw new DepthcastError('INTERNAL', `${this.className}: bad begin index ${index}`);
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    return alphaBarAddNoise(this.className, this.alphasCumprod, original, noise, t);
  }
}
