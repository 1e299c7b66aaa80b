/** Image decode, JPEG encode and resizing through sharp, and reading PNG text chunks (png.ts writes PNGs). */
import sharp from 'sharp';
import { DepthcastError } from '../errors.ts';
import type { PlanarImage } from '../pipelines/types.ts';
import { lanczos3Resize } from './lanczos.ts';

/** Reads the tEXt chunks of a PNG. */
export function readPngText(png: Uint8Array): Record<string, string> {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const out: Record<string, string> = {};
  let offset = 8;
  while (offset + 8 <= buf.length) {
    const length = buf.readUInt32BE(offset);
    const type = buf.toString('latin1', offset + 4, offset + 8);
    if (type === 'tEXt') {
      const data = buf.subarray(offset + 8, offset + 8 + length);
      const zero = data.indexOf(0);
      out[data.toString('latin1', 0, zero)] = data.toString('latin1', zero + 1);
    }
    if (type === 'IEND') break;
    offset += 12 + length;
  }
  return out;
}

export async function encodeJpeg(rgb: Uint8Array, width: number, height: number, quality = 70): Promise<Uint8Array> {
  return new Uint8Array(await sharp(rgb, { raw: { width, height, channels: 3 } }).jpeg({ quality }).toBuffer());
}

/**
 * Resamples interleaved RGB8 rows to another size with Lanczos-3 (the upscale step of
 * src/pipelines/sizing.ts; see src/image/lanczos.ts for why not sharp). Returns a new buffer;
 * `rgb` is only read during the call.
 */
export async function resizeRgb(rgb: Uint8Array, from: { width: number; height: number }, to: { width: number; height: number }): Promise<Uint8Array> {
  return lanczos3Resize(rgb, from.width, from.height, 3, to.width, to.height);
}

/** Decodes PNG/JPEG (or raw RGBA8) to planar RGB in [0,1], resized to cover width×height. */
export async function decodeToPlanar(bytes: Uint8Array, width: number, height: number, raw?: { width: number; height: number }): Promise<PlanarImage> {
  let pixels: Buffer;
  try {
    const input = raw ? sharp(bytes, { raw: { width: raw.width, height: raw.height, channels: 4 } }) : sharp(bytes);
    pixels = await input.removeAlpha().resize(width, height, { fit: 'cover' }).raw().toBuffer();
  } catch (err) {
    throw new DepthcastError('BAD_IMAGE', `init image could not be decoded: ${(err as Error).message}`);
  }
  const plane = width * height;
  const data = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) data[c * plane + i] = pixels[i * 3 + c]! / 255;
  return { data, width, height, channels: 3 };
}
