/**
 * Malformed and over-limit input over WebSocket: each gets its own typed error (with the jobId
 * when known), and the same connection and the service keep working afterwards.
 */
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBinaryMessage } from '../src/protocol/frame.ts';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { frameBytes, frameHeader, sceneDepth, SLOW_PARAMS, TestClient, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;
let client: TestClient;

const LIMITS = { maxMessageBytes: 256 * 1024, maxQueuedJobs: 2, maxPromptChars: 100, maxSteps: 150, maxDepthPixels: 128 * 128 };

beforeAll(async () => {
  models = await tinyModelsDir();
  // A model whose UNet file is garbage: loading it fails inside the worker.
  await cp(join(models.dir, 'tiny'), join(models.dir, 'broken'), { recursive: true });
  await writeFile(join(models.dir, 'broken', 'unet', 'model.onnx'), Buffer.from('this is not an ONNX file'));
  server = await startServer({ port: 0, modelsDir: models.dir, model: 'tiny', device: 'cpu', limits: LIMITS, log: () => {} });
  client = await TestClient.connect(server.url);
});

afterAll(async () => {
  await client?.close();
  await server?.close();
  await models?.cleanup();
});

/** Sends, then returns the next error message (matching jobId, or none). */
async function errorFor(data: Uint8Array | string, jobId?: string): Promise<{ code: string; message: string; jobId?: string }> {
  const from = client.received.length;
  client.send(data);
  return (await client.error(from, jobId)).msg as { code: string; message: string; jobId?: string };
}

function depthBytes(depth: Float32Array): Uint8Array {
  return new Uint8Array(depth.buffer);
}

describe('malformed messages each get their own error, and the socket stays open', () => {
  it('bad JSON', async () => {
    const e = await errorFor('{"type": "cancel", ');
    expect(e.code).toBe('BAD_REQUEST');
    expect(e.message).toMatch(/not valid JSON/);
  });

  it('unknown message types, text and binary', async () => {
    expect((await errorFor(JSON.stringify({ type: 'launch-missiles' }))).message).toMatch(/unknown message type "launch-missiles"/);
    expect((await errorFor(JSON.stringify({ type: 'frame', jobId: 'x' }), 'x')).message).toMatch(/frames are binary/);
    const e = await errorFor(encodeBinaryMessage({ type: 'picture', jobId: 'pic' }, new Uint8Array(4)), 'pic');
    expect(e.code).toBe('BAD_REQUEST');
    expect(e.message).toMatch(/unknown binary message type "picture"/);
  });

  it('a client hello with another protocol version', async () => {
    const e = await errorFor(JSON.stringify({ type: 'hello', protocol: 2, client: 'future' }));
    expect(e.code).toBe('BAD_REQUEST');
    expect(e.message).toMatch(/protocol 2 is not supported/);
    const from = client.received.length;
    client.sendJson({ type: 'hello', protocol: 1, client: 'test' });
    client.sendJson({ type: 'cancel' });
    expect((await client.error(from)).msg.message).toMatch(/cancel needs jobId or stream/);
  });

  it('wrong header length', async () => {
    const bytes = frameBytes({ jobId: 'hl' });
    new DataView(bytes.buffer).setUint32(0, bytes.byteLength + 10, true);
    const e = await errorFor(bytes);
    expect(e.code).toBe('BAD_FRAME');
    expect(e.message).toMatch(/runs past the end/);
    expect((await errorFor(new Uint8Array([1, 0]))).code).toBe('BAD_FRAME');
    const shifted = frameBytes({ jobId: 'hl2' });
    new DataView(shifted.buffer).setUint32(0, 3, true);
    expect((await errorFor(shifted)).message).toMatch(/not valid UTF-8 JSON/);
  });

  it('wrong byte counts', async () => {
    const depth = sceneDepth();
    const short = await errorFor(frameBytes({ jobId: 'short', payload: depthBytes(depth).subarray(0, depth.byteLength - 4) }), 'short');
    expect(short.code).toBe('BAD_FRAME');
    expect(short.message).toMatch(/payload has 16380 bytes/);
    const declared = await errorFor(frameBytes({ jobId: 'declared', header: { depth: { ...frameHeader({ jobId: 'd' }).depth, byteLength: 100 } } }), 'declared');
    expect(declared.code).toBe('BAD_FRAME');
    expect(declared.message).toMatch(/depth.byteLength is 100, expected 64×64 f32 = 16384/);
    const mismatch = await errorFor(frameBytes({ jobId: 'wh', header: { depth: { ...frameHeader({ jobId: 'd' }).depth, width: 32, byteLength: 16384 } } }), 'wh');
    expect(mismatch.code).toBe('BAD_FRAME');
  });

  it('schema errors name the field', async () => {
    const h = frameHeader({ jobId: 'schema' });
    const e = await errorFor(encodeBinaryMessage({ ...h, depth: { ...h.depth, near: -1 } }, depthBytes(sceneDepth())), 'schema');
    expect(e.code).toBe('BAD_REQUEST');
    expect(e.message).toMatch(/depth\.near/);
    const proto = await errorFor(encodeBinaryMessage({ ...h, jobId: 'p2', protocol: 2 }, depthBytes(sceneDepth())), 'p2');
    expect(proto.message).toMatch(/protocol 2 is not supported/);
  });

  it('an oversized message gets LIMIT_EXCEEDED without losing the connection', async () => {
    const big = new Uint8Array(LIMITS.maxMessageBytes + 1024);
    const e = await errorFor(big);
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(e.message).toMatch(/maxMessageBytes 262144/);
    expect(client.closed).toBeUndefined();
  });

  it('NaN, negative and all-background depth get BAD_DEPTH', async () => {
    const nan = sceneDepth();
    nan[100] = NaN;
    const e = await errorFor(frameBytes({ jobId: 'nan', depth: nan }), 'nan');
    expect(e).toMatchObject({ code: 'BAD_DEPTH', jobId: 'nan' });
    expect(e.message).toMatch(/1 NaN/);
    const negative = sceneDepth();
    negative[5] = -3;
    expect((await errorFor(frameBytes({ jobId: 'neg', depth: negative }), 'neg')).message).toMatch(/negative/);
    const sky = new Float32Array(64 * 64).fill(Infinity);
    expect((await errorFor(frameBytes({ jobId: 'sky', depth: sky }), 'sky')).message).toMatch(/no foreground/);
  });

  it('limits: steps, prompt length, depth pixels, output pixels, exact generation pixels', async () => {
    expect(await errorFor(frameBytes({ jobId: 'steps', params: { steps: 151 } }), 'steps')).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect((await errorFor(frameBytes({ jobId: 'prompt', params: { prompt: 'x'.repeat(101) } }), 'prompt')).message).toMatch(/params.prompt is 101 characters/);
    expect((await errorFor(frameBytes({ jobId: 'out', params: { width: 8192, height: 4096 } }), 'out')).message).toMatch(/output size 8192×4096/);
    expect((await errorFor(frameBytes({ jobId: 'gen', params: { width: 2048, height: 1024, sizing: 'exact' } }), 'gen')).message).toMatch(/sizing "exact" at 2048×1024 is 2097152 generated pixels/);
    const big = new Float32Array(130 * 130).fill(3);
    const e = await errorFor(frameBytes({ jobId: 'big', depth: big, width: 130, height: 130 }), 'big');
    expect(e.code).toBe('LIMIT_EXCEEDED');
    expect(e.message).toMatch(/depth 130×130 is 16900 pixels; this service allows at most 16384/);
    const thin = new Float32Array(100 * 4).fill(3);
    expect((await errorFor(frameBytes({ jobId: 'thin', depth: thin, width: 100, height: 4 }), 'thin')).message).toMatch(/too small/);
    expect((await errorFor(frameBytes({ jobId: 'odd', params: { width: 60, sizing: 'exact' } }), 'odd')).message).toMatch(/multiple of 8/);
  });

  it('a layout of another size is BAD_LAYOUT; too many prompted regions is LIMIT_EXCEEDED', async () => {
    const depth = sceneDepth();
    const ids = new Uint16Array(32 * 32);
    const h = frameHeader({ jobId: 'lay', depth });
    const bad = encodeBinaryMessage({ ...h, layout: { width: 32, height: 32, byteLength: ids.byteLength, objects: [] } }, depthBytes(depth), new Uint8Array(ids.buffer));
    expect(await errorFor(bad, 'lay')).toMatchObject({ code: 'BAD_LAYOUT' });
    const full = new Uint16Array(64 * 64);
    const objects = Array.from({ length: 9 }, (_, i) => ({ id: i + 1, label: `o${i}`, prompt: `thing ${i}` }));
    const many = encodeBinaryMessage({ ...h, jobId: 'lay9', layout: { width: 64, height: 64, byteLength: full.byteLength, objects } }, depthBytes(depth), new Uint8Array(full.buffer));
    expect(await errorFor(many, 'lay9')).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    // An id in the map that layout.objects does not list.
    const stray = new Uint16Array(64 * 64);
    stray.fill(7, 0, 100);
    const unknown = encodeBinaryMessage({ ...h, jobId: 'lay7', layout: { width: 64, height: 64, byteLength: stray.byteLength, objects: [{ id: 1, label: 'cube', prompt: 'a red cube' }] } }, depthBytes(depth), new Uint8Array(stray.buffer));
    expect(await errorFor(unknown, 'lay7')).toMatchObject({ code: 'BAD_LAYOUT', message: expect.stringMatching(/object id 7/) });
  });

  it('models are named from the registry, never by path', async () => {
    const e = await errorFor(frameBytes({ jobId: 'path', params: { model: '../../etc' } }), 'path');
    expect(e.code).toBe('BAD_REQUEST');
    expect(e.message).toMatch(/not a path/);
    expect(await errorFor(frameBytes({ jobId: 'nope', params: { model: 'nope' } }), 'nope')).toMatchObject({ code: 'MODEL_NOT_FOUND' });
  });

  it('a model that fails inside the worker fails that job only', async () => {
    client.send(frameBytes({ jobId: 'broken', params: { model: 'broken' } }));
    const e = await client.terminal('broken');
    expect(e.type).toBe('error');
    expect(['BAD_MODEL', 'INFERENCE_FAILED']).toContain(e.msg.code);
    // The client is told the model's name, not where it lives on the service's disk.
    expect(e.msg.message).toContain('<model broken>');
    expect(e.msg.message).not.toMatch(/\/tmp\/|depthcast-/);
    client.send(frameBytes({ jobId: 'healthy' }));
    expect((await client.terminal('healthy')).type).toBe('result');
  });

  it('a full queue answers BUSY; the jobs already queued are unaffected', async () => {
    client.send(frameBytes({ jobId: 'busy-0', stream: 'b0', mode: 'batch', params: SLOW_PARAMS }));
    await client.waitFor((m) => m.type === 'progress' && m.jobId === 'busy-0');
    client.send(frameBytes({ jobId: 'busy-1', stream: 'b1', mode: 'batch' }));
    client.send(frameBytes({ jobId: 'busy-2', stream: 'b2', mode: 'live' }));
    const e = await errorFor(frameBytes({ jobId: 'busy-3', stream: 'b3', mode: 'batch' }), 'busy-3');
    expect(e.code).toBe('BUSY');
    expect(await errorFor(frameBytes({ jobId: 'busy-4', stream: 'b1', mode: 'batch' }), 'busy-4')).toMatchObject({ code: 'BUSY' });
    // A live frame that replaces its stream's queued frame does not grow the queue.
    client.send(frameBytes({ jobId: 'busy-2b', stream: 'b2', mode: 'live', depth: sceneDepth({ boxX: 4 }) }));
    client.sendJson({ type: 'cancel', jobId: 'busy-0' });
    expect((await client.terminal('busy-2')).msg).toMatchObject({ type: 'cancelled', reason: 'superseded' });
    for (const id of ['busy-1', 'busy-2b']) expect((await client.terminal(id)).type).toBe('result');
    expect((await client.terminal('busy-0')).type).toBe('cancelled');
  });

  it('a jobId still in flight on the connection is refused', async () => {
    client.send(frameBytes({ jobId: 'dup', stream: 'd1', mode: 'batch', params: SLOW_PARAMS }));
    const e = await errorFor(frameBytes({ jobId: 'dup', stream: 'd2', mode: 'batch' }), 'dup');
    expect(e.code).toBe('BAD_REQUEST');
    client.sendJson({ type: 'cancel', jobId: 'dup' });
    await client.waitFor((m) => m.type === 'cancelled' && m.jobId === 'dup');
  });

  it('after all of that, the same connection still gets results', async () => {
    client.send(frameBytes({ jobId: 'still-ok' }));
    expect((await client.terminal('still-ok')).type).toBe('result');
    expect(client.closed).toBeUndefined();
  });

  it('a message over the hard cap closes the socket (ws 1009), the service keeps serving', async () => {
    const other = await TestClient.connect(server.url);
    other.send(new Uint8Array(LIMITS.maxMessageBytes * 2 + 1024 * 1024 + 1));
    await other.waitFor(() => false, 10_000).catch(() => {});
    expect(other.closed?.code).toBe(1009);
    const again = await TestClient.connect(server.url);
    again.send(frameBytes({ jobId: 'after-cap' }));
    expect((await again.terminal('after-cap')).type).toBe('result');
    await again.close();
  });
});
