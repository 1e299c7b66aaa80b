/** The committed WebAssembly bytes are what their .wat sources assemble to (tools/build-wasm.mjs). */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs tool without type declarations
import { assemble, moduleSource, WASM_MODULES } from '../tools/build-wasm.mjs';

describe('WebAssembly modules', () => {
  for (const entry of WASM_MODULES as { wat: string; out: string; constant: string }[]) {
    it(`${entry.out} is the build of ${entry.wat}`, async () => {
      const bytes: Buffer = await assemble(entry.wat);
      expect(readFileSync(new URL(`../${entry.out}`, import.meta.url), 'utf8')).toBe(moduleSource(entry, bytes));
    });
  }
});
