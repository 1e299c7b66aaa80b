/**
 * Where batch jobs run: in this process (the Engine's inference worker) or on a running
 * depthcast service over its WebSocket. Both take the same wire FrameHeader and payload and end
 * in the same engine code, so the same seed gives the same PNG bytes either way.
 */
import WebSocket from 'ws';
import { ModelCatalog } from '../engine/catalog.ts';
import { Engine, resultPng } from '../engine/engine.ts';
import { DepthcastError, isErrorCode, toDepthcastError } from '../errors.ts';
import { depthcastHome, modelsRoot } from '../hub/paths.ts';
import { checkRequestedSize } from '../pipelines/sizing.ts';
import { DEFAULT_LIMITS } from '../protocol/limits.ts';
import { decodeBinaryMessage, encodeBinaryMessage } from '../protocol/frame.ts';
import { type FrameHeader, PROTOCOL_VERSION, ResultHeader, ServerHelloMessage } from '../protocol/schemas.ts';
import type { Device } from '../runtime/ort.ts';
import { VERSION } from '../version.ts';
import type { EngineResult } from '../engine/types.ts';
import { CLI } from '../cli/command.ts';

export interface BackendJob {
  jobId: string;
  header: FrameHeader;
  depth: Uint8Array;
  init?: Uint8Array;
  layout?: Uint8Array;
  /** Flow bytes of header.motion kind "flow". */
  motion?: Uint8Array;
}

/** What either backend returns: the engine's result without its job id, its image always a PNG (what a batch writes). */
export type BackendResult = Omit<EngineResult, 'jobId' | 'image' | 'format'> & { png: Uint8Array };

export interface Backend {
  readonly kind: 'in-process' | 'service';
  /** Connects / checks what it can before the first job; throws when the batch cannot run at all. */
  start(): Promise<void>;
  /** The model name a job with params.model = `name` runs on (the default model when undefined). */
  resolveModel(name: string | undefined): Promise<string>;
  run(job: BackendJob, signal?: AbortSignal): Promise<BackendResult>;
  /** The most jobs it takes at once (the service's queue size), when it has such a limit. */
  maxInFlight?(): number | undefined;
  /** Where it ran, for the sidecar. */
  describe(): Record<string, unknown>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- in-process

export interface InProcessOptions {
  modelsDir?: string;
  device?: Device;
  log?: (line: string) => void;
}

export class InProcessBackend implements Backend {
  readonly kind = 'in-process';
  readonly catalog: ModelCatalog;
  readonly engine: Engine;

  constructor(options: InProcessOptions = {}) {
    this.catalog = new ModelCatalog(options.modelsDir ?? modelsRoot(depthcastHome()), undefined);
    this.engine = new Engine(options.device ?? 'auto', options.log ?? (() => {}));
  }

  async start(): Promise<void> {}

  async resolveModel(name: string | undefined): Promise<string> {
    return this.catalog.resolve(name).name;
  }

  async run(job: BackendJob, signal?: AbortSignal): Promise<BackendResult> {
    const entry = this.catalog.resolve(job.header.params.model);
    // The service's default size limits, so a manifest that runs in process also runs through a service.
    checkRequestedSize(job.header.params, job.header.depth, DEFAULT_LIMITS);
    // A signal of its own per job: the engine never removes its abort listener, and the batch's signal outlives thousands of jobs.
    const local = new AbortController();
    const forward = () => local.abort();
    if (signal?.aborted) local.abort();
    signal?.addEventListener('abort', forward, { once: true });
    let r;
    try {
      // Sequences are keyed by their stream name, as the service keys them by connection and stream.
      r = await this.engine.run({ jobId: job.jobId, model: { name: entry.name, dir: entry.dir }, header: job.header, depth: job.depth, init: job.init, layout: job.layout, motion: job.motion, stream: `batch\u0000${job.header.stream}` }, { signal: local.signal });
    } finally {
      signal?.removeEventListener('abort', forward);
    }
    return { png: resultPng(r), width: r.width, height: r.height, generated: r.generated, seed: r.seed, params: r.params, model: r.model, timings: r.timings, ...(r.consistency ? { consistency: r.consistency } : {}) };
  }

  describe(): Record<string, unknown> {
    return { kind: this.kind, device: this.engine.loaded?.device ?? this.engine.device };
  }

  async close(): Promise<void> {
    await this.engine.close();
  }
}

// ---------------------------------------------------------------- service

/** `ws://host:port`, `http://host:port/`, `host:port` → `ws://host:port/v1/ws?token=...` */
export function serviceUrl(server: string, token?: string): string {
  let text = server.trim();
  if (!/^[a-z]+:\/\//i.test(text)) text = `ws://${text}`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new DepthcastError('BAD_REQUEST', `--server ${server} is not a URL (expected ws://host:port)`);
  }
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  else if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new DepthcastError('BAD_REQUEST', `--server ${server}: use ws://, wss://, http:// or https://`);
  if (url.pathname === '/' || url.pathname === '') url.pathname = '/v1/ws';
  if (token) url.searchParams.set('token', token);
  return url.toString();
}

type ServerHello = ReturnType<typeof ServerHelloMessage.parse>;

interface PendingJob {
  resolve: (r: BackendResult) => void;
  reject: (e: DepthcastError) => void;
}

export class ServiceBackend implements Backend {
  readonly kind = 'service';
  private ws?: WebSocket;
  private connecting?: Promise<ServerHello>;
  private hello?: ServerHello;
  private readonly pending = new Map<string, PendingJob>();
  private closed = false;

  constructor(private readonly server: string, private readonly token?: string, private readonly log: (line: string) => void = () => {}) {}

  /** The URL without its token (for logs and sidecars). */
  get displayUrl(): string {
    return serviceUrl(this.server);
  }

  async start(): Promise<void> {
    const hello = await this.connect();
    this.log(`connected to depthcast ${hello.server.version} at ${this.displayUrl} (device ${hello.device}; models: ${hello.models.map((m) => m.name).join(', ') || 'none'})`);
  }

  private failAll(err: DepthcastError): void {
    for (const [id, job] of this.pending) {
      this.pending.delete(id);
      job.reject(err);
    }
  }

  private connect(): Promise<ServerHello> {
    if (this.closed) return Promise.reject(new DepthcastError('SHUTTING_DOWN', 'the batch is shutting down'));
    if (this.connecting) return this.connecting;
    const url = serviceUrl(this.server, this.token);
    const shown = this.displayUrl;
    this.connecting = new Promise<ServerHello>((resolve, reject) => {
      const ws = new WebSocket(url, { headers: this.token ? { Authorization: `Bearer ${this.token}` } : {}, maxPayload: 512 * 1024 * 1024 });
      this.ws = ws;
      let ready = false;
      const timer = setTimeout(() => {
        reject(new DepthcastError('OFFLINE', `the service at ${shown} did not say hello within 15 s`));
        ws.terminate();
      }, 15_000);
      const drop = (err: DepthcastError) => {
        clearTimeout(timer);
        if (this.ws === ws) {
          this.ws = undefined;
          this.connecting = undefined;
          this.hello = undefined;
        }
        if (!ready) reject(err);
        this.failAll(err);
      };
      ws.on('unexpected-response', (_req, res) => {
        const status = res.statusCode ?? 0;
        drop(status === 401 || status === 403
          ? new DepthcastError('UNAUTHORIZED', `the service at ${shown} refused the connection (HTTP ${status}); pass its token with --token`)
          : new DepthcastError('OFFLINE', `the service at ${shown} answered HTTP ${status} instead of a WebSocket upgrade; is it a depthcast service?`));
        res.resume();
        ws.terminate();
      });
      ws.on('error', (err: NodeJS.ErrnoException) => {
        drop(new DepthcastError('OFFLINE', `cannot reach the service at ${shown}: ${err.code ?? err.message}; start it with \`${CLI} serve\` or use --in-process`));
      });
      ws.on('close', (code, reason) => {
        drop(new DepthcastError('OFFLINE', `the connection to ${shown} closed (${code}${reason.length ? ` ${reason.toString()}` : ''})`));
      });
      ws.on('open', () => {
        ws.send(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, client: `depthcast-batch/${VERSION}` }));
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) return this.onBinary(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        let msg: { type?: string; jobId?: string; code?: string; message?: string; protocol?: number; reason?: string };
        try {
          msg = JSON.parse(data.toString('utf8')) as typeof msg;
        } catch {
          return;
        }
        if (msg.type === 'hello') {
          const parsed = ServerHelloMessage.safeParse(msg);
          if (!parsed.success) {
            drop(new DepthcastError('OFFLINE', `the service at ${shown} speaks protocol ${String(msg.protocol)}; this client speaks ${PROTOCOL_VERSION}`));
            ws.close();
            return;
          }
          ready = true;
          clearTimeout(timer);
          this.hello = parsed.data;
          resolve(parsed.data);
        } else if (msg.type === 'error') {
          const err = new DepthcastError(isErrorCode(msg.code) ? msg.code : 'INFERENCE_FAILED', msg.message ?? 'the service reported an error');
          const job = msg.jobId !== undefined ? this.pending.get(msg.jobId) : undefined;
          if (job) {
            this.pending.delete(msg.jobId!);
            job.reject(err);
          } else if (!ready) {
            drop(err);
            ws.close();
          } else if (msg.jobId === undefined) {
            // An error the service could not tie to a job: every job in flight may be the one.
            this.failAll(err);
          }
        } else if (msg.type === 'cancelled' && msg.jobId !== undefined) {
          const job = this.pending.get(msg.jobId);
          this.pending.delete(msg.jobId);
          job?.reject(new DepthcastError('CANCELLED', `the service cancelled job ${msg.jobId} (${msg.reason ?? 'no reason given'})`));
        }
      });
    });
    this.connecting.catch(() => {});
    return this.connecting;
  }

  private onBinary(bytes: Uint8Array): void {
    let decoded: ReturnType<typeof decodeBinaryMessage>;
    try {
      decoded = decodeBinaryMessage(bytes);
    } catch {
      return;
    }
    const type = (decoded.header as { type?: unknown }).type;
    if (type !== 'result') return; // previews are not asked for (previewEvery 0) and ignored
    const parsed = ResultHeader.safeParse(decoded.header);
    if (!parsed.success) return;
    const h = parsed.data;
    const job = this.pending.get(h.jobId);
    if (!job) return;
    this.pending.delete(h.jobId);
    if (h.format !== 'png') {
      job.reject(new DepthcastError('INTERNAL', `the service answered job ${h.jobId} with ${h.format}, not the PNG a batch writes`));
      return;
    }
    job.resolve({ png: decoded.payload.slice(), width: h.width, height: h.height, generated: h.generated, seed: h.seed, params: h.params, model: h.model, timings: h.timings, ...(h.consistency ? { consistency: h.consistency } : {}) });
  }

  async resolveModel(name: string | undefined): Promise<string> {
    const hello = this.hello ?? (await this.connect());
    const models = hello.models;
    if (name !== undefined) {
      if (models.some((m) => m.name === name)) return name;
      throw new DepthcastError('MODEL_NOT_FOUND', `the service has no model "${name}" (it has: ${models.map((m) => m.name).join(', ') || 'none'})`);
    }
    const chosen = models.find((m) => m.default) ?? [...models].sort((a, b) => a.name.localeCompare(b.name))[0];
    if (!chosen) throw new DepthcastError('MODEL_NOT_FOUND', `the service has no model installed; see \`${CLI} models\``);
    return chosen.name;
  }

  async run(job: BackendJob, signal?: AbortSignal): Promise<BackendResult> {
    const hello = await this.connect();
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new DepthcastError('OFFLINE', `the connection to ${this.displayUrl} is not open`);
    if (signal?.aborted) throw new DepthcastError('CANCELLED', `job ${job.jobId} was cancelled`);
    const parts = [job.depth, ...(job.init ? [job.init] : []), ...(job.layout ? [job.layout] : []), ...(job.motion ? [job.motion] : [])];
    const frame = encodeBinaryMessage(job.header, ...parts);
    if (frame.byteLength > hello.limits.maxMessageBytes) {
      throw new DepthcastError('LIMIT_EXCEEDED', `the frame is ${frame.byteLength} bytes; the service accepts at most ${hello.limits.maxMessageBytes}`);
    }
    return new Promise<BackendResult>((resolve, reject) => {
      const onAbort = () => {
        if (!this.pending.delete(job.jobId)) return;
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'cancel', jobId: job.jobId }));
        reject(new DepthcastError('CANCELLED', `job ${job.jobId} was cancelled`));
      };
      this.pending.set(job.jobId, {
        resolve: (r) => { signal?.removeEventListener('abort', onAbort); resolve(r); },
        reject: (e) => { signal?.removeEventListener('abort', onAbort); reject(e); },
      });
      signal?.addEventListener('abort', onAbort, { once: true });
      ws.send(frame, { binary: true }, (err) => {
        if (!err) return;
        const p = this.pending.get(job.jobId);
        this.pending.delete(job.jobId);
        p?.reject(toDepthcastError(err, 'OFFLINE'));
      });
    });
  }

  maxInFlight(): number | undefined {
    return this.hello?.limits.maxQueuedJobs;
  }

  describe(): Record<string, unknown> {
    return { kind: this.kind, url: this.displayUrl, device: this.hello?.device, server: this.hello?.server.version };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failAll(new DepthcastError('SHUTTING_DOWN', 'the batch is shutting down'));
    const ws = this.ws;
    this.ws = undefined;
    if (!ws) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { ws.terminate(); resolve(); }, 2000);
      ws.once('close', () => { clearTimeout(timer); resolve(); });
      ws.close(1000, 'batch finished');
    });
  }
}
