/**
 * The contract every scheduler implements, after diffusers' SchedulerMixin.
 * Latents are flat Float32Arrays (one image: 4*h*w values); the pipeline owns shapes.
 */

/** Where schedulers that inject noise (Euler ancestral, LCM) draw it from; one call per draw, in draw order. */
export interface NoiseSource {
  /** Returns `length` standard-normal values. Throws OUT_OF_NOISE when a finite source is exhausted. */
  next(length: number): Float32Array;
  /** Optional: writes the next `out.length` values into `out` (the same sequence as `next`), sparing an allocation. */
  fill?(out: Float32Array): void;
}

/** A diffusers `scheduler_config.json`, as parsed JSON. Non-finite numbers may arrive as strings ("-Infinity"). */
export type SchedulerConfig = Record<string, unknown> & { _class_name: string };

export interface Scheduler {
  /** diffusers class name, e.g. "EulerAncestralDiscreteScheduler". */
  readonly className: string;
  /** Steps per model evaluation; 1 for every scheduler here. */
  readonly order: number;
  /** Multiplier for the initial noise of txt2img. Valid after setTimesteps. */
  readonly initNoiseSigma: number;
  /** The timesteps the denoising loop runs, as the reference produces them (may be fractional). */
  readonly timesteps: readonly number[];
  setTimesteps(numInferenceSteps: number): void;
  /** Img2img: the loop starts at this index of `timesteps` (diffusers' set_begin_index). */
  setBeginIndex(index: number): void;
  /**
   * Returns the model input for `sample` at timestep `t`; may return `sample` itself when it is
   * unchanged, or a buffer the scheduler reuses on its next call: copy it to keep it.
   */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /** One denoising step; returns the previous sample (a new array). Draws from `noise` only if this step needs it. */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseSource): Float32Array;
  /** Noises clean `original` to the level of timestep `t` (img2img start). */
  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array;
}
