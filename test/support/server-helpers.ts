/**
 * Helpers for the server tests: a models folder with a tiny model, depth frames (a floor plane
 * plus a box, as linear camera Z), the binary frame encoder, and a WebSocket client that
 * records every message in order.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { decodeBinaryMessage, encodeBinaryMessage } from '../../src/protocol/frame.ts';
import type { FrameHeaderInput, GenerationParamsInput } from '../../src/protocol/schemas.ts';
import { createTinyModel } from '../../src/tiny/build-tiny.ts';

export const W = 64;
export const H = 64;
export const NEAR = 1;
export const FAR = 10;

/** A temp folder holding `tiny` (depth2img); `cleanup` removes it. */
export async function tinyModelsDir(extra: { controlnet?: boolean } = {}): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'depthcast-server-'));
  await createTinyModel(join(dir, 'tiny'), { family: 'depth2img' });
  if (extra.controlnet) await createTinyModel(join(dir, 'tiny-cn'), { family: 'controlnet' });
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function emptyDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'depthcast-empty-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Linear Z of a camera looking at a floor: rows near the bottom are close (Z≈2), the top rows
 * are sky (+inf); a 16×16 box at (boxX, 24) stands at Z = boxZ.
 */
export function sceneDepth(opts: { boxX?: number; boxZ?: number; width?: number; height?: number } = {}): Float32Array {
  const width = opts.width ?? W;
  const height = opts.height ?? H;
  const z = new Float32Array(width * height);
  const horizon = Math.floor(height / 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) z[y * width + x] = y < horizon ? Infinity : 2 + 6 * (1 - (y - horizon) / (height - horizon));
  }
  const bx = opts.boxX ?? 24;
  for (let y = 24; y < 40 && y < height; y++) for (let x = bx; x < bx + 16 && x < width; x++) z[y * width + x] = opts.boxZ ?? 2.5;
  return z;
}

export interface FrameOptions {
  jobId: string;
  stream?: string;
  mode?: 'live' | 'batch';
  depth?: Float32Array;
  width?: number;
  height?: number;
  params?: Partial<GenerationParamsInput>;
  /** Merged into the header last (to break it on purpose). */
  header?: Record<string, unknown>;
  /** Replaces the payload (to break byte counts on purpose). */
  payload?: Uint8Array;
}

export const FAST_PARAMS: GenerationParamsInput = { prompt: 'a wooden box on a floor', steps: 2, seed: 42 };

/** A slow job for tests that must catch it running: 150 steps at 512×512 on the tiny model. */
export const SLOW_PARAMS: Partial<GenerationParamsInput> = { steps: 150, width: 512, height: 512 };

export function frameHeader(o: FrameOptions): FrameHeaderInput & Record<string, unknown> {
  const depth = o.depth ?? sceneDepth();
  return {
    type: 'frame', protocol: 1, jobId: o.jobId, stream: o.stream ?? 'default', mode: o.mode ?? 'live',
    depth: { width: o.width ?? W, height: o.height ?? H, dtype: 'f32', kind: 'zdepth', near: NEAR, far: FAR, byteLength: depth.byteLength },
    params: { ...FAST_PARAMS, ...o.params },
    ...o.header,
  } as FrameHeaderInput & Record<string, unknown>;
}

export function frameBytes(o: FrameOptions): Uint8Array {
  const depth = o.depth ?? sceneDepth();
  return encodeBinaryMessage(frameHeader(o), o.payload ?? new Uint8Array(depth.buffer, depth.byteOffset, depth.byteLength));
}

/** One received message: JSON control messages as they are; binary ones as header + payload. */
export interface Received {
  type: string;
  jobId?: string;
  msg: Record<string, any>;
  payload?: Uint8Array;
}

const TERMINAL = new Set(['result', 'cancelled', 'error']);

export class TestClient {
  readonly received: Received[] = [];
  closed?: { code: number; reason: string };
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary) => {
      if (isBinary) {
        const { header, payload } = decodeBinaryMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        const h = header as Record<string, any>;
        this.push({ type: String(h.type), jobId: h.jobId, msg: h, payload: payload.slice() });
      } else {
        const m = JSON.parse(data.toString('utf8')) as Record<string, any>;
        this.push({ type: String(m.type), jobId: m.jobId, msg: m });
      }
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
  }

  /** Connects and waits for the server's hello. */
  static async connect(url: string, options: WebSocket.ClientOptions = {}): Promise<TestClient> {
    const ws = new WebSocket(url.replace(/^http/, 'ws') + (url.includes('/v1/ws') ? '' : '/v1/ws'), options);
    const client = new TestClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    await client.waitFor((r) => r.type === 'hello');
    return client;
  }

  /** Attempts an upgrade that should be refused; resolves with the HTTP status and JSON body. */
  static refused(url: string, options: WebSocket.ClientOptions = {}): Promise<{ status: number; body: any }> {
    const ws = new WebSocket(url.replace(/^http/, 'ws') + (url.includes('/v1/ws') ? '' : '/v1/ws'), options);
    return new Promise((resolve, reject) => {
      ws.once('open', () => {
        ws.close();
        reject(new Error('upgrade was accepted'));
      });
      ws.once('error', () => {});
      ws.once('unexpected-response', (_req, res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? JSON.parse(text) : undefined }));
      });
    });
  }

  private push(r: Received): void {
    this.received.push(r);
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  send(data: Uint8Array | string): void {
    this.ws.send(data);
  }

  sendJson(message: unknown): void {
    this.ws.send(JSON.stringify(message));
  }

  /** Resolves with the first received message (from `from` on) matching `pred`. */
  async waitFor(pred: (r: Received) => boolean, timeoutMs = 60_000, from = 0): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.slice(from).find(pred);
      if (found) return found;
      if (this.closed) throw new Error(`socket closed (${this.closed.code}) while waiting; got: ${this.summary()}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting; got: ${this.summary()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The job's terminal message (result | cancelled | error). */
  terminal(jobId: string, timeoutMs = 60_000): Promise<Received> {
    return this.waitFor((r) => r.jobId === jobId && TERMINAL.has(r.type), timeoutMs);
  }

  /** Next error without a jobId or with this one, after `from`. */
  error(from: number, jobId?: string): Promise<Received> {
    return this.waitFor((r) => r.type === 'error' && r.jobId === jobId, 30_000, from);
  }

  of(jobId: string): Received[] {
    return this.received.filter((r) => r.jobId === jobId);
  }

  summary(): string {
    return this.received.slice(-12).map((r) => `${r.type}${r.jobId ? `(${r.jobId})` : ''}${r.msg.code ? `[${r.msg.code}]` : ''}`).join(' ');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.ws.close();
    await new Promise<void>((resolve) => {
      if (this.closed) resolve();
      else this.ws.once('close', () => resolve());
    });
  }
}

/** A response body as loosely typed JSON (Node's fetch types it `unknown`); the assertions check its shape. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function jsonOf(res: Response): Promise<any> {
  return res.json();
}
