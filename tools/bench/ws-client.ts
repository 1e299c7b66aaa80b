/**
 * The bench's WebSocket client: live frames of a moving box at Stable Diffusion size, and what
 * came back for each. Used in the bench's process for the latency frames and in a child
 * process for the flood (flood-client.ts).
 */
import WebSocket from 'ws';
import { decodeBinaryMessage, encodeBinaryMessage } from '../../src/protocol/frame.ts';
import { PROTOCOL_VERSION, type FrameHeaderInput, type ResultFormat } from '../../src/protocol/schemas.ts';
import { benchDepth, SD } from './pipeline-bench.ts';

export interface Result {
  jobId: string;
  receivedAt: number;
  header: Record<string, unknown> & { timings: Record<string, number>; reusedFrom?: string };
}

export class BenchClient {
  readonly results = new Map<string, Result>();
  readonly cancelled = new Set<string>();
  readonly errors: string[] = [];
  private waiters = new Map<string, (r: Result | undefined) => void>();
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        const { header } = decodeBinaryMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        const h = header as Result['header'] & { type: string; jobId: string };
        if (h.type === 'result') {
          const r = { jobId: h.jobId, receivedAt: performance.now(), header: h };
          this.results.set(h.jobId, r);
          this.waiters.get(h.jobId)?.(r);
        }
        return;
      }
      const msg = JSON.parse(data.toString()) as { type: string; jobId?: string; code?: string; message?: string };
      if (msg.type === 'cancelled' && msg.jobId) {
        this.cancelled.add(msg.jobId);
        this.waiters.get(msg.jobId)?.(undefined);
      } else if (msg.type === 'error') {
        this.errors.push(`${msg.code}: ${msg.message}`);
        if (msg.jobId) this.waiters.get(msg.jobId)?.(undefined);
      }
    });
  }

  static async connect(url: string): Promise<BenchClient> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new BenchClient(ws);
  }

  waitFor(jobId: string): Promise<Result | undefined> {
    const done = this.results.get(jobId);
    if (done) return Promise.resolve(done);
    return new Promise((resolve) => this.waiters.set(jobId, resolve));
  }

  send(frame: Uint8Array): number {
    const t = performance.now();
    this.ws.send(frame);
    return t;
  }
}

export function frame(jobId: string, stream: string, mode: 'live' | 'batch', z: Float32Array, steps: number, resultFormat: ResultFormat = 'rgb8'): Uint8Array {
  const depth = new Uint8Array(z.buffer, z.byteOffset, z.byteLength);
  const header: FrameHeaderInput = {
    type: 'frame', protocol: PROTOCOL_VERSION, jobId, stream, mode,
    depth: { width: SD.width, height: SD.height, dtype: 'f32', kind: 'zdepth', near: 1, far: 100, byteLength: depth.byteLength },
    // Previews every step and live results, raw, as the Blender add-on asks for them (the page
    // takes JPEG previews and PNG results).
    params: { prompt: 'a timber house in a pine forest', steps, guidance: 7.5, scheduler: 'euler-a', seed: 1, previewEvery: 1, previewFormat: 'rgb8', resultFormat },
  };
  return encodeBinaryMessage(header, depth);
}

/** The box moves a little each frame, so live frames really differ (no similarity skip). */
export function movingDepth(i: number): Float32Array {
  const z = benchDepth();
  const shift = (i % 40) * 2;
  for (let y = 100; y < 140; y++) for (let x = shift; x < shift + 40; x++) z[y * SD.width + x] = 2.5;
  return z;
}
