/**
 * The Blender add-on reads the protocol's limits and parameter bounds from a generated JSON file
 * (blender-addon/depthcast/core/protocol_limits.json): the committed file must be what the
 * generator writes from src/protocol/ now (`npm run build:protocol` after changing a limit).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PROTOCOL_JSON_PATH, protocolJson } from '../tools/build-protocol-json.ts';
import { DEFAULT_LIMITS, WIRE_BOUNDS } from '../src/protocol/limits.ts';
import { GenerationParams } from '../src/protocol/schemas.ts';
import { resolveLimits } from '../server/limits.ts';

describe('protocol_limits.json', () => {
  it('is what tools/build-protocol-json.ts writes from src/protocol/ (run `npm run build:protocol`)', () => {
    expect(readFileSync(PROTOCOL_JSON_PATH, 'utf8')).toBe(protocolJson());
  });

  it('carries the service limits and the schema bounds the add-on checks against', () => {
    const json = JSON.parse(protocolJson()) as { limits: unknown; params: Record<string, { maximum?: number; maxLength?: number }> };
    expect(json.limits).toEqual(DEFAULT_LIMITS);
    expect(json.params.steps!.maximum).toBe(WIRE_BOUNDS.steps);
    expect(json.params.prompt!.maxLength).toBe(WIRE_BOUNDS.promptChars);
    // The schema takes its bounds from the same module.
    expect(GenerationParams.safeParse({ prompt: 'x'.repeat(WIRE_BOUNDS.promptChars + 1) }).success).toBe(false);
    expect(GenerationParams.safeParse({ prompt: 'x', steps: WIRE_BOUNDS.steps + 1 }).success).toBe(false);
  });

  it('lets a service configure its limits up to the wire bounds, not past them', () => {
    expect(resolveLimits({ maxSteps: WIRE_BOUNDS.steps }).maxSteps).toBe(WIRE_BOUNDS.steps);
    expect(() => resolveLimits({ maxSteps: WIRE_BOUNDS.steps + 1 })).toThrow(/maxSteps may be at most 1000/);
    expect(() => resolveLimits({ maxPromptChars: WIRE_BOUNDS.promptChars + 1 })).toThrow(/maxPromptChars may be at most 4000/);
  });
});
