/**
 * Full-resolution working buffers kept from one generation to the next. A fresh 3 MiB typed
 * array costs ~1-2 ms here before its first use (the kernel faults in and zeroes every page),
 * more than the loop that fills it, so the engine, which runs one job at a time, hands its
 * pipelines a Scratch and they reuse buffers by role. Contents are whatever the last job left:
 * every user overwrites what it reads, and nothing may keep a buffer after its job ends.
 */
export class Scratch {
  private readonly float32s = new Map<string, Float32Array>();
  private readonly bytes = new Map<string, Uint8Array>();
  private readonly halves = new Map<string, Uint16Array>();

  /** A Float32Array view of `length` values for `role`, reused while the capacity suffices. */
  float32(role: string, length: number): Float32Array {
    return reuse(this.float32s, role, length, (n) => new Float32Array(n));
  }

  /** A Uint8Array view of `length` bytes for `role`. */
  uint8(role: string, length: number): Uint8Array {
    return reuse(this.bytes, role, length, (n) => new Uint8Array(n));
  }

  /** A Uint16Array view of `length` values for `role` (raw IEEE halves for fp16 models). */
  uint16(role: string, length: number): Uint16Array {
    return reuse(this.halves, role, length, (n) => new Uint16Array(n));
  }
}

function reuse<T extends Float32Array | Uint8Array | Uint16Array>(held: Map<string, T>, role: string, length: number, create: (length: number) => T): T {
  let buffer = held.get(role);
  if (!buffer || buffer.length < length) {
    buffer = create(length);
    held.set(role, buffer);
  }
  return buffer.length === length ? buffer : (buffer.subarray(0, length) as T);
}

/** Where a buffer for `role` comes from: the scratch when the caller gave one, else a fresh array. */
export function float32For(scratch: Scratch | undefined, role: string, length: number): Float32Array {
  return scratch ? scratch.float32(role, length) : new Float32Array(length);
}

export function uint8For(scratch: Scratch | undefined, role: string, length: number): Uint8Array {
  return scratch ? scratch.uint8(role, length) : new Uint8Array(length);
}

export function uint16For(scratch: Scratch | undefined, role: string, length: number): Uint16Array {
  return scratch ? scratch.uint16(role, length) : new Uint16Array(length);
}
