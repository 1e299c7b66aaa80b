/**
 * Analytic test scenes for the consistent mode: boxes in front of a wall, ray-cast to linear Z,
 * with exact motion (reprojection for a moving camera, the object's own image motion for a
 * moving object). Camera convention as reproject.ts.
 */
import { type Intrinsics, intrinsicsFromFov, type Pose, reprojectFlow } from './reproject.ts';
import type { SequenceFrame } from './sequence.ts';

export interface Box {
  min: [number, number, number];
  max: [number, number, number];
}

export interface Scene {
  name: string;
  width: number;
  height: number;
  near: number;
  far: number;
  frames: SequenceFrame[];
  /** Camera scenes: each frame's camera-to-world pose and the intrinsics (what a client would send as pose motion). */
  poses?: number[][];
  intrinsics?: Intrinsics;
}

/** Camera-to-world: at `eye`, looking at `target`, +Y up. Row-major. */
export function lookAt(eye: [number, number, number], target: [number, number, number]): number[] {
  const f = [target[0] - eye[0], target[1] - eye[1], target[2] - eye[2]];
  const fl = Math.hypot(f[0]!, f[1]!, f[2]!);
  const z = [-f[0]! / fl, -f[1]! / fl, -f[2]! / fl];
  // x = up × z
  const x = [z[2]!, 0, -z[0]!];
  const xl = Math.hypot(x[0]!, x[2]!);
  x[0]! /= xl;
  x[2]! /= xl;
  const y = [z[1]! * x[2]! - z[2]! * x[1]!, z[2]! * x[0]! - z[0]! * x[2]!, z[0]! * x[1]! - z[1]! * x[0]!];
  return [x[0]!, y[0]!, z[0]!, eye[0], x[1]!, y[1]!, z[1]!, eye[1], x[2]!, y[2]!, z[2]!, eye[2], 0, 0, 0, 1];
}

/** Linear camera Z of boxes and a wall at world z = wallZ (NaN: no wall); Infinity where a ray misses everything. */
export function renderDepth(boxes: Box[], wallZ: number, pose: Pose, K: Intrinsics, width: number, height: number): Float32Array {
  const out = new Float32Array(width * height);
  const o = [pose[3]!, pose[7]!, pose[11]!];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const rx = (x + 0.5 - K.cx) / K.fx;
      const ry = -(y + 0.5 - K.cy) / K.fy;
      // World direction of the camera-space ray (rx, ry, −1): t along it is camera Z.
      const d = [0, 1, 2].map((r) => pose[r * 4]! * rx + pose[r * 4 + 1]! * ry - pose[r * 4 + 2]!);
      let best = Infinity;
      if (d[2]! !== 0) {
        const t = (wallZ - o[2]!) / d[2]!;
        if (t > 0) best = t;
      }
      for (const b of boxes) {
        let t0 = 0;
        let t1 = Infinity;
        for (let a = 0; a < 3; a++) {
          const inv = 1 / d[a]!;
          let ta = (b.min[a]! - o[a]!) * inv;
          let tb = (b.max[a]! - o[a]!) * inv;
          if (ta > tb) [ta, tb] = [tb, ta];
          t0 = Math.max(t0, ta);
          t1 = Math.min(t1, tb);
        }
        if (t0 <= t1 && t0 > 0 && t0 < best) best = t0;
      }
      out[y * width + x] = best;
    }
  }
  return out;
}

const BOXES: Box[] = [
  { min: [-1.2, -1, -1], max: [0.2, 0.6, 0.4] },
  { min: [0.8, -1, -2.5], max: [1.8, 1.4, -1.5] },
  { min: [-3, -1, -3.5], max: [-2, -0.2, -2.5] },
];
const WALL = -5;

function cameraScene(name: string, poses: number[][], width: number, height: number): Scene {
  const K = intrinsicsFromFov(width, height, (50 * Math.PI) / 180);
  const frames: SequenceFrame[] = poses.map((p) => ({ depth: renderDepth(BOXES, WALL, p, K, width, height) }));
  for (let f = 1; f < frames.length; f++) {
    const { flow, expectedPrevious } = reprojectFlow(frames[f]!.depth, width, height, K, poses[f]!, poses[f - 1]!);
    frames[f]!.motion = { flow, expectedPrevious };
  }
  return { name, width, height, near: 2, far: 14, frames, poses, intrinsics: K };
}

/** A camera moving sideways over the static scene (0.15 units a frame). */
export function panScene(count: number, width: number, height: number): Scene {
  return cameraScene('pan', Array.from({ length: count }, (_, f) => lookAt([-0.6 + 0.15 * f, 0.5, 5], [-0.6 + 0.15 * f, 0, 0])), width, height);
}

/** A camera orbiting the front box (4° a frame): the boxes behind uncover and cover the wall. */
export function orbitScene(count: number, width: number, height: number): Scene {
  return cameraScene('orbit', Array.from({ length: count }, (_, f) => {
    const a = ((-8 + 4 * f) * Math.PI) / 180;
    return lookAt([5 * Math.sin(a), 0.8, 5 * Math.cos(a) - 0.3], [-0.5, 0, -0.3]);
  }), width, height);
}

/** A box moving right in front of the wall, static camera: flow is the box's own image motion. */
export function movingObjectScene(count: number, width: number, height: number): Scene {
  const K = intrinsicsFromFov(width, height, (50 * Math.PI) / 180);
  const pose = lookAt([0, 0.5, 5], [0, 0, 0]);
  const boxAt = (f: number): Box => ({ min: [-2 + 0.2 * f, -1, -0.5], max: [-0.8 + 0.2 * f, 0.5, 0.5] });
  const frames: SequenceFrame[] = [];
  const plane = width * height;
  for (let f = 0; f < count; f++) {
    const depth = renderDepth([boxAt(f), ...BOXES.slice(1)], WALL, pose, K, width, height);
    const frame: SequenceFrame = { depth };
    if (f > 0) {
      // Points of the moving box came from 0.2 units to the left; everything else is still.
      const moving = renderDepth([boxAt(f)], NaN, pose, K, width, height);
      const data = new Float32Array(2 * plane);
      for (let i = 0; i < plane; i++) {
        if (moving[i] !== Infinity && moving[i] === depth[i]) data[i] = -(K.fx * 0.2) / depth[i]!;
      }
      frame.motion = { flow: { width, height, data } };
    }
    frames.push(frame);
  }
  return { name: 'moving-object', width, height, near: 2, far: 14, frames };
}
