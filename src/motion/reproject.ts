/**
 * Flow from depth and two camera poses, exact for static scenes. Camera convention (Blender's and
 * three.js's): the camera looks down its −Z axis, +X right, +Y up; a pose is the camera-to-world
 * 4×4 matrix, row-major (Blender's `matrix_world`, row by row). Intrinsics are in pixels with
 * (cx, cy) measured from the image's top-left corner, so the centre of a W×H frame is (W/2, H/2).
 */
import { DepthcastError } from '../errors.ts';
import type { FlowField } from './flow.ts';

export interface Intrinsics {
  fx: number;
  fy: number;
  cx: number;
  cy: number;
}

/** Row-major 4×4 camera-to-world matrix. */
export type Pose = readonly number[];

/** Pinhole intrinsics of a camera with horizontal field of view `fovX` (radians), square pixels. */
export function intrinsicsFromFov(width: number, height: number, fovX: number): Intrinsics {
  const f = width / 2 / Math.tan(fovX / 2);
  return { fx: f, fy: f, cx: width / 2, cy: height / 2 };
}

/** A pose must be 16 finite numbers with a last row of 0 0 0 1; BAD_FRAME otherwise. */
export function checkPose(name: string, pose: Pose): void {
  if (pose.length !== 16 || !pose.every(Number.isFinite)) throw new DepthcastError('BAD_FRAME', `${name} must be 16 finite numbers (a row-major camera-to-world matrix)`);
  if (pose[12] !== 0 || pose[13] !== 0 || pose[14] !== 0 || pose[15] !== 1) throw new DepthcastError('BAD_FRAME', `${name}'s last row must be 0 0 0 1 (a rigid camera-to-world matrix)`);
}

/**
 * For each pixel of the current frame with linear camera Z `depth` (+Infinity = background), where
 * it was in the previous frame: the flow (current → previous), and the Z it had there
 * (`expectedPrevious`, for the disocclusion test). Background points are directions: only the
 * camera's rotation moves them. A point behind the previous camera gets a NaN offset.
 */
export function reprojectFlow(
  depth: Float32Array, width: number, height: number, intrinsics: Intrinsics, pose: Pose, previousPose: Pose,
): { flow: FlowField; expectedPrevious: Float32Array } {
  checkPose('motion.pose', pose);
  checkPose('motion.previousPose', previousPose);
  const plane = width * height;
  if (depth.length !== plane) throw new DepthcastError('BAD_DEPTH', `depth has ${depth.length} values, expected ${width}×${height}`);
  const { fx, fy, cx, cy } = intrinsics;
  // M = inverse(previousPose) · pose: current camera space → previous camera space.
  const P = previousPose;
  // Inverse of a rigid [R t]: [Rᵀ, −Rᵀt].
  const inv = [
    P[0]!, P[4]!, P[8]!, -(P[0]! * P[3]! + P[4]! * P[7]! + P[8]! * P[11]!),
    P[1]!, P[5]!, P[9]!, -(P[1]! * P[3]! + P[5]! * P[7]! + P[9]! * P[11]!),
    P[2]!, P[6]!, P[10]!, -(P[2]! * P[3]! + P[6]! * P[7]! + P[10]! * P[11]!),
  ];
  const M = new Float64Array(12);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 4; c++) {
      let s = c === 3 ? inv[r * 4 + 3]! : 0;
      for (let k = 0; k < 3; k++) s += inv[r * 4 + k]! * pose[k * 4 + c]!;
      M[r * 4 + c] = s;
    }
  }
  const flow = new Float32Array(2 * plane);
  const expectedPrevious = new Float32Array(plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const z = depth[i]!;
      // Camera-space ray through the pixel centre, scaled so that its depth (−Z) is 1.
      const rx = (x + 0.5 - cx) / fx;
      const ry = -(y + 0.5 - cy) / fy;
      const far = z === Infinity;
      const s = far ? 1 : z;
      const w = far ? 0 : 1;
      const X = M[0]! * rx * s + M[1]! * ry * s - M[2]! * s + M[3]! * w;
      const Y = M[4]! * rx * s + M[5]! * ry * s - M[6]! * s + M[7]! * w;
      const Z = M[8]! * rx * s + M[9]! * ry * s - M[10]! * s + M[11]! * w;
      const zPrev = -Z;
      if (!(zPrev > 0)) {
        flow[i] = NaN;
        flow[plane + i] = NaN;
        expectedPrevious[i] = NaN;
        continue;
      }
      const u = cx + (fx * X) / zPrev;
      const v = cy - (fy * Y) / zPrev;
      flow[i] = u - (x + 0.5);
      flow[plane + i] = v - (y + 0.5);
      expectedPrevious[i] = far ? Infinity : zPrev;
    }
  }
  return { flow: { width, height, data: flow }, expectedPrevious };
}
