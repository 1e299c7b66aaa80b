/**
 * The contract every scheduler implements, after diffusers' SchedulerMixin.
 * Latents are flat Float32Arrays (one image: 4*h*w values); the pipeline owns shapes.
 *
 * Ownership (the project's buffer contract, enforced for every scheduler by
 * test/schedulers.ownership.test.ts through the real denoising loop):
 * - Array arguments are borrowed for the duration of the call only. The pipeline reuses one
 *   guidance buffer for every step's `modelOutput` and may overwrite any argument as soon as the
 *   call returns. A scheduler that needs data later (multistep history, a restart sample) copies
 *   it into buffers it owns.
 * - A scheduler never writes into its arguments.
 * - A returned array belongs to the caller, except where the method's doc says it is lent (and
 *   until when).
 */

/** Where schedulers that inject noise (Euler ancestral, LCM) draw it from; one call per draw, in draw order. */
export interface NoiseSource {
  /**
   * Returns `length` standard-normal values, in an array LENT until the next draw (a source may
   * reuse it, or hand out arrays it holds): read it, never write it; copy to keep. Throws
   * OUT_OF_NOISE when a finite source is exhausted.
   */
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
   * Returns the model input for `sample` at timestep `t`: `sample` itself when it is unchanged, or
   * a buffer LENT until the next call of scaleModelInput (the scheduler reuses it): copy to keep.
   */
  scaleModelInput(sample: Float32Array, t: number): Float32Array;
  /**
   * One denoising step; returns the previous sample in a new array the caller owns. `modelOutput`
   * and `sample` are borrowed for this call only (see the ownership notes above). Draws from
   * `noise` only if this step needs it.
   */
  step(modelOutput: Float32Array, t: number, sample: Float32Array, noise?: NoiseSource): Float32Array;
  /** Noises clean `original` to the level of timestep `t` (img2img start); returns a new array the caller owns. */
  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array;
}
