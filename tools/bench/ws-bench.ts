/**
 * Figures over a real WebSocket on loopback against an in-process service: end-to-end frame
 * latency minus model time, event-loop delay while the worker generates, and a live flood whose
 * client is a child process, so only the service's own work is on its event loop and in its RSS.
 */
import { fork } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { ResultFormat } from '../../src/protocol/schemas.ts';
import type { Device } from '../../src/runtime/ort.ts';
import type { FloodCounts, FloodRequest } from './flood-client.ts';
import { benchDepth } from './pipeline-bench.ts';
import { median, percentile, round } from './stats.ts';
import { BenchClient, frame, movingDepth } from './ws-client.ts';

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
  flood: {
    seconds: number; fps: number; sent: number; computed: number; computedWhileSending: number; generationMsWhileSending: number; reused: number; cancelled: number; maxQueued: number;
    lastFrameLatency: number; lastFrameServiceMs: number; generationMs: number; stepMs: number; rssGrowthMb: number; lastFrameGotResult: boolean;
    /** Computed results per second while frames were being sent, as a fraction of the quiet rate (1000 / generationMs). */
    rateOfQuiet: number;
    /** Fraction of the flood's time spent on generations that gave results (computedWhileSending × generationMsWhileSending). */
    engineTimeOnResults: number;
    /** The last frame's send → result time in generations (generationMs). */
    lastFrameGenerations: number;
    /** The same from the frame's arrival at the service (without the socket's backlog on a loaded machine). */
    lastFrameServiceGenerations: number;
  };
}

/**
 * Live frames one at a time, each timed from send to its result; model time is the result's
 * sessionRun. The formats take turns frame by frame (rgb8, rgb8, png, ...), so both see the same
 * phase of the machine and the same warmth of the code.
 */
async function measureLatency(client: BenchClient, n: number, steps: number): Promise<Record<ResultFormat, LatencyFigures>> {
  const samples = () => ({ totals: [] as number[], models: [] as number[], sends: [] as number[] });
  const runs = { rgb8: samples(), png: samples() };
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
  const figures = ({ totals, models, sends }: ReturnType<typeof samples>): LatencyFigures => {
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

/** Runs the flood's client in a child process (flood-entry.mjs) and gives its counts. */
function floodFromChildProcess(url: string, seconds: number, fps: number, steps: number): Promise<FloodCounts> {
  const child = fork(new URL('./flood-entry.mjs', import.meta.url), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
  const request: FloodRequest = { url, seconds, fps, steps };
  return new Promise((resolve, reject) => {
    child.on('message', (msg: { ready?: boolean; ok?: boolean; counts?: FloodCounts; message?: string }) => {
      if (msg.ready) child.send(request);
      else if (msg.ok) resolve(msg.counts!);
      else reject(new Error(`flood client: ${msg.message}`));
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`flood client exited with code ${code} before answering`)));
  });
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
    let flood: FloodCounts;
    try {
      flood = await floodFromChildProcess(url, seconds, fps, steps);
    } finally {
      clearInterval(poll);
    }
    const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
    client.ws.close();
    return {
      latency: latencies.rgb8,
      latencyPng: latencies.png,
      eventLoop,
      flood: {
        seconds, fps, ...flood,
        maxQueued,
        lastFrameLatency: round(flood.lastFrameLatency),
        lastFrameServiceMs: round(flood.lastFrameServiceMs),
        rateOfQuiet: round(flood.computedWhileSending / seconds / (1000 / generationMs), 2),
        lastFrameGenerations: round(flood.lastFrameLatency / generationMs, 2),
        lastFrameServiceGenerations: round(flood.lastFrameServiceMs / generationMs, 2),
        generationMsWhileSending: round(flood.generationMsWhileSending),
        engineTimeOnResults: round((flood.computedWhileSending * flood.generationMsWhileSending) / (seconds * 1000), 2),
        generationMs: round(generationMs),
        stepMs: round(generationMs / steps),
        rssGrowthMb: round(rssGrowthMb, 1),
      },
    };
  } finally {
    await server.close();
  }
}
