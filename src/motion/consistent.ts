/**
 * The consistent animation mode's pipeline pieces. A frame with motion to its predecessor:
 *   1. warps the previous output into this frame and masks what was hidden (flow.ts);
 *   2. runs img2img from the warped image;
 *   3. after every step, puts back the warped image's latents, noised to the next step's level,
 *      wherever the warp is valid (masked latent blending, as diffusers' inpainting does), so the
 *      visible part ends on the warp while disoccluded parts are generated;
 *   4. draws its noise carried along the motion: each draw of the previous frame, warped (nearest
 *      latent pixel, which keeps the values standard normal), with fresh seeded noise where the
 *      surface is new, so the seed's noise moves with the surfaces;
 *   5. fuses in pixel space after decoding (fusePixels): the decoded image is blended with the
 *      warped previous OUTPUT on valid pixels, feathered away from disocclusions and the frame's
 *      edge. The VAE decoder paints a pattern locked to the 8×8 pixel grid, which no latent-space
 *      method can move by a sub-pixel offset (docs/batch.md); this step carries it along.
 * Both pipelines take these through GenerateInput.latentBlend and GenerateInput.noise; every
 * scheduler's addNoise gives the next step's noise level.
 */
import { DepthcastError } from '../errors.ts';
import type { PlanarImage } from '../pipelines/types.ts';
import type { NoiseSource, Scheduler } from '../schedulers/types.ts';
import { disocclusionMask, type FlowField, warpImage } from './flow.ts';

/** What a finished frame leaves for the next one; owned copies, at the output size. */
export interface PreviousFrame {
  /** [3,H,W] in [0,1]. */
  image: Float32Array;
  /** Linear camera Z, H×W, +Infinity = background. */
  depth: Float32Array;
  width: number;
  height: number;
  /** The noise draws of its generation, in order. */
  draws: Float32Array[];
  /** Its final latents [C,h,w], for the 'latents' source. */
  latents?: Float32Array;
}

/**
 * Where the kept latents come from: 'image' encodes the warped previous image with the VAE;
 * 'latents' warps the previous frame's final latents at latent resolution (no VAE round trip).
 */
export type ConsistentSource = 'image' | 'latents';

/** Keeps the warped latents where `keep` is 1; hooked after every scheduler step. */
export class LatentBlend {
  private init?: Float32Array;
  private noise?: Float32Array;

  /**
   * @param keep per latent pixel (h·w), 1 = keep the warp, 0 = generate; owned.
   * @param initLatents when given, used as the init latents instead of encoding the init image; owned.
   */
  constructor(readonly keep: Float32Array, readonly initLatents?: Float32Array) {}

  /** Called by prepareLatents with the encoded init image and the latent noise (borrowed for the generation). */
  start(init: Float32Array, latentNoise: Float32Array): void {
    this.init = init;
    this.noise = latentNoise;
  }

  /** After step k: the latents, with kept pixels replaced by the init noised to timesteps[k+1] (clean after the last step). */
  afterStep(latents: Float32Array, k: number, timesteps: readonly number[], scheduler: Scheduler): Float32Array {
    const init = this.init;
    const noise = this.noise;
    if (!init || !noise) throw new DepthcastError('BAD_REQUEST', 'the consistent mode needs an init image (the warped previous frame)');
    const plane = this.keep.length;
    if (latents.length % plane !== 0) throw new DepthcastError('INTERNAL', `latent blend mask has ${plane} values, latents ${latents.length}`);
    const target = k === timesteps.length - 1 ? init : scheduler.addNoise(init, noise, timesteps[k + 1]!);
    const out = new Float32Array(latents.length);
    for (let i = 0; i < latents.length; i++) {
      const m = this.keep[i % plane]!;
      out[i] = m * target[i]! + (1 - m) * latents[i]!;
    }
    return out;
  }
}

/**
 * Noise carried along the motion: draw i of this frame is draw i of the previous frame, moved by
 * the flow at latent resolution, where the latent pixel is kept; fresh draws elsewhere. Records
 * what it hands out (owned) for the next frame.
 */
export class CarriedNoise implements NoiseSource {
  readonly draws: Float32Array[] = [];

  constructor(
    private readonly fresh: NoiseSource,
    private readonly previous: Float32Array[],
    /** Per latent pixel: index of the previous frame's latent pixel it came from, or −1. */
    private readonly source: Int32Array,
  ) {}

  next(length: number): Float32Array {
    const out = new Float32Array(this.fresh.next(length));
    const prev = this.previous[this.draws.length];
    const plane = this.source.length;
    if (prev && prev.length === length && length % plane === 0) {
      for (let c = 0; c < length / plane; c++) {
        for (let j = 0; j < plane; j++) {
          const s = this.source[j]!;
          if (s >= 0) out[c * plane + j] = prev[c * plane + s]!;
        }
      }
    }
    this.draws.push(out.slice());
    return out;
  }
}

export interface ConsistentFrame {
  /** img2img input: the warped previous output. */
  initImage: PlanarImage;
  latentBlend: LatentBlend;
  /** Full-resolution validity (1 = visible in the previous frame too). */
  valid: Uint8Array;
  /** Latent pixel → previous latent pixel, −1 where new (for CarriedNoise). */
  latentSource: Int32Array;
}

/**
 * Plans frame t from frame t−1: `flow` and `expectedPrevious` at the output size (expected
 * previous Z from reprojection; for a flow field the current depth stands in). `pixelsPerLatent` is the
 * VAE's downsampling (8). A latent pixel is kept when every pixel it covers is valid.
 */
export function planConsistentFrame(previous: PreviousFrame, flow: FlowField, expectedPrevious: Float32Array, pixelsPerLatent: number, source: ConsistentSource = 'latents'): ConsistentFrame {
  const { width, height } = previous;
  if (flow.width !== width || flow.height !== height) {
    throw new DepthcastError('BAD_FRAME', `motion is ${flow.width}×${flow.height} but the output is ${width}×${height}; the consistent mode needs them at the same size`);
  }
  const valid = disocclusionMask(flow, previous.depth, expectedPrevious);
  const warped = warpImage(previous.image, 3, flow);
  const w = width / pixelsPerLatent;
  const h = height / pixelsPerLatent;
  const keep = new Float32Array(w * h);
  const latentSource = new Int32Array(w * h).fill(-1);
  const plane = width * height;
  for (let ly = 0; ly < h; ly++) {
    for (let lx = 0; lx < w; lx++) {
      let all = 1;
      for (let y = ly * pixelsPerLatent; y < (ly + 1) * pixelsPerLatent && all; y++) {
        for (let x = lx * pixelsPerLatent; x < (lx + 1) * pixelsPerLatent; x++) {
          if (!valid[y * width + x]) {
            all = 0;
            break;
          }
        }
      }
      const j = ly * w + lx;
      keep[j] = all;
      if (!all) continue;
      // The block's centre pixel decides where its noise came from.
      const c = (ly * pixelsPerLatent + pixelsPerLatent / 2) * width + lx * pixelsPerLatent + pixelsPerLatent / 2;
      const sx = Math.floor(lx + 0.5 + flow.data[c]! / pixelsPerLatent);
      const sy = Math.floor(ly + 0.5 + flow.data[plane + c]! / pixelsPerLatent);
      if (sx >= 0 && sx < w && sy >= 0 && sy < h) latentSource[j] = sy * w + sx;
    }
  }
  let initLatents: Float32Array | undefined;
  if (source === 'latents') {
    if (!previous.latents) throw new DepthcastError('INTERNAL', "the 'latents' source needs the previous frame's latents");
    // The flow at each latent pixel's centre, in latent pixels.
    const latentFlow = new Float32Array(2 * w * h);
    for (let ly = 0; ly < h; ly++) {
      for (let lx = 0; lx < w; lx++) {
        const c = (ly * pixelsPerLatent + pixelsPerLatent / 2) * width + lx * pixelsPerLatent + pixelsPerLatent / 2;
        latentFlow[ly * w + lx] = flow.data[c]! / pixelsPerLatent;
        latentFlow[w * h + ly * w + lx] = flow.data[plane + c]! / pixelsPerLatent;
      }
    }
    initLatents = warpImage(previous.latents, previous.latents.length / (w * h), { width: w, height: h, data: latentFlow });
  }
  return { initImage: { data: warped, width, height, channels: 3 }, latentBlend: new LatentBlend(keep, initLatents), valid, latentSource };
}

/** The pixel-space fusion of step 5: how much of the warp a fully valid pixel takes, and the feather. */
export interface PixelFusion {
  /** In [0, 1): 0 = off; the warp's share on pixels at least `feather` + 1 pixels from any invalid one. */
  weight: number;
  /** Width in pixels over which the warp's share ramps from 0 (at an invalid pixel) to `weight`. */
  feather: number;
}

/** The default, chosen by measurement (docs/batch.md, "Animation without flicker"). */
export const DEFAULT_PIXEL_FUSION: PixelFusion = { weight: 0.6, feather: 3 };

/**
 * Per pixel, the distance (chessboard metric, in pixels) to the nearest invalid pixel, capped at
 * `cap`; two passes of a chamfer transform.
 */
function distanceToInvalid(valid: Uint8Array, width: number, height: number, cap: number): Float32Array {
  const d = new Float32Array(width * height);
  for (let i = 0; i < d.length; i++) d[i] = valid[i] ? cap : 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      let v = d[i]!;
      if (x > 0) v = Math.min(v, d[i - 1]! + 1);
      if (y > 0) {
        v = Math.min(v, d[i - width]! + 1);
        if (x > 0) v = Math.min(v, d[i - width - 1]! + 1);
        if (x < width - 1) v = Math.min(v, d[i - width + 1]! + 1);
      }
      d[i] = v;
    }
  }
  for (let y = height - 1; y >= 0; y--) {
    for (let x = width - 1; x >= 0; x--) {
      const i = y * width + x;
      let v = d[i]!;
      if (x < width - 1) v = Math.min(v, d[i + 1]! + 1);
      if (y < height - 1) {
        v = Math.min(v, d[i + width]! + 1);
        if (x < width - 1) v = Math.min(v, d[i + width + 1]! + 1);
        if (x > 0) v = Math.min(v, d[i + width - 1]! + 1);
      }
      d[i] = v;
    }
  }
  return d;
}

/**
 * Step 5: `decoded` [3,H,W] blended with `warped` (the previous output warped into this frame) by
 * a mask that is 0 on invalid pixels (disoccluded or from outside the frame), so new surfaces
 * stay generated, and ramps to `weight` over `feather` pixels, so no seam shows. Both images and
 * the mask are borrowed; the result is new.
 */
export function fusePixels(decoded: Float32Array, warped: Float32Array, valid: Uint8Array, width: number, height: number, fusion: PixelFusion): Float32Array {
  const plane = width * height;
  if (decoded.length !== 3 * plane || warped.length !== 3 * plane || valid.length !== plane) {
    throw new DepthcastError('INTERNAL', `pixel fusion needs two 3×${height}×${width} images and a ${width}×${height} mask`);
  }
  if (!(fusion.weight >= 0 && fusion.weight < 1) || !(fusion.feather >= 0)) {
    throw new DepthcastError('BAD_REQUEST', `pixel fusion weight must be in [0, 1) and feather ≥ 0 (got ${fusion.weight}, ${fusion.feather})`);
  }
  const ramp = fusion.feather + 1;
  const distance = distanceToInvalid(valid, width, height, ramp);
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    const m = fusion.weight * Math.min(1, distance[i]! / ramp);
    for (let c = 0; c < 3; c++) {
      const j = c * plane + i;
      out[j] = m * warped[j]! + (1 - m) * decoded[j]!;
    }
  }
  return out;
}
