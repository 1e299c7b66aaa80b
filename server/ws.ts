/**
 * The WebSocket endpoint /v1/ws, kept thin: check the upgrade (Host, Origin, token), then per
 * message parse → validate (zod) → intake → scheduler, and send the scheduler's callbacks back.
 * A bad message gets an `error` reply and the socket stays open. Previews are dropped while the
 * socket's send buffer is backed up; results never are. A ping heartbeat ends dead sockets.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { DepthcastError, toDepthcastError } from '../src/errors.ts';
import { decodeBinaryMessage, encodeBinaryHeader } from '../src/protocol/frame.ts';
import { ClientMessage, describeZodError, FrameHeader, JobId, type Limits, PROTOCOL_VERSION, type ServerMessage } from '../src/protocol/schemas.ts';
import { intakeFrame } from './intake.ts';
import { hardPayloadCap } from './limits.ts';
import type { JobSink, Scheduler } from './scheduler.ts';
import type { Security } from './security.ts';

export interface WsDeps {
  scheduler: Scheduler;
  security: Security;
  limits: Limits;
  hello: () => ServerMessage;
  isClosing: () => boolean;
  heartbeatMs: number;
  /** Previews are skipped while more than this many bytes wait in a socket's send buffer. */
  previewDropBytes: number;
  log: (line: string) => void;
}

export interface WsStats {
  connections: number;
  previewsSent: number;
  previewsDropped: number;
}

const CLIENT_TYPES = new Set(['cancel', 'hello']);

function rejectUpgrade(socket: Duplex, error: DepthcastError): void {
  const body = JSON.stringify({ error: { code: error.code, message: error.message } });
  const reason = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 503: 'Service Unavailable' }[error.httpStatus] ?? 'Bad Request';
  const extra = error.code === 'UNAUTHORIZED' ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.end(`HTTP/1.1 ${error.httpStatus} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

export class WsEndpoint {
  readonly wss: WebSocketServer;
  readonly stats: WsStats = { connections: 0, previewsSent: 0, previewsDropped: 0 };
  private readonly alive = new WeakMap<WebSocket, boolean>();
  private readonly heartbeat: NodeJS.Timeout;
  private nextOwner = 0;

  constructor(server: Server, private readonly deps: WsDeps) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: hardPayloadCap(deps.limits) });
    server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    this.heartbeat = setInterval(() => this.ping(), deps.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Closes every socket (1001 going away) after what is queued on it was sent. */
  close(): void {
    clearInterval(this.heartbeat);
    for (const ws of this.wss.clients) ws.close(1001, 'service shutting down');
    this.wss.close();
  }

  /** Ends sockets that did not close politely in time. */
  terminateAll(): void {
    for (const ws of this.wss.clients) ws.terminate();
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      // Who is asking is checked before where they are going; the path is compared exactly.
      const { security } = this.deps;
      security.checkHost(req.headers.host);
      security.checkOrigin(req.headers.origin);
      security.checkToken(req.headers.authorization, url.searchParams.get('token'));
      if (url.pathname !== '/v1/ws') throw new DepthcastError('NOT_FOUND', `no WebSocket endpoint at ${url.pathname}; use /v1/ws`);
      if (this.deps.isClosing()) throw new DepthcastError('SHUTTING_DOWN', 'the service is shutting down');
    } catch (err) {
      rejectUpgrade(socket, toDepthcastError(err));
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.connection(ws));
  }

  private ping(): void {
    for (const ws of this.wss.clients) {
      if (this.alive.get(ws) === false) {
        this.deps.log('closing a WebSocket that missed its heartbeat');
        ws.terminate();
        continue;
      }
      this.alive.set(ws, false);
      ws.ping();
    }
  }

  private connection(ws: WebSocket): void {
    const owner = `ws:${++this.nextOwner}`;
    this.stats.connections++;
    this.alive.set(ws, true);
    ws.on('pong', () => this.alive.set(ws, true));
    ws.on('error', (err) => this.deps.log(`WebSocket ${owner}: ${err.message}`));
    ws.on('close', () => {
      this.stats.connections--;
      this.deps.scheduler.releaseOwner(owner, 'disconnect');
    });
    ws.on('message', (data, isBinary) => this.message(ws, owner, data as Buffer, isBinary));
    this.sendJson(ws, this.deps.hello());
  }

  private sendJson(ws: WebSocket, message: ServerMessage): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  private sendError(ws: WebSocket, err: unknown, jobId?: string): void {
    const e = toDepthcastError(err);
    const message: ServerMessage = { type: 'error', code: e.code, message: e.message };
    if (jobId !== undefined) message.jobId = jobId;
    this.sendJson(ws, message);
  }

  private message(ws: WebSocket, owner: string, data: Buffer, isBinary: boolean): void {
    const receivedAt = performance.now();
    const { limits } = this.deps;
    if (data.byteLength > limits.maxMessageBytes) {
      this.sendError(ws, new DepthcastError('LIMIT_EXCEEDED', `message of ${data.byteLength} bytes is larger than maxMessageBytes ${limits.maxMessageBytes}`, { limit: limits.maxMessageBytes }));
      return;
    }
    if (isBinary) this.frame(ws, owner, data, receivedAt);
    else this.control(ws, owner, data.toString('utf8'));
  }

  private frame(ws: WebSocket, owner: string, data: Buffer, receivedAt: number): void {
    let jobId: string | undefined;
    try {
      const { header: raw, payload } = decodeBinaryMessage(data);
      const h = raw as Record<string, unknown> | null;
      if (h && typeof h === 'object' && JobId.safeParse(h.jobId).success) jobId = h.jobId as string;
      if (!h || typeof h !== 'object' || h.type !== 'frame') {
        throw new DepthcastError('BAD_REQUEST', `unknown binary message type ${JSON.stringify(h && typeof h === 'object' ? h.type : h)}; clients send "frame" headers`);
      }
      if (h.protocol !== PROTOCOL_VERSION) throw new DepthcastError('BAD_REQUEST', `frame protocol ${JSON.stringify(h.protocol)} is not supported; this service speaks protocol ${PROTOCOL_VERSION}`);
      const parsed = FrameHeader.safeParse(h);
      if (!parsed.success) throw new DepthcastError('BAD_REQUEST', `bad frame header: ${describeZodError(parsed.error)}`);
      const frame = intakeFrame(parsed.data, payload, this.deps.limits, receivedAt);
      this.deps.scheduler.submit(owner, frame, this.sink(ws, parsed.data.jobId, parsed.data.stream));
    } catch (err) {
      this.sendError(ws, err, jobId);
    }
  }

  private control(ws: WebSocket, owner: string, text: string): void {
    let jobId: string | undefined;
    try {
      let msg: unknown;
      try {
        msg = JSON.parse(text);
      } catch (err) {
        throw new DepthcastError('BAD_REQUEST', `text message is not valid JSON: ${(err as Error).message}`);
      }
      const m = msg as Record<string, unknown> | null;
      if (!m || typeof m !== 'object' || typeof m.type !== 'string') throw new DepthcastError('BAD_REQUEST', 'a text message must be a JSON object with a string "type"');
      if (typeof m.jobId === 'string') jobId = m.jobId;
      if (m.type === 'frame') throw new DepthcastError('BAD_REQUEST', 'frames are binary messages: u32 LE header length | JSON header | payload (docs/protocol.md)');
      if (!CLIENT_TYPES.has(m.type)) throw new DepthcastError('BAD_REQUEST', `unknown message type ${JSON.stringify(m.type)}; expected one of: ${[...CLIENT_TYPES].join(', ')}`);
      const parsed = ClientMessage.safeParse(m);
      if (!parsed.success) throw new DepthcastError('BAD_REQUEST', `bad ${m.type} message: ${describeZodError(parsed.error)}`);
      const message = parsed.data;
      if (message.type === 'hello') {
        if (message.protocol !== PROTOCOL_VERSION) throw new DepthcastError('BAD_REQUEST', `client protocol ${message.protocol} is not supported; this service speaks protocol ${PROTOCOL_VERSION}`);
        return;
      }
      const { scheduler } = this.deps;
      if (message.jobId !== undefined && !scheduler.cancelJob(owner, message.jobId, 'client') && message.stream === undefined) {
        throw new DepthcastError('JOB_NOT_FOUND', `no queued or running job ${message.jobId} on this connection`);
      }
      if (message.stream !== undefined) scheduler.cancelStream(owner, message.stream, 'client');
    } catch (err) {
      this.sendError(ws, err, jobId);
    }
  }

  private sink(ws: WebSocket, jobId: string, stream: string): JobSink {
    const { stats } = this;
    return {
      accepted: (position) => this.sendJson(ws, { type: 'accepted', jobId, stream, position }),
      progress: (p) => {
        this.sendJson(ws, { type: 'progress', jobId, step: p.step, total: p.total, timestep: p.timestep });
        if (!p.preview || ws.readyState !== WebSocket.OPEN) return;
        if (ws.bufferedAmount > this.deps.previewDropBytes) {
          stats.previewsDropped++;
          return;
        }
        stats.previewsSent++;
        sendBinary(ws, { type: 'preview', jobId, step: p.step, total: p.total, width: p.previewWidth ?? 0, height: p.previewHeight ?? 0, format: p.previewFormat ?? 'jpeg' }, p.preview);
      },
      result: ({ header, image }) => {
        if (ws.readyState === WebSocket.OPEN) sendBinary(ws, header, image);
      },
      cancelled: (reason) => this.sendJson(ws, { type: 'cancelled', jobId, reason }),
      failed: (error) => this.sendError(ws, error, jobId),
    };
  }
}

/**
 * One binary message as two WebSocket frames, header then payload, so a result's PNG goes out
 * without being copied behind its header first (a 512×512 live result is ~0.8 MB). The two
 * sends are back to back on one tick, so no other message can come between the fragments.
 */
function sendBinary(ws: WebSocket, header: unknown, payload: Uint8Array): void {
  ws.send(encodeBinaryHeader(header), { binary: true, fin: false });
  ws.send(payload, { binary: true, fin: true });
}
