/**
 * GPT-2's byte-to-unicode alphabet, as used by CLIP's byte-level BPE: every byte value gets a
 * printable character so that BPE symbols never contain whitespace or control characters.
 * Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100, U+0101, … in order.
 */
function buildByteToUnicode(): readonly string[] {
  const table: string[] = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCharCode(printable ? b : 0x100 + next++);
  }
  return Object.freeze(table);
}

/** BYTE_TO_UNICODE[byte] is the one-character symbol for that byte. */
export const BYTE_TO_UNICODE: readonly string[] = buildByteToUnicode();

/** True when every UTF-16 unit of `s` is printable ASCII other than space (byte-level encoding is the identity). */
const IDENTITY_ASCII = /^[\x21-\x7e]*$/;

const utf8 = new TextEncoder();

/** Maps a word's UTF-8 bytes to the byte-level alphabet. */
export function byteEncode(word: string): string {
  if (IDENTITY_ASCII.test(word)) return word;
  const bytes = utf8.encode(word);
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += BYTE_TO_UNICODE[bytes[i]!];
  return out;
}
