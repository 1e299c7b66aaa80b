import { describe, expect, it } from 'vitest';
import { float16ToFloat32, float32ToFloat16, fromHalf, toHalf } from '../src/runtime/float16.ts';

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
    const back = float16ToFloat32(bulk);
    for (let i = 0; i < src.length; i++) if (Number.isFinite(back[i]!)) expect(back[i]).toBe(fromHalf(bulk[i]!));
  });
});
