/**
 * The PNG writer: 8-bit RGB with tEXt chunks (generation parameters), and text chunks added to
 * PNGs written elsewhere (16-bit depth with its range, src/depth/read.ts). Compressed PNGs come
 * from sharp (adaptive filtering, where file size matters: batches and saved files). Stored
 * PNGs (level 0, live results) are written here in one pass: live frames are
 * near-incompressible and latency is what the user watches, and at 512² this takes 0.8-1.1 ms
 * against sharp's 4.4-8.8 ms at level 0 (pipeline set-up and the hop to its thread pool).
 */
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';

const SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

type Chunk = [type: string, data: Uint8Array];

/**
 * `before`, then each chunk (length, type, data, CRC of type + data), then `after`, written
 * straight into one buffer. Never from Buffer's shared pool: the worker transfers the result.
 */
function writeChunks(before: Uint8Array, chunks: Chunk[], after: Uint8Array = new Uint8Array(0)): Uint8Array {
  const size = before.byteLength + chunks.reduce((n, [, data]) => n + 12 + data.byteLength, 0) + after.byteLength;
  const out = Buffer.allocUnsafeSlow(size);
  out.set(before, 0);
  let offset = before.byteLength;
  for (const [type, data] of chunks) {
    out.writeUInt32BE(data.byteLength, offset);
    out.write(type, offset + 4, 'latin1');
    out.set(data, offset + 8);
    const crc = crc32(data, crc32(out.subarray(offset + 4, offset + 8)));
    out.writeUInt32BE(crc >>> 0, offset + 8 + data.byteLength);
    offset += 12 + data.byteLength;
  }
  out.set(after, offset);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** A tEXt chunk: keyword, a zero byte, the text, both Latin-1. */
function textChunk([keyword, text]: [string, string]): Chunk {
  return ['tEXt', Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.of(0), Buffer.from(text, 'latin1')])];
}

/** Signature (8 bytes) + IHDR chunk (12 + 13): where readers expect metadata to follow. */
const IHDR_END = 8 + 12 + 13;

/** Inserts tEXt chunks (keyword → text, Latin-1) into an encoded PNG right after IHDR. */
export function addPngText(png: Uint8Array, entries: Record<string, string>): Uint8Array {
  return writeChunks(png.subarray(0, IHDR_END), Object.entries(entries).map(textChunk), png.subarray(IHDR_END));
}

/**
 * Interleaved RGB8 → PNG with tEXt chunks (keyword → Latin-1 text) after IHDR, in its own
 * ArrayBuffer. Level 0: stored, written here; 1-9: sharp's zlib level with adaptive filtering.
 */
export async function encodePng(rgb: Uint8Array, width: number, height: number, text: Record<string, string> = {}, level = 6): Promise<Uint8Array> {
  const row = width * 3;
  if (rgb.byteLength !== row * height) throw new RangeError(`encodePng: ${rgb.byteLength} bytes for ${width}×${height} RGB (expected ${row * height})`);
  if (level > 0) {
    const png = await sharp(rgb, { raw: { width, height, channels: 3 } }).png({ compressionLevel: level, adaptiveFiltering: true }).toBuffer();
    return addPngText(png, text);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  // Each scanline is its filter byte (0 = none) followed by the row's bytes.
  const scanlines = Buffer.alloc((row + 1) * height);
  for (let y = 0; y < height; y++) scanlines.set(rgb.subarray(y * row, (y + 1) * row), y * (row + 1) + 1);
  const chunks: Chunk[] = [['IHDR', ihdr], ...Object.entries(text).map(textChunk)];
  chunks.push(['IDAT', deflateSync(scanlines, { level: 0 })], ['IEND', new Uint8Array(0)]);
  return writeChunks(SIGNATURE, chunks);
}
