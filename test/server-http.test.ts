/** HTTP: health, models, a generate round trip (JSON, PNG, multipart) with the PNG decoded, job records, error mapping. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPngText } from '../src/image/codec.ts';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { FAST_PARAMS, sceneDepth, tinyModelsDir, jsonOf } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let pageDir: string;
let server: DepthcastServer;

beforeAll(async () => {
  models = await tinyModelsDir();
  pageDir = await mkdtemp(join(tmpdir(), 'depthcast-page-'));
  server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', pageDir, limits: { maxMessageBytes: 512 * 1024 }, log: () => {} });
});

afterAll(async () => {
  await server?.close();
  await models?.cleanup();
  await rm(pageDir, { recursive: true, force: true });
});

function request(overrides: { depth?: Record<string, unknown>; params?: Record<string, unknown>; [k: string]: unknown } = {}) {
  const { depth, params, ...rest } = overrides;
  return {
    depth: { data: Buffer.from(sceneDepth().buffer).toString('base64'), width: 64, height: 64, near: 1, far: 10, ...depth },
    params: { ...FAST_PARAMS, ...params },
    ...rest,
  };
}

function post(body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${server.url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

async function expectError(res: Response, status: number, code: string): Promise<string> {
  expect(res.status).toBe(status);
  const body = (await jsonOf(res)) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  return body.error.message;
}

describe('GET', () => {
  it('/v1/health reports status, version, device, loaded model and queue', async () => {
    const health = await jsonOf(await fetch(`${server.url}/v1/health`));
    expect(health).toMatchObject({ status: 'ok', version: expect.any(String), protocol: 1, device: 'cpu', queue: { length: 0, running: 0, max: 32 } });
  });

  it('/v1/models lists the registry', async () => {
    const { models: list } = await jsonOf(await fetch(`${server.url}/v1/models`));
    // The tiny model's own scheduler (PNDM) needs no few-step settings: the general defaults.
    expect(list).toEqual([{ name: 'tiny', family: 'depth2img', loaded: false, default: true, tiny: true, defaults: { steps: 20, guidance: 7.5 } }]);
  });

  it('/ says how to build the page until it exists, then serves it', async () => {
    const note = await fetch(`${server.url}/`);
    expect(note.status).toBe(200);
    expect(await note.text()).toMatch(/npm run build:page/);
    await writeFile(join(pageDir, 'index.html'), '<!doctype html><title>depthcast preview</title>');
    expect(await (await fetch(`${server.url}/`)).text()).toMatch(/depthcast preview/);
  });

  it('unknown routes are JSON 404s', async () => {
    expect(await expectError(await fetch(`${server.url}/v1/nothing`), 404, 'NOT_FOUND')).toMatch(/GET \/v1\/nothing/);
    await expectError(await fetch(`${server.url}/v1/jobs/never-was`), 404, 'JOB_NOT_FOUND');
  });
});

describe('POST /v1/generate', () => {
  it('returns base64 artifacts with seed and finishReason; the PNG decodes; the job is on record', async () => {
    const res = await post(request({ params: { seed: 1234 } }));
    expect(res.status).toBe(200);
    const body = await jsonOf(res);
    expect(body).toMatchObject({ seed: 1234, finishReason: 'SUCCESS', width: 64, height: 64, model: { name: 'tiny' } });
    expect(body.artifacts).toHaveLength(1);
    expect(body.artifacts[0]).toMatchObject({ seed: 1234, finishReason: 'SUCCESS', mime: 'image/png' });
    const png = Buffer.from(body.artifacts[0].base64, 'base64');
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
    expect(new Set(data).size).toBeGreaterThan(1); // an image, not a blank
    expect(JSON.parse(readPngText(png).parameters!)).toMatchObject({ seed: 1234, prompt: FAST_PARAMS.prompt });

    const job = await jsonOf(await fetch(`${server.url}/v1/jobs/${body.jobId}`));
    expect(job).toMatchObject({ jobId: body.jobId, state: 'succeeded', mode: 'batch', result: { seed: 1234, finishReason: 'SUCCESS' } });

    // Same request, same seed: the same image.
    const again = await jsonOf(await post(request({ params: { seed: 1234 } })));
    expect(again.artifacts[0].base64).toBe(body.artifacts[0].base64);
  });

  it('returns image/png when asked by Accept', async () => {
    const res = await post(request({ params: { seed: 5 } }), { accept: 'image/png' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(res.headers.get('x-seed')).toBe('5');
    expect(res.headers.get('finish-reason')).toBe('SUCCESS');
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
  });

  it('takes multipart/form-data with raw depth bytes', async () => {
    const form = new FormData();
    form.append('request', JSON.stringify({ depth: { width: 64, height: 64, near: 1, far: 10 }, params: { ...FAST_PARAMS, seed: 1234 } }));
    form.append('depth', new Blob([sceneDepth().buffer as ArrayBuffer]), 'depth.f32');
    const res = await fetch(`${server.url}/v1/generate`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    const body = await jsonOf(res);
    expect(body.seed).toBe(1234);
    const json = await jsonOf(await post(request({ params: { seed: 1234 } })));
    expect(body.artifacts[0].base64).toBe(json.artifacts[0].base64);
  });

  it('a client that goes away cancels its job', async () => {
    const before = server.stats();
    const abort = new AbortController();
    // A slow request runs first, so the second one is still queued when its client goes away.
    const pending = post(request({ params: { steps: 150, width: 512, height: 512 } }));
    const res = fetch(`${server.url}/v1/generate`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, signal: abort.signal,
      body: JSON.stringify(request({ params: { steps: 150, width: 512, height: 512, seed: 9 } })),
    }).catch((e: Error) => e.name);
    while (server.stats().started - before.started < 1) await new Promise((r) => setTimeout(r, 5));
    abort.abort();
    expect(await res).toBe('AbortError');
    while (server.stats().cancelled === before.cancelled) await new Promise((r) => setTimeout(r, 5));
    expect((await pending).status).toBe(200);
    expect(server.stats().succeeded - before.succeeded).toBe(1);
    expect(server.stats().cancelled - before.cancelled).toBe(1);
  });

  it('maps each error to its status', async () => {
    await expectError(await post('{"depth": '), 400, 'BAD_REQUEST');
    expect(await expectError(await post(request({ params: { steps: 'many' } })), 400, 'BAD_REQUEST')).toMatch(/params\.steps/);
    // Raw results are for WebSocket viewers; HTTP answers with PNG and says so.
    expect(await expectError(await post(request({ params: { resultFormat: 'rgb8' } })), 400, 'BAD_REQUEST')).toMatch(/resultFormat/);
    expect(await expectError(await post(request({ depth: { width: 32 } })), 400, 'BAD_FRAME')).toMatch(/byteLength/);
    const nan = sceneDepth();
    nan[7] = NaN;
    await expectError(await post(request({ depth: { data: Buffer.from(nan.buffer).toString('base64') } })), 400, 'BAD_DEPTH');
    await expectError(await post(request({ params: { steps: 151 } })), 413, 'LIMIT_EXCEEDED');
    await expectError(await post(request({ params: { model: 'missing' } })), 404, 'MODEL_NOT_FOUND');
    await expectError(await post(request({ init: Buffer.from('GIF89a').toString('base64') })), 400, 'BAD_IMAGE');
    await expectError(await post('x'.repeat(800 * 1024)), 413, 'LIMIT_EXCEEDED');
    await expectError(await fetch(`${server.url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' }), 400, 'BAD_REQUEST');
  });
});
