/**
 * The WebAssembly SIMD elementwise passes (src/util/elementwise.wat) write the JavaScript
 * reference's float32 bits, for every pass, odd and even lengths, and hostile values: the
 * schedulers' conformance to diffusers rests on the JavaScript arithmetic, so the two must not
 * differ anywhere. test/wasm-modules.test.ts checks the committed bytes are up to date.
 */
import { describe, expect, it } from 'vitest';
import * as elementwise from '../src/util/elementwise.ts';
import { elementwiseInWasm, elementwiseJs } from '../src/util/elementwise.ts';

function values(n: number, seed: number): Float32Array {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const data = new Float32Array(n);
  const bits = new Uint32Array(data.buffer);
  for (let i = 0; i < n; i++) data[i] = (next() / 2 ** 32 - 0.5) * 8;
  // Any bit pattern now and then: NaNs, infinities, subnormals, huge values.
  for (let i = 3; i < n; i += 13) bits[i] = next();
  for (const [i, v] of [0, -0, 1e-45, -1e-45, 3.4e38, -3.4e38, Infinity].entries()) if (i * 5 < n) data[i * 5] = v;
  return data;
}

/** Indices where a and b differ in bits, NaN matching any NaN. */
function differing(a: Float32Array, b: Float32Array): number[] {
  const ab = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const bb = new Uint32Array(b.buffer, b.byteOffset, b.length);
  const out = [];
  for (let i = 0; i < a.length; i++) if (ab[i] !== bb[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) out.push(i);
  return out;
}

// Coefficients as the schedulers make them: doubles that are not float32 values.
const c = [0.9128709291752769, -0.40824829046386296, -0.1234567890123, 1.4142135623730951];
const passes: Record<string, { inputs: number; run: (impl: typeof elementwiseJs, out: Float32Array, a: Float32Array[]) => void }> = {
  lin2: { inputs: 2, run: (f, out, [x, m]) => f.lin2(out, x!, c[0]!, m!, c[1]!) },
  scale: { inputs: 1, run: (f, out, [x]) => f.scale(out, x!, c[0]!) },
  guide: { inputs: 2, run: (f, out, [u, g]) => f.guide(out, u!, g!, 7.5) },
  euler: { inputs: 2, run: (f, out, [x, m]) => f.euler(out, x!, m!, c[0]!, c[1]!, c[2]!) },
  ancestral: { inputs: 3, run: (f, out, [x, m, n]) => f.ancestral(out, x!, m!, n!, c[0]!, c[1]!, c[2]!, c[3]!) },
  secondOrder: { inputs: 3, run: (f, out, [x, m0, m1]) => f.secondOrder(out, x!, m0!, m1!, c[0]!, c[1]!, c[2]!) },
  lcmNoisy: { inputs: 3, run: (f, out, [x0, x, n]) => f.lcmNoisy(out, x0!, x!, n!, c[0]!, c[1]!, c[2]!, c[3]!) },
};

describe('elementwise passes in WebAssembly SIMD', () => {
  it('run in WebAssembly at latent sizes up to 1024×1024, and fall back beyond the fixed memory', () => {
    expect(elementwiseInWasm(4 * 128 * 128, 3)).toBe(true);
    expect(elementwiseInWasm(4 * 1024 * 1024, 3)).toBe(false);
  });

  for (const [name, pass] of Object.entries(passes)) {
    it(`${name} writes the JavaScript reference's bits`, () => {
      for (const [n, seed] of [[1, 1], [2, 2], [3, 3], [7, 4], [4 * 64 * 64, 5], [4 * 37 * 41 + 1, 6]] as const) {
        const inputs = Array.from({ length: pass.inputs }, (_, k) => values(n, seed * 10 + k));
        const want = new Float32Array(n);
        pass.run(elementwiseJs, want, inputs);
        const got = new Float32Array(n + 1).fill(42);
        pass.run(elementwise as unknown as typeof elementwiseJs, got.subarray(0, n), inputs);
        expect(differing(got.subarray(0, n), want), `${name} at n=${n}`).toEqual([]);
        expect(got[n], 'nothing written past the end').toBe(42);
      }
    });
  }

  it('takes inputs that are views into a larger batch', () => {
    const batch = values(2 * 1000, 9);
    const want = new Float32Array(1000);
    elementwiseJs.guide(want, batch.subarray(0, 1000), batch.subarray(1000), 7.5);
    const got = new Float32Array(1000);
    elementwise.guide(got, batch.subarray(0, 1000), batch.subarray(1000), 7.5);
    expect(differing(got, want)).toEqual([]);
  });

  it('falls back to the same JavaScript where the arrays do not fit', () => {
    const n = 1024 * 1024;
    const inputs = [values(n, 11), values(n, 12), values(n, 13)];
    const want = new Float32Array(n);
    elementwiseJs.ancestral(want, inputs[0]!, inputs[1]!, inputs[2]!, 0.5, 0.25, -0.1, 0.3);
    const got = new Float32Array(n);
    elementwise.ancestral(got, inputs[0]!, inputs[1]!, inputs[2]!, 0.5, 0.25, -0.1, 0.3);
    expect(elementwiseInWasm(n, 3)).toBe(false);
    expect(differing(got, want)).toEqual([]);
  });
});
