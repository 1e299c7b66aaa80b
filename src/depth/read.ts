/** Depth files: float32 .npy, 16-bit (or 8-bit) PNG, OpenEXR (three's EXRLoader). Rows top to bottom. */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import sharp from 'sharp';
import { DepthcastError } from '../errors.ts';
import { readPngText } from '../image/codec.ts';
import { addPngText } from '../image/png.ts';
import { readNpy } from '../util/npy.ts';

/**
 * The PNG text chunk (keyword) that says which camera Z a 16-bit depth PNG's samples span:
 * JSON `{"near": z, "far": z}`, 0 = near, 65535 = far (and background).
 */
export const DEPTH_RANGE_KEYWORD = 'depthcast:depth-range';

export interface DepthFile {
  /** f32: values as stored; u16: PNG samples (0..65535). */
  dtype: 'f32' | 'u16';
  data: Float32Array | Uint16Array;
  width: number;
  height: number;
  /** u16 PNG: the near/far its depthcast:depth-range chunk records, when it has one. */
  range?: { near: number; far: number };
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
    let samples: Uint16Array;
    let size: { width: number; height: number };
    try {
      // grey16 keeps 16-bit samples (8-bit files are widened ×257); without it sharp converts to 8-bit sRGB.
      const { data, info } = await sharp(bytes).extractChannel(0).toColourspace('grey16').raw({ depth: 'ushort' }).toBuffer({ resolveWithObject: true });
      samples = new Uint16Array(data.buffer, data.byteOffset, info.width * info.height).slice();
      size = info;
    } catch (err) {
      throw new DepthcastError('BAD_DEPTH', `${path}: not a readable PNG (${(err as Error).message})`);
    }
    const range = pngDepthRange(bytes, path);
    return { dtype: 'u16', data: samples, width: size.width, height: size.height, ...(range ? { range } : {}) };
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

function pngDepthRange(png: Uint8Array, path: string): { near: number; far: number } | undefined {
  const text = readPngText(png)[DEPTH_RANGE_KEYWORD];
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const { near, far } = (value ?? {}) as { near?: unknown; far?: unknown };
  if (typeof near !== 'number' || typeof far !== 'number' || !(near > 0) || !(far > near) || !Number.isFinite(far)) {
    throw new DepthcastError('BAD_DEPTH', `${path}: its ${DEPTH_RANGE_KEYWORD} chunk must be JSON {"near": z, "far": z} with 0 < near < far, got ${JSON.stringify(text.slice(0, 80))}`);
  }
  return { near, far };
}

/** Adds the depth-range chunk to an encoded 16-bit depth PNG, so readers need no --near/--far. */
export function withDepthRange(png: Uint8Array, near: number, far: number): Uint8Array {
  return addPngText(png, { [DEPTH_RANGE_KEYWORD]: JSON.stringify({ near, far }) });
}

/**
 * The near/far a depth file is read with. Given values win; float camera Z defaults to its
 * smallest and largest finite depth; a 16-bit PNG's samples mean nothing without a range, so it
 * comes from the file's depth-range chunk or the caller must give it: never a guess. Other
 * kinds do not use near/far (placeholders 1, 2).
 */
export function depthRangeOf(
  depth: DepthFile,
  kind: 'zdepth' | 'disparity' | 'normalized',
  given: { near?: number; far?: number },
  what: string,
): { near: number; far: number } {
  if (kind !== 'zdepth') return { near: given.near ?? 1, far: given.far ?? 2 };
  if (depth.dtype === 'u16') {
    const near = given.near ?? depth.range?.near;
    const far = given.far ?? depth.range?.far;
    if (near === undefined || far === undefined) {
      throw new DepthcastError(
        'BAD_DEPTH',
        `${what}: a 16-bit PNG holds 0..65535, not camera Z, and this one has no ${DEPTH_RANGE_KEYWORD} chunk saying what they span; give near and far (--near/--far, or depth.near/depth.far in a manifest)`,
      );
    }
    return { near, far };
  }
  const range = finitePositiveRange(depth.data);
  if ((given.near === undefined || given.far === undefined) && !(range.max >= range.min)) {
    throw new DepthcastError('BAD_DEPTH', `${what}: no finite positive depth values, so near/far cannot be derived; give near and far`);
  }
  return { near: given.near ?? range.min, far: given.far ?? range.max * (1 + 1e-6) };
}
