/**
 * The main-thread handle on the inference worker. Jobs run one at a time in the worker;
 * cancellation reaches it through shared memory at the next step boundary; a crashed worker
 * fails its job with an error and is replaced on the next job.
 */
import { Worker } from 'node:worker_threads';
import { DepthcastError, isErrorCode } from '../errors.ts';
import type { ForegroundStats } from '../depth/scan.ts';
import type { FrameHeader } from '../protocol/schemas.ts';
import type { Device } from '../runtime/ort.ts';
import { configureInferenceWorkerHeap, INFERENCE_WORKER_LIMITS } from './heap.ts';
import type { FromWorker, InferenceFault, MemorySample, ToWorker, WorkerInit } from './protocol.ts';
import type { EngineProgress, EngineResult } from './types.ts';

/** A result's PNG, for callers that write files: they never ask for another format. */
export function resultPng(r: EngineResult): Uint8Array {
  if (r.format !== 'png') throw new DepthcastError('INTERNAL', `job ${r.jobId} gave ${r.format} where a PNG was needed`);
  return r.image;
}

/**
 * ONNX Runtime's messages name its own source files (`/onnxruntime_src/.../model.cc:180
 * onnxruntime::Model::Model(...)`); clients get the message without them.
 */
export function withoutSourcePaths(message: string): string {
  return message
    .replace(/(?:(?<![A-Za-z])[A-Za-z]:)?[\\/][^\s'"]*\.(?:cc|cpp|cxx|c|h|hpp):\d+\s*(?:[\w:~<>]+\([^)]*\)\s*)?/g, ' ')
    .replace(/\s{2,}/g, ' ')
    .trim();
}

export interface EngineJobInput {
  jobId: string;
  model: { name: string; dir: string };
  header: FrameHeader;
  depth: Uint8Array;
  init?: Uint8Array;
  layout?: Uint8Array;
  /** Flow bytes of motion kind "flow". */
  motion?: Uint8Array;
  /**
   * Who the frame's sequence belongs to (the service: connection and stream): the worker
   * remembers each one's last frame for the consistent mode (src/motion/stream-memory.ts).
   */
  stream?: string;
  /** Foreground totals of the depth from the service's intake scan; the worker then skips its own pass. */
  depthForeground?: ForegroundStats;
  /**
   * The caller gives up `depth`, which fills its own ArrayBuffer: it is moved to the worker
   * (detached here) instead of copied. A view into a larger buffer is copied as before.
   */
  transferDepth?: boolean;
}

export interface EngineHooks {
  onProgress?: (progress: EngineProgress) => void;
  signal?: AbortSignal;
}

export interface EngineResultWithStats extends EngineResult {
  depthStats: Record<string, number>;
  /** Full (mark-compact) garbage collections in the worker during the job; timings.gc has their pause cost with the rest. */
  gcMajor: number;
}

export interface EngineOptions {
  /**
   * 'sized' (the default) starts the worker with heap.ts's sizing (a larger initial old space, a
   * capped young generation); 'v8-default' leaves V8's sizing, for comparing the two. The old
   * space is a process-wide V8 flag: once a sized worker has started, workers started later get
   * it too. The young generation cap is a resource limit of each sized worker alone.
   */
  workerHeap?: 'sized' | 'v8-default';
  /** Test-only: make the worker throw or exit at a chosen step of chosen jobs (InferenceFault). */
  faults?: InferenceFault[];
  /** ControlNet models: one composed graph (the default, when the pair composes) or two sessions. */
  controlnetGraph?: 'composed' | 'separate';
}

export interface LoadedModelInfo {
  name: string;
  device: string;
  family: string;
  dtype: string;
  hash: string;
  fallbacks: string[];
}

interface Pending {
  seq: number;
  input: EngineJobInput;
  hooks: EngineHooks;
  resolve: (r: EngineResultWithStats) => void;
  reject: (e: DepthcastError) => void;
}

export class Engine {
  private worker?: Worker;
  private readonly cancel = new SharedArrayBuffer(4);
  private readonly cancelView = new Int32Array(this.cancel);
  private seq = 0;
  private queue: Pending[] = [];
  private running?: Pending;
  private closed = false;
  /** Callers waiting for the worker's memory sample (diagnostics; answered in order). */
  private memoryWaiters: ((usage: MemorySample | undefined) => void)[] = [];
  /** The model the worker holds, once one was loaded. */
  loaded?: LoadedModelInfo;
  /** Inference workers started so far (a crashed one is replaced on the next job). */
  workersStarted = 0;

  constructor(
    readonly device: Device = 'auto',
    private readonly log: (line: string) => void = () => {},
    private readonly options: EngineOptions = {},
  ) {}

  get busy(): boolean {
    return this.running !== undefined;
  }

  get pending(): number {
    return this.queue.length;
  }

  run(input: EngineJobInput, hooks: EngineHooks = {}): Promise<EngineResultWithStats> {
    if (this.closed) return Promise.reject(new DepthcastError('SHUTTING_DOWN', 'the engine is shutting down'));
    return new Promise((resolve, reject) => {
      const job: Pending = { seq: ++this.seq, input, hooks, resolve, reject };
      if (hooks.signal?.aborted) return reject(new DepthcastError('CANCELLED', `job ${input.jobId} was cancelled`));
      hooks.signal?.addEventListener('abort', () => this.abort(job), { once: true });
      this.queue.push(job);
      this.pump();
    });
  }

  /**
   * Diagnostics: the worker thread's process.memoryUsage() (its own V8 heap; rss is the
   * process's), or undefined when no worker runs or it does not answer within timeoutMs (a
   * worker answers between steps, not during one). `collect`: a full GC first, where the process
   * runs with --expose-gc, so the figures show what is held rather than garbage not yet collected.
   */
  workerMemory(collect = false, timeoutMs = 2000): Promise<MemorySample | undefined> {
    const worker = this.worker;
    if (!worker) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle(undefined), timeoutMs);
      const settle = (usage: MemorySample | undefined) => {
        clearTimeout(timer);
        const i = this.memoryWaiters.indexOf(settle);
        if (i >= 0) this.memoryWaiters.splice(i, 1);
        resolve(usage);
      };
      this.memoryWaiters.push(settle);
      worker.postMessage({ type: 'memory', collect } satisfies ToWorker);
    });
  }

  private abort(job: Pending): void {
    const index = this.queue.indexOf(job);
    if (index >= 0) {
      this.queue.splice(index, 1);
      job.reject(new DepthcastError('CANCELLED', `job ${job.input.jobId} was cancelled`));
    } else if (this.running === job) {
      Atomics.store(this.cancelView, 0, job.seq);
    }
  }

  private spawn(): Worker {
    const init: WorkerInit = { device: this.device, cancel: this.cancel };
    if (this.options.faults) init.faults = this.options.faults;
    if (this.options.controlnetGraph) init.controlnetGraph = this.options.controlnetGraph;
    this.workersStarted++;
    const sized = this.options.workerHeap !== 'v8-default';
    if (sized) configureInferenceWorkerHeap();
    const worker = new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: init, ...(sized ? { resourceLimits: INFERENCE_WORKER_LIMITS } : {}) });
    worker.on('message', (msg: FromWorker) => this.onMessage(msg));
    const fail = (reason: string) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      this.loaded = undefined;
      const job = this.running;
      this.running = undefined;
      job?.reject(new DepthcastError('INFERENCE_FAILED', `the inference worker stopped (${reason}); the job failed, the next job starts a fresh worker`));
      this.pump();
    };
    worker.on('error', (err) => fail(err.message));
    worker.on('exit', (code) => fail(`exit code ${code}`));
    return worker;
  }

  private pump(): void {
    if (this.running || this.closed) return;
    const job = this.queue.shift();
    if (!job) return;
    this.running = job;
    this.worker ??= this.spawn();
    const { input } = job;
    const msg: ToWorker = { type: 'run', seq: job.seq, jobId: input.jobId, model: input.model, header: input.header, depth: input.depth, init: input.init, layout: input.layout, motion: input.motion, stream: input.stream, depthForeground: input.depthForeground };
    const { depth } = input;
    const movable = input.transferDepth && depth.byteOffset === 0 && depth.byteLength === depth.buffer.byteLength && depth.buffer instanceof ArrayBuffer;
    this.worker.postMessage(msg, movable ? [depth.buffer as ArrayBuffer] : []);
  }

  private onMessage(msg: FromWorker): void {
    if (msg.type === 'loaded') {
      const { type: _, ...info } = msg;
      this.loaded = info;
      // One line, with why `auto` chose this device when it skipped others.
      const skipped = msg.fallbacks.length ? `; device auto chose ${msg.device}, skipping ${msg.fallbacks.join('; ')}` : '';
      this.log(`model ${msg.name} loaded on ${msg.device} (${msg.family}, ${msg.dtype})${skipped}`);
      return;
    }
    if (msg.type === 'memory') {
      this.memoryWaiters[0]?.(msg.usage);
      return;
    }
    const job = this.running;
    if (!job || job.seq !== msg.seq) return;
    if (msg.type === 'progress') {
      job.hooks.onProgress?.({
        jobId: job.input.jobId, step: msg.step, total: msg.total, timestep: msg.timestep,
        preview: msg.preview, previewFormat: msg.format, previewWidth: msg.width, previewHeight: msg.height,
      });
      return;
    }
    this.running = undefined;
    if (msg.type === 'result') {
      job.resolve({
        jobId: job.input.jobId, image: msg.image, format: msg.format, width: msg.width, height: msg.height, generated: msg.generated, seed: msg.seed,
        params: msg.params, model: msg.model, timings: msg.timings, depthStats: msg.depthStats, gcMajor: msg.gcMajor,
        ...(msg.consistency ? { consistency: msg.consistency } : {}),
      });
    } else {
      job.reject(new DepthcastError(isErrorCode(msg.code) ? msg.code : 'INFERENCE_FAILED', withoutSourcePaths(msg.message)));
    }
    this.pump();
  }

  /** Rejects queued jobs, lets the running one stop at its next step, and ends the worker. */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.queue.splice(0)) job.reject(new DepthcastError('SHUTTING_DOWN', 'the service is shutting down'));
    if (this.running) Atomics.store(this.cancelView, 0, this.running.seq);
    const worker = this.worker;
    this.worker = undefined;
    if (this.running) {
      this.running.reject(new DepthcastError('SHUTTING_DOWN', 'the service is shutting down'));
      this.running = undefined;
    }
    await worker?.terminate();
  }
}
