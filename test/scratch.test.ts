/** The engine's reused working buffers: one per role, grown on demand, never shared between roles. */
import { describe, expect, it } from 'vitest';
import { Scratch } from '../src/util/scratch.ts';

describe('Scratch', () => {
  it('hands a role the same memory while its capacity suffices, and grows it when asked for more', () => {
    const scratch = new Scratch();
    const first = scratch.prediction.view(100);
    first.fill(7);
    const smaller = scratch.prediction.view(60);
    expect(smaller.buffer).toBe(first.buffer);
    expect(smaller.length).toBe(60);
    expect(scratch.prediction.view(100)).toBe(first);
    const larger = scratch.prediction.view(200);
    expect(larger.length).toBe(200);
    expect(larger.buffer).not.toBe(first.buffer);
  });

  it('never lets two roles share memory', () => {
    const scratch = new Scratch();
    const buffers = [
      scratch.prediction.view(64),
      scratch.controlBatch.view(64),
      scratch.controlBatchHalf.view(64),
      scratch.rgb8.view(64),
      scratch.controlImage.view(64),
      scratch.nearness.view(64),
    ].map((b) => b.buffer);
    expect(new Set(buffers).size).toBe(buffers.length);
    expect(scratch.controlBatchHalf.view(4)).toBeInstanceOf(Uint16Array);
    expect(scratch.rgb8.view(4)).toBeInstanceOf(Uint8Array);
  });
});
