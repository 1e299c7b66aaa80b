/**
 * Routing under a token: authentication comes before routing and denies by default, routes are
 * matched exactly (case, trailing slash, percent-escapes), and everything unmatched is the JSON
 * NOT_FOUND. Every route is tried under every spelling, with and without the token.
 */
import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { FAST_PARAMS, sceneDepth, TestClient, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let pageDir: string;
let locked: DepthcastServer;
let open: DepthcastServer;
const TOKEN = 'route-secret';

beforeAll(async () => {
  models = await tinyModelsDir();
  pageDir = await mkdtemp(join(tmpdir(), 'depthcast-routes-page-'));
  await writeFile(join(pageDir, 'index.html'), '<!doctype html><title>depthcast preview</title>');
  await writeFile(join(pageDir, 'main.js'), 'console.log("page")');
  await writeFile(join(pageDir, 'main.js.map'), '{}');
  locked = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', token: TOKEN, pageDir, log: () => {} });
  open = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', pageDir, log: () => {} });
});

afterAll(async () => {
  await locked?.close();
  await open?.close();
  await models?.cleanup();
  await rm(pageDir, { recursive: true, force: true });
});

function generateBody(): string {
  return JSON.stringify({ depth: { data: Buffer.from(sceneDepth().buffer).toString('base64'), width: 64, height: 64, near: 1, far: 10 }, params: FAST_PARAMS });
}

/** A raw request: the path goes on the wire exactly as written (fetch would normalise it). */
function raw(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: { ...headers, ...(body ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : {}) } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The HTTP status an upgrade to exactly this path gets (101 when it opens). */
function upgradeStatus(port: number, path: string): Promise<number> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`);
  return new Promise((resolve) => {
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
    ws.once('error', () => {});
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
  });
}

const ROUTES: { method: string; path: string; ok: number }[] = [
  { method: 'GET', path: '/v1/health', ok: 200 },
  { method: 'GET', path: '/v1/models', ok: 200 },
  { method: 'GET', path: '/v1/jobs/x', ok: 404 }, // JOB_NOT_FOUND: the route itself answered
  { method: 'POST', path: '/v1/generate', ok: 200 },
];

/** Spellings of a route that are not the route: case, trailing slash, escapes, extra slashes, dot segments. */
function variants(path: string): string[] {
  const [, first, ...rest] = path.split('/');
  const second = rest[0]!;
  const tail = rest.slice(1).map((p) => `/${p}`).join('');
  return [
    path.toUpperCase(),
    `/${first!.toUpperCase()}/${rest.join('/')}`,
    `/${first}/${second[0]!.toUpperCase()}${second.slice(1)}${tail}`,
    `${path}/`,
    `/${first}/${second}/${tail ? `${tail.slice(1)}/` : ''}`.replace(/\/\/$/, '/'),
    `/%${first!.charCodeAt(0).toString(16)}${first!.slice(1)}/${rest.join('/')}`,
    `/${first}/%${second.charCodeAt(0).toString(16)}${second.slice(1)}${tail}`,
    `/${first}/%${second.charCodeAt(0).toString(16).toUpperCase()}${second.slice(1)}${tail}`,
    `//${first}/${rest.join('/')}`,
    `/${first}//${rest.join('/')}`,
    `/${first}/./${rest.join('/')}`,
    `/${first}%2F${rest.join('/')}`,
  ].filter((v, i, all) => v !== path && all.indexOf(v) === i);
}

describe('with a token', () => {
  it('every spelling of every route needs the token: no variant runs a job or answers without it', async () => {
    let tried = 0;
    for (const route of ROUTES) {
      for (const path of [route.path, ...variants(route.path)]) {
        const res = await raw(locked.port, route.method, path, {}, route.method === 'POST' ? generateBody() : undefined);
        expect([path, res.status]).toEqual([path, 401]);
        expect(JSON.parse(res.body).error.code).toBe('UNAUTHORIZED');
        tried++;
      }
    }
    expect(tried).toBeGreaterThan(40);
    expect(locked.stats().submitted).toBe(0);
  });

  it('with the token, only the exact spelling is the route; the rest are JSON NOT_FOUND', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const route of ROUTES) {
      const exact = await raw(locked.port, route.method, route.path, auth, route.method === 'POST' ? generateBody() : undefined);
      expect([route.path, exact.status]).toEqual([route.path, route.ok]);
      for (const path of variants(route.path)) {
        const res = await raw(locked.port, route.method, path, auth, route.method === 'POST' ? generateBody() : undefined);
        expect([path, res.status]).toEqual([path, 404]);
        expect(res.type).toMatch(/application\/json/);
        expect(JSON.parse(res.body).error.code).toBe('NOT_FOUND');
      }
    }
    expect(locked.stats().submitted).toBe(1); // the one exact POST
  });

  it('the page is public, and only the page: its files exactly, no maps, no other spellings', async () => {
    expect((await raw(locked.port, 'GET', '/')).status).toBe(200);
    expect((await raw(locked.port, 'GET', '/main.js')).status).toBe(200);
    expect((await raw(locked.port, 'HEAD', '/main.js')).status).toBe(200);
    for (const path of ['/MAIN.JS', '/main.js/', '/%6Dain.js', '/main.js.map', '/nothing.js', '/index.html/..', '/v1']) {
      expect([path, (await raw(locked.port, 'GET', path)).status]).toEqual([path, 401]);
    }
    expect((await raw(locked.port, 'POST', '/main.js')).status).toBe(401);
  });

  it('WebSocket upgrades: every spelling but /v1/ws is refused, and the token comes first', async () => {
    for (const path of variants('/v1/ws')) {
      expect([path, await upgradeStatus(locked.port, path)]).toEqual([path, 401]);
      // The URL parser folds dot segments, so /v1/./ws is /v1/ws itself.
      expect([path, await upgradeStatus(locked.port, `${path}?token=${TOKEN}`)]).toEqual([path, path === '/v1/./ws' ? 101 : 404]);
    }
    expect(await upgradeStatus(locked.port, '/v1/ws')).toBe(401);
    const ok = await TestClient.connect(`${locked.url}/v1/ws?token=${TOKEN}`);
    await ok.close();
  });
});

describe('without a token', () => {
  it('routes outside /v1 and missing page files are the JSON NOT_FOUND, not HTML', async () => {
    for (const path of ['/nothing', '/nothing.js', '/V1/health', '/v1/health/', '/main.js.map', '/INDEX.HTML']) {
      const res = await raw(open.port, 'GET', path);
      expect([path, res.status]).toEqual([path, 404]);
      expect(res.type).toMatch(/application\/json/);
      expect(JSON.parse(res.body).error.code).toBe('NOT_FOUND');
    }
    expect((await raw(open.port, 'GET', '/main.js')).body).toMatch(/page/);
  });
});
