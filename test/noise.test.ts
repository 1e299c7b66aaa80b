import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ArrayNoise, SeededNoise } from '../src/pipelines/noise.ts';

describe('seeded noise', () => {
  it('is standard normal: mean, variance, kurtosis and tails', () => {
    const x = new SeededNoise(9).next(1_000_000);
    let mean = 0;
    for (const v of x) mean += v;
    mean /= x.length;
    let variance = 0;
    let m4 = 0;
    let beyond3 = 0;
    let beyond4 = 0;
    for (const v of x) {
      variance += (v - mean) ** 2;
      m4 += (v - mean) ** 4;
      if (Math.abs(v) > 3) beyond3++;
      if (Math.abs(v) > 4) beyond4++;
    }
    variance /= x.length;
    expect(Math.abs(mean)).toBeLessThan(0.005);
    expect(Math.abs(variance - 1)).toBeLessThan(0.01);
    expect(Math.abs(m4 / x.length / variance ** 2 - 3)).toBeLessThan(0.05);
    expect(beyond3 / x.length).toBeGreaterThan(0.0022); // P(|z|>3) = 0.0027
    expect(beyond3 / x.length).toBeLessThan(0.0032);
    expect(beyond4).toBeGreaterThan(20); // P(|z|>4) = 6.3e-5: the tail path is exercised
  });

  it('is deterministic per seed and differs across seeds', () => {
    expect([...new SeededNoise(1).next(1000)]).toEqual([...new SeededNoise(1).next(1000)]);
    expect([...new SeededNoise(1).next(10)]).not.toEqual([...new SeededNoise(2).next(10)]);
  });

  it('gives the same stream as ever for a seed: seeds reproduce images across releases', () => {
    // Pinned from the generator as first released; a faster implementation must not move it.
    expect([...new SeededNoise(42).next(4)].map((v) => v.toPrecision(9))).toEqual(['-0.857432604', '0.561084449', '0.630697310', '-0.393033862']);
    const noise = new SeededNoise(12345);
    const million = noise.next(1_000_000); // thousands of draws take the slow path and the tail
    const hash = createHash('sha256').update(Buffer.from(million.buffer)).update(Buffer.from(noise.next(7).buffer));
    expect(hash.digest('hex').slice(0, 16)).toBe('841dcf549f5ade93');
  });

  it('continues the same sequence across calls', () => {
    const a = new SeededNoise(3);
    const joined = [...a.next(500), ...a.next(500)];
    expect(joined).toEqual([...new SeededNoise(3).next(1000)]);
  });
});

describe('array noise', () => {
  it('replays in order and refuses to invent draws', () => {
    const n = new ArrayNoise([Float32Array.of(1, 2), Float32Array.of(3, 4)]);
    expect([...n.next(2)]).toEqual([1, 2]);
    expect(() => n.next(3)).toThrow(expect.objectContaining({ code: 'OUT_OF_NOISE' }));
    expect([...n.next(2)]).toEqual([3, 4]);
    expect(() => n.next(2)).toThrow(expect.objectContaining({ code: 'OUT_OF_NOISE' }));
  });
});
