import { describe, expect, it } from 'vitest';
import { DepthcastError } from '../src/errors.ts';
import { edgeAlignment } from '../src/motion/fidelity.ts';
import { checkFlow, disocclusionMask, type FlowField, warpError, warpImage } from '../src/motion/flow.ts';
import { intrinsicsFromFov, reprojectFlow } from '../src/motion/reproject.ts';
import { panScene } from '../src/motion/scenes.ts';
import { depthAtSize, MAX_REMEMBERED_SEQUENCES, motionAtSize, SEQUENCES_PER_OWNER, StreamMemory } from '../src/motion/stream-memory.ts';
import { FrameHeader } from '../src/protocol/schemas.ts';

const W = 32;
const H = 24;

function constantFlow(dx: number, dy: number, width = W, height = H): FlowField {
  const data = new Float32Array(2 * width * height);
  data.fill(dx, 0, width * height);
  data.fill(dy, width * height);
  return { width, height, data };
}

/** A smooth picture given by its value at continuous positions (pixel centres at +0.5). */
function picture(f: (px: number, py: number) => number): Float32Array {
  const out = new Float32Array(W * H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) out[y * W + x] = f(x + 0.5, y + 0.5);
  return out;
}

/** Camera-to-world row-major matrix: yaw `a` about +Y (positive turns left), then translation. */
function pose(tx: number, ty: number, tz: number, yaw = 0): number[] {
  const c = Math.cos(yaw);
  const s = Math.sin(yaw);
  return [c, 0, s, tx, 0, 1, 0, ty, -s, 0, c, tz, 0, 0, 0, 1];
}

function expectCode(fn: () => unknown, code: string, text: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DepthcastError);
    expect((err as DepthcastError).code).toBe(code);
    expect((err as Error).message).toMatch(text);
    return;
  }
  throw new Error('expected a DepthcastError');
}

describe('flow conventions', () => {
  it('a pure sub-pixel translation: warp(previous) is the current frame', () => {
    // The scene moved by (+2.25, −1.5) px between frames: current(p) = previous(p − shift),
    // so the flow (current → previous) is −shift everywhere.
    const shift = [2.25, -1.5];
    const previous = picture((x, y) => 0.3 + 0.02 * x - 0.01 * y);
    const current = picture((x, y) => 0.3 + 0.02 * (x - shift[0]!) - 0.01 * (y - shift[1]!));
    const flow = constantFlow(-shift[0]!, -shift[1]!);
    const warped = warpImage(previous, 1, flow);
    // Bilinear interpolation of a linear function is exact away from the clamped border.
    for (let y = 3; y < H - 3; y++) for (let x = 4; x < W - 4; x++) expect(warped[y * W + x]).toBeCloseTo(current[y * W + x]!, 5);
    const valid = disocclusionMask(flow, new Float32Array(W * H).fill(5), new Float32Array(W * H).fill(5));
    // Sources: x + 0.5 − 2.25 < 0 for columns 0-1, y + 0.5 + 1.5 > 24 for row 23: outside.
    expect([valid[5 * W + 0], valid[5 * W + 1], valid[5 * W + 2], valid[22 * W + 9], valid[23 * W + 9]]).toEqual([0, 0, 1, 1, 0]);
    const score = warpError(current, warped, 1, valid);
    expect(score.validFraction).toBeCloseTo(((W - 2) * (H - 1)) / (W * H), 6);
  });
});

describe('reprojection from depth and two poses', () => {
  const K = intrinsicsFromFov(W, H, (60 * Math.PI) / 180);

  it('a sideways camera move over a wall at distance D shifts every pixel by f·T/D', () => {
    const D = 8;
    const T = 0.5;
    const depth = new Float32Array(W * H).fill(D);
    // The camera moved right by T: what it sees now was further right before.
    const { flow, expectedPrevious } = reprojectFlow(depth, W, H, K, pose(T, 0, 3), pose(0, 0, 3));
    for (let i = 0; i < W * H; i++) {
      expect(flow.data[i]).toBeCloseTo((K.fx * T) / D, 4);
      expect(flow.data[W * H + i]).toBeCloseTo(0, 5);
      expect(expectedPrevious[i]).toBeCloseTo(D, 5);
    }
  });

  it('a camera that rises by T moves the picture down: rows go top to bottom', () => {
    const depth = new Float32Array(W * H).fill(4);
    const { flow } = reprojectFlow(depth, W, H, K, pose(0, 0.2, 0), pose(0, 0, 0));
    // Seen from a higher camera a point is lower in the frame; it was higher (smaller y) before.
    expect(flow.data[W * H + 7]).toBeCloseTo(-(K.fy * 0.2) / 4, 4);
  });

  it('a pan (yaw) over background moves each pixel to f·tan(atan((u − cx)/f) − yaw) independently of depth', () => {
    const yaw = (4 * Math.PI) / 180;
    const depth = new Float32Array(W * H).fill(Infinity);
    const { flow, expectedPrevious } = reprojectFlow(depth, W, H, K, pose(0, 0, 0, yaw), pose(0, 0, 0));
    for (const x of [0, 9, 16, 31]) {
      const u = x + 0.5;
      // Turned left by yaw: a ray α right of the current axis is α − yaw right of the old axis.
      const uPrev = K.cx + K.fx * Math.tan(Math.atan((u - K.cx) / K.fx) - yaw);
      expect(flow.data[12 * W + x]).toBeCloseTo(uPrev - u, 3);
    }
    expect(expectedPrevious[0]).toBe(Infinity);
    // The same pan over a wall: points at finite depth move by the same angle.
    const wall = reprojectFlow(new Float32Array(W * H).fill(6), W, H, K, pose(0, 0, 0, yaw), pose(0, 0, 0)).flow;
    expect(wall.data[12 * W + 9]).toBeCloseTo(flow.data[12 * W + 9]!, 3);
  });

  it('marks the wall that a box hid in the previous frame as disoccluded, and nothing else', () => {
    // A box at Z = 4 covering columns 4-11 in front of a wall at Z = 8; the camera moves right.
    const depth = new Float32Array(W * H).fill(8);
    for (let y = 0; y < H; y++) for (let x = 4; x < 12; x++) depth[y * W + x] = 4;
    const T = 1.2;
    const current = reprojectFlow(depth, W, H, K, pose(T, 0, 0), pose(0, 0, 0));
    // The previous frame, rendered independently: box edges were at x_prev = u + f·T/4.
    const previousDepth = new Float32Array(W * H).fill(8);
    const boxShift = (K.fx * T) / 4;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const u = x + 0.5;
        if (u >= 4 + boxShift && u < 12 + boxShift) previousDepth[y * W + x] = 4;
      }
    }
    const valid = disocclusionMask(current.flow, previousDepth, current.expectedPrevious);
    const row = Array.from(valid.subarray(10 * W, 11 * W));
    // Where each pixel's surface was: the wall moved by f·T/8, the box by f·T/4.
    const wallShift = (K.fx * T) / 8;
    const hidden: boolean[] = [];
    for (let x = 0; x < W; x++) {
      const onBox = depth[10 * W + x] === 4;
      const source = x + 0.5 + (onBox ? boxShift : wallShift);
      const behindBox = !onBox && source > 4 + boxShift && source < 12 + boxShift;
      hidden.push(behindBox);
      // Within a pixel of an edge in the previous frame, either answer is right.
      const nearEdge = Math.abs(source - (4 + boxShift)) < 1 || Math.abs(source - (12 + boxShift)) < 1;
      if (source > W) expect(row[x], `column ${x} leaves the frame`).toBe(0);
      else if (nearEdge) continue;
      else expect(row[x], `column ${x}`).toBe(behindBox ? 0 : 1);
    }
    expect(hidden.filter(Boolean).length).toBeGreaterThanOrEqual(3);
  });
});

describe('motion input checks', () => {
  it('refuses wrong plane sizes, NaN and offsets beyond the frame with BAD_FRAME', () => {
    expectCode(() => checkFlow({ width: W, height: H, data: new Float32Array(W * H) }, W, H), 'BAD_FRAME', /2×24×32/);
    expectCode(() => checkFlow(constantFlow(0, 0, 16, 16), W, H), 'BAD_FRAME', /2×24×32/);
    const nan = constantFlow(0, 0);
    nan.data[W * H + 5 * W + 3] = NaN;
    expectCode(() => checkFlow(nan, W, H), 'BAD_FRAME', /NaN.*\(3, 5\)/);
    expectCode(() => checkFlow(constantFlow(-40, 0), W, H), 'BAD_FRAME', /beyond/);
    expect(() => checkFlow(constantFlow(-20, 10), W, H)).not.toThrow();
  });

  it('refuses poses that are not rigid 4×4 matrices', () => {
    const depth = new Float32Array(W * H).fill(3);
    const K = intrinsicsFromFov(W, H, 1);
    expectCode(() => reprojectFlow(depth, W, H, K, [1, 2, 3], pose(0, 0, 0)), 'BAD_FRAME', /16 finite/);
    expectCode(() => reprojectFlow(depth, W, H, K, pose(0, 0, 0), [...pose(0, 0, 0).slice(0, 15), NaN]), 'BAD_FRAME', /previousPose/);
  });
});

describe('scores', () => {
  it('warp error is the mean absolute difference over valid pixels only', () => {
    const a = new Float32Array(2 * 4).fill(0.5);
    const b = new Float32Array(2 * 4).fill(0.5);
    b[1] = 0.9; // pixel 1, channel 0: valid
    b[4 + 2] = 0.1; // pixel 2, channel 1: masked out
    const valid = Uint8Array.from([1, 1, 0, 1]);
    const s = warpError(a, b, 2, valid);
    expect(s.error).toBeCloseTo(0.4 / 6, 6);
    expect(s.validFraction).toBe(0.75);
  });

  it('edge alignment is high for an image whose edges are the depth edges, low for one whose are not', () => {
    const depth = new Float32Array(W * H).fill(10);
    for (let y = 6; y < 18; y++) for (let x = 8; x < 22; x++) depth[y * W + x] = 3;
    const aligned = new Float32Array(3 * W * H);
    const shifted = new Float32Array(3 * W * H);
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < W * H; i++) {
        aligned[c * W * H + i] = depth[i] === 3 ? 0.8 : 0.2;
        const x = i % W;
        shifted[c * W * H + i] = x < 4 || (x >= 26 && x < 28) ? 0.8 : 0.2;
      }
    }
    expect(edgeAlignment(aligned, depth, W, H)).toBeGreaterThan(0.95);
    expect(edgeAlignment(shifted, depth, W, H)).toBeLessThan(0.2);
  });
});

describe('motion at the generated size', () => {
  it('scales flow planes and pose intrinsics alike when depth and motion are resampled', () => {
    const scene = panScene(4, 64, 64);
    const depth = scene.frames[3]!.depth;
    // Three frames of pan: several pixels of motion, so a missed scale shows.
    const flow64 = reprojectFlow(depth, 64, 64, scene.intrinsics!, scene.poses![3]!, scene.poses![0]!).flow.data;
    const header = (motion: Record<string, unknown>) => FrameHeader.parse({
      type: 'frame', protocol: 1, jobId: 'j', depth: { width: 64, height: 64, dtype: 'f32', kind: 'zdepth', near: scene.near, far: scene.far, byteLength: depth.byteLength },
      motion, params: { prompt: 'x', consistency: 'consistent' },
    });
    const bytes = new Uint8Array(depth.buffer.slice(0));
    const pose = header({ kind: 'pose', intrinsics: scene.intrinsics, pose: scene.poses![3], previousPose: scene.poses![0] });
    const flow = header({ kind: 'flow', dtype: 'f32', width: 64, height: 64, byteLength: flow64.byteLength });
    const z96 = depthAtSize(bytes, pose, 96, 96);
    const a = motionAtSize({ stream: 's', jobId: 'j', header: pose, depth: bytes }, z96, 96, 96)!.flow.data;
    const b = motionAtSize({ stream: 's', jobId: 'j', header: flow, depth: bytes, motion: new Uint8Array(flow64.buffer.slice(0)) }, z96, 96, 96)!.flow.data;
    const P = 96 * 96;
    const diffs = Array.from({ length: P }, (_, i) => Math.hypot(a[i]! - b[i]!, a[P + i]! - b[P + i]!)).sort((x, y) => x - y);
    const meanDx = a.slice(0, P).reduce((t, v) => t + v, 0) / P;
    expect(Math.abs(meanDx)).toBeGreaterThan(3);
    expect(diffs[P >> 1]).toBeLessThan(0.25);
  });
});

describe('remembered sequences', () => {
  it('keep each owner to its share, and a client with many streams cannot push out one with a single stream', () => {
    const memory = new StreamMemory();
    memory.lose('quiet\u0000a', 'q1', 'CANCELLED');
    for (let i = 0; i < 6; i++) memory.lose(`busy\u0000s${i}`, `b${i}`, 'CANCELLED');
    // busy keeps its newest SEQUENCES_PER_OWNER; quiet keeps its one.
    expect(memory.remembered).toEqual(['quiet\u0000a', ...[2, 3, 4, 5].map((i) => `busy\u0000s${i}`)]);
    for (let i = 0; i < 4; i++) memory.lose(`other\u0000s${i}`, `o${i}`, 'CANCELLED');
    const remembered = memory.remembered;
    expect(remembered.length).toBe(MAX_REMEMBERED_SEQUENCES);
    expect(remembered).toContain('quiet\u0000a');
    expect(remembered.filter((k) => k.startsWith('busy')).length).toBeLessThanOrEqual(SEQUENCES_PER_OWNER);
  });
});
