/**
 * Who may drive the service: foreign Origins are refused on WebSocket upgrades and
 * state-changing HTTP, the Host header is checked on loopback, and --token is enforced.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { loadServeConfig } from '../server/config.ts';
import { FAST_PARAMS, frameBytes, sceneDepth, TestClient, tinyModelsDir, jsonOf } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let open: DepthcastServer;
let locked: DepthcastServer;
const TOKEN = 'correct-horse-battery-staple';
const ALLOWED = 'http://localhost:5173';

beforeAll(async () => {
  models = await tinyModelsDir();
  open = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', allowedOrigins: [ALLOWED], log: () => {} });
  locked = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', token: TOKEN, log: () => {} });
});

afterAll(async () => {
  await open?.close();
  await locked?.close();
  await models?.cleanup();
});

function generateBody(): string {
  return JSON.stringify({ depth: { data: Buffer.from(sceneDepth().buffer).toString('base64'), width: 64, height: 64, near: 1, far: 10 }, params: FAST_PARAMS });
}

/** A raw request, so the Host header can be anything. */
function rawGet(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, headers }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('Origin', () => {
  it('refuses a WebSocket upgrade from another site, and allows its own page and allowed origins', async () => {
    const refused = await TestClient.refused(open.url, { origin: 'https://evil.example' });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('FORBIDDEN_ORIGIN');
    expect((await TestClient.refused(open.url, { origin: 'null' })).status).toBe(403);
    for (const origin of [`http://127.0.0.1:${open.port}`, `http://localhost:${open.port}`, ALLOWED]) {
      const client = await TestClient.connect(open.url, { origin });
      client.send(frameBytes({ jobId: 'o' }));
      expect((await client.terminal('o')).type).toBe('result');
      await client.close();
    }
    // Same host, other port: another origin.
    expect((await TestClient.refused(open.url, { origin: `http://127.0.0.1:${open.port + 1}` })).status).toBe(403);
  });

  it('refuses state-changing HTTP from another site; reads stay open', async () => {
    const res = await fetch(`${open.url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json', origin: 'https://evil.example' }, body: generateBody() });
    expect(res.status).toBe(403);
    expect((await jsonOf(res)).error.code).toBe('FORBIDDEN_ORIGIN');
    expect(open.stats().submitted).toBe(3); // only the three WebSocket frames above
    const own = await fetch(`${open.url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json', origin: open.url }, body: generateBody() });
    expect(own.status).toBe(200);
    const health = await fetch(`${open.url}/v1/health`, { headers: { origin: 'https://evil.example' } });
    expect(health.status).toBe(200);
    expect(health.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('answers CORS preflights for allowed origins only', async () => {
    const pre = await fetch(`${open.url}/v1/generate`, { method: 'OPTIONS', headers: { origin: ALLOWED, 'access-control-request-method': 'POST' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe(ALLOWED);
    expect(pre.headers.get('access-control-allow-headers')).toMatch(/Authorization/);
    const evil = await fetch(`${open.url}/v1/generate`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(evil.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('refuses a foreign Host header (DNS rebinding) on loopback', async () => {
    const evil = await rawGet(open.port, '/v1/health', { host: `evil.example:${open.port}` });
    expect(evil.status).toBe(403);
    expect(JSON.parse(evil.body).error.code).toBe('FORBIDDEN_ORIGIN');
    expect((await rawGet(open.port, '/v1/health', { host: `localhost:${open.port}` })).status).toBe(200);
    expect((await TestClient.refused(open.url, { headers: { host: 'evil.example' } })).status).toBe(403);
  });
});

describe('token', () => {
  it('every /v1 request needs the bearer token', async () => {
    const none = await fetch(`${locked.url}/v1/health`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toBe('Bearer');
    expect((await jsonOf(none)).error.code).toBe('UNAUTHORIZED');
    expect((await fetch(`${locked.url}/v1/models`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(`${locked.url}/v1/health?token=${TOKEN}`)).status).toBe(401); // query tokens are for WebSocket only
    expect((await fetch(`${locked.url}/v1/health`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    const gen = await fetch(`${locked.url}/v1/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: generateBody() });
    expect(gen.status).toBe(401);
    // The page itself is not secret.
    expect((await fetch(`${locked.url}/`)).status).toBe(200);
  });

  it('WebSocket upgrades need the token as a header or a query parameter', async () => {
    expect((await TestClient.refused(locked.url)).status).toBe(401);
    expect((await TestClient.refused(`${locked.url}/v1/ws?token=nope`)).status).toBe(401);
    const byHeader = await TestClient.connect(locked.url, { headers: { authorization: `Bearer ${TOKEN}` } });
    byHeader.send(frameBytes({ jobId: 't1' }));
    expect((await byHeader.terminal('t1')).type).toBe('result');
    await byHeader.close();
    const byQuery = await TestClient.connect(`${locked.url}/v1/ws?token=${TOKEN}`);
    await byQuery.close();
  });
});

describe('binding', () => {
  it('refuses to listen beyond loopback without a token', async () => {
    await expect(startServer({ host: '0.0.0.0', port: 0, modelsDir: models.dir, log: () => {} })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });

  it('binds 127.0.0.1 by default', () => {
    expect(loadServeConfig({}, {}).host).toBe('127.0.0.1');
    expect(new URL(open.url).hostname).toBe('127.0.0.1');
  });

  it('refuses WebSocket upgrades on other paths', async () => {
    expect((await TestClient.refused(`${open.url}/ws`)).status).toBe(404);
  });
});
