/**
 * Full-resolution working buffers kept from one generation to the next. A fresh 3 MiB typed
 * array costs ~1-2 ms here before its first use (the kernel faults in and zeroes every page),
 * more than the loop that fills it, so the engine, which runs one job at a time, hands its
 * pipelines a Scratch and they reuse one buffer per role. Contents are whatever the last job left:
 * every user overwrites what it reads, and nothing may keep a buffer after its job ends.
 */
export class Scratch {
  /** The UNet's prediction read back each step, before guidance combines it (pipelines/denoise.ts). */
  readonly prediction = new Reused((n) => new Float32Array(n));
  /** The ControlNet conditioning image once per batch entry, for an fp32 ControlNet (pipelines/controlnet.ts). */
  readonly controlBatch = new Reused((n) => new Float32Array(n));
  /** The same as raw IEEE halves, for an fp16 ControlNet. */
  readonly controlBatchHalf = new Reused((n) => new Uint16Array(n));
  /** The control image as 8-bit levels, for the composed graph's exact integer input (pipelines/controlnet.ts). */
  readonly controlLevels8 = new Reused((n) => new Uint8Array(n));
  /** The same as 16-bit levels, when the source had 16 bits. */
  readonly controlLevels16 = new Reused((n) => new Uint16Array(n));
  /** The decoded image as interleaved RGB bytes (pipelines/steps.ts). */
  readonly rgb8 = new Reused((n) => new Uint8Array(n));
  /** The ControlNet control image made from the depth frame (engine/prepare.ts). */
  readonly controlImage = new Reused((n) => new Float32Array(n));
  /** The depth frame's nearness, where it cannot be written into controlImage (engine/prepare.ts). */
  readonly nearness = new Reused((n) => new Float32Array(n));
}

/** One role's buffer: grown when a larger one is asked for, else reused. */
export class Reused<T extends Float32Array | Uint8Array | Uint16Array> {
  private held?: T;

  constructor(private readonly create: (length: number) => T) {}

  /** A view of `length` values (the buffer itself when the length matches). */
  view(length: number): T {
    if (!this.held || this.held.length < length) this.held = this.create(length);
    return this.held.length === length ? this.held : (this.held.subarray(0, length) as T);
  }
}
