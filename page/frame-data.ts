/**
 * Pure helpers between what WebGL reads back and what goes on the wire. No DOM, no three.js:
 * unit-tested in Node (test/page-frame.test.ts) and bundled into the page.
 *
 * WebGL's readPixels returns rows bottom-up; the protocol wants row 0 = top of the image.
 */
import { encodeBinaryMessage } from '../src/protocol/frame.ts';
import { FrameHeader, PROTOCOL_VERSION, describeZodError, type FrameHeaderInput, type GenerationParamsInput } from '../src/protocol/schemas.ts';

/** Copies `src` (rows bottom-up, `channels` values per pixel) into a top-down array of one channel. */
export function flipRowsTakeChannel<T extends Float32Array | Uint8Array>(
  src: T,
  width: number,
  height: number,
  channels: number,
  channel: number,
  out: Float32Array,
): Float32Array {
  if (src.length < width * height * channels) throw new Error(`readback has ${src.length} values, expected ${width * height * channels}`);
  for (let y = 0; y < height; y++) {
    const srcRow = (height - 1 - y) * width * channels;
    const dstRow = y * width;
    for (let x = 0; x < width; x++) out[dstRow + x] = src[srcRow + x * channels + channel]!;
  }
  return out;
}

/** Flips an RGBA float readback (R = linear view Z, A = coverage) into top-down Z, background = +Infinity. */
export function depthFromFloatRGBA(src: Float32Array, width: number, height: number): Float32Array {
  const out = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    const srcRow = (height - 1 - y) * width * 4;
    const dstRow = y * width;
    for (let x = 0; x < width; x++) {
      const i = srcRow + x * 4;
      const z = src[i]!;
      out[dstRow + x] = src[i + 3]! > 0.5 && z > 0 && Number.isFinite(z) ? z : Infinity;
    }
  }
  return out;
}

/**
 * Fallback encoding for GPUs that cannot render to float targets: t = (z - near) / (far - near)
 * in [0, 1) is written as three base-256 digits in R, G, B (R most significant); A = coverage,
 * so cleared pixels (A = 0) are background.
 */
export function depthFromPackedRGBA(src: Uint8Array, width: number, height: number, near: number, far: number): Float32Array {
  const out = new Float32Array(width * height);
  const span = far - near;
  for (let y = 0; y < height; y++) {
    const srcRow = (height - 1 - y) * width * 4;
    const dstRow = y * width;
    for (let x = 0; x < width; x++) {
      const i = srcRow + x * 4;
      if (src[i + 3]! < 128) { out[dstRow + x] = Infinity; continue; }
      const t = src[i]! / 256 + src[i + 1]! / 65536 + src[i + 2]! / 16777216;
      out[dstRow + x] = near + t * span;
    }
  }
  return out;
}

/** Id pass readback: id = R + 256·G of an RGBA8 target (flat colours, no blending), rows flipped. */
export function idsFromRGBA8(src: Uint8Array, width: number, height: number): Uint16Array {
  const out = new Uint16Array(width * height);
  for (let y = 0; y < height; y++) {
    const srcRow = (height - 1 - y) * width * 4;
    const dstRow = y * width;
    for (let x = 0; x < width; x++) {
      const i = srcRow + x * 4;
      out[dstRow + x] = src[i + 3]! > 127 ? src[i]! | (src[i + 1]! << 8) : 0;
    }
  }
  return out;
}

/** Colour an id is drawn with in the id pass, as 0..1 floats (inverse of idsFromRGBA8). */
export function idToColor(id: number): [number, number, number] {
  if (!Number.isInteger(id) || id < 0 || id > 65535) throw new Error(`object id ${id} is outside 0..65535`);
  return [(id & 255) / 255, (id >> 8) / 255, 0];
}

export interface ObjectDepthStats {
  id: number;
  pixels: number;
  minZ: number;
  maxZ: number;
  meanZ: number;
  /** [x0, y0, x1, y1] in frame pixels, x1/y1 exclusive. */
  bbox: [number, number, number, number];
}

export interface DepthStats {
  width: number;
  height: number;
  /** Over finite pixels only. */
  min: number;
  max: number;
  mean: number;
  backgroundPixels: number;
  perObject: Record<number, ObjectDepthStats>;
}

/** Statistics of a top-down depth frame, optionally split by an id map of the same size. */
export function depthStats(depth: Float32Array, width: number, height: number, ids?: Uint16Array): DepthStats {
  let min = Infinity, max = -Infinity, sum = 0, n = 0, bg = 0;
  const perObject: Record<number, ObjectDepthStats> = {};
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const z = depth[i]!;
      const finite = Number.isFinite(z);
      if (finite) {
        if (z < min) min = z;
        if (z > max) max = z;
        sum += z;
        n++;
      } else bg++;
      const id = ids ? ids[i]! : 0;
      if (id === 0 || !finite) continue;
      let s = perObject[id];
      if (!s) {
        s = { id, pixels: 0, minZ: Infinity, maxZ: -Infinity, meanZ: 0, bbox: [x, y, x + 1, y + 1] };
        perObject[id] = s;
      }
      s.pixels++;
      s.meanZ += z;
      if (z < s.minZ) s.minZ = z;
      if (z > s.maxZ) s.maxZ = z;
      if (x < s.bbox[0]) s.bbox[0] = x;
      if (y < s.bbox[1]) s.bbox[1] = y;
      if (x + 1 > s.bbox[2]) s.bbox[2] = x + 1;
      if (y + 1 > s.bbox[3]) s.bbox[3] = y + 1;
    }
  }
  for (const s of Object.values(perObject)) s.meanZ /= s.pixels;
  return { width, height, min, max, mean: n ? sum / n : NaN, backgroundPixels: bg, perObject };
}

/** Frame size for a view of `aspect` (width / height): long side `longSide`, both multiples of 8, within `maxPixels`. */
export function frameSize(aspect: number, longSide: number, maxPixels = Infinity): { width: number; height: number } {
  const a = Number.isFinite(aspect) && aspect > 0 ? aspect : 1;
  let w = a >= 1 ? longSide : longSide * a;
  let h = a >= 1 ? longSide / a : longSide;
  if (w * h > maxPixels) {
    const s = Math.sqrt(maxPixels / (w * h));
    w *= s;
    h *= s;
  }
  const r8 = (v: number) => Math.max(64, Math.floor(v / 8) * 8);
  return { width: r8(w), height: r8(h) };
}

export interface LayoutObjectIn {
  /** Id in the local id pass. */
  id: number;
  label: string;
  prompt?: string;
  weight: number;
}

/**
 * The layout to send: only objects with a prompt keep their id (renumbered 1..n in the order
 * given); every other pixel becomes 0, so it follows the global prompt. Returns undefined when
 * no visible object has a prompt.
 */
export function buildLayout(ids: Uint16Array, width: number, height: number, objects: LayoutObjectIn[], stats?: DepthStats) {
  const remap = new Uint16Array(65536);
  const sent: { id: number; label: string; prompt?: string; weight: number; bbox?: [number, number, number, number] }[] = [];
  for (const o of objects) {
    if (!o.prompt || !o.prompt.trim()) continue;
    if (sent.length >= 256) break;
    const s = stats?.perObject[o.id];
    if (stats && !s) continue; // not visible in this frame
    const newId = sent.length + 1;
    remap[o.id] = newId;
    sent.push({ id: newId, label: o.label.slice(0, 200) || `object ${o.id}`, prompt: o.prompt, weight: o.weight, ...(s ? { bbox: s.bbox } : {}) });
  }
  if (sent.length === 0) return undefined;
  const map = new Uint16Array(width * height);
  for (let i = 0; i < map.length; i++) map[i] = remap[ids[i]!]!;
  return { map, objects: sent };
}

/** Little-endian bytes of a typed array (a copy on big-endian hosts, a view otherwise). */
export function littleEndianBytes(a: Float32Array | Uint16Array): Uint8Array {
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  if (le) return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const out = new Uint8Array(a.byteLength);
  const dv = new DataView(out.buffer);
  if (a instanceof Float32Array) a.forEach((v, i) => dv.setFloat32(i * 4, v, true));
  else a.forEach((v, i) => dv.setUint16(i * 2, v, true));
  return out;
}

export interface FrameInput {
  jobId: string;
  stream: string;
  depth: Float32Array;
  width: number;
  height: number;
  near: number;
  far: number;
  params: GenerationParamsInput;
  /** Raw RGBA8, rows top-down, same size as depth. */
  init?: Uint8Array;
  layout?: { map: Uint16Array; objects: NonNullable<FrameHeaderInput['layout']>['objects'] };
  /** The camera motion to the stream's previous frame (a static scene): its `pose` motion part. */
  motion?: Extract<NonNullable<FrameHeaderInput['motion']>, { kind: 'pose' }>;
}

export class FrameBuildError extends Error {
  override readonly name = 'FrameBuildError';
}

/** Builds and validates (with the shared zod schema) one binary depth frame. */
export function buildFrameMessage(f: FrameInput): { header: FrameHeaderInput; bytes: Uint8Array } {
  const depthBytes = littleEndianBytes(f.depth);
  const layoutBytes = f.layout ? littleEndianBytes(f.layout.map) : undefined;
  const header: FrameHeaderInput = {
    type: 'frame',
    protocol: PROTOCOL_VERSION,
    jobId: f.jobId,
    stream: f.stream,
    mode: 'live',
    depth: { width: f.width, height: f.height, dtype: 'f32', kind: 'zdepth', near: f.near, far: f.far, byteLength: depthBytes.byteLength },
    params: f.params,
  };
  if (f.init) header.init = { format: 'rgba8', width: f.width, height: f.height, byteLength: f.init.byteLength };
  if (f.layout && layoutBytes) header.layout = { width: f.width, height: f.height, byteLength: layoutBytes.byteLength, objects: f.layout.objects };
  if (f.motion) header.motion = f.motion;
  const check = FrameHeader.safeParse(header);
  if (!check.success) throw new FrameBuildError(describeZodError(check.error));
  const payloads = [depthBytes];
  if (f.init) payloads.push(f.init);
  if (layoutBytes) payloads.push(layoutBytes);
  return { header, bytes: encodeBinaryMessage(header, ...payloads) };
}
