/**
 * HTTP client errors are typed by their own status, never INTERNAL: malformed percent-escapes,
 * a Content-Encoding body that is not what it says, an over-long Content-Length (refused before
 * the body is read), and large bodies held at once (bounded, BUSY past the bound).
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { FAST_PARAMS, sceneDepth, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;
const MAX_MESSAGE = 256 * 1024;

beforeAll(async () => {
  models = await tinyModelsDir();
  server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', limits: { maxMessageBytes: MAX_MESSAGE }, budgets: { largeBodyBytes: 16 * 1024, maxLargeBodies: 1 }, log: () => {} });
});

afterAll(async () => {
  await server?.close();
  await models?.cleanup();
});

function raw(method: string, path: string, headers: Record<string, string> = {}, body?: Buffer): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function generateBody(): Buffer {
  return Buffer.from(JSON.stringify({ depth: { data: Buffer.from(sceneDepth().buffer).toString('base64'), width: 64, height: 64, near: 1, far: 10 }, params: FAST_PARAMS }));
}

describe('client errors', () => {
  it('a malformed percent-escape in a path is BAD_REQUEST, not INTERNAL', async () => {
    const res = await raw('GET', '/v1/jobs/%E0%A4%A');
    expect([res.status, res.json.error.code]).toEqual([400, 'BAD_REQUEST']);
  });

  it('a gzip Content-Encoding over bytes that are not gzip is BAD_REQUEST', async () => {
    const res = await raw('POST', '/v1/generate', { 'content-type': 'application/json', 'content-encoding': 'gzip' }, Buffer.from('{"not":"gzip"}'));
    expect([res.status, res.json.error.code]).toEqual([400, 'BAD_REQUEST']);
    const odd = await raw('POST', '/v1/generate', { 'content-type': 'application/json', 'content-encoding': 'br2' }, Buffer.from('{}'));
    expect(odd.status).toBeLessThan(500);
    expect(odd.json.error.code).not.toBe('INTERNAL');
  });

  it('a Content-Length over the limit is refused with 413 before any of the body is sent', async () => {
    const socket = net.connect(server.port, '127.0.0.1');
    socket.write(`POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nContent-Type: application/json\r\nContent-Length: ${100 * MAX_MESSAGE}\r\n\r\n`);
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (c: Buffer) => {
        text += c.toString();
        if (text.includes('"error"') && text.includes('}}')) resolve(text);
      });
      socket.on('close', () => resolve(text));
    });
    socket.destroy();
    expect(answer).toMatch(/^HTTP\/1\.1 413/);
    expect(answer).toMatch(/"code":"LIMIT_EXCEEDED"/);
    expect(answer).toMatch(/Connection: close/i);
  });

  it('large bodies held at once are bounded: past maxLargeBodies the next gets 429 BUSY, small ones pass', async () => {
    const body = generateBody();
    expect(body.byteLength).toBeGreaterThan(16 * 1024);
    // One large body, half sent and held open.
    const socket = net.connect(server.port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(`POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nContent-Type: application/json\r\nContent-Length: ${body.byteLength}\r\n\r\n`);
    socket.write(body.subarray(0, body.byteLength >> 1));
    await new Promise((r) => setTimeout(r, 200)); // let the server take it in (the assertion below is on states, not time)
    const second = await raw('POST', '/v1/generate', { 'content-type': 'application/json', 'content-length': String(body.byteLength) }, body);
    expect([second.status, second.json.error.code]).toEqual([429, 'BUSY']);
    expect(second.json.error.message).toMatch(/maxLargeBodies|at most 1/);
    const small = await raw('GET', '/v1/health');
    expect(small.status).toBe(200);
    // The held body finishes: it runs, and the budget is free again.
    socket.write(body.subarray(body.byteLength >> 1));
    const first = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (c: Buffer) => {
        text += c.toString();
        if (/\r\n\r\n[\s\S]*"finishReason"/.test(text)) resolve(text);
      });
    });
    expect(first).toMatch(/^HTTP\/1\.1 200/);
    socket.destroy();
    const third = await raw('POST', '/v1/generate', { 'content-type': 'application/json', 'content-length': String(body.byteLength) }, body);
    expect(third.status).toBe(200);
  });
});
