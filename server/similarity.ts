/**
 * Similarity skip for live streams (docs/protocol.md, "Similarity skip"): a live frame whose
 * generation inputs equal those of the stream's last computed frame, and whose depth differs from
 * it by a mean absolute nearness difference below the threshold, is not recomputed; the earlier
 * result is sent again with `reusedFrom`.
 */
import type { ResultHeader } from '../src/protocol/schemas.ts';
import { meanNearnessDifference, type ScannedDepth } from './depth-scan.ts';
import type { Frame } from './intake.ts';

/** Mean |Δ nearness| (nearness in [0,1], near = 1) below which a frame counts as unchanged. */
export const DEFAULT_SIMILARITY_THRESHOLD = 0.002;

export interface ComputedFrame {
  jobId: string;
  signature: string;
  depth: ScannedDepth;
  init?: Uint8Array;
  layout?: Uint8Array;
  result: { header: ResultHeader; png: Uint8Array };
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
  return meanNearnessDifference(last.depth, frame.depth, threshold) < threshold;
}
