/**
 * The service's explicit limits (docs/protocol.md, "Limits"). Every one is announced in `hello`
 * and enforced before a job is queued, so a client learns what it did wrong at once.
 */
import { DEFAULT_SIZE_LIMITS } from '../src/pipelines/sizing.ts';
import type { Budgets, Limits } from '../src/protocol/schemas.ts';

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  /** Largest WebSocket message or HTTP body the service accepts (64 MiB: a 2048² f32 depth map is 16 MiB). */
  maxMessageBytes: 64 * 1024 * 1024,
  /** Depth (and layout) pixels per frame: 2048². */
  maxDepthPixels: 2048 * 2048,
  /** Output pixels per image (the requested size, reached by upscaling the generated image): 4096². */
  maxOutputPixels: DEFAULT_SIZE_LIMITS.maxOutputPixels,
  /** Pixels a model generates when a frame asks for sizing "exact": 1024². Native sizing stays at the model's own size. */
  maxGenerationPixels: DEFAULT_SIZE_LIMITS.maxGenerationPixels,
  /** Characters of the prompt, the negative prompt and each layout object's prompt. */
  maxPromptChars: 2000,
  /** Denoising steps per job. */
  maxSteps: 150,
  /** Jobs waiting (not running) across all clients; past it a frame gets BUSY. */
  maxQueuedJobs: 32,
  /** Layout objects that carry a prompt (each adds a UNet evaluation per step). */
  maxRegions: 8,
});

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

export function resolveLimits(overrides: Partial<Limits> = {}): Limits {
  return withOverrides('limit', DEFAULT_LIMITS, overrides);
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
