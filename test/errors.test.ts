import { describe, expect, it } from 'vitest';
import { DepthcastError, toDepthcastError } from '../src/errors.ts';
import { decodeBinaryMessage, encodeBinaryMessage } from '../src/protocol/frame.ts';

describe('errors', () => {
  it('maps codes to HTTP status once', () => {
    expect(new DepthcastError('BUSY', 'x').httpStatus).toBe(429);
    expect(new DepthcastError('MODEL_NOT_FOUND', 'x').httpStatus).toBe(404);
  });
  it('normalises unknown throws to INTERNAL', () => {
    expect(toDepthcastError(new Error('boom')).code).toBe('INTERNAL');
  });
});

describe('binary framing', () => {
  it('round-trips header and payload', () => {
    const msg = encodeBinaryMessage({ a: 1 }, new Uint8Array([1, 2]), new Uint8Array([3]));
    const { header, payload } = decodeBinaryMessage(msg);
    expect(header).toEqual({ a: 1 });
    expect([...payload]).toEqual([1, 2, 3]);
  });
  it('refuses a header length past the end', () => {
    const msg = encodeBinaryMessage({ a: 1 });
    new DataView(msg.buffer).setUint32(0, 999, true);
    expect(() => decodeBinaryMessage(msg)).toThrowError(/runs past the end/);
  });
});
