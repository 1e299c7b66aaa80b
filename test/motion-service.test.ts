/**
 * The consistent mode through the real service: batch frames on one stream over a real
 * WebSocket, carrying the camera poses (static pan) or flow planes, run consistent when asked,
 * report the mode and each pair's warp score with the result, and fall back to per-frame mode
 * with a stated reason when the previous frame is missing or was cancelled.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBinaryMessage } from '../src/protocol/frame.ts';
import { panScene } from '../src/motion/scenes.ts';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { TestClient, tinyModelsDir } from './support/server-helpers.ts';

const S = 64;
const scene = panScene(5, S, S);
let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;
let client: TestClient;
/** The valid fraction of each pan pair at the depth's size, from the first test. */
const scene64ValidFraction: number[] = [];

beforeAll(async () => {
  models = await tinyModelsDir();
  server = await startServer({ port: 0, modelsDir: models.dir, model: 'tiny', device: 'cpu', log: () => {} });
  client = await TestClient.connect(server.url);
});

afterAll(async () => {
  await client?.close();
  await server?.close();
  await models?.cleanup();
});

type Consistency = { mode: string; fallback?: string; previousJobId?: string; score?: { error: number; validFraction: number; disoccludedDifference: number } };

function frame(f: number, jobId: string, stream: string, consistency: 'per-frame' | 'consistent', motion?: 'pose' | 'flow', previousJobId?: string, steps = 6, size = S, live = false): Uint8Array {
  const depth = scene.frames[f]!.depth;
  const parts = [new Uint8Array(depth.buffer, depth.byteOffset, depth.byteLength)];
  let header: Record<string, unknown> | undefined;
  if (motion === 'pose') {
    header = { kind: 'pose', intrinsics: scene.intrinsics, pose: scene.poses![f], previousPose: scene.poses![f - 1], ...(previousJobId ? { previousJobId } : {}) };
  } else if (motion === 'flow') {
    const flow = scene.frames[f]!.motion!.flow.data;
    header = { kind: 'flow', dtype: 'f32', width: S, height: S, byteLength: flow.byteLength, ...(previousJobId ? { previousJobId } : {}) };
    parts.push(new Uint8Array(flow.buffer, flow.byteOffset, flow.byteLength));
  }
  return encodeBinaryMessage({
    type: 'frame', protocol: 1, jobId, stream, mode: live ? 'live' : 'batch',
    depth: { width: S, height: S, dtype: 'f32', kind: 'zdepth', near: scene.near, far: scene.far, byteLength: depth.byteLength },
    ...(header ? { motion: header } : {}),
    params: { prompt: 'a wooden box', steps, seed: 42, guidance: 7.5, sizing: 'exact', width: size, height: size, depthRange: 'fixed', consistency },
  }, ...parts);
}

async function consistencyOf(jobId: string): Promise<Consistency> {
  const r = await client.terminal(jobId, 120_000);
  expect(r.type, JSON.stringify(r.msg)).toBe('result');
  return r.msg.consistency as Consistency;
}

describe('consistent mode through the service', () => {
  it('runs a pan sent with camera poses consistently, reports each pair, and halves the per-frame warp error', async () => {
    const means: Record<string, number> = {};
    for (const mode of ['per-frame', 'consistent'] as const) {
      const ids = scene.frames.map((_, f) => `${mode}-${f}`);
      ids.forEach((id, f) => client.send(frame(f, id, `pan-${mode}`, mode, f ? 'pose' : undefined, f ? ids[f - 1] : undefined)));
      const reports = await Promise.all(ids.map(consistencyOf));
      expect(reports[0]).toEqual(mode === 'consistent' ? { mode: 'per-frame', fallback: 'the frame carries no motion to its previous frame' } : { mode: 'per-frame' });
      for (let f = 1; f < ids.length; f++) {
        expect(reports[f]).toMatchObject({ mode, previousJobId: ids[f - 1] });
        expect(reports[f]!.fallback).toBeUndefined();
        expect(reports[f]!.score!.validFraction).toBeGreaterThan(0.5);
        expect(reports[f]!.score!.validFraction).toBeLessThan(1);
      }
      if (mode === 'consistent') reports.forEach((r, f) => { if (f) scene64ValidFraction[f] = r.score!.validFraction; });
      means[mode] = reports.slice(1).reduce((t, r) => t + r.score!.error, 0) / (ids.length - 1);
    }
    console.log(`service pan: warp error per-frame ${means['per-frame']!.toFixed(4)}, consistent ${means.consistent!.toFixed(4)}`);
    expect(means.consistent).toBeLessThanOrEqual(0.5 * means['per-frame']!);
  });

  it('takes flow planes as motion too', async () => {
    client.send(frame(0, 'flow-0', 'pan-flow', 'consistent'));
    client.send(frame(1, 'flow-1', 'pan-flow', 'consistent', 'flow', 'flow-0'));
    expect((await consistencyOf('flow-0')).mode).toBe('per-frame');
    expect(await consistencyOf('flow-1')).toMatchObject({ mode: 'consistent', previousJobId: 'flow-0', score: { error: expect.any(Number) } });
  });

  it('falls back to per-frame mode, and says why, when the previous frame was cancelled or is missing', async () => {
    // A long frame ahead keeps the next one queued (or running) while it is cancelled.
    client.send(frame(0, 'c-0', 'pan-cancel', 'consistent', undefined, undefined, 150));
    client.send(frame(1, 'c-1', 'pan-cancel', 'consistent', 'pose', 'c-0'));
    client.send(JSON.stringify({ type: 'cancel', jobId: 'c-1' }));
    expect((await client.terminal('c-1', 120_000)).type).toBe('cancelled');
    client.send(frame(2, 'c-2', 'pan-cancel', 'consistent', 'pose', 'c-1'));
    const after = await consistencyOf('c-2');
    expect(after.mode).toBe('per-frame');
    expect(after.fallback).toMatch(/the previous frame \(job c-1\) (is missing|was cancelled)/);
    // The frame after that continues from c-2 again.
    client.send(frame(3, 'c-3', 'pan-cancel', 'consistent', 'pose', 'c-2'));
    expect(await consistencyOf('c-3')).toMatchObject({ mode: 'consistent', previousJobId: 'c-2' });
    // A new stream has nothing to continue from.
    client.send(frame(1, 'n-1', 'pan-new', 'consistent', 'pose'));
    expect(await consistencyOf('n-1')).toEqual({ mode: 'per-frame', fallback: 'no previous frame of this stream was generated here' });
  });

  it('runs at a generated size other than the depth\'s: depth and motion are resampled to it', async () => {
    const ids = ['big-0', 'big-1', 'big-2'];
    ids.forEach((id, f) => client.send(frame(f, id, 'pan-big', 'consistent', f ? 'pose' : undefined, f ? ids[f - 1] : undefined, 3, 96)));
    for (const [f, id] of ids.entries()) {
      const r = await client.terminal(id, 120_000);
      expect(r.type, JSON.stringify(r.msg)).toBe('result');
      expect(r.msg.generated).toEqual({ width: 96, height: 96 });
      if (f === 0) continue;
      expect(r.msg.consistency).toMatchObject({ mode: 'consistent', previousJobId: ids[f - 1] });
      // The same geometry as at the depth's size: the same share of the frame is visible in both frames.
      expect(r.msg.consistency.score.validFraction).toBeCloseTo(scene64ValidFraction[f]!, 1);
      console.log(`frame ${f}: valid ${r.msg.consistency.score.validFraction.toFixed(3)} at 96, ${scene64ValidFraction[f]!.toFixed(3)} at 64; error ${r.msg.consistency.score.error.toFixed(4)}`);
    }
  });

  it('keeps newest-frame-wins on a live stream: superseded frames are cancelled, the last one gets its result and says what it continued', async () => {
    const ids = ['live-0', 'live-1', 'live-2', 'live-3'];
    // Sent back to back: each new frame may supersede the one before.
    ids.forEach((id, f) => client.send(frame(f, id, 'pan-live', 'consistent', f ? 'pose' : undefined, f ? ids[f - 1] : undefined, 40, S, true)));
    const outcomes = await Promise.all(ids.map((id) => client.terminal(id, 120_000)));
    expect(outcomes.map((o) => o.type).every((t) => t === 'result' || t === 'cancelled')).toBe(true);
    const last = outcomes[3]!;
    expect(last.type).toBe('result');
    const report = last.msg.consistency as Consistency;
    if (outcomes[2]!.type === 'result') expect(report).toMatchObject({ mode: 'consistent', previousJobId: 'live-2' });
    else expect(report.fallback).toMatch(/the previous frame \(job live-2\) (is missing|was cancelled)/);
    console.log(`live: ${outcomes.map((o) => `${o.jobId} ${o.type}`).join(', ')}; last: ${report.mode}${report.fallback ? ` (${report.fallback})` : ''}`);
  });
});
