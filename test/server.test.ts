/**
 * The service end to end: a real server on an ephemeral loopback port, real ws clients, the tiny
 * model. Progress and results, newest-frame-wins under a flood, fairness, cancel, disconnect,
 * the similarity skip, and MODEL_NOT_FOUND without models.
 */
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeJpeg } from '../src/image/codec.ts';
import { encodeBinaryMessage } from '../src/protocol/frame.ts';
import { PreviewHeader, ResultHeader, ServerHelloMessage } from '../src/protocol/schemas.ts';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { emptyDir, FAST_PARAMS, frameBytes, frameHeader, sceneDepth, SLOW_PARAMS, TestClient, tinyModelsDir, jsonOf } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;

beforeAll(async () => {
  models = await tinyModelsDir();
  server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', log: () => {} });
});

afterAll(async () => {
  await server?.close();
  await models?.cleanup();
});

const TERMINAL = ['result', 'cancelled', 'error'];

describe('one frame', () => {
  it('says hello, then accepted → progress (with previews) → one PNG result', async () => {
    const client = await TestClient.connect(server.url);
    const hello = ServerHelloMessage.parse(client.received[0]!.msg);
    expect(hello.models.map((m) => m.name)).toEqual(['tiny']);
    expect(hello.schedulers).toContain('ddim');
    expect(hello.limits).toEqual(server.limits);

    client.send(frameBytes({ jobId: 'one', params: { steps: 3, seed: 7 } }));
    const result = await client.terminal('one');
    const msgs = client.of('one');
    expect(msgs[0]!.type).toBe('accepted');
    expect(msgs[0]!.msg).toMatchObject({ jobId: 'one', stream: 'default', position: 0 });
    const progress = msgs.filter((m) => m.type === 'progress');
    // One per scheduler timestep (PNDM, the tiny model's default, takes steps + 1).
    const total = progress[0]!.msg.total as number;
    expect(total).toBeGreaterThanOrEqual(3);
    expect(progress.map((m) => m.msg.step)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    const previews = msgs.filter((m) => m.type === 'preview');
    expect(previews.length).toBeGreaterThan(0);
    const preview = PreviewHeader.parse(previews[0]!.msg);
    const jpeg = await sharp(previews[0]!.payload!).metadata();
    expect([jpeg.format, jpeg.width, jpeg.height]).toEqual(['jpeg', preview.width, preview.height]);

    expect(result.type).toBe('result');
    expect(msgs.at(-1)).toBe(result);
    expect(msgs.filter((m) => TERMINAL.includes(m.type))).toHaveLength(1);
    const header = ResultHeader.parse(result.msg);
    expect(header).toMatchObject({ jobId: 'one', width: 64, height: 64, seed: 7, finishReason: 'SUCCESS', model: { name: 'tiny' } });
    expect(header.model.hash).toMatch(/^[0-9a-f]{8,}/);
    expect(header.reusedFrom).toBeUndefined();
    expect(header.timings.endToEnd).toBeGreaterThan(0);
    expect(header.params).toMatchObject({ prompt: FAST_PARAMS.prompt, steps: 3, seed: 7 });
    const png = await sharp(result.payload!).raw().toBuffer({ resolveWithObject: true });
    expect([png.info.width, png.info.height]).toEqual([64, 64]);
    await client.close();
  });
});

describe('raw previews', () => {
  it('sends previewFormat rgb8 previews as raw RGB rows, the same image its JPEG previews show', async () => {
    const client = await TestClient.connect(server.url);
    const previewsOf = async (jobId: string, previewFormat?: 'rgb8') => {
      client.send(frameBytes({ jobId, mode: 'batch', params: { steps: 3, seed: 7, ...(previewFormat ? { previewFormat } : {}) } }));
      expect((await client.terminal(jobId)).type).toBe('result');
      return client.of(jobId).filter((m) => m.type === 'preview').map((m) => ({ header: PreviewHeader.parse(m.msg), bytes: m.payload! }));
    };
    const raw = await previewsOf('raw', 'rgb8');
    const jpeg = await previewsOf('jpeg');
    expect(raw.length).toBeGreaterThan(0);
    expect(raw.map((p) => p.header.step)).toEqual(jpeg.map((p) => p.header.step));
    for (const [i, { header, bytes }] of raw.entries()) {
      expect(header.format).toBe('rgb8');
      expect(jpeg[i]!.header.format).toBe('jpeg');
      expect(bytes.byteLength).toBe(header.width * header.height * 3);
      // The JPEG path encodes exactly these pixels: encoding the raw bytes gives its bytes.
      const encoded = await encodeJpeg(bytes, header.width, header.height);
      expect(Buffer.from(encoded).equals(Buffer.from(jpeg[i]!.bytes))).toBe(true);
    }
    await client.close();
  });
});

describe('raw results', () => {
  it('sends a resultFormat rgb8 result as the raw RGB rows of the PNG the same frame gives', async () => {
    const client = await TestClient.connect(server.url);
    const resultOf = async (jobId: string, mode: 'live' | 'batch', resultFormat?: 'rgb8') => {
      client.send(frameBytes({ jobId, mode, stream: jobId, params: { steps: 3, seed: 7, ...(resultFormat ? { resultFormat } : {}) } }));
      const m = await client.terminal(jobId);
      expect(m.type, JSON.stringify(m.msg)).toBe('result');
      return { header: ResultHeader.parse(m.msg), bytes: m.payload! };
    };
    for (const mode of ['live', 'batch'] as const) {
      const raw = await resultOf(`raw-${mode}`, mode, 'rgb8');
      const png = await resultOf(`png-${mode}`, mode);
      expect([raw.header.format, png.header.format]).toEqual(['rgb8', 'png']);
      expect([raw.header.width, raw.header.height]).toEqual([64, 64]);
      expect(raw.bytes.byteLength).toBe(64 * 64 * 3);
      const decoded = await sharp(png.bytes).raw().toBuffer();
      expect(Buffer.from(raw.bytes).equals(decoded), `${mode}: the same pixels`).toBe(true);
    }
    await client.close();
  });

  it('does not answer a PNG frame with a remembered raw result (the similarity skip compares formats)', async () => {
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'first', mode: 'live', stream: 'same', params: { steps: 3, seed: 7, resultFormat: 'rgb8' } }));
    expect((await client.terminal('first')).type).toBe('result');
    client.send(frameBytes({ jobId: 'again', mode: 'live', stream: 'same', params: { steps: 3, seed: 7, resultFormat: 'rgb8' } }));
    const again = ResultHeader.parse((await client.terminal('again')).msg);
    expect(again.reusedFrom).toBe('first');
    expect(again.format).toBe('rgb8');
    client.send(frameBytes({ jobId: 'as-png', mode: 'live', stream: 'same', params: { steps: 3, seed: 7 } }));
    const m = await client.terminal('as-png');
    const asPng = ResultHeader.parse(m.msg);
    expect(asPng.reusedFrom).toBeUndefined();
    expect(asPng.format).toBe('png');
    expect((await sharp(m.payload!).metadata()).format).toBe('png');
    await client.close();
  });
});

describe('init image and layout', () => {
  it('travel in the same binary frame after the depth, and shape the result', async () => {
    const client = await TestClient.connect(server.url);
    const depth = sceneDepth();
    const init = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 40, b: 40 } } }).png().toBuffer();
    const ids = new Uint16Array(64 * 64);
    for (let y = 24; y < 40; y++) for (let x = 24; x < 40; x++) ids[y * 64 + x] = 1;
    const send = (jobId: string, withExtras: boolean) => {
      const h = frameHeader({ jobId, mode: 'batch', depth });
      const parts: Uint8Array[] = [new Uint8Array(depth.buffer)];
      if (withExtras) {
        Object.assign(h, {
          init: { format: 'png', byteLength: init.byteLength },
          layout: { width: 64, height: 64, byteLength: ids.byteLength, objects: [{ id: 1, label: 'box', prompt: 'a shiny metal cube' }] },
        });
        parts.push(init, new Uint8Array(ids.buffer));
      }
      client.send(encodeBinaryMessage(h, ...parts));
    };
    send('plain', false);
    send('extras', true);
    const plain = await client.terminal('plain');
    const extras = await client.terminal('extras');
    expect(extras.type).toBe('result');
    expect(extras.msg.params).toMatchObject({ regions: 1, strength: 0.8 });
    expect(Buffer.from(extras.payload!).equals(Buffer.from(plain.payload!))).toBe(false);
    await client.close();
  });
});

describe('live streams: newest frame wins', () => {
  it('a flood of 100 frames on one stream computes only a few, and the last frame gets its result', async () => {
    const client = await TestClient.connect(server.url);
    const before = server.stats();
    const ids = Array.from({ length: 100 }, (_, i) => `flood-${i}`);
    // A different box position per frame, so the similarity skip cannot hide anything.
    ids.forEach((id, i) => client.send(frameBytes({ jobId: id, stream: 'cam', depth: sceneDepth({ boxX: i % 48 }), params: { steps: 4 } })));
    const last = await client.terminal('flood-99');
    expect(last.type).toBe('result');
    expect(last.msg.jobId).toBe('flood-99');
    expect(last.msg.reusedFrom).toBeUndefined();
    for (const id of ids) await client.terminal(id);
    for (const id of ids) expect(client.of(id).filter((m) => TERMINAL.includes(m.type)), id).toHaveLength(1);
    const results = client.received.filter((m) => m.type === 'result');
    const cancelled = client.received.filter((m) => m.type === 'cancelled');
    expect(results.length + cancelled.length).toBe(100);
    expect(cancelled.every((m) => m.msg.reason === 'superseded')).toBe(true);
    const after = server.stats();
    const started = after.started - before.started;
    expect(started).toBeGreaterThanOrEqual(1);
    expect(started).toBeLessThanOrEqual(10);
    expect(results.length).toBeLessThanOrEqual(started);
    console.log(`flood: 100 frames sent, ${started} started in the engine, ${results.length} results, ${cancelled.length} superseded`);
    await client.close();
  });

  it('a new frame cancels the running one of its stream at the next step boundary', async () => {
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'old', stream: 'cut', params: SLOW_PARAMS }));
    await client.waitFor((m) => m.type === 'progress' && m.jobId === 'old');
    client.send(frameBytes({ jobId: 'new', stream: 'cut', depth: sceneDepth({ boxX: 40 }) }));
    expect((await client.terminal('old')).msg).toMatchObject({ type: 'cancelled', reason: 'superseded' });
    expect((await client.terminal('new')).type).toBe('result');
    const steps = client.of('old').filter((m) => m.type === 'progress');
    expect(steps.length).toBeLessThan(steps[0]!.msg.total);
    await client.close();
  });

  it('a continuous stream gets results while it keeps sending, never more than 1 frame pending', async () => {
    const client = await TestClient.connect(server.url);
    const before = server.stats();
    // A frame every 15 ms for as long as it takes to see 3 results of frames that were not the
    // last one sent (bounded at 600 frames); each generation takes many frame periods.
    let sent = 0;
    let maxQueued = 0;
    const resultsWhileSending = () => client.received.filter((m) => m.type === 'result').length;
    while (sent < 600 && resultsWhileSending() < 3) {
      client.send(frameBytes({ jobId: `orbit-${sent}`, stream: 'orbit', depth: sceneDepth({ boxX: sent % 48 }), params: { steps: 30, width: 256, height: 256 } }));
      sent++;
      await new Promise((r) => setTimeout(r, 15));
      maxQueued = Math.max(maxQueued, server.stats().queued);
    }
    const duringStream = resultsWhileSending();
    const lastId = `orbit-${sent - 1}`;
    expect((await client.terminal(lastId)).type).toBe('result');
    for (let i = 0; i < sent; i++) expect(client.of(`orbit-${i}`).filter((m) => TERMINAL.includes(m.type)), `orbit-${i}`).toHaveLength(1);
    const started = server.stats().started - before.started;
    const results = client.received.filter((m) => m.type === 'result');
    console.log(`continuous stream: ${sent} frames, ${started} started, ${results.length} results (${duringStream} while sending), queue ≤ ${maxQueued}`);
    expect(duringStream).toBeGreaterThanOrEqual(3);
    expect(sent).toBeGreaterThan(duringStream * 2);
    expect(maxQueued).toBeLessThanOrEqual(1);
    // Results keep frame order: each is for a later frame than the one before.
    const order = results.map((m) => Number(m.jobId!.split('-')[1]));
    expect(order).toEqual([...order].sort((a, b) => a - b));
    // Jobs started during the motion finish: only the first starts, before the stream's first
    // generation time is known, can be cancelled (live-policy.ts).
    expect(started - results.length).toBeLessThanOrEqual(2);
    await client.close();
  });

  it('a running frame past half its steps finishes before the newer frame runs', async () => {
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'late', stream: 'half', params: { ...SLOW_PARAMS, steps: 40 } }));
    const half = await client.waitFor((m) => m.type === 'progress' && m.jobId === 'late' && m.msg.step >= m.msg.total / 2 + 1);
    client.send(frameBytes({ jobId: 'next', stream: 'half', depth: sceneDepth({ boxX: 40 }) }));
    expect((await client.terminal('late')).type).toBe('result');
    expect((await client.terminal('next')).type).toBe('result');
    expect(half.msg.step).toBeLessThan(half.msg.total);
    expect(client.of('next')[0]!.msg).toMatchObject({ type: 'accepted', position: 1 });
    const order = client.received.filter((m) => m.type === 'result').map((m) => m.jobId);
    expect(order).toEqual(['late', 'next']);
    await client.close();
  });

  it('two streams are served in turn', async () => {
    const client = await TestClient.connect(server.url);
    const order = ['a1', 'a2', 'a3', 'b1', 'b2', 'b3'];
    for (const id of order) client.send(frameBytes({ jobId: id, stream: id[0]!, mode: 'batch' }));
    for (const id of order) expect((await client.terminal(id)).type).toBe('result');
    const done = client.received.filter((m) => m.type === 'result').map((m) => m.jobId);
    expect(done).toEqual(['a1', 'b1', 'a2', 'b2', 'a3', 'b3']);
    const positions = Object.fromEntries(client.received.filter((m) => m.type === 'accepted').map((m) => [m.jobId, m.msg.position]));
    // Positions are estimates at acceptance time: the b-jobs did not exist when a2 and a3 were accepted.
    expect(positions).toEqual({ a1: 0, a2: 1, a3: 2, b1: 1, b2: 3, b3: 5 });
    await client.close();
  });

  it('batch frames are FIFO and never dropped, even next to a live stream', async () => {
    const client = await TestClient.connect(server.url);
    for (let i = 0; i < 5; i++) client.send(frameBytes({ jobId: `batch-${i}`, stream: 'jobs', mode: 'batch' }));
    for (let i = 0; i < 5; i++) client.send(frameBytes({ jobId: `live-${i}`, stream: 'jobs-live', depth: sceneDepth({ boxX: i * 8 }) }));
    for (let i = 0; i < 5; i++) expect((await client.terminal(`batch-${i}`)).type).toBe('result');
    expect((await client.terminal('live-4')).type).toBe('result');
    const batchOrder = client.received.filter((m) => m.type === 'result' && m.jobId!.startsWith('batch-')).map((m) => m.jobId);
    expect(batchOrder).toEqual(['batch-0', 'batch-1', 'batch-2', 'batch-3', 'batch-4']);
    await client.close();
  });
});

describe('similarity skip', () => {
  it('re-sends the last result for a near-identical frame, and recomputes when the prompt or depth changes', async () => {
    const client = await TestClient.connect(server.url);
    const base = sceneDepth();
    client.send(frameBytes({ jobId: 's1', stream: 'sim', depth: base }));
    const first = await client.terminal('s1');
    expect(first.type).toBe('result');
    const started = server.stats().started;

    const nudged = base.slice();
    nudged[50 * 64 + 10] = nudged[50 * 64 + 10]! * 1.01; // one pixel, 1% further away
    client.send(frameBytes({ jobId: 's2', stream: 'sim', depth: nudged }));
    const reused = await client.terminal('s2');
    expect(reused.type).toBe('result');
    expect(reused.msg.reusedFrom).toBe('s1');
    expect(reused.msg.jobId).toBe('s2');
    expect(Buffer.from(reused.payload!).equals(Buffer.from(first.payload!))).toBe(true);
    expect(client.of('s2').map((m) => m.type)).toEqual(['accepted', 'result']);
    expect(server.stats().started).toBe(started);

    client.send(frameBytes({ jobId: 's3', stream: 'sim', depth: nudged, params: { prompt: 'a red box on a floor' } }));
    const newPrompt = await client.terminal('s3');
    expect(newPrompt.type).toBe('result');
    expect(newPrompt.msg.reusedFrom).toBeUndefined();
    expect(server.stats().started).toBe(started + 1);

    client.send(frameBytes({ jobId: 's4', stream: 'sim', depth: sceneDepth({ boxX: 40 }), params: { prompt: 'a red box on a floor' } }));
    const moved = await client.terminal('s4');
    expect(moved.msg.reusedFrom).toBeUndefined();
    expect(server.stats().started).toBe(started + 2);

    // Batch frames are never skipped.
    client.send(frameBytes({ jobId: 's5', stream: 'sim', mode: 'batch', depth: sceneDepth({ boxX: 40 }), params: { prompt: 'a red box on a floor' } }));
    expect((await client.terminal('s5')).msg.reusedFrom).toBeUndefined();
    await client.close();
  });
});

describe('cancel and disconnect', () => {
  it('cancels a running job by id and a queued stream, and keeps serving', async () => {
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'slow', stream: 'c1', mode: 'batch', params: SLOW_PARAMS }));
    client.send(frameBytes({ jobId: 'q1', stream: 'c2', mode: 'batch' }));
    client.send(frameBytes({ jobId: 'q2', stream: 'c2', mode: 'batch' }));
    await client.waitFor((m) => m.type === 'progress' && m.jobId === 'slow');
    client.sendJson({ type: 'cancel', stream: 'c2' });
    client.sendJson({ type: 'cancel', jobId: 'slow' });
    for (const id of ['slow', 'q1', 'q2']) expect((await client.terminal(id)).msg).toMatchObject({ type: 'cancelled', reason: 'client' });
    const from = client.received.length;
    client.sendJson({ type: 'cancel', jobId: 'slow' });
    expect((await client.error(from, 'slow')).msg.code).toBe('JOB_NOT_FOUND');
    client.send(frameBytes({ jobId: 'after', stream: 'c1' }));
    expect((await client.terminal('after')).type).toBe('result');
    expect(client.received.some((m) => m.type === 'result' && ['slow', 'q1', 'q2'].includes(m.jobId!))).toBe(false);
    await client.close();
  });

  it('a client that disconnects cancels its jobs', async () => {
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'gone-1', stream: 'x', mode: 'batch', params: SLOW_PARAMS }));
    client.send(frameBytes({ jobId: 'gone-2', stream: 'x', mode: 'batch', params: SLOW_PARAMS }));
    await client.waitFor((m) => m.type === 'progress' && m.jobId === 'gone-1');
    const before = server.stats();
    await client.close();
    const other = await TestClient.connect(server.url);
    other.send(frameBytes({ jobId: 'next', stream: 'y' }));
    expect((await other.terminal('next')).type).toBe('result');
    const after = server.stats();
    expect(after.cancelled - before.cancelled).toBe(2);
    expect(after.started - before.started).toBe(1); // only "next": gone-2 never started
    const job = await jsonOf(await fetch(`${server.url}/v1/jobs/gone-2`));
    expect(job).toMatchObject({ jobId: 'gone-2', state: 'cancelled', cancelReason: 'disconnect' });
    expect(job.startedAt).toBeUndefined();
    await other.close();
  });
});

describe('no model installed', () => {
  it('starts, says how to get a model, and answers MODEL_NOT_FOUND', async () => {
    const empty = await emptyDir();
    const lines: string[] = [];
    const bare = await startServer({ port: 0, modelsDir: empty.dir, device: 'cpu', log: (l) => lines.push(l) });
    try {
      expect(lines.join('\n')).toMatch(/models pull/);
      expect(lines.join('\n')).toMatch(/create-tiny/);
      const health = await jsonOf(await fetch(`${bare.url}/v1/health`));
      expect(health).toMatchObject({ status: 'ok', model: null });
      const client = await TestClient.connect(bare.url);
      expect(client.received[0]!.msg.models).toEqual([]);
      client.send(frameBytes({ jobId: 'nomodel' }));
      const err = await client.terminal('nomodel');
      expect(err.msg).toMatchObject({ type: 'error', code: 'MODEL_NOT_FOUND', jobId: 'nomodel' });
      expect(err.msg.message).toMatch(/models pull/);
      const res = await fetch(`${bare.url}/v1/generate`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ depth: { data: Buffer.from(sceneDepth().buffer).toString('base64'), width: 64, height: 64, near: 1, far: 10 }, params: FAST_PARAMS }),
      });
      expect(res.status).toBe(404);
      expect((await jsonOf(res)).error.code).toBe('MODEL_NOT_FOUND');
      await client.close();
    } finally {
      await bare.close();
      await empty.cleanup();
    }
  });
});
