/**
 * A frame's `motion` as it arrives: flow bytes decoded and checked (size, NaN, offsets beyond the
 * frame), or poses turned into flow against the frame's depth. Every failure is BAD_FRAME.
 */
import { DepthcastError } from '../errors.ts';
import type { MotionPart } from '../protocol/schemas.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';
import { checkFlow, type FlowField } from './flow.ts';
import { checkPose } from './reproject.ts';

export const MOTION_BYTES_PER_SAMPLE = { f32: 4, f16: 2 } as const;

/** Header-level checks: poses must be rigid; flow planes must match the depth's size and their byte count. */
export function checkMotionHeader(motion: MotionPart | undefined, width: number, height: number): void {
  if (motion?.kind === 'pose') {
    checkPose('motion.pose', motion.pose);
    checkPose('motion.previousPose', motion.previousPose);
  }
  if (motion?.kind !== 'flow') return;
  if (motion.width !== width || motion.height !== height) {
    throw new DepthcastError('BAD_FRAME', `motion flow is ${motion.width}×${motion.height} but the depth is ${width}×${height}; send them at the same size`);
  }
  const expected = 2 * width * height * MOTION_BYTES_PER_SAMPLE[motion.dtype];
  if (motion.byteLength !== expected) {
    throw new DepthcastError('BAD_FRAME', `motion.byteLength is ${motion.byteLength}, expected 2×${width}×${height} ${motion.dtype} = ${expected} bytes`);
  }
}

/** Decodes flow bytes (little-endian) into an owned, checked FlowField. `bytes` is borrowed. */
export function decodeFlow(motion: Extract<MotionPart, { kind: 'flow' }>, bytes: Uint8Array): FlowField {
  checkMotionHeader(motion, motion.width, motion.height);
  if (bytes.byteLength !== motion.byteLength) throw new DepthcastError('BAD_FRAME', `motion has ${bytes.byteLength} bytes, expected ${motion.byteLength}`);
  const n = 2 * motion.width * motion.height;
  // An owned, aligned copy (a Node Buffer's slice() would be a view into its pool).
  const copy = new Uint8Array(bytes);
  const data = motion.dtype === 'f32'
    ? new Float32Array(copy.buffer, 0, n)
    : float16ToFloat32(new Uint16Array(copy.buffer, 0, n));
  const flow = { width: motion.width, height: motion.height, data };
  checkFlow(flow, motion.width, motion.height);
  return flow;
}
