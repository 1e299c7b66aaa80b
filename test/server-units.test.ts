/** Server pieces without a server: the depth scan and nearness grid, and job-record retention. */
import { describe, expect, it } from 'vitest';
import { DepthcastError } from '../src/errors.ts';
import { toNearness } from '../src/depth/convert.ts';
import { toHalf } from '../src/runtime/float16.ts';
import { decodeDepthPixels, type DepthLayout, depthScanInWasm, nearnessDifference, nearnessWithin, scanDepth, SIMILARITY_GRID } from '../src/depth/scan.ts';
import { SIMILARITY_MAX_CELL } from '../server/similarity.ts';
import { JobStore } from '../server/jobs.ts';
import { FrameScanner } from '../server/ws-frames.ts';
import * as wsModule from 'ws';

/** ws's own framer and parser (exported at runtime, not in its typings): the reference for FrameScanner. */
const { Receiver, Sender } = wsModule as unknown as {
  Sender: { frame(data: Buffer, options: { fin: boolean; opcode: number; mask: boolean; readOnly: boolean; rsv1: boolean }): Buffer[] };
  Receiver: new (options: { isServer: boolean; maxPayload: number; allowSynchronousEvents: boolean }) => NodeJS.WritableStream & { on(event: 'message', listener: () => void): unknown };
};
import { sceneDepth } from './support/server-helpers.ts';

const Z: DepthLayout = { width: 64, height: 64, dtype: 'f32', kind: 'zdepth', near: 1, far: 10 };

function bytesAt(offset: number, data: ArrayBufferView): Uint8Array {
  const src = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const buf = new Uint8Array(offset + src.byteLength);
  buf.set(src, offset);
  return buf.subarray(offset);
}

describe('scanDepth', () => {
  it('gives the same nearness for f32, f16 and u16 encodings of the same scene, at any byte offset', () => {
    const z = sceneDepth();
    const f32 = scanDepth(bytesAt(3, z), Z, true).nearness!;
    const f16 = scanDepth(bytesAt(1, Uint16Array.from(z, (v) => toHalf(v))), { ...Z, dtype: 'f16' }, true).nearness!;
    const u16 = scanDepth(bytesAt(5, Uint16Array.from(z, (v) => (v >= 10 ? 65535 : Math.round(((v - 1) / 9) * 65535)))), { ...Z, dtype: 'u16' }, true).nearness!;
    expect(nearnessDifference(f32, f16).max).toBeLessThan(1e-3);
    expect(nearnessDifference(f32, u16).max).toBeLessThan(1e-4);
    // Near = 1, sky = 0: the bottom row is the closest floor, the top row is sky.
    expect(f32[63 * 64]).toBeGreaterThan(0.4);
    expect(f32[0]).toBe(0);
  });

  it('keeps an aligned copy of the payload in a buffer of its own, for the engine to move to its worker', () => {
    const z = sceneDepth();
    for (const offset of [0, 1, 3]) {
      const payload = bytesAt(offset, z);
      const { bytes } = scanDepth(payload, Z, true);
      expect(bytes.byteOffset).toBe(0);
      expect(bytes.byteLength).toBe(bytes.buffer.byteLength);
      expect(Buffer.from(bytes).equals(Buffer.from(payload))).toBe(true);
      // Moving the copy away must leave the received message alone, and the other way round.
      payload.fill(0);
      expect(new Float32Array(bytes.buffer)[63 * 64]).toBe(z[63 * 64]);
    }
  });

  it('scans linear-Z f32 in WebAssembly with the JavaScript reference\'s totals and grid, bit for bit', () => {
    let seed = 11;
    const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const part = { ...Z, width: 300, height: 173, near: 0.5, far: 40 };
    const z = Float32Array.from({ length: part.width * part.height }, () => random() * 45);
    // Edges: below near, exactly near and far, infinity, -0, subnormals, huge.
    const edges = [0.1, 0.5, 40, Infinity, -0, 1e-40, 3e38, 39.999996];
    for (let i = 0; i < z.length; i += 13) z[i] = edges[(i / 13) % edges.length]!;
    // Or the comparison below would be JavaScript against itself.
    expect(depthScanInWasm()).toBe(true);
    for (const withGrid of [true, false]) {
      const js = scanDepth(bytesAt(1, z), part, withGrid, true);
      const wasm = scanDepth(bytesAt(1, z), part, withGrid);
      expect(wasm.foreground).toEqual(js.foreground);
      expect(Buffer.from(wasm.nearness?.buffer ?? new ArrayBuffer(0)).equals(Buffer.from(js.nearness?.buffer ?? new ArrayBuffer(0)))).toBe(true);
    }
    // The same refusals, with the same counts.
    const bad = z.slice();
    bad[5] = NaN;
    bad[9] = -2;
    const message = (inJs: boolean) => { try { scanDepth(bytesAt(0, bad), part, true, inJs); return ''; } catch (err) { return (err as Error).message; } };
    expect(message(false)).toBe(message(true));
    expect(message(false)).toMatch(/1 NaN/);
  });

  it('scans a frame too large for the WebAssembly memory in JavaScript', () => {
    const part = { ...Z, width: 2600, height: 2300 };
    const z = new Float32Array(part.width * part.height).fill(5);
    const scanned = scanDepth(bytesAt(0, z), part, true);
    expect(scanned.foreground).toMatchObject({ min: 5, max: 5, count: part.width * part.height });
  });

  it("hands the engine the foreground statistics toNearness would compute, for every dtype and kind", () => {
    const z = sceneDepth();
    const cases: Array<[DepthLayout, ArrayBufferView]> = [
      [Z, z],
      [{ ...Z, dtype: 'f16' }, Uint16Array.from(z, (v) => toHalf(v))],
      [{ ...Z, dtype: 'u16' }, Uint16Array.from(z, (v) => (v >= 10 ? 65535 : Math.round(((v - 1) / 9) * 65535)))],
      [{ ...Z, kind: 'disparity' }, Float32Array.from(z, (v) => (Number.isFinite(v) ? 1 / v : 0))],
      [{ ...Z, kind: 'normalized', dtype: 'u16' }, Uint16Array.from(z, (v) => (Number.isFinite(v) ? Math.round(65535 / v) : 0))],
    ];
    for (const [part, data] of cases) {
      const bytes = bytesAt(2, data);
      const { foreground } = scanDepth(bytes, part, true);
      const frame = { data: decodeDepthPixels(bytes, part.dtype, part.kind, part.near, part.far, part.width * part.height), width: part.width, height: part.height, kind: part.kind, near: part.near, far: part.far };
      for (const range of ['auto', 'fixed'] as const) {
        const own = toNearness(frame, range);
        const handed = toNearness(frame, range, undefined, foreground);
        expect(Buffer.from(handed.nearness.buffer).equals(Buffer.from(own.nearness.buffer)), `${part.dtype} ${part.kind} ${range}`).toBe(true);
        expect([handed.stats.min, handed.stats.max, handed.stats.background]).toEqual([own.stats.min, own.stats.max, own.stats.background]);
        expect(handed.stats.mean).toBeCloseTo(own.stats.mean, 6);
      }
    }
  });

  it('maps disparity and normalized depth into [0, 1]', () => {
    const d = Float32Array.from({ length: 64 * 64 }, (_, i) => (i % 64) * 3);
    const disparity = scanDepth(bytesAt(0, d), { ...Z, kind: 'disparity' }, true).nearness!;
    expect(Math.max(...disparity)).toBeCloseTo(1, 5);
    expect(Math.min(...disparity)).toBe(0); // disparity 0 = background
    const normalized = scanDepth(bytesAt(0, Float32Array.from(d, (v) => v / 100)), { ...Z, kind: 'normalized' }, true).nearness!;
    expect(Math.max(...normalized)).toBe(1);
  });

  it(`averages blocks above ${SIMILARITY_GRID}² and skips the grid for batch frames`, () => {
    const part = { ...Z, width: 512, height: 300 };
    const big = sceneDepth({ width: 512, height: 300 });
    const scanned = scanDepth(bytesAt(0, big), part, true);
    expect([scanned.gridWidth, scanned.gridHeight, scanned.nearness!.length]).toEqual([256, 256, 256 * 256]);
    expect(scanDepth(bytesAt(0, big), part, false).nearness).toBeUndefined();
    // A 16×16 box moving across a 512×300 frame barely moves the mean, but its cells change a lot.
    const boxMoved = nearnessDifference(scanned.nearness, scanDepth(bytesAt(0, sceneDepth({ width: 512, height: 300, boxX: 200 })), part, true).nearness);
    expect(boxMoved.mean).toBeLessThan(0.002);
    expect(boxMoved.max).toBeGreaterThan(SIMILARITY_MAX_CELL);
    // The camera dollying back changes everything a little.
    const dolly = nearnessDifference(scanned.nearness, scanDepth(bytesAt(0, big.map((v) => v * 1.1)), part, true).nearness);
    expect(dolly.mean).toBeGreaterThan(0.002);
    // Sub-threshold jitter.
    const jitter = nearnessDifference(scanned.nearness, scanDepth(bytesAt(0, big.map((v) => v * 1.0005)), part, true).nearness);
    expect(jitter.mean).toBeLessThan(0.002);
    expect(jitter.max).toBeLessThan(SIMILARITY_MAX_CELL);
    expect(nearnessDifference(scanned.nearness, undefined).mean).toBe(Infinity);
  });

  it('decides "within the limits" as the full difference does, stopping early only when the answer is no', () => {
    let seed = 7;
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const base = Float32Array.from({ length: 4096 }, () => random());
    const cases: Float32Array[] = [
      base.slice(),
      base.map((v) => v + 0.001),
      base.map((v) => v + 0.003),
      base.map((v, i) => (i === 4000 ? v + 0.06 : v)),
      base.map((v, i) => (i === 10 ? v + 0.049 : v)),
      base.map((v, i) => (i < 2048 ? v + 0.0039 : v)),
      base.map((v, i) => (i < 2048 ? v + 0.0041 : v)),
    ];
    const answers = cases.map((c) => {
      const { mean, max } = nearnessDifference(base, c);
      const full = mean < 0.002 && max < SIMILARITY_MAX_CELL;
      expect(nearnessWithin(base, c, 0.002, SIMILARITY_MAX_CELL)).toBe(full);
      return full;
    });
    // The cases cover both answers, each limit deciding a no.
    expect(answers).toEqual([true, true, false, false, true, true, false]);
    expect(nearnessWithin(base, undefined, 0.002, SIMILARITY_MAX_CELL)).toBe(false);
    expect(nearnessWithin(base, base.subarray(1), 0.002, SIMILARITY_MAX_CELL)).toBe(false);
  });

  it('refuses NaN, negative and empty depth with counts', () => {
    const z = sceneDepth();
    z[1] = NaN;
    z[2] = NaN;
    expect(() => scanDepth(bytesAt(0, z), Z, false)).toThrow(/2 NaN values/);
    const neg = sceneDepth();
    neg[9] = -0.5;
    expect(() => scanDepth(bytesAt(0, neg), Z, false)).toThrow(DepthcastError);
    expect(() => scanDepth(bytesAt(0, new Float32Array(64 * 64).fill(10)), Z, false)).toThrow(/no foreground/);
    expect(() => scanDepth(bytesAt(0, new Float32Array(64 * 64)), { ...Z, kind: 'disparity' }, false)).toThrow(/no foreground/);
  });
});

describe('JobStore', () => {
  it('keeps active records, evicts the oldest finished ones past the cap', () => {
    const store = new JobStore(3, 60_000);
    const records = ['a', 'b', 'c', 'd'].map((id) => store.add({ jobId: id, stream: 's', mode: 'batch', state: 'queued', createdAt: '' }));
    store.finish(records[1]!, 'succeeded');
    store.finish(records[2]!, 'failed', { error: new DepthcastError('BAD_DEPTH', 'x') });
    store.add({ jobId: 'e', stream: 's', mode: 'batch', state: 'queued', createdAt: '' });
    expect(store.get('a')).toBeDefined(); // active: never evicted
    expect(store.get('b')).toBeUndefined();
    expect(store.get('c')).toBeUndefined();
    expect(store.get('e')?.state).toBe('queued');
  });

  it('ages finished records out', () => {
    const store = new JobStore(100, -1);
    const r = store.add({ jobId: 'x', stream: 's', mode: 'live', state: 'running', createdAt: '' });
    store.finish(r, 'cancelled', { cancelReason: 'client' });
    expect(store.get('x')).toBeUndefined();
  });
});

describe('binary message framing', () => {
  it('a header part followed by the payload is the same message encodeBinaryMessage builds', async () => {
    const { decodeBinaryMessage, encodeBinaryHeader, encodeBinaryMessage } = await import('../src/protocol/frame.ts');
    const header = { type: 'result', jobId: 'ü-1', width: 2 };
    const payload = Uint8Array.from([1, 2, 3, 250]);
    const joined = Buffer.concat([encodeBinaryHeader(header), payload]);
    expect(joined.equals(Buffer.from(encodeBinaryMessage(header, payload)))).toBe(true);
    const decoded = decodeBinaryMessage(joined);
    expect(decoded.header).toEqual(header);
    expect([...decoded.payload]).toEqual([...payload]);
  });
});

describe('FrameScanner follows client framing as ws reads it', () => {
  /** Masked client frames built by ws's own Sender, the reference framer. */
  function frame(data: Uint8Array, opcode: number, fin: boolean): Buffer {
    return Buffer.concat(Sender.frame(Buffer.from(data), { fin, opcode, mask: true, readOnly: false, rsv1: false }));
  }

  it('counts completed messages and the bytes of the unfinished one, chunk by chunk, as ws’s Receiver does', () => {
    const ping = frame(new Uint8Array(3), 0x9, true);
    const pong = frame(new Uint8Array(0), 0xa, true);
    const stream = Buffer.concat([
      frame(new Uint8Array(10), 0x2, true), // 7-bit length
      frame(new Uint8Array(300), 0x1, false), ping, frame(new Uint8Array(70_000), 0x0, false), pong, frame(new Uint8Array(5), 0x0, true), // 16- and 64-bit lengths, control frames between fragments
      ping,
      frame(new Uint8Array(0), 0x2, true), // empty message
      frame(new Uint8Array(1000), 0x2, false), // unfinished at the end
    ]);
    for (const size of [5, 7, 125, 4096, stream.length]) {
      const scanner = new FrameScanner();
      const receiver = new Receiver({ isServer: true, maxPayload: 0, allowSynchronousEvents: true });
      let messages = 0;
      receiver.on('message', () => messages++);
      let completed = 0;
      for (let at = 0; at < stream.length; at += size) {
        const chunk = stream.subarray(at, at + size);
        completed += scanner.feed(chunk);
        receiver.write(Buffer.from(chunk)); // a copy: ws unmasks in place
        expect(completed).toBe(messages);
      }
      expect(completed).toBe(3);
      expect(scanner.inMessage).toBe(true);
      expect(scanner.pendingBytes).toBe(frame(new Uint8Array(1000), 0x2, false).length);
    }
  });
});
