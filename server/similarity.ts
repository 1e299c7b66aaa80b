/**
 * Similarity skip for live streams (docs/protocol.md, "Similarity skip"): a live frame whose
 * generation inputs equal those of the stream's last computed frame, and whose nearness grid
 * (block means at up to 256×256, exact per pixel below that) differs from it by a mean absolute
 * difference below the threshold, with no cell changing by SIMILARITY_MAX_CELL or more, is not
 * recomputed; the earlier result is sent again with `reusedFrom`.
 */
import type { ResultHeader } from '../src/protocol/schemas.ts';
import { nearnessWithin } from '../src/depth/scan.ts';
import type { Frame } from './intake.ts';

/** Mean |Δ nearness| (nearness in [0,1], near = 1) below which a frame counts as unchanged. */
export const DEFAULT_SIMILARITY_THRESHOLD = 0.002;

/**
 * ...and no grid cell may change by this much: a small object moving across a large frame moves
 * the mean very little, but its cells change a lot, so it is recomputed.
 */
export const SIMILARITY_MAX_CELL = 0.05;

export interface ComputedFrame {
  jobId: string;
  signature: string;
  /** The frame's nearness grid (src/depth/scan.ts); the depth bytes themselves are not kept. */
  nearness: Float32Array;
  init?: Uint8Array;
  layout?: Uint8Array;
  result: { header: ResultHeader; image: Uint8Array };
}

/** Everything but the depth values and the job's identity that decides the image. */
export function frameSignature(frame: Frame, modelName: string): string {
  const { depth, init, layout, params } = frame.header;
  return JSON.stringify({
    depth: [depth.width, depth.height, depth.dtype, depth.kind, depth.near, depth.far],
    init: init ?? null,
    layout: layout ?? null,
    params,
    model: modelName,
  });
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (!a || !b) return a === b;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** True when `frame` may reuse `last`'s result; threshold <= 0 disables the skip. */
export function isSimilar(last: ComputedFrame, frame: Frame, signature: string, threshold: number): boolean {
  if (threshold <= 0 || last.signature !== signature) return false;
  if (!sameBytes(last.init, frame.init) || !sameBytes(last.layout, frame.layout)) return false;
  return nearnessWithin(last.nearness, frame.depth.nearness, threshold, SIMILARITY_MAX_CELL);
}
