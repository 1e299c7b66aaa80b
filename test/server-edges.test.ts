/**
 * Small holes a hostile-client run found: an empty token, a loopback address other than
 * 127.0.0.1 refusing its own page, a constant depth map refused only after `accepted`, and
 * onnxruntime's source paths in error messages.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTinyModel } from '../src/tiny/build-tiny.ts';
import { withoutSourcePaths } from '../src/engine/engine.ts';
import { loadServeConfig } from '../server/config.ts';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { frameBytes, TestClient, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;

beforeAll(async () => {
  models = await tinyModelsDir();
  // A model whose own scheduler config names a class no one has.
  await createTinyModel(join(models.dir, 'broken-scheduler'), { family: 'depth2img' });
  const configPath = join(models.dir, 'broken-scheduler', 'scheduler', 'scheduler_config.json');
  await writeFile(configPath, JSON.stringify({ ...JSON.parse(await readFile(configPath, 'utf8')), _class_name: 'NoSuchScheduler' }));
  server = await startServer({ host: '127.0.0.2', port: 0, modelsDir: models.dir, device: 'cpu', log: () => {} });
});

afterAll(async () => {
  await server?.close();
  await models?.cleanup();
});

describe('edges', () => {
  it('an empty token is refused, not taken as "no authentication"', () => {
    expect(() => loadServeConfig({ token: '' }, {})).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(() => loadServeConfig({ token: '  ' }, {})).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(loadServeConfig({ token: 's3cret' }, {}).token).toBe('s3cret');
  });

  it('bound to 127.0.0.2, the service accepts its own page origin there', async () => {
    expect(server.url).toBe(`http://127.0.0.2:${server.port}`);
    const client = await TestClient.connect(server.url, { origin: server.url });
    await client.close();
    expect((await TestClient.refused(server.url, { origin: `http://127.0.0.3:${server.port}` })).status).toBe(403);
  });

  it('a constant depth map is BAD_DEPTH at intake, before accepted; with depthRange fixed it runs', async () => {
    const client = await TestClient.connect(server.url);
    const flat = new Float32Array(64 * 64).fill(3);
    client.send(frameBytes({ jobId: 'flat', depth: flat, params: { model: 'tiny' } }));
    const t = await client.terminal('flat');
    expect([t.type, t.msg.code]).toEqual(['error', 'BAD_DEPTH']);
    expect(client.of('flat').map((m) => m.type)).toEqual(['error']);
    expect(server.stats().submitted).toBe(0);
    client.send(frameBytes({ jobId: 'flat-fixed', depth: flat, params: { depthRange: 'fixed', model: 'tiny' } }));
    expect((await client.terminal('flat-fixed')).type).toBe('result');
    await client.close();
  });

  it('a model whose own scheduler config is broken is BAD_MODEL, not UNSUPPORTED_SCHEDULER; other models still run', async () => {
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'broken', params: { model: 'broken-scheduler' } }));
    const t = await client.terminal('broken');
    expect([t.type, t.msg.code]).toEqual(['error', 'BAD_MODEL']);
    expect(t.msg.message).toMatch(/scheduler_config\.json/);
    expect(t.msg.message).not.toContain(models.dir);
    client.send(frameBytes({ jobId: 'fine', params: { model: 'tiny' } }));
    expect((await client.terminal('fine')).type).toBe('result');
    await client.close();
  });

  it("onnxruntime's source paths are taken out of error messages", () => {
    const ort = 'Load model from <model tiny>/unet/model.onnx failed:/onnxruntime_src/onnxruntime/core/graph/model.cc:180 onnxruntime::Model::Model(onnx::ModelProto&&, const PathString&, const IOnnxRuntimeOpSchemaRegistryList*, const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) Unsupported model IR version: 12, max supported IR version: 10';
    const told = withoutSourcePaths(ort);
    expect(told).not.toMatch(/onnxruntime_src|model\.cc|::/);
    expect(told).toMatch(/Unsupported model IR version: 12/);
    expect(told).toMatch(/^Load model from <model tiny>\/unet\/model\.onnx failed:/);
  });
});
