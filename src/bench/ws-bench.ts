/**
 * Figures over a real WebSocket on loopback against an in-process service: end-to-end frame
 * latency minus model time, event-loop delay while the worker generates, and a live flood.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import WebSocket from 'ws';
import { decodeBinaryMessage, encodeBinaryMessage } from '../protocol/frame.ts';
import { PROTOCOL_VERSION, type FrameHeaderInput, type ResultFormat } from '../protocol/schemas.ts';
import type { Device } from '../runtime/ort.ts';
import { benchDepth, SD } from './pipeline-bench.ts';
import { median, percentile, round } from './stats.ts';

interface Result {
  jobId: string;
  receivedAt: number;
  header: Record<string, unknown> & { timings: Record<string, number>; reusedFrom?: string };
}

class BenchClient {
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

function frame(jobId: string, stream: string, mode: 'live' | 'batch', z: Float32Array, steps: number, resultFormat: ResultFormat = 'rgb8'): Uint8Array {
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
function movingDepth(i: number): Float32Array {
  const z = benchDepth();
  const shift = (i % 40) * 2;
  for (let y = 100; y < 140; y++) for (let x = shift; x < shift + 40; x++) z[y * SD.width + x] = 2.5;
  return z;
}

/** Live frames sent before the latency is measured, frames measured with rgb8 results (one at a time; half as many with PNG), and frames during which the event loop is watched. */
const LATENCY_WARM_UP = 8;
const LATENCY_FRAMES = 40;
const EVENT_LOOP_FRAMES = 20;

interface LatencyFigures { frames: number; totalMedian: number; modelMedian: number; nonModelMedian: number; nonModelP90: number; sendMedian: number }

export interface WsFigures {
  /** Live frames with raw rgb8 results, as the Blender add-on asks for them. */
  latency: LatencyFigures;
  /** The same with PNG results, as the preview page and HTTP clients take them. */
  latencyPng: LatencyFigures;
  eventLoop: { p50: number; p99: number; max: number };
  flood: { seconds: number; fps: number; sent: number; computed: number; reused: number; cancelled: number; maxQueued: number; lastFrameLatency: number; generationMs: number; stepMs: number; rssGrowthMb: number; lastFrameGotResult: boolean };
}

/**
 * Live frames one at a time, each timed from send to its result; model time is the result's
 * sessionRun. The formats take turns frame by frame (rgb8, rgb8, png, ...), so both see the same
 * phase of the machine and the same warmth of the code.
 */
async function measureLatency(client: BenchClient, n: number, steps: number): Promise<Record<ResultFormat, LatencyFigures>> {
  const runs = { rgb8: { totals: [] as number[], models: [] as number[], sends: [] as number[] }, png: { totals: [] as number[], models: [] as number[], sends: [] as number[] } };
  for (let i = 0; i < n; i++) {
    const resultFormat: ResultFormat = i % 3 === 2 ? 'png' : 'rgb8';
    const run = runs[resultFormat];
    const id = `lat-${i}`;
    const bytes = frame(id, 'lat', 'live', movingDepth(i), steps, resultFormat);
    const t0 = performance.now();
    client.send(bytes);
    run.sends.push(performance.now() - t0);
    const r = await client.waitFor(id);
    if (!r) throw new Error(`latency frame ${id} got no result: ${client.errors.at(-1) ?? 'cancelled'}`);
    if (r.header.format !== resultFormat) throw new Error(`latency frame ${id} came as ${r.header.format}, not ${resultFormat}`);
    run.totals.push(r.receivedAt - t0);
    run.models.push(r.header.timings.sessionRun ?? 0);
  }
  const figures = ({ totals, models, sends }: typeof runs.rgb8): LatencyFigures => {
    const nonModel = totals.map((t, i) => t - models[i]!).sort((a, b) => a - b);
    return {
      frames: totals.length,
      totalMedian: round(median(totals)),
      modelMedian: round(median(models)),
      nonModelMedian: round(percentile(nonModel, 50)),
      nonModelP90: round(percentile(nonModel, 90)),
      sendMedian: round(median(sends)),
    };
  };
  return { rgb8: figures(runs.rgb8), png: figures(runs.png) };
}

/** Live frames one after another with monitorEventLoopDelay on, apart from the latency frames: its 1 ms timer wakes the event loop. */
async function measureEventLoop(client: BenchClient, n: number, steps: number): Promise<WsFigures['eventLoop']> {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  for (let i = 0; i < n; i++) {
    const id = `loop-${i}`;
    client.send(frame(id, 'lat', 'live', movingDepth(500 + i), steps));
    if (!(await client.waitFor(id))) throw new Error(`event-loop frame ${id} got no result: ${client.errors.at(-1) ?? 'cancelled'}`);
  }
  loop.disable();
  return { p50: round(loop.percentile(50) / 1e6), p99: round(loop.percentile(99) / 1e6), max: round(loop.max / 1e6) };
}

export async function benchWebSocket(modelsDir: string, model: string, device: Device, quick: boolean): Promise<WsFigures> {
  const { startServer } = await import('../../server/index.ts');
  const server = await startServer({ host: '127.0.0.1', port: 0, modelsDir, model, device, log: () => {} });
  const url = `ws://127.0.0.1:${server.port}/v1/ws`;
  try {
    const client = await BenchClient.connect(url);
    const steps = 4;
    // Warm up the worker, model and text cache, then the live path itself: the first few live
    // frames run colder code on both threads (34-58 ms against ~20 once warm), and with one
    // warm-up frame they made a fifth of the measured ones. The figure is the steady state.
    await client.waitFor((client.send(frame('warm', 'lat', 'batch', benchDepth(), steps)), 'warm'));
    for (let i = 0; i < LATENCY_WARM_UP; i++) {
      const id = `warm-${i}`;
      await client.waitFor((client.send(frame(id, 'lat', 'live', movingDepth(100 + i), steps)), id));
    }

    // End-to-end latency, one frame at a time; then the event loop watched while frames generate.
    const latencies = await measureLatency(client, quick ? 6 : LATENCY_FRAMES + LATENCY_FRAMES / 2, steps);
    const eventLoop = await measureEventLoop(client, quick ? 5 : EVENT_LOOP_FRAMES, steps);
    const generationMs = latencies.rgb8.totalMedian;

    // Live flood: 60 frames/s on one stream; newest wins.
    const seconds = quick ? 4 : 20;
    const fps = 60;
    const rssBefore = process.memoryUsage().rss;
    let maxQueued = 0;
    const poll = setInterval(async () => {
      try {
        const health = (await (await fetch(`http://127.0.0.1:${server.port}/v1/health`)).json()) as { queue?: number | { length?: number } };
        const q = typeof health.queue === 'number' ? health.queue : (health.queue?.length ?? 0);
        maxQueued = Math.max(maxQueued, q);
      } catch {
        /* the poll is best-effort */
      }
    }, 50);
    let sent = 0;
    let lastId = '';
    let lastSentAt = 0;
    const start = performance.now();
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (performance.now() - start >= seconds * 1000) {
          clearInterval(timer);
          resolve();
          return;
        }
        lastId = `flood-${sent}`;
        lastSentAt = client.send(frame(lastId, 'flood', 'live', movingDepth(sent + 1000), steps));
        sent++;
      }, 1000 / fps);
    });
    const last = await client.waitFor(lastId);
    clearInterval(poll);
    const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    const floodResults = [...client.results.values()].filter((r) => r.jobId.startsWith('flood-'));
    client.ws.close();
    return {
      latency: latencies.rgb8,
      latencyPng: latencies.png,
      eventLoop,
      flood: {
        seconds, fps, sent,
        computed: floodResults.filter((r) => !r.header.reusedFrom).length,
        reused: floodResults.filter((r) => r.header.reusedFrom).length,
        cancelled: [...client.cancelled].filter((id) => id.startsWith('flood-')).length,
        maxQueued,
        lastFrameLatency: round(last ? last.receivedAt - lastSentAt : NaN),
        generationMs: round(generationMs),
        stepMs: round(generationMs / steps),
        rssGrowthMb: round(rssGrowthMb, 1),
        lastFrameGotResult: !!last,
      },
    };
  } finally {
    await server.close();
  }
}
