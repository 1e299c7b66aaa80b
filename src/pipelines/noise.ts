/**
 * Noise sources. The seeded generator is our own (xoshiro128** + Box-Muller in float64), so
 * the same seed gives the same image on every build of depthcast whatever the device; the
 * array source replays the reference's draws for conformance and fails when it runs out.
 */
import { randomInt } from 'node:crypto';
import { DepthcastError } from '../errors.ts';
import type { NoiseSource } from '../schedulers/types.ts';

export class SeededNoise implements NoiseSource {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spare: number | null = null;

  constructor(readonly seed: number) {
    // splitmix32 expands the 32-bit seed into the 128-bit state.
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  private nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    this.s0 >>>= 0;
    this.s1 >>>= 0;
    return result;
  }

  /** Uniform in (0, 1), 53 bits. */
  private uniform(): number {
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo + 0.5) / 9007199254740992;
  }

  next(length: number): Float32Array {
    const out = new Float32Array(length);
    for (let i = 0; i < length; i++) {
      if (this.spare !== null) {
        out[i] = this.spare;
        this.spare = null;
        continue;
      }
      const r = Math.sqrt(-2 * Math.log(this.uniform()));
      const theta = 2 * Math.PI * this.uniform();
      out[i] = r * Math.cos(theta);
      this.spare = r * Math.sin(theta);
    }
    return out;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Replays fixed arrays in order; asking for more than was supplied is an error, never a silent random draw. */
export class ArrayNoise implements NoiseSource {
  private index = 0;
  constructor(private readonly arrays: Float32Array[]) {}

  next(length: number): Float32Array {
    const a = this.arrays[this.index];
    if (!a) throw new DepthcastError('OUT_OF_NOISE', `noise draw ${this.index + 1} requested but only ${this.arrays.length} arrays were supplied`);
    if (a.length !== length) throw new DepthcastError('OUT_OF_NOISE', `noise draw ${this.index + 1} has ${a.length} values, ${length} needed`);
    this.index++;
    return a;
  }

  get remaining(): number {
    return this.arrays.length - this.index;
  }
}

export function randomSeed(): number {
  return randomInt(0, 2 ** 32 - 1);
}
