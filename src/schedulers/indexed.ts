import { DepthcastError } from '../errors.ts';
import type { NoiseSource, Scheduler } from './types.ts';

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
