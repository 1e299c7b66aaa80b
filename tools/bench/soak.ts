/**
 * `npm run soak`: the service under a long, rude load, on loopback only, bounded in frames and
 * time. A `depthcast serve` child process with the tiny model; several clients send bursts of
 * live frames over a few streams each, cancel at random and drop their connection at random
 * (terminate, no close handshake). Prints frames sent, last-frame misses (the last frame of a
 * burst that did not get its result), crashes (the server process exiting), the server's RSS at
 * start, middle and end, and GET /v1/health latency p50/p99, and where the memory is: both
 * threads' heaps and what the service holds, from /v1/health's debug field (docs/reliability.md).
 *
 *   npm run soak -- [--frames 10000] [--clients 6] [--minutes 20]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { decodeBinaryMessage, encodeBinaryMessage } from '../../src/protocol/frame.ts';
import { createTinyModel } from '../../src/tiny/build-tiny.ts';
import { percentile, round } from './stats.ts';

const SIZE = 64;
const BIN = fileURLToPath(new URL('../../bin/depthcast.js', import.meta.url));

interface Figures {
  frames: number;
  bursts: number;
  lastFrames: number;
  lastFrameMisses: number;
  connections: number;
  disconnects: number;
  cancels: number;
}

function depthFrame(jobId: string, stream: string, boxX: number, seed: number): Uint8Array {
  const z = new Float32Array(SIZE * SIZE);
  for (let y = 0; y < SIZE; y++) for (let x = 0; x < SIZE; x++) z[y * SIZE + x] = y < 16 ? Infinity : 2 + 6 * (1 - (y - 16) / 48);
  for (let y = 24; y < 40; y++) for (let x = boxX; x < boxX + 16 && x < SIZE; x++) z[y * SIZE + x] = 2.5;
  const header = {
    type: 'frame', protocol: 1, jobId, stream, mode: 'live',
    depth: { width: SIZE, height: SIZE, dtype: 'f32', kind: 'zdepth', near: 1, far: 10, byteLength: z.byteLength },
    params: { prompt: 'a wooden box on a floor', steps: 2, seed, previewEvery: 1 },
  };
  return encodeBinaryMessage(header, new Uint8Array(z.buffer));
}

/** One read of a process's /proc status: its fields in kB (Linux), NaN for each where there is none. */
function statusKb(pid: number): (key: string) => number {
  let status = '';
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    /* not Linux */
  }
  return (key) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? Number.NaN);
}

/** The resident set split as Linux counts it (anonymous, file-backed, shared memory), in MB, or '' elsewhere. */
function rssParts(pid: number): string {
  const kb = statusKb(pid); // one snapshot, so the parts are of the same moment
  if (Number.isNaN(kb('RssAnon'))) return '';
  const mb = (key: string) => round(kb(key) / 1024, 1);
  return `anon ${mb('RssAnon')}, file ${mb('RssFile')}, shmem ${mb('RssShmem')}`;
}

/** The server's resident set in bytes (Linux /proc, else NaN). */
function rssOf(pid: number): number {
  return statusKb(pid)('VmRSS') * 1024;
}

const MEMORY_COLUMNS = 'at: rss | main heap total/used ext arrayBuffers | worker heap total/used ext arrayBuffers | job records, streams, remembered, owners, ws conns';

/** One line of the /v1/health debug field, in MB and counts. */
function describeBreakdown(label: string, health: { debug?: { memory: Record<string, Record<string, number> | null>; retained: Record<string, number> } }): string {
  const d = health.debug;
  if (!d) return `${label}: no debug field (DEPTHCAST_DEBUG_MEMORY not honoured)`;
  const m = (b: number | undefined) => (b === undefined ? '-' : String(round(b / 1048576, 1)));
  const thread = (t: Record<string, number> | null) => (t ? `${m(t.heapTotal)}/${m(t.heapUsed)} ${m(t.external)} ${m(t.arrayBuffers)}` : '-');
  const r = d.retained;
  return `${label}: ${m(d.memory.main?.rss)} | ${thread(d.memory.main!)} | ${thread(d.memory.worker!)} | ${r.jobRecords}, ${r.streams}, ${r.remembered}, ${r.owners}, ${r.wsConnections}`;
}

/** One connection: sends, remembers each job's terminal message, can be dropped. */
class SoakConnection {
  readonly terminal = new Map<string, { type: string; reason?: string; code?: string }>();
  private waiters = new Map<string, () => void>();
  closed = false;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let m: Record<string, unknown>;
      if (isBinary) m = decodeBinaryMessage(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).header as Record<string, unknown>;
      else m = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
      const jobId = m.jobId as string | undefined;
      if (!jobId || !['result', 'cancelled', 'error'].includes(m.type as string)) return;
      this.terminal.set(jobId, { type: m.type as string, reason: m.reason as string | undefined, code: m.code as string | undefined });
      this.waiters.get(jobId)?.();
    });
    ws.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.values()) w();
    });
    ws.on('error', () => {});
  }

  static open(url: string): Promise<SoakConnection> {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/ws`);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new SoakConnection(ws)));
      ws.once('error', reject);
    });
  }

  /** The job's terminal message, or undefined if the socket closed or timeoutMs passed first. */
  async wait(jobId: string, timeoutMs: number): Promise<{ type: string; reason?: string; code?: string } | undefined> {
    if (this.terminal.has(jobId) || this.closed) return this.terminal.get(jobId);
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.waiters.set(jobId, () => {
        clearTimeout(t);
        resolve();
      });
    });
    this.waiters.delete(jobId);
    return this.terminal.get(jobId);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { frames: { type: 'string', default: '10000' }, clients: { type: 'string', default: '6' }, minutes: { type: 'string', default: '20' } } });
  const totalFrames = Number(values.frames);
  const clientCount = Number(values.clients);
  const started = performance.now();
  const deadline = started + Number(values.minutes) * 60_000;
  const dir = await mkdtemp(join(tmpdir(), 'depthcast-soak-'));
  await createTinyModel(join(dir, 'tiny'), { family: 'depth2img' });

  // --expose-gc only lets the last sample (`/v1/health?gc=1`) collect garbage before it reads memory.
  const child = spawn(process.execPath, ['--expose-gc', BIN, 'serve', '--host', '127.0.0.1', '--port', '0', '--models-dir', dir, '--device', 'cpu'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, DEPTHCAST_DEBUG_MEMORY: '1' },
  });
  let crashed = false;
  child.on('exit', (code, signal) => {
    if (!stopping) {
      crashed = true;
      console.error(`server exited during the soak: code ${code} signal ${signal}`);
    }
  });
  let stopping = false;
  child.stderr.resume();
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', () => reject(new Error(`server did not start: ${out}`)));
  });

  const figures: Figures = { frames: 0, bursts: 0, lastFrames: 0, lastFrameMisses: 0, connections: 0, disconnects: 0, cancels: 0 };
  const rss: { start?: number; middle?: number; end?: number } = {};
  /** RSS every tenth of the frames: a level tail shows nothing accumulates. */
  const rssTail: string[] = [];
  const health: number[] = [];
  /** Memory of both server threads and counts of what it holds, at every tenth (from /v1/health's debug field). */
  const breakdown: Promise<string>[] = [];
  const sampleBreakdown = (label: string, collect = false) => breakdown.push(fetch(`${url}/v1/health${collect ? '?gc=1' : ''}`).then((r) => r.json()).then((h) => describeBreakdown(label, h as Parameters<typeof describeBreakdown>[1]), (e) => `${label}: ${(e as Error).message}`));
  let healthOn = true;
  const healthLoop = (async () => {
    while (healthOn) {
      const t0 = performance.now();
      try {
        await (await fetch(`${url}/v1/health`)).json();
        health.push(performance.now() - t0);
      } catch { /* counted as a crash through the child's exit */ }
      await new Promise((r) => setTimeout(r, 100));
    }
  })();

  // Warm-up: load the model once, so RSS at start includes it.
  {
    const c = await SoakConnection.open(url);
    c.ws.send(depthFrame('warm', 'warm', 20, 1));
    await c.wait('warm', 120_000);
    c.ws.close();
  }
  // bin/depthcast.js runs serve in a child node (its semi-space flag): measure that process.
  const serverPid = ((await (await fetch(`${url}/v1/health`)).json()) as { debug?: { pid?: number } }).debug?.pid ?? child.pid!;
  rss.start = rssOf(serverPid);
  const partsAtStart = rssParts(serverPid);
  sampleBreakdown('start');

  let nextId = 0;
  const take = () => (figures.frames < totalFrames && performance.now() < deadline && !crashed ? ++figures.frames : 0);
  const client = async (index: number) => {
    let rand = 0x9e3779b9 ^ (index * 7919);
    const random = () => {
      rand ^= rand << 13; rand ^= rand >>> 17; rand ^= rand << 5;
      return (rand >>> 0) / 4294967296;
    };
    let conn = await SoakConnection.open(url);
    figures.connections++;
    for (;;) {
      const stream = `s${Math.floor(random() * 3)}`;
      const burst = 1 + Math.floor(random() * 20);
      let last: string | undefined;
      let cancelledLast = false;
      for (let i = 0; i < burst; i++) {
        if (!take()) break;
        last = `c${index}-${++nextId}`;
        conn.ws.send(depthFrame(last, stream, 4 + Math.floor(random() * 40), Math.floor(random() * 1000)));
        cancelledLast = false;
        if (random() < 0.06) {
          conn.ws.send(JSON.stringify({ type: 'cancel', stream }));
          figures.cancels++;
          cancelledLast = true;
        }
        if (figures.frames === Math.floor(totalFrames / 2)) rss.middle = rssOf(serverPid);
        if (figures.frames % Math.max(1, Math.floor(totalFrames / 10)) === 0) {
          rssTail.push(`${figures.frames}: ${round(rssOf(serverPid) / 1048576, 1)}`);
          sampleBreakdown(String(figures.frames));
        }
      }
      if (!last) break;
      figures.bursts++;
      if (random() < 0.015) {
        // Drop the connection mid-burst: its last frame is not owed a result.
        conn.ws.terminate();
        figures.disconnects++;
        conn = await SoakConnection.open(url);
        figures.connections++;
        continue;
      }
      const t = await conn.wait(last, 60_000);
      if (!cancelledLast) {
        figures.lastFrames++;
        if (t?.type !== 'result') figures.lastFrameMisses++;
      }
    }
    conn.ws.close();
  };
  const clients = Array.from({ length: clientCount }, (_, i) => client(i));
  await Promise.all(clients);
  rss.end = rssOf(serverPid);
  sampleBreakdown('end');
  // Idle a while: what is still held then is kept, not in flight.
  await new Promise((r) => setTimeout(r, 3000));
  const idleRss = rssOf(serverPid);
  sampleBreakdown('idle');
  // What the service holds: a leak shows here, garbage does not. Freed backing stores leave the
  // external and arrayBuffers counts only once V8's sweeper has run, hence a second collection.
  sampleBreakdown('idle, after a full GC', true);
  await new Promise((r) => setTimeout(r, 1000));
  sampleBreakdown('idle, after a second full GC', true);
  const memory = await Promise.all(breakdown);
  const collectedRss = rssOf(serverPid);
  const partsAfterGc = rssParts(serverPid);
  healthOn = false;
  await healthLoop;
  stopping = true;
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  await rm(dir, { recursive: true, force: true });

  const mb = (b: number | undefined) => (b === undefined ? 'n/a' : `${round(b / 1048576, 1)} MB`);
  const sorted = [...health].sort((a, b) => a - b);
  console.log(JSON.stringify({
    frames: figures.frames, clients: clientCount, connections: figures.connections, disconnects: figures.disconnects, cancels: figures.cancels,
    bursts: figures.bursts, lastFrames: figures.lastFrames, lastFrameMisses: figures.lastFrameMisses, crashes: crashed ? 1 : 0,
    rss: { start: mb(rss.start), middle: mb(rss.middle), end: mb(rss.end), growth: mb((rss.end ?? 0) - (rss.start ?? 0)), idleAfter3s: mb(idleRss), afterFullGc: mb(collectedRss), partsAtStart, partsAfterGc, everyTenthMB: rssTail },
    memoryMB: [MEMORY_COLUMNS, ...memory],
    health: { polls: health.length, p50ms: round(percentile(sorted, 50), 1), p99ms: round(percentile(sorted, 99), 1), maxMs: round(sorted.at(-1) ?? NaN, 1) },
    seconds: round((performance.now() - started) / 1000, 0),
    timedOut: figures.frames < totalFrames,
  }, null, 1));
  if (crashed || figures.lastFrameMisses > 0) process.exitCode = 1;
}

await main();
