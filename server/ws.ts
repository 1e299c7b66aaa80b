/**
 * The WebSocket endpoint /v1/ws, kept thin: check the upgrade (Host, Origin, token), then per
 * message parse → validate (zod) → intake → queue, and send the queue's callbacks back.
 * A bad message gets an `error` reply and the socket stays open. Each connection has budgets
 * (server/limits.ts): previews are dropped while its send buffer is backed up, results wait, and
 * a connection that stays over its output budget, takes too long to send one message, or
 * misses a heartbeat (only a pong that echoes our own ping counts) is closed with a typed reason.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { DepthcastError, toDepthcastError } from '../src/errors.ts';
import { decodeBinaryMessage, encodeBinaryHeader } from '../src/protocol/frame.ts';
import { ClientMessage, describeZodError, FrameHeader, JobId, type Limits, PROTOCOL_VERSION, type ServerMessage } from '../src/protocol/schemas.ts';
import { intakeFrame } from './intake.ts';
import { type Budgets, hardPayloadCap } from './limits.ts';
import type { JobSink, JobQueue } from './job-queue.ts';
import type { Security } from './security.ts';
import { FrameScanner } from './ws-frames.ts';

export interface WsDeps {
  queue: JobQueue;
  security: Security;
  limits: Limits;
  hello: () => ServerMessage;
  isClosing: () => boolean;
  heartbeatMs: number;
  budgets: Budgets;
  /** Previews are skipped while more than this many bytes wait in a socket's send buffer. */
  previewDropBytes: number;
  log: (line: string) => void;
}

export interface WsStats {
  connections: number;
  previewsSent: number;
  previewsDropped: number;
  /** Heartbeat rounds (one ping to every socket each). */
  heartbeats: number;
  closedHeartbeat: number;
  closedOutput: number;
  closedAssembly: number;
  closedIncoming: number;
  refusedConnections: number;
}

/** A connection's state beyond what ws keeps. */
interface Conn {
  owner: string;
  ws: WebSocket;
  /** The payload of our last ping; only a pong echoing it counts as alive. */
  ping?: Buffer;
  alive: boolean;
  /** When the send buffer last went over maxOutputBytes (undefined while under). */
  overSince?: number;
  outputTimer?: NodeJS.Timeout;
  /** Follows the client's frames: is a message being assembled, and how many of its bytes are here. */
  frames: FrameScanner;
  /** Bytes of the message being assembled, as counted in the endpoint's incoming total. */
  assembling: number;
  assemblyTimer?: NodeJS.Timeout;
  closing: boolean;
}

/** Close codes (4000-4999 are the application's own). Reasons start with the error code. */
export const CLOSE_OVER_BUDGET = 4008;
const CLOSE_TRY_AGAIN = 1013;
/** A socket closed for a budget gets this long to take the close frame, then it is cut. */
const CLOSE_GRACE_MS = 5000;
const utf8 = new TextDecoder('utf-8', { fatal: true });

const CLIENT_TYPES = new Set(['cancel', 'hello']);

function rejectUpgrade(socket: Duplex, error: DepthcastError): void {
  const body = JSON.stringify({ error: { code: error.code, message: error.message } });
  const reason = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' }[error.httpStatus] ?? 'Bad Request';
  const extra = error.code === 'UNAUTHORIZED' ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.end(`HTTP/1.1 ${error.httpStatus} ${reason}\r\nConnection: close\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

export class WsEndpoint {
  readonly wss: WebSocketServer;
  readonly stats: WsStats = { connections: 0, previewsSent: 0, previewsDropped: 0, heartbeats: 0, closedHeartbeat: 0, closedOutput: 0, closedAssembly: 0, closedIncoming: 0, refusedConnections: 0 };
  private readonly conns = new Map<WebSocket, Conn>();
  /** Bytes of incoming messages being assembled, all connections together. */
  private incoming = 0;
  /** Bytes of received frames whose jobs are queued or running (their parts are views of the message). */
  private held = 0;
  private readonly heartbeat: NodeJS.Timeout;
  private nextOwner = 0;

  constructor(server: Server, private readonly deps: WsDeps) {
    // UTF-8 of text messages is checked here, so invalid text is a BAD_REQUEST, not a 1007 close.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: hardPayloadCap(deps.limits), skipUTF8Validation: true });
    server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    this.heartbeat = setInterval(() => this.ping(), deps.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Connections whose state this endpoint keeps (diagnostics and tests). */
  get connectionsHeld(): number {
    return this.conns.size;
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
      const { maxConnections } = this.deps.budgets;
      if (this.conns.size >= maxConnections) {
        this.stats.refusedConnections++;
        throw new DepthcastError('BUSY', `this service holds ${maxConnections} WebSocket connections already (maxConnections); retry later`, { maxConnections });
      }
    } catch (err) {
      rejectUpgrade(socket, toDepthcastError(err));
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.connection(ws, socket));
  }

  private ping(): void {
    this.stats.heartbeats++;
    for (const conn of this.conns.values()) {
      if (!conn.alive) {
        this.deps.log(`closing WebSocket ${conn.owner}: it did not answer the last heartbeat ping`);
        this.stats.closedHeartbeat++;
        conn.ws.terminate();
        continue;
      }
      conn.alive = false;
      conn.ping = randomBytes(8);
      conn.ws.ping(conn.ping);
    }
  }

  private connection(ws: WebSocket, socket: Duplex): void {
    const owner = `ws:${++this.nextOwner}`;
    const conn: Conn = { owner, ws, alive: true, frames: new FrameScanner(), assembling: 0, closing: false };
    this.conns.set(ws, conn);
    this.stats.connections++;
    // Counted before ws parses the bytes, so a message completed by this chunk is settled after it.
    socket.prependListener('data', (chunk: Buffer) => this.received(conn, chunk));
    ws.on('pong', (data) => {
      if (conn.ping && data.equals(conn.ping)) conn.alive = true;
    });
    ws.on('error', (err) => this.deps.log(`WebSocket ${owner}: ${err.message}`));
    ws.on('close', () => {
      this.stats.connections--;
      this.assembled(conn);
      clearTimeout(conn.outputTimer);
      this.conns.delete(ws);
      this.deps.queue.releaseOwner(owner, 'disconnect');
    });
    ws.on('message', (data, isBinary) => {
      this.message(ws, owner, data as Buffer, isBinary);
    });
    this.sendJson(ws, this.deps.hello());
  }

  /**
   * Bytes arrived on a connection, before ws parses them. The frame scanner says which belong to
   * a data message still being assembled: those count against maxIncomingBytes, and the message
   * has messageAssemblyMs from its first byte to its last. Control frames start no deadline.
   */
  private received(conn: Conn, chunk: Buffer): void {
    if (conn.closing) return;
    const { messageAssemblyMs, maxIncomingBytes } = this.deps.budgets;
    const completed = conn.frames.feed(chunk);
    if (completed > 0) this.assembled(conn);
    this.incoming += conn.frames.pendingBytes - conn.assembling;
    conn.assembling = conn.frames.pendingBytes;
    if (this.incoming > maxIncomingBytes) {
      this.stats.closedIncoming++;
      this.closeOverBudget(conn, CLOSE_TRY_AGAIN, `BUSY: incoming messages would hold over ${maxIncomingBytes} bytes (maxIncomingBytes); retry later`, true);
      return;
    }
    if (!conn.frames.inMessage) return;
    conn.assemblyTimer ??= setTimeout(() => {
      this.stats.closedAssembly++;
      this.closeOverBudget(conn, CLOSE_OVER_BUDGET, `LIMIT_EXCEEDED: a message took over ${messageAssemblyMs} ms to arrive (messageAssemblyMs)`, true);
    }, messageAssemblyMs);
  }

  /** A message completed: its bytes are no longer being assembled. */
  private assembled(conn: Conn): void {
    this.incoming -= conn.assembling;
    conn.assembling = 0;
    clearTimeout(conn.assemblyTimer);
    conn.assemblyTimer = undefined;
  }

  /**
   * After every send: over maxOutputBytes unsent, the connection has outputStallMs to catch up;
   * at 4 × maxOutputBytes it is closed at once.
   */
  private checkOutput(conn: Conn): void {
    const { maxOutputBytes, outputStallMs } = this.deps.budgets;
    const buffered = conn.ws.bufferedAmount;
    if (buffered <= maxOutputBytes) {
      conn.overSince = undefined;
      clearTimeout(conn.outputTimer);
      conn.outputTimer = undefined;
      return;
    }
    const over = () => {
      this.stats.closedOutput++;
      this.closeOverBudget(conn, CLOSE_OVER_BUDGET, `LIMIT_EXCEEDED: over ${maxOutputBytes} bytes unread for ${outputStallMs} ms (maxOutputBytes)`, false);
    };
    if (buffered > 4 * maxOutputBytes) return over();
    conn.overSince ??= performance.now();
    conn.outputTimer ??= setTimeout(() => {
      conn.outputTimer = undefined;
      if (conn.ws.bufferedAmount > maxOutputBytes) over();
      else conn.overSince = undefined;
    }, outputStallMs);
  }

  /** Closes with a typed reason; `cut` ends the socket at once (its buffers are what is over budget). */
  private closeOverBudget(conn: Conn, code: number, reason: string, cut: boolean): void {
    if (conn.closing) return;
    conn.closing = true;
    this.deps.log(`closing WebSocket ${conn.owner}: ${reason}`);
    this.assembled(conn);
    this.deps.queue.releaseOwner(conn.owner, 'disconnect');
    conn.ws.close(code, reason.slice(0, 123));
    if (cut) conn.ws.terminate();
    else setTimeout(() => conn.ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  private sendJson(ws: WebSocket, message: ServerMessage): void {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify(message));
    const conn = this.conns.get(ws);
    if (conn) this.checkOutput(conn);
  }

  private sendBinary(ws: WebSocket, header: unknown, payload: Uint8Array): void {
    if (ws.readyState !== WebSocket.OPEN) return;
    sendBinary(ws, header, payload);
    const conn = this.conns.get(ws);
    if (conn) this.checkOutput(conn);
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
    if (isBinary) {
      this.frame(ws, owner, data, receivedAt);
      return;
    }
    let text: string;
    try {
      text = utf8.decode(data);
    } catch {
      this.sendError(ws, new DepthcastError('BAD_REQUEST', 'text message is not valid UTF-8'));
      return;
    }
    this.control(ws, owner, text);
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
      const release = this.hold(data.byteLength);
      try {
        this.deps.queue.submit(owner, frame, this.sink(ws, parsed.data.jobId, parsed.data.stream, release));
      } catch (err) {
        release();
        throw err;
      }
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
      const { queue } = this.deps;
      if (message.jobId !== undefined && !queue.cancelJob(owner, message.jobId, 'client') && message.stream === undefined) {
        throw new DepthcastError('JOB_NOT_FOUND', `no queued or running job ${message.jobId} on this connection`);
      }
      if (message.stream !== undefined) queue.cancelStream(owner, message.stream, 'client');
    } catch (err) {
      this.sendError(ws, err, jobId);
    }
  }

  /**
   * Frames waiting for or in the engine share maxIncomingBytes with messages being assembled: a
   * frame that would pass it gets BUSY. Returns the release, called once at the job's end.
   */
  private hold(bytes: number): () => void {
    const { maxIncomingBytes } = this.deps.budgets;
    if (this.incoming + this.held + bytes > maxIncomingBytes) {
      throw new DepthcastError('BUSY', `frames waiting and arriving hold ${this.incoming + this.held} bytes; this ${bytes}-byte frame would pass maxIncomingBytes ${maxIncomingBytes}; retry later`, { maxIncomingBytes });
    }
    this.held += bytes;
    let released = false;
    return () => {
      if (!released) this.held -= bytes;
      released = true;
    };
  }

  private sink(ws: WebSocket, jobId: string, stream: string, release: () => void): JobSink {
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
        this.sendBinary(ws, { type: 'preview', jobId, step: p.step, total: p.total, width: p.previewWidth ?? 0, height: p.previewHeight ?? 0, format: p.previewFormat ?? 'jpeg' }, p.preview);
      },
      result: ({ header, image }) => {
        release();
        this.sendBinary(ws, header, image);
      },
      cancelled: (reason) => {
        release();
        this.sendJson(ws, { type: 'cancelled', jobId, reason });
      },
      failed: (error) => {
        release();
        this.sendError(ws, error, jobId);
      },
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
