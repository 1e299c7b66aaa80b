/** NumPy .npy (format 1.0/2.0, little-endian, C order) reading and writing for float/uint arrays. */
import { DepthcastError, type ErrorCode } from '../errors.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';

export interface NpyArray {
  data: Float32Array;
  shape: number[];
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

export function readNpy(bytes: Uint8Array, what = 'npy file', code: ErrorCode = 'BAD_DEPTH'): NpyArray {
  const fail = (msg: string) => new DepthcastError(code, `${what}: ${msg}`);
  if (bytes.length < 10 || !MAGIC.every((b, i) => bytes[i] === b)) throw fail('not a .npy file (bad magic)');
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major >= 2 ? view.getUint32(8, true) : view.getUint16(8, true);
  const start = (major >= 2 ? 12 : 10) + headerLen;
  if (start > bytes.length) throw fail('truncated header');
  const header = new TextDecoder().decode(bytes.subarray(major >= 2 ? 12 : 10, start));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || !fortran || shapeText === undefined) throw fail('unreadable header');
  if (fortran === 'True') throw fail('Fortran-ordered arrays are not supported; save with np.ascontiguousarray');
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const sizes: Record<string, number> = { '<f4': 4, '<f8': 8, '<f2': 2, '<u2': 2, '|u1': 1, '<i4': 4 };
  const size = sizes[descr];
  if (!size) throw fail(`dtype ${descr} is not supported (use float32 '<f4', float64, float16, uint16 or uint8)`);
  if (bytes.length - start < count * size) throw fail(`truncated: ${bytes.length - start} data bytes for shape (${shape.join(', ')}) of ${descr}, expected ${count * size}`);
  const body = bytes.slice(start, start + count * size).buffer;
  let data: Float32Array;
  switch (descr) {
    case '<f4': data = new Float32Array(body); break;
    case '<f8': data = Float32Array.from(new Float64Array(body)); break;
    case '<f2': data = float16ToFloat32(new Uint16Array(body)); break;
    case '<u2': data = Float32Array.from(new Uint16Array(body)); break;
    case '<i4': data = Float32Array.from(new Int32Array(body)); break;
    default: data = Float32Array.from(new Uint8Array(body));
  }
  return { data, shape };
}

export function writeNpy(data: Float32Array, shape: readonly number[]): Uint8Array {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const unpadded = 10 + header.length + 1;
  header += ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}
