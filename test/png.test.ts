/** The PNG writer (stored for live results, sharp's for files), read back by an independent decoder (sharp/libspng). */
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { readPngText } from '../src/image/codec.ts';
import { addPngText, encodePng } from '../src/image/png.ts';

function pattern(width: number, height: number): Uint8Array {
  return Uint8Array.from({ length: width * height * 3 }, (_, i) => (i * 37 + (i >> 5)) & 255);
}

describe('encodePng', () => {
  for (const [width, height, level] of [[7, 5, 0], [512, 512, 0], [33, 17, 6]] as const) {
    it(`${width}×${height} at level ${level} decodes to the same bytes, with its text chunks`, async () => {
      const rgb = pattern(width, height);
      const png = await encodePng(rgb, width, height, { parameters: '{"seed":1,"prompt":"a house"}', Software: 'depthcast' }, level);
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      expect([info.width, info.height, info.channels]).toEqual([width, height, 3]);
      expect(Buffer.from(data).equals(Buffer.from(rgb))).toBe(true);
      expect(readPngText(png)).toEqual({ parameters: '{"seed":1,"prompt":"a house"}', Software: 'depthcast' });
      // Its own ArrayBuffer (never Buffer's shared pool): the worker transfers it.
      expect([png.byteOffset, png.buffer.byteLength]).toEqual([0, png.byteLength]);
    });
  }

  it('addPngText puts tEXt chunks into an encoder\'s PNG that still decodes', async () => {
    const rgb = pattern(9, 4);
    const encoded = await sharp(rgb, { raw: { width: 9, height: 4, channels: 3 } }).png().toBuffer();
    const png = addPngText(encoded, { parameters: '{"seed":2}' });
    expect(readPngText(png)).toEqual({ parameters: '{"seed":2}' });
    const { data } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect(Buffer.from(data).equals(Buffer.from(rgb))).toBe(true);
  });

  it('refuses a byte count that does not match the size', async () => {
    await expect(encodePng(new Uint8Array(10), 2, 2)).rejects.toThrow(/expected 12/);
  });
});
