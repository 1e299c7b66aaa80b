/**
 * Binary message framing shared by every client and the server:
 *   u32 little-endian header length N | N bytes of UTF-8 JSON header | payload bytes.
 * Uses only Uint8Array/DataView so the browser bundle can import it.
 */
import { DepthcastError } from '../errors.ts';

/** Header JSON larger than this is refused before parsing. */
export const MAX_HEADER_BYTES = 256 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** The first part of a binary message: u32 LE header length and the JSON header, without the payload. */
export function encodeBinaryHeader(header: unknown): Uint8Array {
  const headerBytes = encoder.encode(JSON.stringify(header));
  const out = new Uint8Array(4 + headerBytes.length);
  new DataView(out.buffer).setUint32(0, headerBytes.length, true);
  out.set(headerBytes, 4);
  return out;
}

export function encodeBinaryMessage(header: unknown, ...payload: Uint8Array[]): Uint8Array {
  const head = encodeBinaryHeader(header);
  let total = head.length;
  for (const p of payload) total += p.byteLength;
  const out = new Uint8Array(total);
  out.set(head, 0);
  let offset = head.length;
  for (const p of payload) {
    out.set(p, offset);
    offset += p.byteLength;
  }
  return out;
}

export interface DecodedBinaryMessage {
  header: unknown;
  payload: Uint8Array;
}

export function decodeBinaryMessage(bytes: Uint8Array): DecodedBinaryMessage {
  if (bytes.byteLength < 4) {
    throw new DepthcastError('BAD_FRAME', `binary message of ${bytes.byteLength} bytes is shorter than its 4-byte header length`);
  }
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
  if (headerLength > MAX_HEADER_BYTES) {
    throw new DepthcastError('BAD_FRAME', `header length ${headerLength} exceeds ${MAX_HEADER_BYTES} bytes`);
  }
  if (4 + headerLength > bytes.byteLength) {
    throw new DepthcastError('BAD_FRAME', `header length ${headerLength} runs past the end of the ${bytes.byteLength}-byte message`);
  }
  let header: unknown;
  try {
    header = JSON.parse(decoder.decode(bytes.subarray(4, 4 + headerLength)));
  } catch (err) {
    throw new DepthcastError('BAD_FRAME', `header is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  return { header, payload: bytes.subarray(4 + headerLength) };
}
