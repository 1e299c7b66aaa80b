/**
 * The preview page's pure modules (no DOM, no WebGL): readback → wire conversion, layout
 * building, frame encoding against the shared schemas, live throttling, socket URL.
 */
import { describe, expect, it } from 'vitest';
import { decodeBinaryMessage } from '../src/protocol/frame.ts';
import { FrameHeader } from '../src/protocol/schemas.ts';
import { serviceSocketUrl } from '../page/client.ts';
import {
  FrameBuildError, buildFrameMessage, buildLayout, depthFromFloatRGBA, depthFromPackedRGBA, depthStats, frameSize, idToColor, idsFromRGBA8,
} from '../page/frame-data.ts';
import { LiveScheduler, backoffMs } from '../page/live.ts';

/** A GL-style readback (rows bottom-up) of a w×h image whose top-down value at (x, y) is f(x, y). */
function glRows(w: number, h: number, channels: number, f: (x: number, y: number) => number[]): number[] {
  const out: number[] = [];
  for (let glY = 0; glY < h; glY++) for (let x = 0; x < w; x++) out.push(...f(x, h - 1 - glY));
  return out;
}

describe('page readback conversion', () => {
  it('flips float depth rows to top-down and turns uncovered pixels into +Infinity', () => {
    const w = 3, h = 2;
    // top row: z = 1, 2, background; bottom row: 4, 5, 6
    const top = [1, 2, NaN], bottom = [4, 5, 6];
    const src = new Float32Array(glRows(w, h, 4, (x, y) => {
      const z = (y === 0 ? top : bottom)[x]!;
      return Number.isNaN(z) ? [0, 0, 0, 0] : [z, 0, 0, 1];
    }));
    const d = depthFromFloatRGBA(src, w, h);
    expect(Array.from(d)).toEqual([1, 2, Infinity, 4, 5, 6]);
  });

  it('unpacks the RGBA8 fallback within 24-bit precision', () => {
    const near = 0.5, far = 60;
    const zs = [0.5, 1.234, 17.5, 59.9];
    const pack = (z: number) => {
      const t = (z - near) / (far - near);
      return [Math.floor(t * 256) % 256, Math.floor(t * 65536) % 256, Math.floor(t * 16777216) % 256, 255];
    };
    const src = new Uint8Array(glRows(2, 2, 4, (x, y) => pack(zs[y * 2 + x]!)));
    const d = depthFromPackedRGBA(src, 2, 2, near, far);
    zs.forEach((z, i) => expect(Math.abs(d[i]! - z)).toBeLessThan((far - near) / 2 ** 23));
    const bg = depthFromPackedRGBA(new Uint8Array([0, 0, 0, 0]), 1, 1, near, far);
    expect(bg[0]).toBe(Infinity);
  });

  it('round-trips ids through the id colour and flips rows', () => {
    for (const id of [0, 1, 255, 256, 4660, 65535]) {
      const [r, g] = idToColor(id);
      const bytes = new Uint8Array([Math.round(r * 255), Math.round(g * 255), 0, 255]);
      expect(idsFromRGBA8(bytes, 1, 1)[0]).toBe(id);
    }
    const src = new Uint8Array(glRows(1, 2, 4, (_x, y) => (y === 0 ? [7, 0, 0, 255] : [9, 1, 0, 255])));
    expect(Array.from(idsFromRGBA8(src, 1, 2))).toEqual([7, 265]);
    expect(() => idToColor(65536)).toThrow();
  });

  it('computes per-object depth statistics and boxes', () => {
    const depth = new Float32Array([Infinity, 3, 3, 9, 2, 9]);
    const ids = new Uint16Array([0, 2, 2, 1, 2, 1]);
    const s = depthStats(depth, 3, 2, ids);
    expect(s.backgroundPixels).toBe(1);
    expect(s.min).toBe(2);
    expect(s.max).toBe(9);
    expect(s.perObject[2]).toMatchObject({ pixels: 3, minZ: 2, maxZ: 3, bbox: [1, 0, 3, 2] });
    expect(s.perObject[1]).toMatchObject({ pixels: 2, minZ: 9, maxZ: 9, bbox: [0, 1, 3, 2] });
  });

  it('sizes frames to the view aspect in multiples of 8 within a pixel budget', () => {
    expect(frameSize(16 / 9, 512)).toEqual({ width: 512, height: 288 });
    expect(frameSize(0.72, 256)).toEqual({ width: 184, height: 256 });
    const big = frameSize(1, 4096, 1024 * 1024);
    expect(big.width * big.height).toBeLessThanOrEqual(1024 * 1024);
    expect(big.width % 8).toBe(0);
  });
});

describe('page layout and frame encoding', () => {
  it('sends only objects with a prompt, renumbered, other pixels background', () => {
    const ids = new Uint16Array([1, 1, 2, 3, 0, 3]);
    const depth = new Float32Array([5, 5, 4, 3, Infinity, 3]);
    const stats = depthStats(depth, 3, 2, ids);
    expect(buildLayout(ids, 3, 2, [{ id: 1, label: 'ground', weight: 1 }], stats)).toBeUndefined();
    const l = buildLayout(ids, 3, 2, [
      { id: 1, label: 'ground', weight: 1 },
      { id: 3, label: 'box', prompt: 'a crate', weight: 2 },
      { id: 9, label: 'hidden', prompt: 'not visible', weight: 1 },
    ], stats)!;
    expect(l.objects).toEqual([{ id: 1, label: 'box', prompt: 'a crate', weight: 2, bbox: [0, 1, 3, 2] }]);
    expect(Array.from(l.map)).toEqual([0, 0, 0, 1, 0, 1]);
  });

  it('encodes one binary message that the shared schema and decoder accept', () => {
    const w = 16, h = 8;
    const depth = new Float32Array(w * h).fill(4.5);
    depth[0] = Infinity;
    const map = new Uint16Array(w * h).fill(1);
    const init = new Uint8Array(w * h * 4).fill(200);
    const { header, bytes } = buildFrameMessage({
      jobId: 'page-t-1', stream: 'page', depth, width: w, height: h, near: 0.5, far: 60,
      params: { prompt: 'p', steps: 4, depthRange: 'auto' }, init,
      layout: { map, objects: [{ id: 1, label: 'box', prompt: 'a crate', weight: 1 }] },
    });
    const decoded = decodeBinaryMessage(bytes);
    const parsed = FrameHeader.parse(decoded.header);
    expect(parsed).toMatchObject({ type: 'frame', protocol: 1, mode: 'live', stream: 'page' });
    expect(parsed.depth).toEqual({ width: w, height: h, dtype: 'f32', kind: 'zdepth', near: 0.5, far: 60, byteLength: w * h * 4 });
    expect(parsed.init).toEqual({ format: 'rgba8', width: w, height: h, byteLength: w * h * 4 });
    expect(parsed.layout?.byteLength).toBe(w * h * 2);
    expect(header.jobId).toBe('page-t-1');
    const p = decoded.payload;
    expect(p.byteLength).toBe(w * h * 4 + w * h * 4 + w * h * 2);
    const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
    expect(dv.getFloat32(0, true)).toBe(Infinity);
    expect(dv.getFloat32(4, true)).toBe(4.5);
    expect(p[w * h * 4]).toBe(200);
    expect(dv.getUint16(w * h * 8, true)).toBe(1);
  });

  it('refuses a header the schema rejects instead of sending it', () => {
    expect(() => buildFrameMessage({
      jobId: 'page-t-2', stream: 'page', depth: new Float32Array(64), width: 8, height: 8, near: 1, far: 0.5,
      params: { prompt: 'p', steps: 0 },
    })).toThrow(FrameBuildError);
  });
});

describe('page live throttling', () => {
  it('sends at most one frame per interval, newest wins, one in flight', () => {
    const s = new LiveScheduler(250);
    expect(s.tryStart(0, true)).toBe(false); // nothing changed
    s.markDirty(0);
    expect(s.tryStart(0, false)).toBe(false); // live off
    expect(s.tryStart(1, true)).toBe(true);
    s.markDirty(10);
    s.markDirty(20);
    expect(s.tryStart(30, true)).toBe(false); // in flight
    s.finish();
    expect(s.tryStart(100, true)).toBe(false); // throttled
    expect(s.pending).toBe(true);
    expect(s.tryStart(251, true)).toBe(true); // one frame for both changes
    s.finish();
    expect(s.tryStart(600, true)).toBe(false);
  });

  it('lets typing settle and lets Generate bypass the throttle', () => {
    const s = new LiveScheduler(250);
    s.markDirty(0, 600);
    s.markDirty(300, 600);
    expect(s.tryStart(700, true)).toBe(false);
    expect(s.tryStart(900, true)).toBe(true);
    expect(s.forceStart(901)).toBe(false); // in flight
    s.finish();
    expect(s.forceStart(902)).toBe(true);
  });

  it('backs off reconnects from 0.5 s to 10 s', () => {
    expect(backoffMs(0, () => 0.5)).toBe(500);
    expect(backoffMs(3, () => 0.5)).toBe(4000);
    expect(backoffMs(20, () => 0.5)).toBe(10000);
    expect(backoffMs(0, () => 0)).toBe(400);
  });

  it('derives the socket URL from the page, carrying its token', () => {
    expect(serviceSocketUrl({ protocol: 'http:', host: '127.0.0.1:7788', search: '' })).toBe('ws://127.0.0.1:7788/v1/ws');
    expect(serviceSocketUrl({ protocol: 'https:', host: 'box.lan', search: '?token=a b&x=1' })).toBe('wss://box.lan/v1/ws?token=a%20b');
  });
});
