/**
 * Noise sources. The seeded generator is our own (xoshiro128** with Ziggurat normals, about
 * one integer draw per sample), so the same seed gives the same image with this version of
 * depthcast whatever the device; the array source replays the reference's draws for
 * conformance and fails when it runs out.
 */
import { randomInt } from 'node:crypto';
import { DepthcastError } from '../errors.ts';
import type { NoiseSource } from '../schedulers/types.ts';

/**
 * Ziggurat tables for the standard normal (Marsaglia & Tsang, 128 layers). Built once; the
 * fast path of a draw is one 32-bit integer, a table compare and a multiply.
 */
const ZIG = (() => {
  const kn = new Uint32Array(128);
  const wn = new Float64Array(128);
  const fn = new Float64Array(128);
  const m1 = 2147483648;
  let dn = 3.442619855899;
  let tn = dn;
  const vn = 9.91256303526217e-3;
  const q = vn / Math.exp(-0.5 * dn * dn);
  kn[0] = Math.floor((dn / q) * m1);
  kn[1] = 0;
  wn[0] = q / m1;
  wn[127] = dn / m1;
  fn[0] = 1;
  fn[127] = Math.exp(-0.5 * dn * dn);
  for (let i = 126; i >= 1; i--) {
    dn = Math.sqrt(-2 * Math.log(vn / dn + Math.exp(-0.5 * dn * dn)));
    kn[i + 1] = Math.floor((dn / tn) * m1);
    tn = dn;
    fn[i] = Math.exp(-0.5 * dn * dn);
    wn[i] = dn / m1;
  }
  return { kn, wn, fn, r: 3.442619855899 };
})();

export class SeededNoise implements NoiseSource {
  /**
   * xoshiro128** state as int32 words. Kept in an Int32Array, not in number fields: the fields
   * held uint32 values, which V8 boxes as heap numbers, and the slow path (~2.6% of draws)
   * stored and reloaded all four, which made it ~2/3 of a draw's cost.
   */
  private readonly state = new Int32Array(4);

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
    for (let i = 0; i < 4; i++) this.state[i] = next();
  }

  /** xoshiro128**, as a signed 32-bit integer. */
  private nextInt32(): number {
    const st = this.state;
    const s0 = st[0]!;
    const s1 = st[1]!;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9);
    const t = s1 << 9;
    const s2 = st[2]! ^ s0;
    const s3 = st[3]! ^ s1;
    st[1] = s1 ^ s2;
    st[0] = s0 ^ s3;
    st[2] = s2 ^ t;
    st[3] = (s3 << 11) | (s3 >>> 21);
    return result;
  }

  /** Uniform in (0, 1). */
  private uniform(): number {
    return ((this.nextInt32() >>> 0) + 0.5) / 4294967296;
  }

  /** The rest of a draw whose first integer `first` missed the fast path. */
  private slowNormal(first: number): number {
    const { kn, wn, fn, r } = ZIG;
    let hz = first;
    for (;;) {
      const iz = hz & 127;
      if (Math.abs(hz) < kn[iz]!) return hz * wn[iz]!;
      // Slow path (~2.5% of draws): the base strip's tail, or a wedge between layers.
      if (iz === 0) {
        let x: number;
        let y: number;
        do {
          x = -Math.log(this.uniform()) / r;
          y = -Math.log(this.uniform());
        } while (y + y < x * x);
        return hz > 0 ? r + x : -r - x;
      }
      const x = hz * wn[iz]!;
      if (fn[iz]! + this.uniform() * (fn[iz - 1]! - fn[iz]!) < Math.exp(-0.5 * x * x)) return x;
      hz = this.nextInt32();
    }
  }

  next(length: number): Float32Array {
    const out = new Float32Array(length);
    this.fill(out);
    return out;
  }

  fill(out: Float32Array): void {
    const length = out.length;
    const { kn, wn } = ZIG;
    const st = this.state;
    // The fast path inlines xoshiro128** on local state; the rare slow path goes through slowNormal().
    let s0 = st[0]!;
    let s1 = st[1]!;
    let s2 = st[2]!;
    let s3 = st[3]!;
    for (let i = 0; i < length; i++) {
      const m = Math.imul(s1, 5);
      const result = Math.imul((m << 7) | (m >>> 25), 9);
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      const iz = result & 127;
      if (Math.abs(result) < kn[iz]!) {
        out[i] = result * wn[iz]!;
        continue;
      }
      st[0] = s0;
      st[1] = s1;
      st[2] = s2;
      st[3] = s3;
      out[i] = this.slowNormal(result);
      s0 = st[0]!;
      s1 = st[1]!;
      s2 = st[2]!;
      s3 = st[3]!;
    }
    st[0] = s0;
    st[1] = s1;
    st[2] = s2;
    st[3] = s3;
  }
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
