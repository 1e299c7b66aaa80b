/**
 * Reads `.safetensors` files by offsets (header JSON, then raw little-endian data): one tensor at
 * a time from disk, so a converter never holds a whole checkpoint in memory. F32, F16 and BF16
 * tensors come back as float32.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { DepthcastError } from '../errors.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';

const BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };
/** A header larger than this is not a checkpoint we can trust (real ones are a few hundred KB). */
const MAX_HEADER_BYTES = 100 * 2 ** 20;

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
}

function bad(path: string, why: string): DepthcastError {
  return new DepthcastError('BAD_MODEL', `${path} is not a usable safetensors file: ${why}`);
}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly tensors: ReadonlyMap<string, TensorEntry>,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    const handle = await open(path, 'r');
    try {
      const { size } = await handle.stat();
      const head = Buffer.alloc(8);
      if (size < 8 || (await handle.read(head, 0, 8, 0)).bytesRead !== 8) throw bad(path, 'shorter than its 8-byte header length');
      const n = Number(head.readBigUInt64LE(0));
      if (n > MAX_HEADER_BYTES || 8 + n > size) throw bad(path, `header length ${n} does not fit the file (${size} bytes)`);
      const text = Buffer.alloc(n);
      await handle.read(text, 0, n, 8);
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(text.toString('utf8'));
      } catch (err) {
        throw bad(path, `header is not JSON (${(err as Error).message})`);
      }
      const tensors = new Map<string, TensorEntry>();
      for (const [name, raw] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        if (e.dtype !== 'F32' && e.dtype !== 'F16' && e.dtype !== 'BF16') {
          throw bad(path, `tensor ${name} has dtype ${String(e.dtype)}; depthcast reads F32, F16 and BF16 weights`);
        }
        const shape = e.shape;
        const offsets = e.data_offsets;
        if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw bad(path, `tensor ${name} has a bad shape`);
        if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) throw bad(path, `tensor ${name} has bad data_offsets`);
        const [begin, end] = offsets as [number, number];
        const count = (shape as number[]).reduce((a, b) => a * b, 1);
        if (end - begin !== count * BYTES[e.dtype] || 8 + n + end > size) {
          throw bad(path, `tensor ${name}: data_offsets [${begin}, ${end}] do not match shape [${shape.join(', ')}] ${e.dtype} inside the file`);
        }
        tensors.set(name, { name, dtype: e.dtype, shape: shape as number[], offset: 8 + n + begin, byteLength: end - begin });
      }
      return new SafetensorsFile(path, handle, tensors);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Reads one tensor as float32 (F16/BF16 are upcast); the array is the caller's. */
  async readFloat32(name: string): Promise<Float32Array> {
    const e = this.tensors.get(name);
    if (!e) throw new DepthcastError('BAD_MODEL', `${this.path} has no tensor ${name}`);
    const bytes = new Uint8Array(e.byteLength);
    let done = 0;
    while (done < e.byteLength) {
      const { bytesRead } = await this.handle.read(bytes, done, e.byteLength - done, e.offset + done);
      if (bytesRead === 0) throw bad(this.path, `tensor ${name} is cut short`);
      done += bytesRead;
    }
    const count = e.byteLength / BYTES[e.dtype];
    const view = new DataView(bytes.buffer);
    if (e.dtype === 'F32') {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    }
    const halves = new Uint16Array(count);
    for (let i = 0; i < count; i++) halves[i] = view.getUint16(i * 2, true);
    if (e.dtype === 'F16') return float16ToFloat32(halves);
    const out = new Float32Array(count);
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) bits[i] = halves[i]! << 16;
    return out;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
