/**
 * The protocol's numbers, in one place (docs/protocol.md, "Limits"). Two kinds:
 *  - WIRE_BOUNDS: what a message can carry at all. The zod schemas (schemas.ts) take their bounds
 *    from here, and a service may not configure a limit above its bound.
 *  - DEFAULT_LIMITS: what a service enforces unless configured otherwise, announced in `hello`
 *    (server/limits.ts resolves the overrides). Checked after the schema, so a value between the
 *    two gets LIMIT_EXCEEDED, naming the service's limit, rather than a schema error.
 * The Blender add-on reads both from blender-addon/depthcast/core/protocol_limits.json, which
 * tools/build-protocol-json.ts writes from this module and the schemas.
 */
import { DepthcastError } from '../errors.ts';
import type { Limits } from './schemas.ts';

export const WIRE_BOUNDS = Object.freeze({
  /** Characters of a prompt, a negative prompt or a layout object's prompt. */
  promptChars: 4000,
  /** Denoising steps of a frame. */
  steps: 1000,
  /** Characters of a model name. */
  modelNameChars: 128,
  /** Objects in one layout. */
  layoutObjects: 256,
  /** Characters of a layout object's label. */
  labelChars: 200,
});

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  /** Largest WebSocket message or HTTP body the service accepts (64 MiB: a 2048² f32 depth map is 16 MiB). */
  maxMessageBytes: 64 * 1024 * 1024,
  /** Depth (and layout) pixels per frame: 2048². */
  maxDepthPixels: 2048 * 2048,
  /** Output pixels per image (the requested size, reached by upscaling the generated image): 4096². */
  maxOutputPixels: 4096 * 4096,
  /** Pixels a model generates when a frame asks for sizing "exact": 1024². Native sizing stays at the model's own size. */
  maxGenerationPixels: 1024 * 1024,
  /** Characters of the prompt, the negative prompt and each layout object's prompt. */
  maxPromptChars: 2000,
  /** Denoising steps per job. */
  maxSteps: 150,
  /** Jobs waiting (not running) across all clients; past it a frame gets BUSY. */
  maxQueuedJobs: 32,
  /** Layout objects that carry a prompt (each adds a UNet evaluation per step). */
  maxRegions: 8,
});

/** The wire bound each configurable limit may not exceed (a larger setting could never take effect). */
export const LIMIT_BOUNDS: Readonly<Partial<Record<keyof Limits, number>>> = Object.freeze({
  maxPromptChars: WIRE_BOUNDS.promptChars,
  maxSteps: WIRE_BOUNDS.steps,
  maxRegions: WIRE_BOUNDS.layoutObjects,
});

/** LIMIT_EXCEEDED when `value` (of `what`, counted in `unit`) is above the limit `max`. */
export function checkLimit(what: string, value: number, max: number, unit: string): void {
  if (value > max) throw new DepthcastError('LIMIT_EXCEEDED', `${what} is ${value} ${unit}; this service allows at most ${max}`, { limit: max });
}
