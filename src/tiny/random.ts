/**
 * Deterministic weights for the tiny models: a counter-based generator keyed by a string
 * (seed, component, tensor name), so one tensor's values never depend on which other tensors
 * were drawn before it, and only integer arithmetic (plus one final scale) is involved: the
 * same key gives the same float32 bits on every platform.
 */

/** 32-bit FNV-1a of a string's UTF-16 code units. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A 32-bit avalanche mix (the MurmurHash3 finaliser constants). */
function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

export class KeyedRandom {
  private readonly base: number;
  private counter = 0;

  constructor(key: string) {
    this.base = mix32(hashString(key));
  }

  /** Uniform in (0,1). */
  uniform(): number {
    const x = mix32((this.base + Math.imul(this.counter++, 0x9e3779b9)) >>> 0);
    return (x + 0.5) / 4294967296;
  }

  /** Approximately standard normal (Irwin–Hall sum of four uniforms, rescaled to unit variance). */
  normal(): number {
    return (this.uniform() + this.uniform() + this.uniform() + this.uniform() - 2) * Math.sqrt(3);
  }
}

/** `count` values ~ N(0, std²) for the tensor named by `key`. */
export function randomNormal(key: string, count: number, std: number, mean = 0): Float32Array {
  const rng = new KeyedRandom(key);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = mean + std * rng.normal();
  return out;
}
