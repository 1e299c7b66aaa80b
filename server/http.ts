/**
 * HTTP routes (express). Errors are mapped once, here, from DepthcastError.httpStatus to
 * `{error: {code, message}}`. POST /v1/generate runs a batch job through the same intake and
 * queue as WebSocket frames.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import express, { type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import { DepthcastError, toDepthcastError } from '../src/errors.ts';
import { describeZodError, type FrameHeader, FrameHeader as FrameHeaderSchema, HttpGenerateRequest, type Limits, PROTOCOL_VERSION, WarpPlotRequest } from '../src/protocol/schemas.ts';
import { plottedScore, renderScorePlot } from '../src/motion/plot.ts';
import { VERSION } from '../src/version.ts';
import { type FrameParts, intakeParts } from './intake.ts';
import type { JobStore } from './jobs.ts';
import type { ServiceModels } from './models.ts';
import type { Budgets } from './limits.ts';
import { parseMultipart } from './multipart.ts';
import type { JobResult, JobQueue } from './job-queue.ts';
import type { Security } from './security.ts';

export interface HttpDeps {
  queue: JobQueue;
  budgets: Pick<Budgets, 'largeBodyBytes' | 'maxLargeBodies'>;
  store: JobStore;
  models: ServiceModels;
  security: Security;
  limits: Limits;
  health: () => Record<string, unknown>;
  /** Extra figures for /v1/health when the service runs with DEPTHCAST_DEBUG_MEMORY=1 (index.ts). */
  diagnostics?: (collect: boolean) => Promise<Record<string, unknown>>;
  isClosing: () => boolean;
  pageDir: string;
  /** Routes kept in files of their own (e.g. demo-model.ts), mounted before the /v1 catch-all. */
  routes?: express.Router[];
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Multipart form: `request` (JSON, like the JSON body without the base64 data fields), `depth`, `init`, `layout` (bytes). */
const MultipartRequest = z.object({
  depth: HttpGenerateRequest.shape.depth.omit({ data: true }),
  layout: HttpGenerateRequest.shape.layout.unwrap().omit({ data: true }).optional(),
  params: HttpGenerateRequest.shape.params,
}).strict();

function parseWith<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new DepthcastError('BAD_REQUEST', describeZodError(parsed.error));
  return parsed.data;
}

function sniffImage(bytes: Uint8Array): 'png' | 'jpeg' {
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  throw new DepthcastError('BAD_IMAGE', 'init image must be a PNG or JPEG file');
}

function base64(field: string, value: string): Buffer {
  if (!/^[A-Za-z0-9+/=\s_-]*$/.test(value)) throw new DepthcastError('BAD_REQUEST', `${field} is not base64`);
  return Buffer.from(value, 'base64');
}

interface GenerateInput {
  depth: Omit<HttpGenerateRequest['depth'], 'data'>;
  layout?: Omit<NonNullable<HttpGenerateRequest['layout']>, 'data'>;
  params: HttpGenerateRequest['params'];
  parts: FrameParts;
}

function fromJson(body: unknown): GenerateInput {
  const req = parseWith(HttpGenerateRequest, body);
  const parts: FrameParts = { depth: base64('depth.data', req.depth.data) };
  if (req.init !== undefined) parts.init = base64('init', req.init);
  if (req.layout) parts.layout = base64('layout.data', req.layout.data);
  const { data: _d, ...depth } = req.depth;
  const input: GenerateInput = { depth, params: req.params, parts };
  if (req.layout) {
    const { data: _l, ...layout } = req.layout;
    input.layout = layout;
  }
  return input;
}

function fromMultipart(body: Buffer, contentType: string): GenerateInput {
  const form = parseMultipart(body, contentType);
  const request = form.get('request');
  const depth = form.get('depth');
  if (!request || !depth) throw new DepthcastError('BAD_REQUEST', 'multipart/form-data needs a "request" JSON part and a "depth" part');
  let json: unknown;
  try {
    json = JSON.parse(request.data.toString('utf8'));
  } catch (err) {
    throw new DepthcastError('BAD_REQUEST', `the "request" part is not JSON: ${(err as Error).message}`);
  }
  const req = parseWith(MultipartRequest, json);
  const parts: FrameParts = { depth: depth.data };
  const init = form.get('init');
  const layout = form.get('layout');
  if (init) parts.init = init.data;
  if (layout) parts.layout = layout.data;
  if (!!layout !== !!req.layout) throw new DepthcastError('BAD_REQUEST', 'send the "layout" bytes part and request.layout together');
  const input: GenerateInput = { depth: req.depth, params: req.params, parts };
  if (req.layout) input.layout = req.layout;
  return input;
}

function toHeader(jobId: string, input: GenerateInput): FrameHeader {
  const { parts } = input;
  const header: Record<string, unknown> = {
    type: 'frame', protocol: PROTOCOL_VERSION, jobId, stream: 'http', mode: 'batch',
    depth: { ...input.depth, byteLength: parts.depth.byteLength },
    params: input.params,
  };
  if (parts.init) header.init = { format: sniffImage(parts.init), byteLength: parts.init.byteLength };
  if (input.layout && parts.layout) header.layout = { ...input.layout, byteLength: parts.layout.byteLength };
  const parsed = parseWith(FrameHeaderSchema, header);
  if (parsed.params.resultFormat !== 'png') {
    throw new DepthcastError('BAD_REQUEST', `params.resultFormat "${parsed.params.resultFormat}" is for WebSocket frames; /v1/generate answers with PNG (leave resultFormat out)`);
  }
  return parsed;
}

function sendError(res: Response, err: unknown): void {
  const e = toDepthcastError(err);
  if (res.writableEnded || res.destroyed) return;
  if (res.headersSent) {
    res.end();
    return;
  }
  if (e.code === 'UNAUTHORIZED') res.set('WWW-Authenticate', 'Bearer');
  res.status(e.httpStatus).json({ error: { code: e.code, message: e.message } });
}

/**
 * express, router and body-parser errors → DepthcastError by their own status: the client's
 * mistakes (bad JSON, a bad encoding, a malformed percent-escape, a body too large) are 4xx;
 * INTERNAL stays for our own bugs.
 */
function clientError(err: unknown, limits: Limits): DepthcastError | undefined {
  if (err instanceof DepthcastError) return err;
  const e = err as { type?: string; status?: unknown; statusCode?: unknown; message?: string } | undefined;
  const status = typeof e?.status === 'number' ? e.status : typeof e?.statusCode === 'number' ? e.statusCode : undefined;
  if (e?.type === 'entity.too.large' || status === 413) return new DepthcastError('LIMIT_EXCEEDED', `request body is larger than this service allows (maxMessageBytes ${limits.maxMessageBytes}, base64 counted at 4/3)`, { limit: limits.maxMessageBytes });
  if (e?.type === 'entity.parse.failed') return new DepthcastError('BAD_REQUEST', `request body is not valid JSON: ${e.message}`);
  if (status !== undefined && status >= 400 && status < 500) return new DepthcastError('BAD_REQUEST', `bad request: ${e?.message ?? `status ${status}`}`);
  return undefined;
}

/** A page file name: one lower-case segment, no dotfiles; it must also exist in the page folder. */
const PAGE_FILE = /^\/[a-z0-9][a-z0-9._-]*$/;

/**
 * The only requests served without the token: GET/HEAD of `/` and of files that exist in the
 * built page folder, compared exactly (case-sensitive, not decoded). Everything else is denied
 * by default when a token is set, before any routing.
 */
function isPublicPage(req: Request, pageDir: string): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const path = req.path;
  if (path === '/') return true;
  if (!PAGE_FILE.test(path) || path.endsWith('.map')) return false;
  try {
    return statSync(join(pageDir, path.slice(1))).isFile();
  } catch {
    return false;
  }
}

export function createApp(deps: HttpDeps): express.Express {
  const { queue, store, security, limits } = deps;
  const serveStatic = express.static(deps.pageDir, { index: false, dotfiles: 'ignore', fallthrough: true, redirect: false });
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // '/V1/health' and '/v1/health/' are not '/v1/health': one spelling per route.
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  let largeBodies = 0;

  // Host (DNS rebinding), CORS for extra allowed origins, Origin on state-changing requests.
  app.use((req, res, next) => {
    try {
      security.checkHost(req.headers.host);
      const origin = req.headers.origin;
      const cors = security.corsOrigin(origin);
      if (cors) {
        res.set({ 'Access-Control-Allow-Origin': cors, Vary: 'Origin' });
        if (req.method === 'OPTIONS') {
          res.set({ 'Access-Control-Allow-Methods': 'GET, POST, OPTIONS', 'Access-Control-Allow-Headers': 'Authorization, Content-Type, Accept', 'Access-Control-Max-Age': '600' });
          res.status(204).end();
          return;
        }
      }
      if (STATE_CHANGING.has(req.method)) security.checkOrigin(origin);
      // Deny by default: with a token, every request but the public page needs it, whatever its path.
      if (!isPublicPage(req, deps.pageDir)) security.checkToken(req.headers.authorization);
      next();
    } catch (err) {
      sendError(res, err);
    }
  });

  app.get('/v1/health', async (req, res) => {
    const health = deps.health();
    res.json(deps.diagnostics ? { ...health, debug: await deps.diagnostics(req.query.gc === '1') } : health);
  });

  app.get('/v1/models', (_req, res) => {
    res.json({ models: deps.models.list() });
  });

  app.get('/v1/jobs/:id', (req, res) => {
    const record = store.get(String(req.params.id));
    if (!record) throw new DepthcastError('JOB_NOT_FOUND', `no job ${JSON.stringify(req.params.id)} (finished jobs are kept for 10 minutes)`);
    res.json(record);
  });

  const bodyLimit = Math.ceil((limits.maxMessageBytes * 4) / 3) + 64 * 1024;
  const jsonBody = express.json({ limit: bodyLimit });
  const multipartBody = express.raw({ type: 'multipart/form-data', limit: limits.maxMessageBytes + 64 * 1024 });
  /**
   * Refuses an over-long Content-Length before reading a byte, and bounds how many large bodies
   * are held at once (from the first byte read until the answer is sent).
   */
  const bodyBudget = (req: Request, res: Response, next: NextFunction) => {
    const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
    if (declared !== undefined && declared > bodyLimit) {
      res.set('Connection', 'close');
      throw new DepthcastError('LIMIT_EXCEEDED', `Content-Length ${declared} is larger than this service allows (${bodyLimit} bytes: maxMessageBytes ${limits.maxMessageBytes}, base64 counted at 4/3)`, { limit: bodyLimit });
    }
    // A body of unknown length counts as large.
    if (declared !== undefined && declared <= deps.budgets.largeBodyBytes) return next();
    if (largeBodies >= deps.budgets.maxLargeBodies) {
      res.set('Connection', 'close');
      throw new DepthcastError('BUSY', `${largeBodies} large request bodies are being received already (at most ${deps.budgets.maxLargeBodies} over ${deps.budgets.largeBodyBytes} bytes at once); retry later`, { maxLargeBodies: deps.budgets.maxLargeBodies });
    }
    largeBodies++;
    let released = false;
    const release = () => {
      if (!released) largeBodies--;
      released = true;
    };
    res.once('close', release);
    next();
  };
  // A plot request is small: 4 series of 10,000 pairs with their extra fields fit in 4 MiB.
  const plotBody = express.json({ limit: 4 * 1024 * 1024 });
  app.post('/v1/plots/warp', bodyBudget, plotBody, async (req, res) => {
    if (!/^application\/json/i.test(req.headers['content-type'] ?? '')) throw new DepthcastError('BAD_REQUEST', 'POST /v1/plots/warp takes application/json');
    const request = parseWith(WarpPlotRequest, req.body);
    const png = await renderScorePlot(request.series.map((s) => ({ label: s.label, score: plottedScore(s.pairs) })), request.title);
    res.type('image/png').send(png);
  });

  app.post('/v1/generate', bodyBudget, jsonBody, multipartBody, (req, res) => {
    if (deps.isClosing()) throw new DepthcastError('SHUTTING_DOWN', 'the service is shutting down');
    const receivedAt = performance.now();
    const contentType = req.headers['content-type'] ?? '';
    let input: GenerateInput;
    if (/^multipart\/form-data/i.test(contentType) && Buffer.isBuffer(req.body)) input = fromMultipart(req.body, contentType);
    else if (/^application\/json/i.test(contentType)) input = fromJson(req.body);
    else throw new DepthcastError('BAD_REQUEST', 'POST /v1/generate takes application/json or multipart/form-data');
    const wantsPng = req.accepts(['application/json', 'image/png']) === 'image/png';
    const jobId = `http-${randomUUID()}`;
    // All HTTP requests share one stream (FIFO among themselves, round robin with WebSocket streams).
    const owner = 'http';
    const frame = intakeParts(toHeader(jobId, input), input.parts, limits, receivedAt);
    let settled = false;
    res.on('close', () => {
      if (!settled) queue.cancelJob(owner, jobId, 'disconnect');
    });
    const finish = (fn: () => void) => {
      settled = true;
      fn();
    };
    queue.submit(owner, frame, {
      accepted: () => {},
      progress: () => {},
      result: (r: JobResult) => finish(() => respond(res, r, wantsPng)),
      cancelled: (reason) => finish(() => sendError(res, reason === 'shutdown'
        ? new DepthcastError('SHUTTING_DOWN', `job ${jobId} was cancelled: the service is shutting down`)
        : new DepthcastError('CANCELLED', `job ${jobId} was cancelled (${reason})`))),
      failed: (error) => finish(() => sendError(res, error)),
    });
  });

  // Extra routes (the demo-model maker) sit behind the same token check as everything else.
  for (const router of deps.routes ?? []) app.use(router);

  app.use((req, res, next) => {
    if (isPublicPage(req, deps.pageDir) && req.path !== '/') return serveStatic(req, res, next);
    next();
  });
  app.get('/', (_req, res) => {
    if (existsSync(join(deps.pageDir, 'index.html'))) {
      res.sendFile(join(deps.pageDir, 'index.html'));
      return;
    }
    res.type('html').send('<!doctype html><meta charset="utf-8"><title>depthcast</title><p>depthcast ' + VERSION + ' is running. The preview page is not built: run <code>npm run build:page</code>, then reload.</p><p>API: <code>/v1/health</code>, <code>/v1/models</code>, WebSocket <code>/v1/ws</code>.</p>');
  });

  // Everything unmatched, inside /v1 or not, is the documented JSON NOT_FOUND.
  app.use((req) => {
    throw new DepthcastError('NOT_FOUND', `no route ${req.method} ${req.originalUrl}`);
  });

  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    sendError(res, clientError(err, limits) ?? err);
  });
  return app;
}

function respond(res: Response, { header, image: png }: JobResult, wantsPng: boolean): void {
  if (res.writableEnded || res.destroyed) return;
  if (wantsPng) {
    res.status(200).set({ 'Content-Type': 'image/png', 'X-Job-Id': header.jobId, 'X-Seed': String(header.seed), 'Finish-Reason': header.finishReason }).end(Buffer.from(png.buffer, png.byteOffset, png.byteLength));
    return;
  }
  res.json({
    jobId: header.jobId,
    artifacts: [{ base64: Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64'), mime: 'image/png', seed: header.seed, finishReason: header.finishReason, width: header.width, height: header.height }],
    seed: header.seed,
    finishReason: header.finishReason,
    width: header.width,
    height: header.height,
    params: header.params,
    model: header.model,
    timings: header.timings,
  });
}
