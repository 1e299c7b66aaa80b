import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { controlImageFromNearness, toNearness } from '../src/depth/convert.ts';
import { decodeDepthPixels, scanDepth } from '../src/depth/scan.ts';
import { readDepthFile } from '../src/depth/read.ts';
import { resizeBicubic } from '../src/depth/resize.ts';
import { float32ToFloat16 } from '../src/runtime/float16.ts';
import { readNpy, writeNpy } from '../src/util/npy.ts';

/** A minimal 16-bit greyscale PNG writer, independent of the reader under test. */
function grey16Png(samples: Uint16Array, width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body) >>> 0, 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 16; // bit depth
  ihdr[9] = 0; // greyscale
  const raw = Buffer.alloc(height * (1 + width * 2));
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) raw.writeUInt16BE(samples[y * width + x]!, y * (1 + width * 2) + 1 + x * 2);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

const frame = (data: number[], extra: Partial<Parameters<typeof toNearness>[0]> = {}) => ({
  data: Float32Array.from(data), width: data.length, height: 1, kind: 'zdepth' as const, near: 1, far: 10, ...extra,
});

describe('depth contract: linear Z → nearness', () => {
  it('maps near to 1, far and background to 0, as inverse depth', () => {
    const { nearness, stats } = toNearness(frame([1, 10, Infinity, 2, 1e10]), 'fixed');
    expect(nearness[0]).toBeCloseTo(1, 6);
    expect(nearness[1]).toBe(0);
    expect(nearness[2]).toBe(0);
    expect(nearness[3]).toBeCloseTo((1 / 2 - 1 / 10) / (1 - 1 / 10), 6);
    expect(nearness[4]).toBe(0);
    expect(stats.background).toBeCloseTo(3 / 5);
  });

  it('is steady across frames with a fixed range: the same Z gives the same value whatever else is in view', () => {
    const a = toNearness(frame([3, 4, 9]), 'fixed').nearness;
    const b = toNearness(frame([3, 1.5, Infinity]), 'fixed').nearness;
    expect(a[0]).toBe(b[0]);
    const autoA = toNearness(frame([3, 4, 9]), 'auto').nearness;
    const autoB = toNearness(frame([3, 1.5, 9]), 'auto').nearness;
    expect(autoA[0]).not.toBe(autoB[0]);
  });

  it('auto keeps the farthest object above the background when there is background', () => {
    const withSky = toNearness(frame([2, 8, Infinity]), 'auto').nearness;
    expect(withSky[0]).toBeCloseTo(1, 6);
    expect(withSky[1]).toBeGreaterThan(0.05);
    expect(withSky[2]).toBe(0);
    const noSky = toNearness(frame([2, 8]), 'auto').nearness;
    expect(noSky[1]).toBe(0);
  });

  it('clips to near/far', () => {
    const { nearness } = toNearness(frame([0.5, 5]), 'fixed');
    expect(nearness[0]).toBe(1);
  });

  it('gives typed errors for NaN, negative, empty and mismatched depth', () => {
    expect(() => toNearness(frame([1, NaN]), 'fixed')).toThrow(expect.objectContaining({ code: 'BAD_DEPTH', message: expect.stringMatching(/NaN/) }));
    expect(() => toNearness(frame([1, -2]), 'fixed')).toThrow(expect.objectContaining({ code: 'BAD_DEPTH', message: expect.stringMatching(/negative/) }));
    expect(() => toNearness(frame([Infinity, 20]), 'fixed')).toThrow(expect.objectContaining({ code: 'BAD_DEPTH', message: expect.stringMatching(/no foreground/) }));
    expect(() => toNearness({ ...frame([1, 2]), width: 3 }, 'fixed')).toThrow(expect.objectContaining({ code: 'BAD_DEPTH' }));
    expect(() => toNearness(frame([1, 2], { near: 5, far: 2 }), 'fixed')).toThrow(expect.objectContaining({ code: 'BAD_DEPTH' }));
  });

  it('normalized and disparity kinds keep near = high', () => {
    expect([...toNearness(frame([0.2, 1], { kind: 'normalized' }), 'fixed').nearness].map((v) => +v.toFixed(3))).toEqual([0.2, 1]);
    const d = toNearness(frame([2, 4], { kind: 'disparity' }), 'fixed').nearness;
    expect(d[1]).toBeGreaterThan(d[0]!);
  });

  it('builds a near-is-white RGB control image at the output size', () => {
    const img = controlImageFromNearness(Float32Array.from([1, 0, 1, 0]), 2, 2, 4, 4);
    expect(img.channels).toBe(3);
    expect(img.data.length).toBe(48);
    for (const v of img.data) expect(v >= 0 && v <= 1).toBe(true);
  });
});

describe('linear Z → nearness in WebAssembly', () => {
  it('writes the JavaScript loop\'s float32 values, background, clamps and edges included', async () => {
    const { nearnessInWasm, zdepthToNearness, zdepthToNearnessInWasm } = await import('../src/depth/convert.ts');
    expect(nearnessInWasm()).toBe(true);
    let seed = 5;
    const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const data = Float32Array.from({ length: 70_001 }, () => random() * 60);
    const edges = [0, -0, 0.3, 1, 2, 50, 49.999996, Infinity, 1e-40, 3e38];
    for (let i = 0; i < data.length; i += 7) data[i] = edges[(i / 7) % edges.length]!;
    for (const [far, zNear, zFar] of [[50, 1, 50], [50, 2.5, 31], [1000, 0.1, 1000]] as const) {
      const invFar = 1 / zFar;
      const scale = 1 / (1 / zNear - invFar);
      const js = new Float32Array(data.length);
      const wasm = new Float32Array(data.length).fill(-1);
      zdepthToNearness(data, js, far, zNear, zFar, invFar, scale);
      expect(zdepthToNearnessInWasm(data, wasm, far, zNear, zFar, invFar, scale)).toBe(true);
      expect(Buffer.from(wasm.buffer).equals(Buffer.from(js.buffer))).toBe(true);
    }
    // A frame too large for its memory is left to JavaScript.
    const big = new Float32Array(5_000_000);
    expect(zdepthToNearnessInWasm(big, new Float32Array(big.length), 50, 1, 50, 0.02, 1)).toBe(false);
  });
});

describe('wire dtypes', () => {
  it('decodes f32, f16 and u16 pixels and checks the byte count', () => {
    const values = Float32Array.from([1.5, 2, Infinity]);
    expect([...decodeDepthPixels(new Uint8Array(values.buffer), 'f32', 'zdepth', 1, 10, 3)]).toEqual([1.5, 2, Infinity]);
    const half = float32ToFloat16(values);
    expect([...decodeDepthPixels(new Uint8Array(half.buffer), 'f16', 'zdepth', 1, 10, 3)]).toEqual([1.5, 2, Infinity]);
    const u16 = Uint16Array.from([0, 65535]);
    expect([...decodeDepthPixels(new Uint8Array(u16.buffer), 'u16', 'zdepth', 1, 10, 2)]).toEqual([1, Infinity]);
    expect(() => decodeDepthPixels(new Uint8Array(10), 'f32', 'zdepth', 1, 10, 3)).toThrow(expect.objectContaining({ code: 'BAD_FRAME' }));
  });
});

describe('one validation rule for the intake and the engine', () => {
  it('refuses the same depth with the same message whether the service scans it or a file is converted', () => {
    const refusal = (run: () => unknown) => { try { run(); return 'accepted'; } catch (err) { return (err as Error).message; } };
    const cases: [string, number[]][] = [['NaN', [1, NaN, 2]], ['negative', [1, -1, 2]], ['background only', [Infinity, 0, Infinity]], ['good', [1, 2, Infinity]]];
    for (const kind of ['zdepth', 'disparity', 'normalized'] as const) {
      for (const [what, values] of cases) {
        const data = Float32Array.from(values.map((v) => (kind === 'zdepth' && v === 0 ? 20 : v)));
        const part = { width: 3, height: 1, dtype: 'f32' as const, kind, near: 1, far: 10 };
        const atIntake = refusal(() => scanDepth(new Uint8Array(data.buffer), part, true));
        const inEngine = refusal(() => toNearness({ data, width: 3, height: 1, kind, near: 1, far: 10 }, 'auto'));
        expect(inEngine, `${kind} ${what}`).toBe(atIntake);
        expect(atIntake === 'accepted', `${kind} ${what}`).toBe(what === 'good');
      }
    }
  });
});

describe('bicubic resize (torch align_corners=False, A=-0.75)', () => {
  it('keeps constants constant and is identity at the same size', () => {
    const src = new Float32Array(25).fill(3);
    expect([...resizeBicubic(src, 1, 5, 5, 3, 7)].every((v) => Math.abs(v - 3) < 1e-6)).toBe(true);
    const ramp = Float32Array.from({ length: 16 }, (_, i) => i);
    expect([...resizeBicubic(ramp, 1, 4, 4, 4, 4)]).toEqual([...ramp]);
  });
  it('matches a hand-computed 2→4 upsampling', () => {
    // Source x = (o + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25; taps clamped at the borders.
    const out = resizeBicubic(Float32Array.from([0, 1]), 1, 1, 2, 1, 4);
    // o=0: floor(-0.25) = -1, t = 0.75, taps [0,0,0,1] → only the +2 tap's weight: -0.10546875.
    expect(out[0]).toBeCloseTo(-0.10546875, 7);
    expect(out[1]).toBeCloseTo(0.2265625, 7);
    expect(out[2]).toBeCloseTo(0.7734375, 7);
    expect(out[3]).toBeCloseTo(1.10546875, 7);
  });
});

describe('depth files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'depthcast-depth-'));

  it('reads float32 .npy (H×W and 1×H×W) and round-trips writeNpy', async () => {
    const data = Float32Array.from({ length: 6 }, (_, i) => i + 1);
    writeFileSync(join(dir, 'a.npy'), writeNpy(data, [1, 2, 3]));
    const file = await readDepthFile(join(dir, 'a.npy'));
    expect(file).toMatchObject({ width: 3, height: 2, dtype: 'f32' });
    expect([...file.data]).toEqual([...data]);
  });

  it('refuses truncated and malformed .npy files', async () => {
    const bytes = writeNpy(new Float32Array(100), [10, 10]);
    writeFileSync(join(dir, 'cut.npy'), bytes.subarray(0, bytes.length - 8));
    await expect(readDepthFile(join(dir, 'cut.npy'))).rejects.toMatchObject({ code: 'BAD_DEPTH', message: expect.stringMatching(/truncated/) });
    writeFileSync(join(dir, 'junk.npy'), 'hello');
    await expect(readDepthFile(join(dir, 'junk.npy'))).rejects.toMatchObject({ code: 'BAD_DEPTH' });
    expect(() => readNpy(new Uint8Array(4))).toThrow(/bad magic/);
  });

  it('reads 16-bit PNG samples', async () => {
    const samples = Uint16Array.from([0, 1000, 40000, 65535]);
    writeFileSync(join(dir, 'd.png'), grey16Png(samples, 2, 2));
    const file = await readDepthFile(join(dir, 'd.png'));
    expect(file).toMatchObject({ width: 2, height: 2, dtype: 'u16' });
    expect([...file.data]).toEqual([0, 1000, 40000, 65535]);
  });

  it('reads OpenEXR written by three\'s EXRExporter, rows top to bottom', async () => {
    const { EXRExporter } = await import('three/examples/jsm/exporters/EXRExporter.js');
    const THREE = await import('three');
    // A DataTexture's rows are bottom-up: row 0 here is the bottom of the image.
    const rgba = new Float32Array([5, 0, 0, 1, 6, 0, 0, 1, 1, 0, 0, 1, 2, 0, 0, 1]);
    const texture = new THREE.DataTexture(rgba, 2, 2, THREE.RGBAFormat, THREE.FloatType);
    const bytes = await new EXRExporter().parse(texture as never, { type: THREE.FloatType, compression: 0 } as never);
    writeFileSync(join(dir, 'd.exr'), bytes);
    const file = await readDepthFile(join(dir, 'd.exr'));
    expect(file).toMatchObject({ width: 2, height: 2, dtype: 'f32' });
    expect([...file.data]).toEqual([1, 2, 5, 6]);
  });

  it('names unsupported extensions and missing files', async () => {
    await expect(readDepthFile(join(dir, 'x.tiff'))).rejects.toMatchObject({ code: 'BAD_DEPTH' });
    writeFileSync(join(dir, 'x.tiff'), 'x');
    await expect(readDepthFile(join(dir, 'x.tiff'))).rejects.toMatchObject({ code: 'BAD_DEPTH', message: expect.stringMatching(/unsupported/) });
  });
});
