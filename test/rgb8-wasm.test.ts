/**
 * The WebAssembly SIMD decoder-output → RGB8 conversion (src/image/rgb8.wat) gives the
 * JavaScript reference's bytes exactly (which test/pipelines.test.ts pins against numpy), tails
 * and hostile values included. test/wasm-modules.test.ts checks its bytes are up to date.
 */
import { describe, expect, it } from 'vitest';
import { planarToRgb8Simd } from '../src/image/rgb8.ts';
import { decoderOutputToRgb8, floatDecoderOutputToRgb8 } from '../src/pipelines/steps.ts';

function hostileValues(plane: number, seed: number): Float32Array {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  const data = new Float32Array(3 * plane);
  const bits = new Uint32Array(data.buffer);
  for (let i = 0; i < data.length; i++) data[i] = (next() / 2 ** 32 - 0.5) * 2.4;
  // Any bit pattern: NaNs, infinities, subnormals, huge values.
  for (let i = 0; i < data.length; i += 17) bits[i] = next();
  // Values whose float32 product lands on or next to k + 0.5, for every byte k.
  for (let k = 0, i = 5; k < 256 && i + 2 < data.length; k++, i += 23) {
    const y = Math.fround((k + 0.5) / 255);
    const x = Math.fround(y * 2 - 1);
    bits[i] = new Uint32Array(Float32Array.of(x).buffer)[0]!;
    bits[i + 1] = bits[i]! + 1;
    bits[i + 2] = bits[i]! - 1;
  }
  for (const [i, v] of [NaN, Infinity, -Infinity, 0, -0, 1, -1].entries()) data[i * 3] = v;
  return data;
}

describe('RGB8 in WebAssembly SIMD', () => {
  it('gives the JavaScript reference\'s bytes for every plane size, tail included', () => {
    for (const [plane, seed] of [[1, 1], [15, 2], [16, 3], [17, 4], [64 * 64, 5], [16 * 37 + 9, 6], [512 * 512, 7]] as const) {
      const data = hostileValues(plane, seed);
      const want = decoderOutputToRgb8(data, plane);
      // The SIMD part runs where it can (all but plane % 16 pixels), or the test would only see JavaScript.
      const simd = new Uint8Array(3 * plane);
      expect(planarToRgb8Simd(data, plane, simd)).toBe(plane - (plane % 16));
      const got = floatDecoderOutputToRgb8(data, plane, new Uint8Array(3 * plane).fill(77));
      let differing = 0;
      for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) differing++;
      expect({ plane, differing }).toEqual({ plane, differing: 0 });
    }
  });

  it('leaves an image too large for its fixed memory to JavaScript rather than grow it', () => {
    const plane = 4_500_000;
    const data = new Float32Array(3 * plane).fill(0.25);
    expect(planarToRgb8Simd(data, plane, new Uint8Array(3 * plane))).toBe(0);
    const rgb = floatDecoderOutputToRgb8(data, plane);
    expect([rgb[0], rgb[3 * plane - 1]]).toEqual([159, 159]);
  });

  it('reads planes at any offset of a larger buffer', () => {
    const plane = 48;
    const data = hostileValues(plane, 9);
    const padded = new Float32Array(3 * plane + 5);
    padded.set(data, 5);
    expect([...floatDecoderOutputToRgb8(padded.subarray(5), plane)]).toEqual([...decoderOutputToRgb8(data, plane)]);
  });
});
