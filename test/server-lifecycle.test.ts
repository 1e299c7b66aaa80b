/**
 * Start-up and shutdown: settings layering, `depthcast serve` as a process (listening line,
 * SIGTERM → exit 0, a child node with small semi-spaces that never outlives its launcher, refusal
 * beyond loopback without a token), shutdown while busy, the ping
 * heartbeat, and previews dropped for a slow client while results are not.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadServeConfig } from '../server/config.ts';
import { startServer } from '../server/index.ts';
import { FAST_PARAMS, frameBytes, sceneDepth, SLOW_PARAMS, TestClient, tinyModelsDir, jsonOf } from './support/server-helpers.ts';

const BIN = fileURLToPath(new URL('../bin/depthcast.js', import.meta.url));
let models: Awaited<ReturnType<typeof tinyModelsDir>>;

beforeAll(async () => {
  models = await tinyModelsDir();
});

afterAll(async () => {
  await models?.cleanup();
});

describe('settings: flags > config file > environment > defaults', () => {
  it('layers each setting', async () => {
    expect(loadServeConfig({}, {})).toEqual({
      host: '127.0.0.1', port: 7788, modelsDir: join(homedir(), '.cache', 'depthcast', 'models'), device: 'auto', allowedOrigins: [], limits: {},
    });
    expect(loadServeConfig({}, { DEPTHCAST_HOME: '/srv/dc' }).modelsDir).toBe('/srv/dc/models');
    const env = { DEPTHCAST_PORT: '9000', DEPTHCAST_HOST: '127.0.0.2', DEPTHCAST_TOKEN: 'env-token', DEPTHCAST_ALLOWED_ORIGINS: 'http://a.test, http://b.test', DEPTHCAST_DEVICE: 'cpu' };
    expect(loadServeConfig({}, env)).toMatchObject({ port: 9000, host: '127.0.0.2', token: 'env-token', allowedOrigins: ['http://a.test', 'http://b.test'], device: 'cpu' });
    const file = join(models.dir, 'serve.yaml');
    await writeFile(file, 'port: 9100\nmodelsDir: ./m\nlimits:\n  maxSteps: 50\n');
    const fromFile = loadServeConfig({ config: file }, env);
    expect(fromFile).toMatchObject({ port: 9100, host: '127.0.0.2', modelsDir: join(models.dir, 'm'), limits: { maxSteps: 50 } });
    expect(loadServeConfig({ config: file, port: 9200, host: 'localhost' }, env)).toMatchObject({ port: 9200, host: 'localhost', token: 'env-token' });
    const json = join(models.dir, 'serve.json');
    await writeFile(json, JSON.stringify({ prot: 1 }));
    expect(() => loadServeConfig({ config: json }, {})).toThrow(/unrecognized key/i);
    expect(() => loadServeConfig({}, { DEPTHCAST_PORT: 'eighty' })).toThrow(/DEPTHCAST_PORT/);
  });
});

function serve(args: string[]): { child: ChildProcess; stdout: () => string; stderr: () => string; url: Promise<string> } {
  const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--device', 'cpu', ...args], {
    env: { ...process.env, DEPTHCAST_HOME: models.dir, DEPTHCAST_TOKEN: '', DEPTHCAST_CONFIG: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const url = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /^depthcast listening on (http:\/\/\S+)$/m.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
  url.catch(() => {});
  return { child, stdout: () => out, stderr: () => err, url };
}

describe('depthcast serve', () => {
  it('prints its listening line, serves, and exits 0 on SIGTERM while busy', async () => {
    const proc = serve(['--models-dir', models.dir]);
    const url = await proc.url;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await jsonOf(await fetch(`${url}/v1/health`))).status).toBe('ok');
    const client = await TestClient.connect(url);
    client.send(frameBytes({ jobId: 'cli-slow', stream: 's', mode: 'batch', params: SLOW_PARAMS }));
    client.send(frameBytes({ jobId: 'cli-queued', stream: 's', mode: 'batch' }));
    await client.waitFor((m) => m.type === 'progress' && m.jobId === 'cli-slow');
    const exited = once(proc.child, 'exit');
    proc.child.kill('SIGTERM');
    const [code] = await exited;
    expect(code).toBe(0);
    for (const id of ['cli-slow', 'cli-queued']) expect((await client.terminal(id)).msg).toMatchObject({ type: 'cancelled', reason: 'shutdown' });
    expect(proc.stderr()).toMatch(/SIGTERM: shutting down/);
    await client.close();
  });

  it.runIf(process.platform === 'linux')('serves from a child node with its heap flags, which stops when its launcher is SIGKILLed', async () => {
    const proc = serve(['--models-dir', models.dir]);
    const url = await proc.url;
    // The launcher's only child is the node that listens; /proc gives its command line.
    const childPid = Number((await readFile(`/proc/${proc.child.pid}/task/${proc.child.pid}/children`, 'utf8')).trim().split(/\s+/)[0]);
    const argv = (await readFile(`/proc/${childPid}/cmdline`, 'utf8')).split('\0');
    expect(argv).toContain('--max-semi-space-size=1');
    expect(argv).toContain('--optimize-for-size');
    expect(argv.slice(argv.indexOf(BIN), argv.indexOf(BIN) + 2)).toEqual([BIN, 'serve']);
    expect((await jsonOf(await fetch(`${url}/v1/health`))).status).toBe('ok');
    const launcherExit = once(proc.child, 'exit');
    proc.child.kill('SIGKILL');
    await launcherExit;
    // No orphan keeps the port: the child saw its IPC channel close and shut down.
    while (existsSync(`/proc/${childPid}`) && !(await readFile(`/proc/${childPid}/stat`, 'utf8').catch(() => '')).includes(') Z ')) await new Promise((r) => setTimeout(r, 20));
    await expect(fetch(`${url}/v1/health`)).rejects.toThrow();
  });

  it('refuses --host beyond loopback without --token', async () => {
    const proc = serve(['--host', '0.0.0.0', '--models-dir', models.dir]);
    const [code] = await once(proc.child, 'exit');
    expect(code).toBe(1);
    expect(proc.stderr()).toMatch(/warning: --host 0\.0\.0\.0/);
    expect(proc.stderr()).toMatch(/needs --token/);
    expect(proc.stdout()).not.toMatch(/listening/);
  });
});

describe('shutdown while busy', () => {
  it('stops accepting, cancels queued jobs with a reply, aborts the running one, and resolves', async () => {
    const server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', log: () => {} });
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'running', stream: 'a', mode: 'batch', params: SLOW_PARAMS }));
    client.send(frameBytes({ jobId: 'queued-1', stream: 'a', mode: 'batch' }));
    client.send(frameBytes({ jobId: 'queued-2', stream: 'b', mode: 'live' }));
    const http = fetch(`${server.url}/v1/generate`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ depth: { data: Buffer.from(sceneDepth().buffer).toString('base64'), width: 64, height: 64, near: 1, far: 10 }, params: FAST_PARAMS }),
    });
    await client.waitFor((m) => m.type === 'progress' && m.jobId === 'running');
    await client.waitFor((m) => m.jobId === 'queued-2' && m.type === 'accepted');
    while (server.stats().queued < 3) await new Promise((r) => setTimeout(r, 5));
    await server.close();
    for (const id of ['running', 'queued-1', 'queued-2']) {
      const msgs = client.of(id);
      expect(msgs.filter((m) => ['result', 'cancelled', 'error'].includes(m.type)), id).toEqual([expect.objectContaining({ type: 'cancelled', msg: expect.objectContaining({ reason: 'shutdown' }) })]);
    }
    const res = await http;
    expect(res.status).toBe(503);
    expect((await jsonOf(res)).error.code).toBe('SHUTTING_DOWN');
    await client.waitFor(() => false, 5000).catch(() => {});
    expect(client.closed?.code).toBe(1001);
    await expect(fetch(`${server.url}/v1/health`)).rejects.toThrow();
    expect(server.stats().started).toBe(1);
  });
});

describe('connections', () => {
  it('the ping heartbeat closes a socket that stops answering', async () => {
    const server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', heartbeatMs: 100, log: () => {} });
    try {
      const dead = await TestClient.connect(server.url, { autoPong: false });
      const alive = await TestClient.connect(server.url);
      await dead.waitFor(() => false, 10_000).catch(() => {});
      expect(dead.closed).toBeDefined();
      expect(alive.closed).toBeUndefined();
      alive.send(frameBytes({ jobId: 'alive' }));
      expect((await alive.terminal('alive')).type).toBe('result');
      await alive.close();
    } finally {
      await server.close();
    }
  });

  it('drops previews, never results, when a client falls behind', async () => {
    // previewDropBytes -1: every socket counts as backed up, so every preview is dropped.
    const server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', previewDropBytes: -1, log: () => {} });
    try {
      const client = await TestClient.connect(server.url);
      client.send(frameBytes({ jobId: 'slowpoke', params: { steps: 4 } }));
      expect((await client.terminal('slowpoke')).type).toBe('result');
      expect(client.of('slowpoke').filter((m) => m.type === 'progress').length).toBeGreaterThan(0);
      expect(client.of('slowpoke').filter((m) => m.type === 'preview')).toHaveLength(0);
      expect(server.stats().previewsDropped).toBeGreaterThan(0);
      await client.close();
    } finally {
      await server.close();
    }
  });
});
