/**
 * What one batch output needs, read once and shared: content hashes of its input files (which,
 * with the parameters, make the request key that resume compares), the depth (a file, or a
 * Blender render), the init image and the layout, turned into one wire FrameHeader plus payload
 * parts. The same header goes to the in-process engine and to the service, so both give the
 * same bytes for the same seed.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { type DepthStats, toNearness } from '../depth/convert.ts';
import { decodeDepthPixels } from '../depth/scan.ts';
import { depthRangeOf, readDepthFile } from '../depth/read.ts';
import { DepthcastError } from '../errors.ts';
import { FrameHeader, PROTOCOL_VERSION, describeZodError } from '../protocol/schemas.ts';
import { readNpy } from '../util/npy.ts';
import { type BlendRender, type RenderedView, renderBlendDepth } from './blender.ts';
import type { BatchOutput, BlendView } from './manifest.ts';

/** Bump when the meaning of a request key changes, so old outputs are redone rather than trusted. */
export const REQUEST_FORMAT = 1;

export interface OutputRequest {
  format: number;
  model: string;
  prompt: string;
  negativePrompt: string;
  seed: number;
  params: Record<string, unknown>;
  depth: Record<string, unknown>;
  init: { sha256: string } | null;
  layout: { sha256: string; objects: unknown[] } | null;
  /** A consistent sequence's frame: the request hash of the frame before, which it continues. */
  previous?: string;
}

export interface DepthInfo {
  file: string;
  width: number;
  height: number;
  dtype: 'f32' | 'u16';
  kind: 'zdepth' | 'disparity' | 'normalized';
  near: number;
  far: number;
  camera?: string;
  frame?: number;
  /** Foreground statistics, as the engine computes them for this depth range mode. */
  stats: DepthStats;
}

export interface PreparedJob {
  header: FrameHeader;
  depth: Uint8Array;
  init?: Uint8Array;
  layout?: Uint8Array;
  depthInfo: DepthInfo;
  /** Flow bytes of header.motion kind "flow" (a sequence's frame). */
  motion?: Uint8Array;
  /** Milliseconds spent reading/rendering inputs for this job (0 when they were cached). */
  prepareMs: number;
}

/** JSON with sorted keys: the same value always hashes the same. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]]));
    }
    return v;
  });
}

export function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code === 'ENOENT' ? 'no such file' : e.code ?? e.message;
}

/** A depth file read for a job: what DepthInfo reports, before statistics, plus its bytes. */
interface LoadedDepth extends Omit<DepthInfo, 'stats'> {
  bytes: Uint8Array;
  /** The Blender view it came from (.blend scenes). */
  view?: RenderedView;
}

/** A sequence frame's place: its stream, and the frame before (its output and the job id it last ran as, if it ran in this batch). */
export interface SequencePlace {
  stream: string;
  previous?: { output: BatchOutput; jobId?: string };
}

/** Small bounded memo: the newest `limit` entries stay. */
class Memo<T> {
  private readonly map = new Map<string, Promise<T>>();
  /** `keepFailure`: which errors stay cached (the others are forgotten, so a retry tries again). */
  constructor(private readonly limit: number, private readonly keepFailure: (err: unknown) => boolean = () => false) {}
  get(key: string, make: () => Promise<T>): Promise<T> {
    let p = this.map.get(key);
    if (!p) {
      p = make();
      this.map.set(key, p);
      p.catch((err: unknown) => { if (!this.keepFailure(err) && this.map.get(key) === p) this.map.delete(key); });
      while (this.map.size > this.limit) this.map.delete(this.map.keys().next().value!);
    }
    return p;
  }
}

function detectImageFormat(bytes: Uint8Array, file: string): 'png' | 'jpeg' {
  if (bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) return 'png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'jpeg';
  throw new DepthcastError('BAD_IMAGE', `init image ${file} is neither PNG nor JPEG`);
}

async function readLayoutMap(file: string): Promise<{ ids: Uint16Array; width: number; height: number }> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file));
  } catch (err) {
    throw new DepthcastError('BAD_LAYOUT', `cannot read layout file ${file}: ${errnoText(err)}`);
  }
  const ext = extname(file).toLowerCase();
  if (ext === '.npy') {
    const { data, shape } = readNpy(bytes, file, 'BAD_LAYOUT');
    const dims = shape.filter((d, i) => !(d === 1 && i < shape.length - 2));
    if (dims.length !== 2) throw new DepthcastError('BAD_LAYOUT', `${file}: a layout map must be H×W, got shape (${shape.join(', ')})`);
    const ids = new Uint16Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      if (!Number.isInteger(v) || v < 0 || v > 65535) throw new DepthcastError('BAD_LAYOUT', `${file}: value ${v} at index ${i} is not an object id (an integer 0..65535)`);
      ids[i] = v;
    }
    return { ids, height: dims[0]!, width: dims[1]! };
  }
  if (ext === '.png') {
    try {
      const image = sharp(bytes);
      const meta = await image.metadata();
      const sixteen = meta.depth === 'ushort';
      // grey16 keeps 16-bit samples as they are (without it sharp converts to 8-bit sRGB); 8-bit ids are read as is.
      const channel = image.extractChannel(0);
      const { data, info } = await (sixteen ? channel.toColourspace('grey16').raw({ depth: 'ushort' }) : channel.raw()).toBuffer({ resolveWithObject: true });
      const count = info.width * info.height;
      const ids = sixteen ? new Uint16Array(data.buffer, data.byteOffset, count).slice() : Uint16Array.from(data.subarray(0, count));
      return { ids, width: info.width, height: info.height };
    } catch (err) {
      throw new DepthcastError('BAD_LAYOUT', `${file}: not a readable PNG (${(err as Error).message})`);
    }
  }
  throw new DepthcastError('BAD_LAYOUT', `${file}: a layout map must be .npy (uint16) or .png, not "${ext}"`);
}

export class BatchInputs {
  private readonly hashes = new Memo<string>(4096);
  private readonly depths = new Memo<LoadedDepth>(16);
  /** A .blend that Blender cannot render fails every output of its scene from one Blender run, not one run each. */
  private readonly renders = new Memo<BlendRender>(64, (err) => err instanceof DepthcastError && err.code === 'BAD_DEPTH');
  private readonly files = new Memo<Uint8Array>(16);
  private readonly layouts = new Memo<{ ids: Uint16Array; width: number; height: number }>(16);

  /**
   * @param outDir where Blender renders are kept (<outDir>/.depth/<scene>/)
   * @param log one line per Blender render
   */
  constructor(private readonly outDir: string, private readonly log: (line: string) => void = () => {}, private readonly signal?: AbortSignal) {}

  /** sha256 of a file's content (memoised for the run). */
  hashFile(file: string, code: 'BAD_DEPTH' | 'BAD_IMAGE' | 'BAD_LAYOUT', what: string): Promise<string> {
    return this.hashes.get(file, async () => {
      try {
        const h = createHash('sha256');
        for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
        return h.digest('hex');
      } catch (err) {
        throw new DepthcastError(code, `cannot read ${what} ${file}: ${errnoText(err)}`);
      }
    });
  }

  /** Everything that decides the output image; its hash is what resume compares. */
  async requestFor(o: BatchOutput, model: string): Promise<{ request: OutputRequest; hash: string }> {
    const d = o.depth;
    const depth = d.source === 'file'
      ? { source: 'file', sha256: await this.hashFile(d.file, 'BAD_DEPTH', 'depth file'), kind: d.kind, near: d.near ?? null, far: d.far ?? null }
      : {
          source: 'blend', sha256: await this.hashFile(d.blend, 'BAD_DEPTH', 'Blender file'), camera: d.camera ?? null, frame: d.frame ?? null,
          resolution: d.resolution ?? null, range: d.range, near: d.near ?? null, far: d.far ?? null, engine: d.engine,
        };
    const init = o.init ? { sha256: await this.hashFile(o.init, 'BAD_IMAGE', 'init image') } : null;
    const layout = o.layout ? { sha256: await this.hashFile(o.layout.file, 'BAD_LAYOUT', 'layout file'), objects: o.layout.objects } : null;
    const { model: _model, ...params } = o.params;
    const request: OutputRequest = {
      format: REQUEST_FORMAT, model, prompt: o.prompt, negativePrompt: o.negativePrompt, seed: o.seed, params, depth, init, layout,
    };
    return { request, hash: sha256(canonicalJson(request)) };
  }

  private renderScene(o: BatchOutput & { depth: BlendView }, all: readonly BatchOutput[]): Promise<BlendRender> {
    const d = o.depth;
    const key = `${o.scene}\n${d.blend}`;
    return this.renders.get(key, async () => {
      // One Blender run renders every camera × frame of the scene.
      const views = all.filter((x): x is BatchOutput & { depth: BlendView } => x.scene === o.scene && x.depth.source === 'blend');
      // Sequences need the motion to the frame before: the Vector pass (Cycles).
      const vector = views.some((v) => v.params.consistency !== undefined);
      const cameras = [...new Set(views.map((v) => v.depth.camera).filter((c): c is string => c !== undefined))];
      const frames = [...new Set(views.map((v) => v.depth.frame).filter((f): f is number => f !== undefined))];
      const blendSha256 = await this.hashFile(d.blend, 'BAD_DEPTH', 'Blender file');
      const render = await renderBlendDepth(
        { blend: d.blend, blendSha256, cameras, frames, resolution: d.resolution, engine: d.engine, vector },
        join(this.outDir, '.depth', o.scene), this.signal,
      );
      if (render.rendered) this.log(`rendered depth of ${o.scene} (${render.views.length} view${render.views.length === 1 ? '' : 's'}, ${render.engine}, Blender ${render.blender}) in ${render.seconds.toFixed(1)} s`);
      return render;
    });
  }

  private loadDepth(o: BatchOutput, all: readonly BatchOutput[]): Promise<LoadedDepth> {
    const d = o.depth;
    const key = d.source === 'file' ? `file\n${d.file}\n${d.kind}\n${d.near}\n${d.far}` : `blend\n${o.scene}\n${d.camera}\n${d.frame}\n${d.range}\n${d.near}\n${d.far}`;
    return this.depths.get(key, async () => {
      if (d.source === 'file') {
        const depth = await readDepthFile(d.file);
        const { near, far } = depthRangeOf(depth, d.kind, d, d.file);
        return {
          bytes: new Uint8Array(depth.data.buffer, depth.data.byteOffset, depth.data.byteLength),
          width: depth.width, height: depth.height, dtype: depth.dtype, kind: d.kind, near, far, file: d.file,
        };
      }
      const render = await this.renderScene(o as BatchOutput & { depth: BlendView }, all);
      const view = render.views.find((v) => (d.camera === undefined || v.camera === d.camera) && (d.frame === undefined || v.frame === d.frame));
      if (!view) throw new DepthcastError('BAD_DEPTH', `the Blender render of ${o.scene} has no view for camera ${d.camera ?? '(active)'} frame ${d.frame ?? '(current)'}`);
      const depth = await readDepthFile(view.file);
      let near = d.near;
      let far = d.far;
      if (d.range === 'scene') {
        if (view.min === null || view.max === null) throw new DepthcastError('BAD_DEPTH', `${o.scene}: camera ${view.camera} sees no geometry at frame ${view.frame}`);
        near ??= view.min;
        far ??= Math.max(view.max * (1 + 1e-6), near * (1 + 1e-6));
      } else {
        near ??= view.near;
        far ??= view.far;
      }
      return {
        bytes: new Uint8Array(depth.data.buffer, depth.data.byteOffset, depth.data.byteLength),
        width: depth.width, height: depth.height, dtype: 'f32', kind: 'zdepth', near, far, file: view.file, camera: view.camera, frame: view.frame, view,
      };
    });
  }

  /** Reads (or renders) the inputs of one output and builds the frame the engine or service runs. */
  async prepare(o: BatchOutput, all: readonly BatchOutput[], model: string, jobId: string, sequence?: SequencePlace): Promise<PreparedJob> {
    const t0 = performance.now();
    const depth = await this.loadDepth(o, all);
    const motion = sequence?.previous ? await this.motionTo(depth, await this.loadDepth(sequence.previous.output, all), sequence.previous.jobId) : undefined;
    const init = o.init ? await this.files.get(o.init, async () => {
      try {
        return new Uint8Array(await readFile(o.init!));
      } catch (err) {
        throw new DepthcastError('BAD_IMAGE', `cannot read init image ${o.init}: ${errnoText(err)}`);
      }
    }) : undefined;
    const layout = o.layout ? await this.layouts.get(o.layout.file, () => readLayoutMap(o.layout!.file)) : undefined;
    if (layout && (layout.width !== depth.width || layout.height !== depth.height)) {
      throw new DepthcastError('BAD_LAYOUT', `layout ${o.layout!.file} is ${layout.width}×${layout.height} but the depth is ${depth.width}×${depth.height}`);
    }
    const p = o.params;
    const parsed = FrameHeader.safeParse({
      type: 'frame',
      protocol: PROTOCOL_VERSION,
      jobId,
      stream: sequence?.stream ?? 'batch',
      mode: 'batch',
      motion: motion?.header,
      depth: { width: depth.width, height: depth.height, dtype: depth.dtype, kind: depth.kind, near: depth.near, far: depth.far, byteLength: depth.bytes.byteLength },
      init: init ? { format: detectImageFormat(init, o.init!), byteLength: init.byteLength } : undefined,
      layout: layout ? { width: layout.width, height: layout.height, byteLength: layout.ids.byteLength, objects: o.layout!.objects } : undefined,
      params: {
        model, prompt: o.prompt, negativePrompt: o.negativePrompt, seed: o.seed,
        steps: p.steps, guidance: p.guidance, strength: init ? p.strength : undefined, scheduler: p.scheduler,
        controlnetScale: p.controlnetScale, width: p.width, height: p.height, sizing: p.sizing, depthRange: p.depthRange ?? 'auto',
        regions: p.regions, previewEvery: 0, consistency: p.consistency,
      },
    });
    if (!parsed.success) throw new DepthcastError('BAD_REQUEST', `${o.id}: ${describeZodError(parsed.error)}`);
    const header = parsed.data;
    const pixels = decodeDepthPixels(depth.bytes, depth.dtype, depth.kind, depth.near, depth.far, depth.width * depth.height);
    const { stats } = toNearness({ data: pixels, width: depth.width, height: depth.height, kind: depth.kind, near: depth.near, far: depth.far }, header.params.depthRange);
    return {
      header,
      depth: depth.bytes,
      init,
      layout: layout ? new Uint8Array(layout.ids.buffer, layout.ids.byteOffset, layout.ids.byteLength) : undefined,
      motion: motion?.bytes,
      depthInfo: {
        file: depth.file, width: depth.width, height: depth.height, dtype: depth.dtype, kind: depth.kind, near: depth.near, far: depth.far,
        camera: depth.camera, frame: depth.frame, stats: { ...stats },
      },
      prepareMs: performance.now() - t0,
    };
  }

  /**
   * Motion from a sequence frame to the one before: the Vector pass when that is frame − 1 (what
   * the pass describes), else the two camera poses (exact for static scenes). None when neither
   * is known; the service then runs the frame per frame and says so.
   */
  private async motionTo(current: LoadedDepth, previous: LoadedDepth, previousJobId: string | undefined): Promise<{ header: Record<string, unknown>; bytes?: Uint8Array } | undefined> {
    const view = current.view;
    const before = previous.view;
    if (!view || !before) return undefined;
    const link = previousJobId ? { previousJobId } : {};
    if (view.flow && before.frame === view.frame - 1) {
      const file = view.flow;
      const flow = await this.files.get(file, async () => {
        const { data, shape } = readNpy(new Uint8Array(await readFile(file)), file, 'BAD_FRAME');
        if (data.length !== 2 * view.width * view.height) throw new DepthcastError('BAD_FRAME', `${file}: shape (${shape.join(', ')}), expected 2·${view.height} rows × ${view.width}`);
        return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      });
      return { header: { kind: 'flow', dtype: 'f32', width: view.width, height: view.height, byteLength: flow.byteLength, ...link }, bytes: flow };
    }
    if (view.intrinsics && view.pose && before.pose) {
      return { header: { kind: 'pose', intrinsics: view.intrinsics, pose: view.pose, previousPose: before.pose, ...link } };
    }
    return undefined;
  }
}
