/**
 * A frame's `motion` over a real WebSocket: bad flow planes (wrong size, NaN, offsets beyond the
 * frame) get BAD_FRAME with the jobId, and a well-formed one is accepted and generated.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBinaryMessage } from '../src/protocol/frame.ts';
import { toHalf } from '../src/runtime/float16.ts';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { frameHeader, H, sceneDepth, TestClient, tinyModelsDir, W } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;
let client: TestClient;

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

function flowFrame(jobId: string, flow: Float32Array, motion: Record<string, unknown> = {}): Uint8Array {
  const depth = sceneDepth();
  const header = frameHeader({ jobId, mode: 'batch', header: { motion: { kind: 'flow', dtype: 'f32', width: W, height: H, byteLength: flow.byteLength, ...motion } } });
  return encodeBinaryMessage(header, new Uint8Array(depth.buffer), new Uint8Array(flow.buffer, flow.byteOffset, flow.byteLength));
}

async function outcome(bytes: Uint8Array, jobId: string): Promise<{ type: string; code?: string; message?: string }> {
  const from = client.received.length;
  client.send(bytes);
  const r = await client.waitFor((m) => m.jobId === jobId && ['result', 'error'].includes(m.type), 60_000, from);
  return { type: r.type, code: r.msg.code, message: r.msg.message };
}

describe('motion on the wire', () => {
  it('refuses flow planes of the wrong size', async () => {
    const small = new Float32Array(2 * 8 * 8);
    const e = await outcome(flowFrame('m-size', small, { width: 8, height: 8 }), 'm-size');
    expect(e).toMatchObject({ type: 'error', code: 'BAD_FRAME' });
    expect(e.message).toMatch(/motion flow is 8×8 but the depth is 64×64/);
    const short = await outcome(flowFrame('m-bytes', new Float32Array(W * H)), 'm-bytes');
    expect(short.message).toMatch(/motion.byteLength is 16384, expected 2×64×64 f32 = 32768/);
  });

  it('refuses NaN offsets and offsets beyond the frame', async () => {
    const nan = new Float32Array(2 * W * H);
    nan[W * H + 3 * W + 7] = NaN;
    const e = await outcome(flowFrame('m-nan', nan), 'm-nan');
    expect(e).toMatchObject({ type: 'error', code: 'BAD_FRAME' });
    expect(e.message).toMatch(/NaN or infinite offsets at pixel \(7, 3\)/);
    const far = new Float32Array(2 * W * H);
    far[100] = 500;
    expect((await outcome(flowFrame('m-far', far), 'm-far')).message).toMatch(/more than a frame beyond/);
  });

  it('refuses a pose that is not 16 numbers', async () => {
    const header = frameHeader({ jobId: 'm-pose', header: { motion: { kind: 'pose', intrinsics: { fx: 50, fy: 50, cx: 32, cy: 32 }, pose: [1, 0, 0], previousPose: [] } } });
    const depth = sceneDepth();
    const e = await outcome(encodeBinaryMessage(header, new Uint8Array(depth.buffer)), 'm-pose');
    expect(e.type).toBe('error');
    expect(e.message).toMatch(/motion\.pose/);
    const skewed = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 5, 0, 0, 1, 1];
    const rigid = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 5, 0, 0, 0, 1];
    const bad = frameHeader({ jobId: 'm-rigid', header: { motion: { kind: 'pose', intrinsics: { fx: 50, fy: 50, cx: 32, cy: 32 }, pose: rigid, previousPose: skewed } } });
    const r = await outcome(encodeBinaryMessage(bad, new Uint8Array(depth.buffer)), 'm-rigid');
    expect(r).toMatchObject({ type: 'error', code: 'BAD_FRAME' });
    expect(r.message).toMatch(/motion.previousPose's last row must be 0 0 0 1/);
  });

  it('accepts well-formed f16 flow planes and generates the frame', async () => {
    const halves = new Uint16Array(2 * W * H).fill(toHalf(-1.5));
    const depth = sceneDepth();
    const header = frameHeader({ jobId: 'm-ok', mode: 'batch', header: { motion: { kind: 'flow', dtype: 'f16', width: W, height: H, byteLength: halves.byteLength } } });
    const r = await outcome(encodeBinaryMessage(header, new Uint8Array(depth.buffer), new Uint8Array(halves.buffer)), 'm-ok');
    expect(r.type).toBe('result');
  });
});
