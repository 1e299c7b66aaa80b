/**
 * The job queue in front of the one inference worker. Jobs belong to a stream of an owner
 * (a WebSocket connection or an HTTP request). Live jobs: newest frame wins — a new live frame
 * replaces the stream's queued one; whether it also cancels the running one (at the next step
 * boundary) or lets it finish is live-policy.ts's decision. A frame that barely differs from the
 * stream's last computed frame reuses that result.
 * Batch jobs: FIFO, never dropped. Connections with work take turns (round robin), and within
 * a connection its streams do. The queue is bounded (BUSY past it) for all together and per
 * connection, and a connection has a bounded number of streams. Exactly one terminal callback
 * (result | cancelled | failed) per job.
 */
import { DepthcastError, toDepthcastError } from '../src/errors.ts';
import type { Engine } from '../src/engine/engine.ts';
import type { CatalogEntry } from '../src/engine/catalog.ts';
import type { EngineProgress } from '../src/engine/types.ts';
import type { ConsistencyReport, ResultFormat, ResultHeader } from '../src/protocol/schemas.ts';
import type { Frame } from './intake.ts';
import { type JobRecord, JobStore } from './jobs.ts';
import { afterRest, type LiveStreamState, noteFrame, noteOutcome, noteSuperseded, supersedesRunning } from './live-policy.ts';
import { type ComputedFrame, frameSignature, isSimilar } from './similarity.ts';

/** Live streams whose last result is kept for the similarity skip (each holds an image and a ≤256² grid). */
const MAX_REMEMBERED = 256;

export type CancelReason = 'client' | 'superseded' | 'disconnect' | 'shutdown';

export interface JobResult {
  header: ResultHeader;
  /** The image in header.format. */
  image: Uint8Array;
}

/** Where a job's messages go; called in protocol order, exactly one terminal call. */
export interface JobSink {
  accepted(position: number): void;
  progress(progress: EngineProgress): void;
  result(result: JobResult): void;
  cancelled(reason: CancelReason): void;
  failed(error: DepthcastError): void;
}

export interface JobQueueOptions {
  maxQueuedJobs: number;
  /** Jobs one owner may have waiting (its fair share; server/limits.ts). */
  maxQueuedPerOwner: number;
  /** Streams one owner may have; idle ones are forgotten to make room before a new one is refused. */
  maxStreamsPerOwner: number;
  similarityThreshold: number;
  resolveModel: (name?: string) => CatalogEntry;
  store: JobStore;
  log?: (line: string) => void;
}

export interface JobQueueStats {
  submitted: number;
  /** Jobs handed to the engine. */
  started: number;
  succeeded: number;
  reused: number;
  cancelled: number;
  failed: number;
  refusedBusy: number;
}

interface Job {
  id: string;
  owner: string;
  stream: Stream;
  mode: 'live' | 'batch';
  frame: Frame;
  model: CatalogEntry;
  signature: string;
  sink: JobSink;
  record: JobRecord;
  state: 'queued' | 'running' | 'done';
  abort?: AbortController;
  startedAt?: number;
  /** Live: the frame came after a rest of its stream (live-policy.ts). */
  afterRest: boolean;
}

interface Stream extends LiveStreamState {
  key: string;
  owner: string;
  name: string;
  queue: Job[];
  /** Turn number when this stream was last served: least recently served goes next. */
  servedAt: number;
  last?: ComputedFrame;
}

export class JobQueue {
  private readonly streams = new Map<string, Stream>();
  /** Streams with queued work, in serving order. */
  private ring: Stream[] = [];
  private readonly active = new Map<string, Map<string, Job>>();
  private queuedCount = 0;
  private turn = 0;
  /** Turn number when each owner was last served: connections take turns before their streams do. */
  private readonly ownerServedAt = new Map<string, number>();
  /** The job the engine is working on (possibly already cancelled, until the engine lets go). */
  private gpu?: { job: Job; done: Promise<void> };
  private closing = false;
  readonly stats: JobQueueStats = { submitted: 0, started: 0, succeeded: 0, reused: 0, cancelled: 0, failed: 0, refusedBusy: 0 };

  constructor(private readonly engine: Pick<Engine, 'run'>, private readonly opts: JobQueueOptions) {}

  /** Jobs waiting for the engine. */
  get queueLength(): number {
    return this.queuedCount;
  }

  get running(): boolean {
    return this.gpu?.job.state === 'running';
  }

  /** Queues a validated frame; throws (BUSY, MODEL_NOT_FOUND, SHUTTING_DOWN, BAD_REQUEST) without side effects. */
  submit(owner: string, frame: Frame, sink: JobSink): void {
    const { header } = frame;
    if (this.closing) throw new DepthcastError('SHUTTING_DOWN', 'the service is shutting down');
    const mine = this.active.get(owner);
    if (mine?.has(header.jobId)) throw new DepthcastError('BAD_REQUEST', `jobId ${header.jobId} is already queued or running on this connection; use a new id per frame`);
    const model = this.opts.resolveModel(header.params.model);
    const key = `${owner}\u0000${header.stream}`;
    const existing = this.streams.get(key);
    const live = header.mode === 'live';
    const replaced = live && existing ? existing.queue.filter((j) => j.mode === 'live') : [];
    if (this.queuedCount - replaced.length >= this.opts.maxQueuedJobs) {
      this.stats.refusedBusy++;
      throw new DepthcastError('BUSY', `the queue is full (${this.opts.maxQueuedJobs} jobs waiting); retry later`, { maxQueuedJobs: this.opts.maxQueuedJobs });
    }
    this.checkOwnerShare(owner, replaced.length);
    if (!existing) this.makeRoomForStream(owner);
    const stream = existing ?? this.addStream(key, owner, header.stream);
    const signature = frameSignature(frame, model.name);
    const record = this.opts.store.add({ jobId: header.jobId, stream: header.stream, mode: header.mode, state: 'queued', createdAt: new Date().toISOString() });
    const job: Job = { id: header.jobId, owner, stream, mode: header.mode, frame, model, signature, sink, record, state: 'queued', afterRest: live && afterRest(stream, frame.receivedAt) };
    if (live) noteFrame(stream, frame.receivedAt);
    this.stats.submitted++;
    if (live) {
      for (const old of replaced) this.cancel(old, 'superseded');
      const running = this.gpu?.job;
      const ownRunning = running && running.state === 'running' && running.stream === stream && running.mode === 'live' ? running : undefined;
      if (ownRunning && supersedesRunning({ progress: ownRunning.record.progress, afterRest: ownRunning.afterRest }, stream)) {
        noteSuperseded(stream);
        this.cancel(ownRunning, 'superseded');
      }
      const kept = ownRunning?.state === 'running';
      const t0 = performance.now();
      // While an older frame of the stream still finishes, a reused result would arrive before it
      // and be overwritten by it on the client: the frame waits its turn instead.
      if (!kept && stream.last && isSimilar(stream.last, frame, signature, this.opts.similarityThreshold)) {
        this.reuse(job, stream.last, performance.now() - t0);
        return;
      }
    }
    this.track(job);
    stream.queue.push(job);
    this.queuedCount++;
    if (!this.ring.includes(stream)) this.ring.push(stream);
    sink.accepted(this.positionOf(job));
    this.pump();
  }

  /** Bytes of the buffers that the streams' remembered last frames keep alive (what a stream pins). */
  rememberedBytes(): number {
    let bytes = 0;
    for (const s of this.streams.values()) {
      const last = s.last;
      if (!last) continue;
      for (const part of [last.nearness, last.init, last.layout, last.result.image]) bytes += part?.buffer.byteLength ?? 0;
    }
    return bytes;
  }

  /** What the scheduler holds, counted (diagnostics and tests: each is bounded or pruned). */
  retained(): { streams: number; remembered: number; owners: number; activeOwners: number; ring: number } {
    let remembered = 0;
    for (const s of this.streams.values()) if (s.last) remembered++;
    return { streams: this.streams.size, remembered, owners: this.ownerServedAt.size, activeOwners: this.active.size, ring: this.ring.length };
  }

  /** Cancels one of the owner's jobs; false when it has no such queued or running job. */
  cancelJob(owner: string, jobId: string, reason: CancelReason = 'client'): boolean {
    const job = this.active.get(owner)?.get(jobId);
    if (!job) return false;
    this.cancel(job, reason);
    return true;
  }

  /** Cancels every queued or running job of the owner's stream; returns how many. */
  cancelStream(owner: string, stream: string, reason: CancelReason = 'client'): number {
    const jobs = [...(this.active.get(owner)?.values() ?? [])].filter((j) => j.stream.name === stream);
    for (const job of jobs) this.cancel(job, reason);
    return jobs.length;
  }

  /** Cancels the owner's jobs and forgets its streams (a closed connection or request). */
  releaseOwner(owner: string, reason: CancelReason = 'disconnect'): number {
    const jobs = [...(this.active.get(owner)?.values() ?? [])];
    for (const job of jobs) this.cancel(job, reason);
    for (const [key, stream] of this.streams) if (stream.owner === owner) this.streams.delete(key);
    this.ownerServedAt.delete(owner);
    return jobs.length;
  }

  /** Refuses new jobs, cancels queued ones, aborts the running one and waits (bounded) for the engine to let go. */
  async close(waitMs = 30_000): Promise<void> {
    this.closing = true;
    for (const jobs of [...this.active.values()]) for (const job of [...jobs.values()]) this.cancel(job, 'shutdown');
    const pending = this.gpu?.done;
    if (pending) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([pending, new Promise<void>((r) => { timer = setTimeout(r, waitMs); })]);
      clearTimeout(timer);
    }
  }

  private addStream(key: string, owner: string, name: string): Stream {
    // A new stream goes after streams that have waited longer, but before the one served last.
    const stream: Stream = { key, owner, name, queue: [], servedAt: this.turn - 0.5, supersededSinceOutcome: 0 };
    this.streams.set(key, stream);
    if (!this.ownerServedAt.has(owner)) this.ownerServedAt.set(owner, this.turn - 0.5);
    return stream;
  }

  /** Per-connection share of the queue: one owner cannot fill it and starve the others. */
  private checkOwnerShare(owner: string, replacing: number): void {
    const max = this.opts.maxQueuedPerOwner;
    let queued = 0;
    for (const job of this.active.get(owner)?.values() ?? []) if (job.state === 'queued') queued++;
    if (queued - replacing >= max) {
      this.stats.refusedBusy++;
      throw new DepthcastError('BUSY', `this connection has ${queued} jobs waiting, its share of the queue (maxQueuedPerConnection ${max}); wait for results, or cancel`, { maxQueuedPerConnection: max });
    }
  }

  /**
   * Before an owner opens one more stream: at maxStreamsPerOwner, its idle streams (nothing
   * queued or running; they only remember a last result) are forgotten, oldest first; if all are
   * busy, the new stream is refused.
   */
  private makeRoomForStream(owner: string): void {
    const max = this.opts.maxStreamsPerOwner;
    const mine = [...this.streams.values()].filter((s) => s.owner === owner);
    let excess = mine.length - max + 1;
    for (const s of mine) {
      if (excess <= 0) return;
      if (s.queue.length > 0 || this.gpu?.job.stream === s) continue;
      this.streams.delete(s.key);
      excess--;
    }
    if (excess > 0) {
      throw new DepthcastError('LIMIT_EXCEEDED', `this connection has ${mine.length} streams with work (maxStreamsPerConnection ${max}); send to an existing stream, or cancel one`, { maxStreamsPerConnection: max });
    }
  }

  private track(job: Job): void {
    let mine = this.active.get(job.owner);
    if (!mine) this.active.set(job.owner, (mine = new Map()));
    mine.set(job.id, job);
  }

  private untrack(job: Job): void {
    const mine = this.active.get(job.owner);
    if (mine?.get(job.id) === job) mine.delete(job.id);
    if (mine?.size === 0) this.active.delete(job.owner);
  }

  /** Jobs ahead of `job` if nothing else arrives: the running one, then the turns taken before it. */
  private positionOf(job: Job): number {
    let ahead = this.gpu?.job.state === 'running' ? 1 : 0;
    const sim = this.ring.map((s) => ({ s, owner: s.owner, taken: 0, servedAt: s.servedAt }));
    const owners = new Map(this.ownerServedAt);
    const index = job.stream.queue.indexOf(job);
    for (let turn = this.turn; ; ahead++) {
      const pick = fairPick(sim.filter((x) => x.taken < x.s.queue.length), owners);
      if (!pick || (pick.s === job.stream && pick.taken === index)) return ahead;
      pick.taken++;
      pick.servedAt = ++turn;
      owners.set(pick.owner, turn);
    }
  }

  private cancel(job: Job, reason: CancelReason): void {
    if (job.state === 'done') return;
    if (job.state === 'queued') {
      const q = job.stream.queue;
      q.splice(q.indexOf(job), 1);
      this.queuedCount--;
    } else {
      job.abort?.abort();
    }
    this.settle(job);
    this.stats.cancelled++;
    this.opts.store.finish(job.record, 'cancelled', { cancelReason: reason });
    job.sink.cancelled(reason);
  }

  private settle(job: Job): void {
    job.state = 'done';
    this.untrack(job);
  }

  private reuse(job: Job, last: ComputedFrame, checkMs: number): void {
    this.stats.reused++;
    const now = performance.now();
    const header: ResultHeader = {
      ...last.result.header,
      jobId: job.id,
      stream: job.stream.name,
      timings: { similarity: checkMs, endToEnd: now - job.frame.receivedAt },
      reusedFrom: last.jobId,
    };
    job.state = 'done';
    job.record.result = resultSummary(header);
    this.opts.store.finish(job.record, 'succeeded');
    job.sink.accepted(0);
    job.sink.result({ header, image: last.result.image });
  }

  /** Round robin: the head job of the least recently served stream of the least recently served owner with work. */
  private next(): Job | undefined {
    this.ring = this.ring.filter((st) => st.queue.length > 0);
    const stream = fairPick(this.ring, this.ownerServedAt);
    if (!stream) return undefined;
    const job = stream.queue.shift()!;
    stream.servedAt = ++this.turn;
    this.ownerServedAt.set(stream.owner, this.turn);
    if (!stream.queue.length) this.ring.splice(this.ring.indexOf(stream), 1);
    this.queuedCount--;
    return job;
  }

  private pump(): void {
    if (this.gpu || this.closing) return;
    const job = this.next();
    if (!job) return;
    job.state = 'running';
    job.startedAt = performance.now();
    job.abort = new AbortController();
    job.record.state = 'running';
    job.record.startedAt = new Date().toISOString();
    this.stats.started++;
    const { header, depth, init, layout, motion } = job.frame;
    const run = this.engine.run(
      { jobId: job.id, model: { name: job.model.name, dir: job.model.dir }, header, depth: depth.bytes, init, layout, motion, stream: job.stream.key, depthForeground: depth.foreground, transferDepth: true },
      {
        signal: job.abort.signal,
        onProgress: (p) => {
          if (job.state !== 'running') return;
          job.record.progress = { step: p.step, total: p.total };
          job.sink.progress(p);
        },
      },
    );
    const done = run.then(
      (r) => this.succeed(job, { image: r.image, format: r.format, width: r.width, height: r.height, generated: r.generated, seed: r.seed, params: r.params, model: r.model, timings: r.timings, consistency: r.consistency }),
      (err) => this.fail(job, toDepthcastError(err, 'INFERENCE_FAILED')),
    ).finally(() => {
      this.gpu = undefined;
      this.pump();
    });
    this.gpu = { job, done };
  }

  private succeed(job: Job, r: { image: Uint8Array; format: ResultFormat; width: number; height: number; generated: { width: number; height: number }; seed: number; params: Record<string, unknown>; model: { name: string; hash: string }; timings: Record<string, number>; consistency?: ConsistencyReport }): void {
    if (job.state !== 'running') return;
    this.settle(job);
    noteOutcome(job.stream, performance.now() - job.startedAt!);
    this.stats.succeeded++;
    const now = performance.now();
    const header: ResultHeader = {
      type: 'result', jobId: job.id, stream: job.stream.name, format: r.format, width: r.width, height: r.height, generated: r.generated,
      seed: r.seed, finishReason: 'SUCCESS', params: r.params, model: r.model,
      timings: { ...r.timings, queued: job.startedAt! - job.frame.receivedAt, endToEnd: now - job.frame.receivedAt },
      ...(r.consistency ? { consistency: r.consistency } : {}),
    };
    const { frame } = job;
    if (job.mode === 'live' && frame.depth.nearness && this.streams.get(job.stream.key) === job.stream) {
      // Copies (new Uint8Array, not Buffer#slice, which is a view): views of init/layout would pin
      // the whole received message for as long as the stream lives.
      job.stream.last = { jobId: job.id, signature: job.signature, nearness: frame.depth.nearness, init: frame.init && new Uint8Array(frame.init), layout: frame.layout && new Uint8Array(frame.layout), result: { header, image: r.image } };
      this.remember(job.stream);
    }
    job.record.result = resultSummary(header);
    this.opts.store.finish(job.record, 'succeeded');
    job.sink.result({ header, image: r.image });
    this.forgetIdle(job.stream);
  }

  private fail(job: Job, error: DepthcastError): void {
    if (job.state !== 'running') return;
    this.settle(job);
    noteOutcome(job.stream);
    this.stats.failed++;
    // The operator's log keeps the folder; clients (maybe remote, with a token) get the model's name.
    this.opts.log?.(`job ${job.id} failed: ${error.code}: ${error.message}`);
    const told = error.message.includes(job.model.dir)
      ? new DepthcastError(error.code, error.message.split(job.model.dir).join(`<model ${job.model.name}>`))
      : error;
    this.opts.store.finish(job.record, 'failed', { error: told });
    job.sink.failed(told);
    this.forgetIdle(job.stream);
  }

  /** Keeps the most recently computed MAX_REMEMBERED live streams' last results; older ones are forgotten. */
  private remember(stream: Stream): void {
    this.streams.delete(stream.key);
    this.streams.set(stream.key, stream);
    let excess = -MAX_REMEMBERED;
    for (const s of this.streams.values()) if (s.last) excess++;
    for (const s of this.streams.values()) {
      if (excess <= 0) break;
      if (!s.last || s === stream) continue;
      s.last = undefined;
      excess--;
      this.forgetIdle(s);
    }
  }

  /** Batch-only streams (HTTP requests) keep no state once empty. */
  private forgetIdle(stream: Stream): void {
    const busy = this.gpu?.job.stream === stream && this.gpu.job.state === 'running';
    if (!stream.last && !busy && stream.queue.length === 0 && this.streams.get(stream.key) === stream) this.streams.delete(stream.key);
  }
}

/**
 * Fairness per connection first: among the owners with work, the least recently served one;
 * then among its streams, the least recently served one.
 */
function fairPick<T extends { owner: string; servedAt: number }>(items: T[], ownerServedAt: ReadonlyMap<string, number>): T | undefined {
  const owner = leastRecentlyServed(items.map((item) => ({ owner: item.owner, servedAt: ownerServedAt.get(item.owner) ?? -Infinity })))?.owner;
  return owner === undefined ? undefined : leastRecentlyServed(items.filter((item) => item.owner === owner));
}

/** The first entry with the smallest servedAt (ties keep arrival order). */
function leastRecentlyServed<T extends { servedAt: number }>(items: T[]): T | undefined {
  let best: T | undefined;
  for (const item of items) if (!best || item.servedAt < best.servedAt) best = item;
  return best;
}

function resultSummary(h: ResultHeader): NonNullable<JobRecord['result']> {
  const summary: NonNullable<JobRecord['result']> = {
    finishReason: h.finishReason, seed: h.seed, width: h.width, height: h.height, model: h.model, params: h.params, timings: h.timings,
  };
  if (h.reusedFrom) summary.reusedFrom = h.reusedFrom;
  return summary;
}
