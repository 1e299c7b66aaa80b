/**
 * The upscale step (resizeRgb, src/image/lanczos.ts) against an independent Lanczos-3:
 * ImageMagick's `convert -filter Lanczos -resize WxH!`. Skips (and says why) without `convert`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { resizeRgb } from '../src/image/codec.ts';

const magick = spawnSync('convert', ['-version'], { encoding: 'utf8' });
const missing = magick.status !== 0 || !/ImageMagick/.test(magick.stdout ?? '') ? 'no ImageMagick convert' : '';
if (missing) console.warn(`lanczos: SKIPPED: ${missing}`);

/** Edges, a fine checkerboard, gradients and noise, reaching every border. */
function testImage(width: number, height: number): Uint8Array {
  const rgb = new Uint8Array(width * height * 3);
  let s = 12345;
  const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 3;
      const noisy = (x + y) % 7 === 0;
      rgb[p] = noisy ? Math.floor(rnd() * 256) : x > width / 3 && y < height / 2 ? 230 : 20;
      rgb[p + 1] = noisy ? Math.floor(rnd() * 256) : Math.floor((x * 255) / width);
      rgb[p + 2] = ((x >> 2) + (y >> 2)) % 2 ? 250 : 5;
    }
  }
  return rgb;
}

describe.skipIf(Boolean(missing))('Lanczos-3 upscale against ImageMagick', () => {
  const dir = mkdtempSync(join(tmpdir(), 'depthcast-lanczos-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function reference(rgb: Uint8Array, from: { width: number; height: number }, to: { width: number; height: number }): Promise<Buffer> {
    const png = join(dir, 'in.png');
    await sharp(rgb, { raw: { ...from, channels: 3 } }).png().toFile(png);
    const raw = join(dir, 'out.rgb');
    execFileSync('convert', [png, '-filter', 'Lanczos', '-resize', `${to.width}x${to.height}!`, '-depth', '8', `rgb:${raw}`]);
    return readFileSync(raw);
  }

  function diff(a: Uint8Array, b: Uint8Array): { max: number; mean: number } {
    let max = 0;
    let sum = 0;
    for (let i = 0; i < a.length; i++) {
      const d = Math.abs(a[i]! - b[i]!);
      max = Math.max(max, d);
      sum += d;
    }
    return { max, mean: sum / a.length };
  }

  // Tolerance: one 8-bit level. ImageMagick (Q16) keeps 16 bits between and after the passes and
  // its 8-bit output truncates where resizeRgb rounds; the kernel, the sample positions and the
  // renormalised edge taps are the same.
  it.each([
    [{ width: 680, height: 384 }, { width: 1920, height: 1080 }], // SD 1.5's native size for a 1920×1080 output
    [{ width: 61, height: 37 }, { width: 200, height: 101 }],
  ])('%o -> %o within one level', async (from, to) => {
    const rgb = testImage(from.width, from.height);
    const ref = await reference(rgb, from, to);
    const ours = await resizeRgb(rgb, from, to);
    expect(ours.length).toBe(ref.length);
    const d = diff(ours, ref);
    console.log(`lanczos ${from.width}x${from.height} -> ${to.width}x${to.height} vs ImageMagick: max ${d.max}, mean ${d.mean.toFixed(3)}`);
    expect(d.max).toBeLessThanOrEqual(1);
    expect(d.mean).toBeLessThan(0.5);
    // A control: libvips' enlargement (what sharp does for kernel lanczos3) is far from it.
    const vips = await sharp(rgb, { raw: { ...from, channels: 3 } }).resize(to.width, to.height, { kernel: 'lanczos3', fit: 'fill' }).raw().toBuffer();
    expect(diff(vips, ref).max).toBeGreaterThan(20);
  }, 60_000);
});
