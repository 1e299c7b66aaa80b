/**
 * Who may drive the service, shared by HTTP and WebSocket (docs/protocol.md, "Security"):
 * - Origin: browsers send it on WebSocket upgrades and cross-site POSTs. Only the service's own
 *   page and explicitly allowed origins pass, so a page on another site cannot use the local GPU
 *   (cross-site WebSocket hijacking). Requests without Origin (Blender, scripts) pass.
 * - Host: on loopback, the Host header must name a loopback address or an allowed origin's
 *   host, which defeats DNS rebinding.
 * - Token: when set, every /v1 request needs `Authorization: Bearer <token>` (WebSocket
 *   upgrades may pass `?token=` instead, since browsers cannot set headers there).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { DepthcastError } from '../src/errors.ts';

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]';
}

/** `host` as it appears in a URL (IPv6 in brackets). */
export function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** Normalised origin (scheme://host[:port], lower case, default port dropped), or undefined if not an http(s) origin. */
export function normalizeOrigin(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
    return url.origin;
  } catch {
    return undefined;
  }
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

export class Security {
  private readonly own = new Set<string>();
  private readonly extra = new Set<string>();
  private readonly hosts = new Set<string>();
  private readonly tokenDigest?: Buffer;
  private readonly checkHosts: boolean;

  constructor(readonly bindHost: string, allowedOrigins: string[], token?: string) {
    for (const o of allowedOrigins) {
      const n = normalizeOrigin(o);
      if (!n) throw new DepthcastError('BAD_REQUEST', `allowed origin ${JSON.stringify(o)} is not an http(s) origin like http://localhost:5173 ("*" is not supported)`);
      this.extra.add(n);
      this.hosts.add(new URL(n).host.replace(/:\d+$/, ''));
    }
    if (token !== undefined) {
      if (!token) throw new DepthcastError('BAD_REQUEST', 'the token must not be empty');
      this.tokenDigest = digest(token);
    }
    this.checkHosts = isLoopbackHost(bindHost);
    for (const name of [...LOOPBACK_NAMES, urlHost(bindHost)]) this.hosts.add(name.toLowerCase());
  }

  get tokenRequired(): boolean {
    return this.tokenDigest !== undefined;
  }

  /** Called once the port is known: the service's own page origins. */
  setPort(port: number): void {
    const names = isLoopbackHost(this.bindHost) ? [...LOOPBACK_NAMES, urlHost(this.bindHost)] : isWildcard(this.bindHost) ? [...LOOPBACK_NAMES, ...interfaceHosts()] : [urlHost(this.bindHost)];
    for (const name of names) this.own.add(`http://${name.toLowerCase()}:${port}`);
  }

  /** Throws FORBIDDEN_ORIGIN unless the origin is absent, the service's own, or allowed. */
  checkOrigin(origin: string | undefined): void {
    if (origin === undefined) return;
    const n = normalizeOrigin(origin);
    if (n && (this.own.has(n) || this.extra.has(n))) return;
    throw new DepthcastError('FORBIDDEN_ORIGIN', `origin ${JSON.stringify(origin)} may not use this service; start it with --allow-origin ${n ?? '<origin>'} to allow that page`);
  }

  /** Extra allowed origins get CORS headers; the own page is same-origin and needs none. */
  corsOrigin(origin: string | undefined): string | undefined {
    const n = origin === undefined ? undefined : normalizeOrigin(origin);
    return n && this.extra.has(n) ? origin : undefined;
  }

  /** On loopback, the Host header must be a loopback name or an allowed origin's host (DNS rebinding). */
  checkHost(hostHeader: string | undefined): void {
    if (!this.checkHosts) return;
    const name = (hostHeader ?? '').toLowerCase().replace(/:\d+$/, '');
    if (this.hosts.has(name)) return;
    throw new DepthcastError('FORBIDDEN_ORIGIN', `Host ${JSON.stringify(hostHeader ?? '')} is not this service's address; use http://127.0.0.1 or http://localhost`);
  }

  /** Throws UNAUTHORIZED unless no token is configured or the request carries it. */
  checkToken(authorization: string | undefined, queryToken?: string | null): void {
    if (!this.tokenDigest) return;
    const bearer = /^Bearer\s+(.+)$/i.exec(authorization ?? '')?.[1]?.trim();
    const given = bearer ?? queryToken ?? undefined;
    if (given !== undefined && timingSafeEqual(digest(given), this.tokenDigest)) return;
    throw new DepthcastError('UNAUTHORIZED', given === undefined
      ? 'this service needs a token: send Authorization: Bearer <token> (WebSocket: ?token=<token>)'
      : 'the token is wrong');
  }
}

function interfaceHosts(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.push(urlHost(a.address));
  return out;
}
