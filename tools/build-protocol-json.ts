// Writes the protocol's limits and parameter bounds (src/protocol/) as JSON for the Blender
// add-on, whose Python cannot import them: blender-addon/depthcast/core/protocol_limits.json.
// Run by `npm run build:protocol` and `npm run addon:zip`; test/protocol-limits.test.ts fails when
// the committed file differs from what this writes.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DEFAULT_LIMITS, WIRE_BOUNDS } from '../src/protocol/limits.ts';
import { GenerationParams, LayoutObject, PROTOCOL_VERSION } from '../src/protocol/schemas.ts';

export const PROTOCOL_JSON_PATH = fileURLToPath(new URL('../blender-addon/depthcast/core/protocol_limits.json', import.meta.url));

/** JSON Schema properties of an object schema, as a client fills it in (defaults optional). */
function properties(schema: z.ZodObject): unknown {
  return (z.toJSONSchema(schema, { io: 'input' }) as { properties: unknown }).properties;
}

/** The file's text: stable key order, two-space indent, trailing newline. */
export function protocolJson(): string {
  return `${JSON.stringify({
    generatedBy: 'tools/build-protocol-json.ts from src/protocol/limits.ts and schemas.ts; do not edit',
    protocol: PROTOCOL_VERSION,
    limits: DEFAULT_LIMITS,
    bounds: WIRE_BOUNDS,
    params: properties(GenerationParams),
    layoutObject: properties(LayoutObject),
  }, null, 2)}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(PROTOCOL_JSON_PATH, protocolJson());
  console.log(`wrote ${PROTOCOL_JSON_PATH}`);
}
