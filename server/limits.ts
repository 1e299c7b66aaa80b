/**
 * The service's limits and budgets, with a deployment's overrides applied. The protocol limits'
 * defaults and bounds live in src/protocol/limits.ts; the budgets below are the service's own.
 * Every limit is announced in `hello` and enforced before a job is queued, so a client learns
 * what it did wrong at once.
 */
import { DEFAULT_LIMITS, LIMIT_BOUNDS } from '../src/protocol/limits.ts';
import type { Limits } from '../src/protocol/schemas.ts';

/** Defaults with the overrides applied; every override must be a positive integer. */
function withOverrides<T extends object>(what: string, defaults: Readonly<T>, overrides: Partial<T>): T {
  const resolved: Record<string, number> = { ...(defaults as Record<string, number>) };
  for (const [key, value] of Object.entries(overrides) as [string, number | undefined][]) {
    if (value === undefined) continue;
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${what} ${key} must be a positive integer, got ${value}`);
    resolved[key] = value;
  }
  return resolved as T;
}

/** The limits with the overrides applied; none may exceed its wire bound, which the schema would enforce first. */
export function resolveLimits(overrides: Partial<Limits> = {}): Limits {
  const limits = withOverrides('limit', DEFAULT_LIMITS, overrides);
  for (const [key, bound] of Object.entries(LIMIT_BOUNDS) as [keyof Limits, number][]) {
    if (limits[key] > bound) throw new RangeError(`limit ${key} may be at most ${bound} (the protocol's bound), got ${limits[key]}`);
  }
  return limits;
}

/**
 * ws closes a socket (code 1009) on messages above its maxPayload. The service sets that hard cap
 * well above maxMessageBytes and answers messages between the two with LIMIT_EXCEEDED itself,
 * so an oversized frame costs the client one error, not its connection.
 */
export function hardPayloadCap(limits: Limits): number {
  return limits.maxMessageBytes * 2 + 1024 * 1024;
}

/**
 * Server-side budgets per connection and for the whole service (docs/protocol.md, "Budgets").
 * Unlike `Limits` they are not part of a frame's contract, so `hello` does not announce them.
 */
export interface Budgets {
  /** Live and batch streams one WebSocket connection may have at once; a frame for one more gets LIMIT_EXCEEDED. */
  maxStreamsPerConnection: number;
  /** Jobs one connection (or all HTTP requests together) may have waiting; past it BUSY, while others still get room. */
  maxQueuedPerConnection: number;
  /** Bytes a connection may leave unread in its send buffer (previews are dropped before that). */
  maxOutputBytes: number;
  /** How long a connection may stay over maxOutputBytes before it is closed (4008). */
  outputStallMs: number;
  /** How long one incoming WebSocket message may take to arrive, from its first byte (4008 past it). */
  messageAssemblyMs: number;
  /**
   * Bytes of incoming WebSocket messages, all connections together: being assembled (the
   * connection that would pass it is closed, 1013) or held by queued and running jobs (a frame
   * that would pass it gets BUSY).
   */
  maxIncomingBytes: number;
  /** WebSocket connections at once; past it the upgrade gets 429 BUSY. */
  maxConnections: number;
  /** An HTTP body above this many bytes (or of unknown length) is large. */
  largeBodyBytes: number;
  /** Large HTTP bodies held at once (from reading until the answer); past it 429 BUSY. */
  maxLargeBodies: number;
}

export const DEFAULT_BUDGETS: Readonly<Budgets> = Object.freeze({
  maxStreamsPerConnection: 16,
  maxQueuedPerConnection: 8,
  maxOutputBytes: 16 * 1024 * 1024,
  outputStallMs: 15_000,
  messageAssemblyMs: 60_000,
  maxIncomingBytes: 384 * 1024 * 1024,
  maxConnections: 64,
  largeBodyBytes: 8 * 1024 * 1024,
  maxLargeBodies: 2,
});

export function resolveBudgets(overrides: Partial<Budgets> = {}): Budgets {
  return withOverrides('budget', DEFAULT_BUDGETS, overrides);
}
