/** Depth files: float32 .npy, 16-bit (or 8-bit) PNG, OpenEXR (three's EXRLoader). Rows top to bottom. */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import sharp from 'sharp';
import { DepthcastError } from '../errors.ts';
import { readNpy } from '../util/npy.ts';

export interface DepthFile {
  /** f32: values as stored; u16: PNG samples (0..65535). */
  dtype: 'f32' | 'u16';
  data: Float32Array | Uint16Array;
  width: number;
  height: number;
}

export async function readDepthFile(path: string): Promise<DepthFile> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (err) {
    throw new DepthcastError('BAD_DEPTH', `cannot read depth file ${path}: ${(err as Error).message}`);
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.npy') {
    const { data, shape } = readNpy(bytes, path);
    const dims = shape.filter((d, i) => !(d === 1 && i < shape.length - 2));
    if (dims.length !== 2) throw new DepthcastError('BAD_DEPTH', `${path}: depth must be H×W (or 1×H×W), got shape (${shape.join(', ')})`);
    return { dtype: 'f32', data, height: dims[0]!, width: dims[1]! };
  }
  if (ext === '.png') {
    try {
      // grey16 keeps 16-bit samples (8-bit files are widened ×257); without it sharp converts to 8-bit sRGB.
      const { data, info } = await sharp(bytes).extractChannel(0).toColourspace('grey16').raw({ depth: 'ushort' }).toBuffer({ resolveWithObject: true });
      const samples = new Uint16Array(data.buffer, data.byteOffset, info.width * info.height).slice();
      return { dtype: 'u16', data: samples, width: info.width, height: info.height };
    } catch (err) {
      throw new DepthcastError('BAD_DEPTH', `${path}: not a readable PNG (${(err as Error).message})`);
    }
  }
  if (ext === '.exr') {
    const { EXRLoader } = await import('three/examples/jsm/loaders/EXRLoader.js');
    const { FloatType } = await import('three');
    let parsed: { width: number; height: number; data: Float32Array | Uint16Array; format: number };
    try {
      const loader = new EXRLoader();
      loader.setDataType(FloatType);
      parsed = loader.parse(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer) as never;
    } catch (err) {
      throw new DepthcastError('BAD_DEPTH', `${path}: not a readable OpenEXR file (${(err as Error).message})`);
    }
    const { width, height } = parsed;
    const channels = parsed.data.length / (width * height);
    const out = new Float32Array(width * height);
    // EXRLoader returns rows bottom-up (WebGL texture order); flip to top-down.
    for (let y = 0; y < height; y++) {
      const src = (height - 1 - y) * width;
      for (let x = 0; x < width; x++) out[y * width + x] = (parsed.data as Float32Array)[(src + x) * channels]!;
    }
    return { dtype: 'f32', data: out, width, height };
  }
  throw new DepthcastError('BAD_DEPTH', `${path}: unsupported depth file type "${ext}" (use .npy, .png or .exr)`);
}

/** Smallest and largest finite positive value: default near/far for a depth file that does not say. */
export function finitePositiveRange(data: Float32Array | Uint16Array): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v > 0 && v < Infinity) {
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  return { min, max };
}
