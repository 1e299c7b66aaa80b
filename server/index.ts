/**
 * startServer: one process, one port — express for HTTP, ws for WebSocket, one Engine (one
 * inference worker) behind one job queue (job-queue.ts). Used by `depthcast serve`, tests, bench and the
 * page/Blender tests.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Engine, type EngineOptions } from '../src/engine/engine.ts';
import { ModelCatalog } from '../src/engine/catalog.ts';
import { DepthcastError } from '../src/errors.ts';
import { type HelloBudgets, type Limits, PROTOCOL_VERSION, SCHEDULER_NAMES, type ServerMessage } from '../src/protocol/schemas.ts';
import type { Device } from '../src/runtime/ort.ts';
import { VERSION } from '../src/version.ts';
import { createApp } from './http.ts';
import { DEMO_MODEL_NAME, demoModelRouter } from './demo-model.ts';
import { JobStore } from './jobs.ts';
import { type Budgets, resolveBudgets, resolveLimits } from './limits.ts';
import { ServiceModels } from './models.ts';
import { JobQueue, type JobQueueStats } from './job-queue.ts';
import { isLoopbackHost, Security, urlHost } from './security.ts';
import { DEFAULT_SIMILARITY_THRESHOLD } from './similarity.ts';
import { WsEndpoint, type WsStats } from './ws.ts';
import { CLI } from '../src/cli/command.ts';

export interface StartServerOptions {
  /** Default 127.0.0.1. Anything beyond loopback needs a token. */
  host?: string;
  /** Default 7788; 0 = any free port. */
  port?: number;
  modelsDir?: string;
  /** Default model: a name in modelsDir, or a model folder path. */
  model?: string;
  device?: Device;
  token?: string;
  /** Browser origins allowed besides the service's own page, e.g. http://localhost:5173. */
  allowedOrigins?: string[];
  limits?: Partial<Limits>;
  /** Per-connection and service-wide budgets (server/limits.ts); tests set them small. */
  budgets?: Partial<Budgets>;
  log?: (line: string) => void;
  /** WebSocket ping interval; a socket that misses one pong is closed. Default 30 s. */
  heartbeatMs?: number;
  /** Mean |Δ nearness| under which a live frame reuses its stream's last result; 0 disables. Default 0.002. */
  similarityThreshold?: number;
  /** Previews are dropped while a socket has more than this many bytes unsent. Default 1 MiB. */
  previewDropBytes?: number;
  /** How long shutdown waits for the running job to reach a step boundary. Default 30 s. */
  shutdownWaitMs?: number;
  /** Folder of the built preview page. Default dist/page. */
  pageDir?: string;
  /** /v1/health adds `debug` (memory per thread, counts of held state). Default: DEPTHCAST_DEBUG_MEMORY=1. */
  debugMemory?: boolean;
  /** Engine options; tests use `faults` to make the inference worker fail on purpose. */
  engine?: EngineOptions;
}

export interface DepthcastServer {
  url: string;
  host: string;
  port: number;
  engine: Engine;
  queue: JobQueue;
  limits: Limits;
  stats(): JobQueueStats & WsStats & { queued: number };
  close(): Promise<void>;
}

const DEFAULT_PAGE_DIR = fileURLToPath(new URL('../dist/page/', import.meta.url));

async function bundledDevices(): Promise<string[]> {
  try {
    const { listBundledBackends } = await import('../src/runtime/ort.ts');
    return ['auto', ...listBundledBackends()];
  } catch {
    return ['auto', 'cpu'];
  }
}

export async function startServer(opts: StartServerOptions = {}): Promise<DepthcastServer> {
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log ?? ((line: string) => console.error(line));
  if (!isLoopbackHost(host) && !opts.token) {
    throw new DepthcastError('BAD_REQUEST', `refusing to listen on ${host} without a token: anyone who can reach it could use this machine's GPU. Pass --token <secret> (clients send Authorization: Bearer <secret>), or bind 127.0.0.1`);
  }
  const limits = resolveLimits(opts.limits);
  const budgets = resolveBudgets(opts.budgets);
  const security = new Security(host, opts.allowedOrigins ?? [], opts.token);
  const catalog = new ModelCatalog(opts.modelsDir, opts.model);
  const device = opts.device ?? 'auto';
  const engine = new Engine(device, log, opts.engine);
  const models = new ServiceModels(catalog, engine);
  const store = new JobStore();
  const queue = new JobQueue(engine, {
    maxQueuedJobs: limits.maxQueuedJobs,
    maxQueuedPerOwner: budgets.maxQueuedPerConnection,
    maxStreamsPerOwner: budgets.maxStreamsPerConnection,
    similarityThreshold: opts.similarityThreshold ?? DEFAULT_SIMILARITY_THRESHOLD,
    resolveModel: (name) => models.resolve(name),
    store,
    log,
  });
  const devices = await bundledDevices();
  let closing = false;

  const heartbeatMs = opts.heartbeatMs ?? 30_000;
  const previewDropBytes = opts.previewDropBytes ?? 1024 * 1024;
  const helloBudgets: HelloBudgets = { ...budgets, heartbeatMs, previewDropBytes };
  const hello = (): ServerMessage => ({
    type: 'hello', protocol: PROTOCOL_VERSION, server: { name: 'depthcast', version: VERSION },
    models: models.list(), schedulers: [...SCHEDULER_NAMES], devices, device: engine.loaded?.device ?? device, limits, budgets: helloBudgets,
  });
  const health = () => {
    const loaded = engine.loaded;
    return {
      status: closing ? 'shutting-down' : 'ok',
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      device: loaded?.device ?? device,
      model: loaded ? { name: loaded.name, family: loaded.family, dtype: loaded.dtype, hash: loaded.hash, device: loaded.device } : null,
      queue: { length: queue.queueLength, running: queue.running ? 1 : 0, max: limits.maxQueuedJobs },
      connections: ws.stats.connections,
    };
  };

  // Memory of both threads and counts of what the service holds, for the soak (docs/reliability.md);
  // `collect` (GET /v1/health?gc=1, where node runs with --expose-gc) collects garbage first.
  const diagnostics = async (collect: boolean) => {
    if (collect) (globalThis as { gc?: () => void }).gc?.();
    const { rss, heapTotal, heapUsed, external, arrayBuffers } = process.memoryUsage();
    return {
      // The process measured: `depthcast serve` runs in a child of the node that was launched (bin/depthcast.js).
      pid: process.pid,
      memory: { main: { rss, heapTotal, heapUsed, external, arrayBuffers }, worker: (await engine.workerMemory(collect)) ?? null },
      retained: { jobRecords: store.size, wsConnections: ws.connectionsHeld, ...queue.retained() },
    };
  };
  const app = createApp({ budgets, queue, store, models, security, limits, health,
    ...(opts.debugMemory ?? process.env.DEPTHCAST_DEBUG_MEMORY === '1' ? { diagnostics } : {}), isClosing: () => closing, pageDir: opts.pageDir ?? DEFAULT_PAGE_DIR,
    routes: [demoModelRouter(opts.modelsDir, () => log(`wrote the demo model to ${opts.modelsDir}/${DEMO_MODEL_NAME} (asked for by a client)`))] });
  const server: Server = createServer(app);
  const ws = new WsEndpoint(server, {
    queue, security, limits, hello, isClosing: () => closing,
    heartbeatMs,
    budgets,
    previewDropBytes,
    log,
  });

  server.listen(opts.port ?? 7788, host);
  try {
    await once(server, 'listening');
  } catch (err) {
    ws.close();
    await engine.close();
    throw new DepthcastError('BAD_REQUEST', `cannot listen on ${host}:${opts.port ?? 7788}: ${(err as Error).message}`);
  }
  const port = (server.address() as AddressInfo).port;
  security.setPort(port);
  const url = `http://${urlHost(host)}:${port}`;

  if (catalog.list().length === 0) {
    log(`no model installed in ${opts.modelsDir ?? '(no models dir)'}; requests that need one get MODEL_NOT_FOUND. Get one with \`${CLI} models pull <id>\`, or make an offline demo model with \`${CLI} models create-tiny ${opts.modelsDir ?? '<models-dir>'}/tiny\``);
  }

  let closed: Promise<void> | undefined;
  const close = () => (closed ??= (async () => {
    closing = true;
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await queue.close(opts.shutdownWaitMs ?? 30_000);
    ws.close();
    await engine.close();
    server.closeIdleConnections();
    // Give polite closes a moment to flush, then end whatever is left.
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 1000).unref())]);
    ws.terminateAll();
    server.closeAllConnections();
    await stopped;
  })());

  return {
    url, host, port, engine, queue, limits,
    stats: () => ({ ...queue.stats, ...ws.stats, queued: queue.queueLength }),
    close,
  };
}
