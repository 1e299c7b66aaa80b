/**
 * The two sources of motion agree in real Blender: the Cycles Vector pass of a static scene under
 * a panning, rising camera, converted by flowFromVectorPass, against reprojectFlow from the Z pass
 * and the two camera poses. This pins the conventions: pixel centres, rows, y direction, previous
 * vs next. Skips (and says why) without Blender.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { reprojectFlow } from '../src/motion/reproject.ts';
import { flowFromVectorPass } from '../src/motion/vector-pass.ts';

const BLENDER = process.env.DEPTHCAST_BLENDER ?? 'blender';
const probe = spawnSync(BLENDER, ['--version'], { encoding: 'utf8', timeout: 60_000 });
const available = probe.status === 0;
if (!available) console.warn(`motion-blender: SKIPPED: no Blender at '${BLENDER}' (${probe.error?.message ?? `exit ${probe.status}`})`);

const dir = mkdtempSync(join(tmpdir(), 'depthcast-vector-pass-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

describe.skipIf(!available)('Vector pass vs depth + pose reprojection (real Blender, Cycles)', () => {
  it('agree to well under a quarter pixel on a static pan', () => {
    const run = spawnSync(BLENDER, ['-b', '--factory-startup', '--python-exit-code', '1', '--python', 'test/support/blender_vector_pan.py', '--', dir], { encoding: 'utf8', timeout: 240_000 });
    expect(run.status, run.stdout.slice(-2000) + run.stderr.slice(-2000)).toBe(0);
    const cam = JSON.parse(readFileSync(join(dir, 'camera.json'), 'utf8'));
    const { width: W, height: H } = cam;
    const read = (name: string) => {
      const b = readFileSync(join(dir, `${name}.f32`));
      return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    };
    const zPass = read('depth');
    // The Z pass, like every Blender image, runs bottom row first.
    const depth = new Float32Array(W * H);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) depth[y * W + x] = zPass[((H - 1 - y) * W + x) * 4]!;
    const fromVector = flowFromVectorPass(read('vector'), W, H);
    const fromPose = reprojectFlow(depth, W, H, cam, cam.pose, cam.previousPose).flow;
    const P = W * H;
    const diffs: number[] = [];
    let moving = 0;
    for (let i = 0; i < P; i++) {
      diffs.push(Math.hypot(fromVector.data[i]! - fromPose.data[i]!, fromVector.data[P + i]! - fromPose.data[P + i]!));
      // The motion must be large enough (and vertical too) to tell the conventions apart.
      if (Math.abs(fromPose.data[i]!) > 1 && Math.abs(fromPose.data[P + i]!) > 1) moving++;
    }
    console.log(`motion-blender: ${W}×${H}, median |vector − reprojection| ${median(diffs).toFixed(4)} px, max ${Math.max(...diffs).toFixed(3)} px`);
    expect(moving).toBeGreaterThan(0.9 * P);
    expect(median(diffs)).toBeLessThanOrEqual(0.25);
  });
});
