import { describe, expect, it } from 'vitest';
import { float16ToFloat32, float16ToFloat32Js, float32ToFloat16, float32ToFloat16Js, fromHalf, HALF_TABLE, toHalf } from '../src/runtime/float16.ts';

describe('float16 conversion', () => {
  it('rounds to nearest even like numpy astype(float16)', () => {
    expect(toHalf(1)).toBe(0x3c00);
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(65520)).toBe(0x7c00); // rounds up to inf
    expect(toHalf(-0)).toBe(0x8000);
    expect(toHalf(Infinity)).toBe(0x7c00);
    expect(toHalf(NaN) & 0x7c00).toBe(0x7c00);
    expect(toHalf(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(toHalf(2 ** -25)).toBe(0x0000); // tie to even (0)
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie between 1 and 1+2^-10 → even
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(fromHalf(0x3555)).toBeCloseTo(0.333251953125, 12);
  });

  it('bulk conversion equals the scalar one bit for bit, edge cases included', () => {
    const values: number[] = [0, -0, 1, -1, 65504, 65519, 65520, 1e6, -1e6, Infinity, -Infinity, 2 ** -14, 2 ** -15, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1e-8];
    let x = 12345;
    for (let i = 0; i < 20000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      values.push(((x / 2 ** 32) - 0.5) * 2 ** ((x % 40) - 20));
    }
    const src = Float32Array.from(values);
    const bulk = float32ToFloat16(src);
    for (let i = 0; i < src.length; i++) expect(bulk[i], `value ${src[i]}`).toBe(toHalf(src[i]!));
    // Every float32 pattern around each rounding boundary of the normal half range: the lowest
    // and highest 2^12 mantissas of each exponent 112..143, both signs.
    const edges = new Uint32Array(32 * 2 * 8192);
    let k = 0;
    for (let e = 112; e <= 143; e++) {
      for (const sign of [0, 0x80000000]) {
        for (let m = 0; m < 4096; m++) edges[k++] = (sign | (e << 23) | m) >>> 0;
        for (let m = 0x7ff000; m <= 0x7fffff; m++) edges[k++] = (sign | (e << 23) | m) >>> 0;
      }
    }
    const edgeFloats = new Float32Array(edges.buffer);
    const edgeHalves = float32ToFloat16(edgeFloats);
    let mismatches = 0;
    for (let i = 0; i < edgeFloats.length; i++) if (edgeHalves[i] !== toHalf(edgeFloats[i]!)) mismatches++;
    expect(mismatches).toBe(0);
    // And every pattern whose dropped 13 bits sit at a tie (0x1000), with either kept lsb.
    const ties = new Uint32Array(1 << 16);
    for (let i = 0; i < ties.length; i++) ties[i] = ((0x38800000 + Math.imul(i, 0x2000)) | 0x1000) >>> 0;
    const tieFloats = new Float32Array(ties.buffer);
    const tieHalves = float32ToFloat16(tieFloats);
    for (let i = 0; i < tieFloats.length; i++) if (tieHalves[i] !== toHalf(tieFloats[i]!)) mismatches++;
    expect(mismatches).toBe(0);
    const back = float16ToFloat32(bulk);
    for (let i = 0; i < src.length; i++) if (Number.isFinite(back[i]!)) expect(back[i]).toBe(fromHalf(bulk[i]!));
  });

  // float32ToFloat16 and float16ToFloat32 run in WebAssembly SIMD (float16.wat); the JavaScript
  // forms are the reference they must match.
  it('SIMD float → half gives the scalar bits for every exponent, subnormal results densely', () => {
    const bits: number[] = [];
    let x = 777;
    const next = () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0);
    for (let e = 0; e < 256; e++) {
      // Where results are half subnormals or round to zero, every 61st mantissa; elsewhere 600 random ones.
      const dense = e >= 100 && e < 113;
      for (const sign of [0, 0x80000000]) {
        if (dense) for (let m = 0; m < 1 << 23; m += 61) bits.push((sign | (e << 23) | m) >>> 0);
        else for (let k = 0; k < 600; k++) bits.push((sign | (e << 23) | (next() & 0x7fffff)) >>> 0);
      }
    }
    // An odd length past one chunk (131072 values), so chunking and the 4-value tail both run.
    const src = new Float32Array(Uint32Array.from(bits).buffer);
    expect(src.length % 4).not.toBe(0);
    expect(src.length).toBeGreaterThan(131072);
    const got = float32ToFloat16(src);
    const want = float32ToFloat16Js(src);
    let mismatches = 0;
    for (let i = 0; i < src.length; i++) if (got[i] !== want[i] || got[i] !== toHalf(src[i]!)) mismatches++;
    expect(mismatches).toBe(0);
  });

  it('SIMD half → float gives HALF_TABLE\'s value for all 65536 halves', () => {
    const all = Uint16Array.from({ length: 65536 + 3 }, (_, i) => i & 0xffff);
    const got = float16ToFloat32(all);
    const want = float16ToFloat32Js(all);
    const gotBits = new Uint32Array(got.buffer);
    const wantBits = new Uint32Array(want.buffer);
    let mismatches = 0;
    for (let i = 0; i < all.length; i++) {
      if (Number.isNaN(want[i])) { if (!Number.isNaN(got[i])) mismatches++; } else if (gotBits[i] !== wantBits[i]) mismatches++;
    }
    expect(mismatches).toBe(0);
    expect(got[0x3c00]).toBe(1);
    expect(Object.is(got[0x8000], -0)).toBe(true);
    expect(got[0x0001]).toBe(HALF_TABLE[1]);
  });
});
