/**
 * The consistent mode inside the engine's worker: what each stream's last frame left behind, and
 * how a new frame with `motion` uses it. A job runs in three steps:
 *   1. begin: motion → flow (decoded planes, or the depth reprojected with the two poses); the
 *      stream's remembered frame → a plan (consistent.ts) applied to the pipeline input, or a
 *      fallback to per-frame mode with its reason;
 *   2. (the pipeline generates, with planar output);
 *   3. finish: pixel fusion, the pair's warp score, RGB8 for the result, and the frame remembered
 *      for the next one.
 * A frame that fails or is cancelled is remembered as such, so the next frame says why it fell
 * back. At most SEQUENCES_PER_OWNER streams per owner (a connection: the part of the stream key
 * before a NUL) and MAX_REMEMBERED_SEQUENCES in all are remembered. Past either, the least
 * recently used stream of the owner holding the most goes, so a client with many streams cannot
 * push out the sequence of a client with one.
 */
import { decodeDepthPixels } from '../depth/scan.ts';
import { DepthcastError } from '../errors.ts';
import type { LoadedModel } from '../models/load.ts';
import { SeededNoise } from '../pipelines/noise.ts';
import { toRgb8 } from '../pipelines/steps.ts';
import type { GenerateInput, GenerateOutput } from '../pipelines/types.ts';
import type { ConsistencyReport, FrameHeader } from '../protocol/schemas.ts';
import { CarriedNoise, DEFAULT_PIXEL_FUSION, fusePixels, planConsistentFrame, type PreviousFrame } from './consistent.ts';
import { disocclusionMask, type FlowField, inFrame, warpError, warpImage } from './flow.ts';
import { reprojectFlow } from './reproject.ts';
import { decodeFlow } from './wire.ts';

/** Streams whose last frame the worker keeps (image, depth, latents and noise draws at the generated size). */
export const MAX_REMEMBERED_SEQUENCES = 8;
/** Streams one owner (connection) keeps remembered. */
export const SEQUENCES_PER_OWNER = 4;

/** Img2img strength of a consistent frame that names none (the measured setting, docs/batch.md). */
export const CONSISTENT_STRENGTH = 0.6;

interface Remembered {
  jobId: string;
  frame?: PreviousFrame;
  /** Why there is no frame: it failed or was cancelled. */
  lost?: string;
}

export interface SequenceJob {
  stream: string;
  jobId: string;
  header: FrameHeader;
  depth: Uint8Array;
  /** Flow bytes of motion kind "flow" (borrowed). */
  motion?: Uint8Array;
}

/** A job's part in its sequence between begin and finish. */
export interface SequenceStep {
  finish(output: GenerateOutput): { rgb8: Uint8Array; report: ConsistencyReport };
}

export class StreamMemory {
  private readonly streams = new Map<string, Remembered>();

  /** Whether a frame takes part in a sequence: it carries motion or names a consistency mode. */
  static wants(header: FrameHeader): boolean {
    return header.motion !== undefined || header.params.consistency !== undefined;
  }

  /** Step 1. Mutates `input` (init image, strength, latent blend, noise, planar output). */
  begin(model: LoadedModel, job: SequenceJob, input: GenerateInput): SequenceStep {
    const { header } = job;
    const { width, height } = input;
    const consistent = header.params.consistency === 'consistent';
    const d = header.depth;
    if (consistent && d.kind !== 'zdepth') throw new DepthcastError('BAD_REQUEST', `consistency "consistent" needs depth kind "zdepth" (linear Z, to find disocclusions), got "${d.kind}"`);
    // Everything runs at the generated size: depth and motion are resampled to it.
    const z = d.kind === 'zdepth' ? depthAtSize(job.depth, header, width, height) : undefined;
    const motion = z ? motionAtSize(job, z, width, height) : undefined;
    const remembered = this.streams.get(job.stream);
    const expectedJob = header.motion?.previousJobId;
    let previous: PreviousFrame | undefined;
    let fallback: string | undefined;
    if (!motion) fallback = z ? 'the frame carries no motion to its previous frame' : `depth kind "${d.kind}" has no linear Z to find disocclusions with`;
    else if (!remembered) fallback = 'no previous frame of this stream was generated here';
    else if (expectedJob !== undefined && remembered.jobId !== expectedJob) fallback = `the previous frame (job ${expectedJob}) is missing: the last frame of this stream that ran here is job ${remembered.jobId}${remembered.lost ? `, which ${remembered.lost}` : ''}`;
    else if (!remembered.frame) fallback = `the previous frame (job ${remembered.jobId}) ${remembered.lost ?? 'is missing'}`;
    else if (remembered.frame.width !== width || remembered.frame.height !== height) fallback = `the previous frame (job ${remembered.jobId}) was ${remembered.frame.width}×${remembered.frame.height}, this one is ${width}×${height}`;
    else previous = remembered.frame;

    const seed = input.seed ?? 0;
    const plan = consistent && previous && motion ? planConsistentFrame(previous, motion.flow, motion.expectedPrevious, model.pixelsPerLatent, 'latents') : undefined;
    const carried = plan && previous
      ? new CarriedNoise(new SeededNoise(seed), previous.draws, plan.latentSource)
      : new CarriedNoise(new SeededNoise(seed), [], new Int32Array(0));
    input.noise = carried;
    input.output = 'planar';
    input.scratch = undefined;
    if (plan) Object.assign(input, { initImage: plan.initImage, strength: header.params.strength ?? CONSISTENT_STRENGTH, latentBlend: plan.latentBlend });

    return {
      finish: (output) => {
        const decoded = output.image!.data;
        const image = plan ? fusePixels(decoded, plan.initImage.data, plan.valid, width, height, DEFAULT_PIXEL_FUSION) : decoded.slice();
        const report: ConsistencyReport = { mode: plan ? 'consistent' : 'per-frame' };
        if (consistent && !plan && fallback) report.fallback = fallback;
        if (previous && motion) {
          report.previousJobId = remembered!.jobId;
          report.score = pairScore(image, previous, motion.flow, motion.expectedPrevious);
        }
        if (z) this.remember(job.stream, { jobId: job.jobId, frame: { image, depth: z.slice(), width, height, draws: carried.draws, latents: output.latents.slice() } });
        return { rgb8: toRgb8({ data: image, width, height, channels: 3 }), report };
      },
    };
  }

  /** A job of a sequence that did not finish: the next frame falls back and says why. */
  lose(stream: string, jobId: string, code: string): void {
    this.remember(stream, { jobId, lost: code === 'CANCELLED' ? 'was cancelled' : `failed (${code})` });
  }

  /** The streams remembered, least recently used first (for tests and diagnostics). */
  get remembered(): string[] {
    return [...this.streams.keys()];
  }

  private remember(stream: string, entry: Remembered): void {
    this.streams.delete(stream);
    this.streams.set(stream, entry);
    const owner = ownerOf(stream);
    const mine = [...this.streams.keys()].filter((k) => ownerOf(k) === owner);
    for (const k of mine.slice(0, Math.max(0, mine.length - SEQUENCES_PER_OWNER))) this.streams.delete(k);
    while (this.streams.size > MAX_REMEMBERED_SEQUENCES) {
      const counts = new Map<string, number>();
      for (const k of this.streams.keys()) counts.set(ownerOf(k), (counts.get(ownerOf(k)) ?? 0) + 1);
      const most = Math.max(...counts.values());
      // Keys run least recently used first: the first key of an owner holding the most goes.
      this.streams.delete([...this.streams.keys()].find((k) => counts.get(ownerOf(k)) === most)!);
    }
  }
}

function ownerOf(stream: string): string {
  const cut = stream.indexOf('\u0000');
  return cut < 0 ? stream : stream.slice(0, cut);
}

/** Linear Z resampled (nearest) to width×height, +Infinity for background (≥ far), as the motion code expects. */
export function depthAtSize(bytes: Uint8Array, header: FrameHeader, width: number, height: number): Float32Array {
  return resampleNearest(linearZ(bytes, header), header.depth.width, header.depth.height, width, height);
}

function linearZ(bytes: Uint8Array, header: FrameHeader): Float32Array {
  const d = header.depth;
  const values = decodeDepthPixels(bytes, d.dtype, d.kind, d.near, d.far, d.width * d.height);
  const z = new Float32Array(values.length);
  for (let i = 0; i < z.length; i++) z[i] = values[i]! >= d.far ? Infinity : values[i]!;
  return z;
}

/** Nearest-neighbour resample of `planes` planes of a w×h image to ow×oh (depth: no values mixed across edges). */
function resampleNearest(data: Float32Array, w: number, h: number, ow: number, oh: number, planes = 1): Float32Array {
  if (w === ow && h === oh) return data.slice();
  const out = new Float32Array(planes * ow * oh);
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < oh; y++) {
      const sy = Math.min(h - 1, Math.floor(((y + 0.5) * h) / oh));
      for (let x = 0; x < ow; x++) out[p * ow * oh + y * ow + x] = data[p * w * h + sy * w + Math.min(w - 1, Math.floor(((x + 0.5) * w) / ow))]!;
    }
  }
  return out;
}

/**
 * Flow and the expected previous Z at the generated size (`z` already is); points reprojected
 * behind the previous camera are moved off the frame (invalid). Flow planes and intrinsics come
 * in the depth's pixels and are scaled.
 */
export function motionAtSize(job: SequenceJob, z: Float32Array, width: number, height: number): { flow: FlowField; expectedPrevious: Float32Array } | undefined {
  const motion = job.header.motion;
  if (!motion) return undefined;
  const d = job.header.depth;
  const sx = width / d.width;
  const sy = height / d.height;
  if (motion.kind === 'flow') {
    if (!job.motion) throw new DepthcastError('BAD_FRAME', 'motion kind "flow" needs its bytes in the payload');
    const data = resampleNearest(decodeFlow(motion, job.motion).data, d.width, d.height, width, height, 2);
    const plane = width * height;
    for (let i = 0; i < plane; i++) {
      data[i] = data[i]! * sx;
      data[plane + i] = data[plane + i]! * sy;
    }
    return { flow: { width, height, data }, expectedPrevious: z };
  }
  const K = motion.intrinsics;
  const intrinsics = { fx: K.fx * sx, fy: K.fy * sy, cx: K.cx * sx, cy: K.cy * sy };
  const { flow, expectedPrevious } = reprojectFlow(z, width, height, intrinsics, motion.pose, motion.previousPose);
  for (let i = 0; i < flow.data.length; i++) if (Number.isNaN(flow.data[i])) flow.data[i] = -4 * Math.max(width, height);
  return { flow, expectedPrevious };
}

/** The pair's score: warp error over valid pixels, and the difference from the warp where surfaces are new. */
function pairScore(image: Float32Array, previous: PreviousFrame, flow: FlowField, expectedPrevious: Float32Array): NonNullable<ConsistencyReport['score']> {
  const valid = disocclusionMask(flow, previous.depth, expectedPrevious);
  const warped = warpImage(previous.image, 3, flow);
  const hidden = new Uint8Array(valid.length);
  for (let i = 0; i < valid.length; i++) hidden[i] = !valid[i] && inFrame(flow, i) ? 1 : 0;
  const { error, validFraction } = warpError(image, warped, 3, valid);
  return { error, validFraction, disoccludedDifference: warpError(image, warped, 3, hidden).error };
}
