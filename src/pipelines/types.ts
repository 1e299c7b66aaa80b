/**
 * What a pipeline takes and gives. Conditioning arrives already in the model's convention
 * (src/depth/convert.ts turns linear Z from Blender/three.js into it).
 */
import type { NoiseSource, SchedulerConfig } from '../schedulers/types.ts';
import type { Scratch } from '../util/scratch.ts';
import type { LatentBlend } from '../motion/consistent.ts';

/** Planar float image, channel-major [C,H,W]. */
export interface PlanarImage {
  data: Float32Array;
  width: number;
  height: number;
  channels: number;
}

/** One region of a layout-aware generation (issue 8): a prompt painted where `mask` is 1. */
export interface RegionPrompt {
  prompt: string;
  /** Frame-resolution mask in [0,1], row-major, width×height of the output image. */
  mask: Float32Array;
  weight: number;
}

export interface StepEvent {
  /** 0-based index of the step just finished. */
  step: number;
  total: number;
  timestep: number;
  /** Latents after this step ([4,h,w]); valid only during the callback. */
  latents: Float32Array;
  /** Cheap RGB preview (latent-space linear approximation, or tiny decoder), when requested for this step. */
  preview?: { rgb: Uint8Array; width: number; height: number };
}

export interface GenerateInput {
  prompt: string;
  /** Empty string when absent (as the reference). */
  negativePrompt?: string;
  width: number;
  height: number;
  steps: number;
  /** Classifier-free guidance is on iff > 1. */
  guidanceScale: number;
  /** Img2img strength; used only when initImage is given. */
  strength?: number;
  controlnetScale?: number;
  /** Full diffusers scheduler config; overrides the model's default scheduler. */
  schedulerConfig?: SchedulerConfig;
  /** Seed of the built-in PRNG when `noise` is not given. */
  seed?: number;
  /** Injected noise (conformance); draw order in ../shared/conformance/README.md §4. */
  noise?: NoiseSource;
  /** depth2img: near = high, any positive range, any size (resized bicubically to latent size). */
  depth?: PlanarImage;
  /** depth2img: 'minmax' (reference: per-map min/max to [-1,1]) or 'fixed' (data already in [0,1]: 2d-1). */
  depthNormalization?: 'minmax' | 'fixed';
  /** controlnet: [3,H,W] in [0,1], near = white, at output size; or [1,H,W] grey, used for R, G and B. */
  controlImage?: PlanarImage;
  /** [3,H,W] in [0,1] at output size. */
  initImage?: PlanarImage;
  regions?: RegionPrompt[];
  /**
   * Consistent animation (src/motion/consistent.ts): with an init image, keeps the init's latents,
   * noised to each step's level, where the blend's mask says so.
   */
  latentBlend?: LatentBlend;
  /** Feather width of region masks in latent pixels. */
  regionFeather?: number;
  /**
   * The caller built depth/control/init images itself from validated data (the engine does):
   * skips the full-resolution NaN scans of checkInputs, which cost milliseconds at 512×512.
   */
  inputsValidated?: boolean;
  /**
   * 'planar' (default): `image`, [3,H,W] floats in [0,1]. 'rgb8': only `rgb8`, interleaved bytes
   * written straight from the decoder output (what PNG and viewports need), without the float image.
   */
  output?: 'planar' | 'rgb8';
  /**
   * Buffers reused across generations (src/util/scratch.ts), from a caller that runs one
   * generation at a time (the engine); `rgb8` then lives in it until the next generation.
   */
  scratch?: Scratch;
  /** Build a preview every N steps (0 = never). */
  previewEvery?: number;
  onStep?: (event: StepEvent) => void | Promise<void>;
  /** Test and debugging hook: each step's batched noise predictions and their guided combination (buffers reused by the next step: copy what you keep). */
  onPrediction?: (step: number, batch: Float32Array, noisePrediction: Float32Array) => void;
  /**
   * Checked before every step, between a ControlNet and its UNet, and before decoding: a
   * superseded live frame stops there. An AbortSignal, or anything with a current `aborted`.
   */
  signal?: CancelSignal;
}

/** What a pipeline reads to know it should stop (an AbortSignal is one). */
export interface CancelSignal {
  readonly aborted: boolean;
}

export interface GenerateOutput {
  width: number;
  height: number;
  /** [3,H,W] in [0,1], for output 'planar'. */
  image?: PlanarImage;
  /** Interleaved RGB8, the bytes toRgb8 gives for `image` (numpy's float32 `round`), for output 'rgb8'. */
  rgb8?: Uint8Array;
  latents: Float32Array;
  timesteps: number[];
  seed: number;
  /** Milliseconds per stage: tokenize, textEncoder, unet, controlnet, vaeEncode, vaeDecode, scheduler, total. */
  timings: Record<string, number>;
}
