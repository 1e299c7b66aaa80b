/**
 * The service's limits and budgets, with a deployment's overrides applied. The protocol limits'
 * defaults and bounds live in src/protocol/limits.ts; the budgets below are the service's own.
 * Every limit is announced in `hello` and enforced before a job is queued, so a client learns
 * what it did wrong at once.
 */
import { DEFAULT_LIMITS, LIMIT_BOUNDS } from '../src/protocol/limits.ts';
import type { Budgets, Limits } from '../src/protocol/schemas.ts';

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
 * Server-side budgets per connection and for the whole service (docs/protocol.md, "Budgets per
 * connection"). Unlike `Limits` they bound what a client can make the service hold, not what a
 * frame may ask for; `hello` announces them too (`budgets`), so a client can pace itself. The
 * schema, with what each one bounds, is in src/protocol/schemas.ts.
 */
export type { Budgets };

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
