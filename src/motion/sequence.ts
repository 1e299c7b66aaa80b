/**
 * A sequence of frames through a pipeline, per frame or consistent, and its score: per pair the
 * warp error and valid fraction, per sequence the mean and the worst pair, per frame the edge
 * alignment with its depth (fidelity).
 */
import { DepthcastError } from '../errors.ts';
import type { LoadedModel } from '../models/load.ts';
import { generate } from '../pipelines/index.ts';
import { SeededNoise } from '../pipelines/noise.ts';
import type { GenerateInput, PlanarImage } from '../pipelines/types.ts';
import { CarriedNoise, type ConsistentSource, DEFAULT_PIXEL_FUSION, fusePixels, type PixelFusion, planConsistentFrame, type PreviousFrame } from './consistent.ts';
import { edgeAlignment } from './fidelity.ts';
import { disocclusionMask, type FlowField, inFrame, warpError, warpImage } from './flow.ts';

export interface SequenceFrame {
  /** Linear camera Z at the output size, +Infinity = background. */
  depth: Float32Array;
  /** Motion to the previous frame; absent for the first frame or where unknown. */
  motion?: { flow: FlowField; expectedPrevious?: Float32Array };
}

export type SequenceMode = 'per-frame' | 'consistent';

export interface SequenceOptions {
  /** Everything but the conditioning, init image and noise; `seed` is required (fixed across frames). */
  base: Omit<GenerateInput, 'depth' | 'controlImage' | 'initImage' | 'noise' | 'latentBlend' | 'output'> & { seed: number };
  mode: SequenceMode;
  /** Img2img strength of consistent frames. */
  strength: number;
  /** Where kept latents come from (consistent.ts); default 'latents' (chosen by measurement, docs/batch.md). */
  source?: ConsistentSource;
  /** Pixel-space fusion after decoding (consistent.ts step 5); default DEFAULT_PIXEL_FUSION, weight 0 = off. */
  fusion?: PixelFusion;
  /** Depth range for the conditioning: nearness = (1/z − 1/far)/(1/near − 1/far), steady across frames. */
  near: number;
  far: number;
}

export interface SequenceResult {
  images: Float32Array[];
  /** Each frame's final latents [C,h,w]. */
  latents: Float32Array[];
  /** Why a frame ran per frame in consistent mode (index → reason). */
  fallbacks: { frame: number; reason: string }[];
}

function conditioning(model: LoadedModel, depth: Float32Array, width: number, height: number, near: number, far: number): Partial<GenerateInput> {
  const n = new Float32Array(width * height);
  for (let i = 0; i < n.length; i++) n[i] = Math.min(1, Math.max(0, (1 / depth[i]! - 1 / far) / (1 / near - 1 / far)));
  const image: PlanarImage = { data: n, width, height, channels: 1 };
  return model.family === 'depth2img' ? { depth: image, depthNormalization: 'fixed' } : { controlImage: image };
}

export async function runSequence(model: LoadedModel, frames: SequenceFrame[], options: SequenceOptions): Promise<SequenceResult> {
  const { base, mode, strength, near, far } = options;
  const { width, height } = base;
  const images: Float32Array[] = [];
  const latents: Float32Array[] = [];
  const fallbacks: SequenceResult['fallbacks'] = [];
  let previous: PreviousFrame | undefined;
  for (let f = 0; f < frames.length; f++) {
    const frame = frames[f]!;
    if (frame.depth.length !== width * height) throw new DepthcastError('BAD_DEPTH', `frame ${f}: depth must be ${width}×${height}`);
    const input: GenerateInput = { ...base, ...conditioning(model, frame.depth, width, height, near, far), output: 'planar' };
    let carried: CarriedNoise | undefined;
    let fuse: ((decoded: Float32Array) => Float32Array) | undefined;
    if (mode === 'consistent') {
      if (previous && frame.motion) {
        const plan = planConsistentFrame(previous, frame.motion.flow, frame.motion.expectedPrevious ?? frame.depth, model.pixelsPerLatent, options.source);
        carried = new CarriedNoise(new SeededNoise(base.seed), previous.draws, plan.latentSource);
        Object.assign(input, { initImage: plan.initImage, strength, latentBlend: plan.latentBlend, noise: carried });
        const fusion = options.fusion ?? DEFAULT_PIXEL_FUSION;
        if (fusion.weight > 0) fuse = (decoded) => fusePixels(decoded, plan.initImage.data, plan.valid, width, height, fusion);
      } else {
        if (f > 0) fallbacks.push({ frame: f, reason: previous ? 'no motion to the previous frame' : 'the previous frame is missing' });
        carried = new CarriedNoise(new SeededNoise(base.seed), [], new Int32Array(0));
        input.noise = carried;
      }
    }
    const out = await generate(model, input);
    const image = fuse ? fuse(out.image!.data) : out.image!.data.slice();
    images.push(image);
    latents.push(out.latents.slice());
    previous = carried ? { image, depth: frame.depth.slice(), width, height, draws: carried.draws, latents: out.latents.slice() } : undefined;
  }
  return { images, latents, fallbacks };
}

export interface PairScore {
  /** Index of the later frame of the pair. */
  frame: number;
  error: number;
  validFraction: number;
  /**
   * mean |I_t − warp(I_{t−1})| over disoccluded pixels inside the frame (new surfaces): must stay
   * well above `error`, or the mode copies the warp where it should generate. 0 when there are none.
   */
  disoccludedDifference: number;
}

export interface SequenceScore {
  pairs: PairScore[];
  meanError: number;
  worst?: PairScore;
  /** Edge alignment of each frame with its depth (fidelity.ts). */
  fidelity: number[];
  meanFidelity: number;
}

/** Scores images [3,H,W] in [0,1] of consecutive frames: warp error over valid pixels, and fidelity. */
export function scoreSequence(images: Float32Array[], frames: SequenceFrame[], width: number, height: number): SequenceScore {
  const pairs: PairScore[] = [];
  for (let f = 1; f < frames.length; f++) {
    const motion = frames[f]!.motion;
    if (!motion) continue;
    const valid = disocclusionMask(motion.flow, frames[f - 1]!.depth, motion.expectedPrevious ?? frames[f]!.depth);
    const warped = warpImage(images[f - 1]!, 3, motion.flow);
    const hidden = new Uint8Array(valid.length);
    for (let i = 0; i < valid.length; i++) hidden[i] = !valid[i] && inFrame(motion.flow, i) ? 1 : 0;
    pairs.push({ frame: f, ...warpError(images[f]!, warped, 3, valid), disoccludedDifference: warpError(images[f]!, warped, 3, hidden).error });
  }
  const fidelity = images.map((img, f) => edgeAlignment(img, frames[f]!.depth, width, height));
  const meanError = pairs.length ? pairs.reduce((s, p) => s + p.error, 0) / pairs.length : 0;
  const worst = pairs.reduce<PairScore | undefined>((w, p) => (!w || p.error > w.error ? p : w), undefined);
  return { pairs, meanError, worst, fidelity, meanFidelity: fidelity.reduce((s, v) => s + v, 0) / Math.max(1, fidelity.length) };
}
