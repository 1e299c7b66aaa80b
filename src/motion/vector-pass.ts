/**
 * Blender's Vector pass (Cycles, motion blur off) as a flow field. The pass is RGBA per pixel,
 * rows bottom to top as Blender stores images: (R, G) is the offset to where the surface was in
 * the previous frame, in pixels with y up; (B, A) is the motion to the next frame. Our flow is
 * current → previous with rows top to bottom (flow.ts), so rows are flipped and y negated.
 * test/motion-blender.test.ts checks this against depth + camera-pose reprojection in real Blender.
 */
import { DepthcastError } from '../errors.ts';
import type { FlowField } from './flow.ts';

/** `rgba`: width·height·4 floats, interleaved, bottom row first (borrowed). */
export function flowFromVectorPass(rgba: Float32Array, width: number, height: number): FlowField {
  if (rgba.length !== 4 * width * height) throw new DepthcastError('BAD_FRAME', `vector pass has ${rgba.length} values, expected ${width}×${height}×4`);
  const plane = width * height;
  const data = new Float32Array(2 * plane);
  for (let y = 0; y < height; y++) {
    const src = (height - 1 - y) * width * 4;
    for (let x = 0; x < width; x++) {
      data[y * width + x] = rgba[src + 4 * x]!;
      data[plane + y * width + x] = -rgba[src + 4 * x + 1]!;
    }
  }
  return { width, height, data };
}
