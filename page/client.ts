/**
 * WebSocket client of the page: one connection to /v1/ws, reconnecting with backoff, speaking
 * the shared protocol (src/protocol, bundled). It only moves messages; main.ts decides what to
 * send and ui.ts what to show.
 */
import { decodeBinaryMessage } from '../src/protocol/frame.ts';
import {
  PROTOCOL_VERSION,
  ServerBinaryHeader,
  ServerMessage,
  describeZodError,
  type ServerMessage as ServerMessageT,
  type ServerBinaryHeader as ServerBinaryHeaderT,
} from '../src/protocol/schemas.ts';
import { backoffMs } from './live.ts';

export type ConnectionState =
  | { kind: 'connecting'; attempt: number }
  | { kind: 'open' }
  | { kind: 'ready' }
  | { kind: 'waiting'; attempt: number; retryAt: number; reason: string }
  | { kind: 'closed'; reason: string };

export interface ClientEvents {
  state(s: ConnectionState): void;
  message(m: ServerMessageT): void;
  binary(header: ServerBinaryHeaderT, payload: Uint8Array): void;
  /** A message the page could not understand; shown like a server error. */
  protocolError(message: string): void;
}

/** ws(s)://<this page's host>/v1/ws, carrying the page's own ?token= along. */
export function serviceSocketUrl(loc: { protocol: string; host: string; search: string }): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = new URLSearchParams(loc.search).get('token');
  return `${scheme}//${loc.host}/v1/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
}

export class DepthcastClient {
  private ws: WebSocket | undefined;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private everOpened = false;
  state: ConnectionState = { kind: 'closed', reason: 'not started' };

  constructor(private readonly url: string, private readonly events: ClientEvents) {}

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(reason = 'closed by the page'): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.ws?.close(1000, reason);
    this.ws = undefined;
    this.setState({ kind: 'closed', reason });
  }

  /** Reconnect now instead of waiting for the backoff. */
  retryNow(): void {
    if (this.state.kind !== 'waiting' && this.state.kind !== 'closed') return;
    if (this.timer) clearTimeout(this.timer);
    this.stopped = false;
    this.connect();
  }

  get ready(): boolean {
    return this.state.kind === 'ready' && this.ws?.readyState === WebSocket.OPEN;
  }

  /** Bytes queued in the socket but not yet sent (to avoid piling frames on a slow link). */
  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  sendBinary(bytes: Uint8Array): boolean {
    if (!this.ready || !this.ws) return false;
    this.ws.send(bytes);
    return true;
  }

  sendJson(message: unknown): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  private setState(s: ConnectionState): void {
    this.state = s;
    this.events.state(s);
  }

  private connect(): void {
    this.setState({ kind: 'connecting', attempt: this.attempt });
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleReconnect(`cannot open ${this.url}: ${(err as Error).message}`);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.everOpened = true;
      this.setState({ kind: 'open' });
      ws.send(JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, client: 'depthcast-page' }));
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (ws !== this.ws) return;
      this.onMessage(ev.data);
    };
    ws.onclose = (ev: CloseEvent) => {
      if (ws !== this.ws) return;
      this.ws = undefined;
      if (this.stopped) return;
      let reason: string;
      if (!opened) {
        reason = this.everOpened
          ? 'the service is not reachable'
          : 'the service refused the connection or is not reachable (a token is needed when the service is started with one: add ?token=… to this page\'s address)';
      } else {
        reason = `connection closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
      }
      this.scheduleReconnect(reason);
    };
    // onerror carries no detail in browsers; onclose follows it and reports.
    ws.onerror = () => {};
  }

  private scheduleReconnect(reason: string): void {
    const delay = backoffMs(this.attempt);
    this.attempt++;
    this.setState({ kind: 'waiting', attempt: this.attempt, retryAt: Date.now() + delay, reason });
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.stopped) this.connect();
    }, delay);
  }

  private onMessage(data: unknown): void {
    if (typeof data === 'string') {
      let json: unknown;
      try {
        json = JSON.parse(data);
      } catch {
        this.events.protocolError(`the service sent text that is not JSON: ${data.slice(0, 120)}`);
        return;
      }
      const parsed = ServerMessage.safeParse(json);
      if (!parsed.success) {
        // Errors are shown even when other fields drift, so the user sees the code and message.
        const j = json as { type?: unknown; code?: unknown; message?: unknown };
        if (j && j.type === 'error') {
          this.events.message({ type: 'error', code: String(j.code ?? 'UNKNOWN'), message: String(j.message ?? '') });
        } else {
          this.events.protocolError(`unexpected message from the service: ${describeZodError(parsed.error)}`);
        }
        return;
      }
      if (parsed.data.type === 'hello') {
        this.attempt = 0;
        this.setState({ kind: 'ready' });
      }
      this.events.message(parsed.data);
      return;
    }
    if (data instanceof ArrayBuffer) {
      let decoded;
      try {
        decoded = decodeBinaryMessage(new Uint8Array(data));
      } catch (err) {
        this.events.protocolError(`bad binary message from the service: ${(err as Error).message}`);
        return;
      }
      const header = ServerBinaryHeader.safeParse(decoded.header);
      if (!header.success) {
        this.events.protocolError(`unexpected binary header from the service: ${describeZodError(header.error)}`);
        return;
      }
      this.events.binary(header.data, decoded.payload);
    }
  }
}
