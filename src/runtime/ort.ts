/**
 * The only module that imports onnxruntime-node. It maps devices to execution providers,
 * converts dtypes at the session boundary (fp16 models take and give Uint16Array halves;
 * callers always see Float32Array), checks input names before a run, and reports the shapes
 * of every feed when a run fails.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { DepthcastError } from '../errors.ts';
import { float16ToFloat32, float32ToFloat16 } from './float16.ts';
import type { ElemType } from '../models/onnx-graph.ts';

export type Device = 'auto' | 'cpu' | 'cuda' | 'dml' | 'webgpu' | 'coreml';
export type ElementType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'uint8' | 'uint16' | 'other';

export interface TensorSpec {
  name: string;
  type: ElementType;
  /** Numbers for fixed dims, strings (or -1) for symbolic/dynamic ones. */
  shape: readonly (number | string)[];
}

/**
 * What callers feed: float data as Float32Array (or as raw IEEE halves in a Uint16Array, passed
 * straight to a float16 input), ints as Int32Array/BigInt64Array (uint8/uint16 inputs: Uint8Array/
 * Uint16Array), or a number (scalar/broadcast).
 */
export interface Feed {
  data: Float32Array | Uint16Array | Uint8Array | Int32Array | BigInt64Array | number;
  dims: readonly number[];
  /**
   * The contents stay the same for as long as this key object lives and is passed (one
   * generation's embeddings or control image: pass that generation's key), so an fp16 model
   * converts them once and a WebGPU session uploads them once (residentFeeds). A key, not a
   * flag: buffers are reused across generations with new contents.
   */
  stableFor?: object;
}

/** A float output: `data` as float32 (converted on first use for fp16 models), `half` when the model gave halves. */
export class OutputTensor {
  private f32?: Float32Array;
  constructor(
    readonly dims: number[],
    f32: Float32Array | undefined,
    readonly half?: Uint16Array,
  ) {
    this.f32 = f32;
  }

  get data(): Float32Array {
    this.f32 ??= float16ToFloat32(this.half!);
    return this.f32;
  }

  /**
   * The values as float32 for a caller that reads them before its next run: the model's own
   * float32 buffer, or halves converted into `reuse` (same length), so a per-step fp16 output
   * costs no new array.
   */
  float32Into(reuse: Float32Array): Float32Array {
    if (this.f32) return this.f32;
    if (reuse.length !== this.half!.length) throw new RangeError(`float32Into: ${reuse.length} values for an output of ${this.half!.length}`);
    return float16ToFloat32(this.half!, reuse);
  }
}

/**
 * Half-precision copies of stable feeds, shared by every session: a ControlNet and its UNet
 * take the same latents each step and the same embeddings each generation, converted once.
 * When a buffer comes back with a new key (new contents), its halves are rewritten in place:
 * runs are awaited one after another, so no run still reads the old ones.
 */
const halfCopies = new WeakMap<Float32Array, { key: object; half: Uint16Array }>();

/**
 * Stable feeds kept on the GPU between runs (WebGPU). onnxruntime-node has no IO binding, but a
 * WebGPU session can leave an output on the GPU (`preferredOutputLocation: 'gpu-buffer'`) and any
 * later run takes that handle as an input without a copy. So a feed marked `stableFor` goes up
 * once through a one-node Identity graph and every run until its key changes feeds the handle:
 * a generation's embeddings and control image cross once, not once per step. Entries are keyed
 * by the caller's buffer (its contents are fixed while the key is; it is only compared, never
 * read after the run that uploaded it, though an entry keeps it alive) and shared by every session,
 * as a ControlNet and its UNet take the same ones. At most MAX_RESIDENT stay; the least recently
 * fed is disposed first, which is never one of the current run's (a run feeds fewer).
 */
const MAX_RESIDENT = 8;
interface ResidentEntry {
  key: object;
  type: string;
  dims: string;
  tensor: ort.Tensor;
}
const residentFeeds = new Map<object, ResidentEntry>();
/**
 * Types a feed can stay on the GPU in: those onnxruntime-common holds in a GPU buffer that the
 * upload graph can declare (not uint32, which no feed has). Others (uint16 control levels) are fed each run.
 */
const GPU_BUFFER_TYPES: ReadonlySet<string> = new Set<ElemType>(['float32', 'float16', 'int32', 'int64', 'uint8', 'bool']);
const uploaders = new Map<string, Promise<ort.InferenceSession>>();

/** A WebGPU session whose output `y` is input `x`, left on the GPU. */
function uploader(type: ElemType, rank: number): Promise<ort.InferenceSession> {
  const id = `${type}/${rank}`;
  let session = uploaders.get(id);
  if (!session) {
    session = (async () => {
      const { GraphBuilder } = await import('../models/onnx-graph.ts');
      const g = new GraphBuilder(`upload-${type}`);
      const dims = Array.from({ length: rank }, (_, i) => `d${i}`);
      g.op('Identity', [g.input('x', type, dims)], {}, 'y');
      g.output('y', type, dims);
      return ort.InferenceSession.create(g.toBytes({ producer: 'depthcast', version: 'upload' }), {
        executionProviders: ['webgpu'],
        preferredOutputLocation: 'gpu-buffer',
        logSeverityLevel: 3,
      });
    })();
    session.catch(() => uploaders.delete(id));
    uploaders.set(id, session);
  }
  return session;
}

/**
 * The GPU copy of `cpu` (built from `source` for this key), uploading it when there is none.
 * `uploaded`: bytes that crossed now (0 when the copy was already there). Never call getData()
 * on the handle: onnxruntime-node aborts the process on a GPU tensor's download.
 */
async function residentTensor(source: object, key: object, cpu: ort.Tensor): Promise<{ tensor: ort.Tensor; uploaded: number }> {
  const dims = cpu.dims.join('x');
  const hit = residentFeeds.get(source);
  residentFeeds.delete(source);
  if (hit && hit.key === key && hit.type === cpu.type && hit.dims === dims) {
    residentFeeds.set(source, hit);
    return { tensor: hit.tensor, uploaded: 0 };
  }
  hit?.tensor.dispose();
  const session = await uploader(cpu.type as ElemType, cpu.dims.length);
  const tensor = (await session.run({ x: cpu })).y as ort.Tensor;
  residentFeeds.set(source, { key, type: cpu.type, dims, tensor });
  for (const [old, entry] of residentFeeds) {
    if (residentFeeds.size <= MAX_RESIDENT) break;
    residentFeeds.delete(old);
    entry.tensor.dispose();
  }
  return { tensor, uploaded: (cpu.data as ArrayBufferView).byteLength };
}

/** How many stable feeds are on the GPU now (for tests). */
export function residentFeedCount(): number {
  return residentFeeds.size;
}

const EP_OF_DEVICE: Record<Exclude<Device, 'auto'>, string> = {
  cpu: 'cpu',
  cuda: 'cuda',
  dml: 'dml',
  webgpu: 'webgpu',
  coreml: 'coreml',
};

/** Devices `auto` tries, best first, for this platform; the CPU always comes last. */
export function autoDeviceOrder(platform: NodeJS.Platform = process.platform): Exclude<Device, 'auto'>[] {
  if (platform === 'win32') return ['cuda', 'dml', 'webgpu', 'cpu'];
  if (platform === 'darwin') return ['coreml', 'webgpu', 'cpu'];
  return ['cuda', 'webgpu', 'cpu'];
}

/**
 * Whether the CUDA EP's provider library was installed beside the binding
 * (`node node_modules/onnxruntime-node/script/install --onnxruntime-node-install=cuda12`); without it ORT can only fail, loudly.
 */
export function cudaProviderInstalled(): boolean {
  try {
    const root = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    const dir = join(root, 'bin', 'napi-v6', process.platform, process.arch);
    return existsSync(join(dir, process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so'));
  } catch {
    return false;
  }
}

/** Backends this onnxruntime-node build carries (e.g. cpu, webgpu; cuda only when its EP is installed). */
export function listBundledBackends(): string[] {
  const list = (ort as unknown as { listSupportedBackends?: () => { name: string; bundled: boolean }[] }).listSupportedBackends;
  return list ? list().filter((b) => b.bundled).map((b) => b.name) : ['cpu'];
}

function elementType(type: string): ElementType {
  return type === 'float32' || type === 'float16' || type === 'float64' || type === 'int64' || type === 'int32' || type === 'uint8' || type === 'uint16' ? type : 'other';
}

function specsOf(meta: readonly ort.InferenceSession.ValueMetadata[]): TensorSpec[] {
  return meta.map((m) =>
    m.isTensor
      ? { name: m.name, type: elementType(m.type), shape: [...m.shape] }
      : { name: m.name, type: 'other' as const, shape: [] },
  );
}

function describeFeeds(feeds: Record<string, Feed>): string {
  // Names the array type so a failing fp16 run shows whether halves or floats went in.
  return Object.entries(feeds)
    .map(([name, f]) => `${name}[${f.dims.join('x')}]:${typeof f.data === 'number' ? 'scalar' : f.data.constructor.name}`)
    .join(', ');
}

/** An ONNX graph built in memory (the composed ControlNet + UNet): its bytes are read only during session creation. */
export interface InMemoryGraph {
  bytes: Uint8Array;
  /** The folder that external-data locations in the graph are relative to. */
  externalDataDir: string;
  /** What error messages call it (there is no file). */
  label: string;
}

function sizeOf(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/**
 * A one-value feed takes the shape the model declares for it: [] for a scalar input, [1] for a
 * one-element vector (exports differ: conditioning_scale is [] in some, [1] in others). Other
 * feeds keep their dims.
 */
function scalarDims(spec: TensorSpec, feed: Feed): number[] {
  const dims = [...feed.dims];
  if (typeof feed.data !== 'number' || sizeOf(dims) !== 1) return dims;
  if (spec.shape.length === 0) return [];
  if (spec.shape.length === 1 && (spec.shape[0] === 1 || typeof spec.shape[0] !== 'number' || spec.shape[0] < 0)) return [1];
  return dims;
}

export class ModelSession {
  private constructor(
    /** Component name, e.g. "unet". */
    readonly name: string,
    readonly path: string,
    readonly device: Exclude<Device, 'auto'>,
    private readonly session: ort.InferenceSession,
    readonly inputs: TensorSpec[],
    readonly outputs: TensorSpec[],
  ) {
    this.residentFeeds = device === 'webgpu';
  }

  /**
   * `source`: an ONNX file, or a graph built in memory with the folder its external-data
   * locations are relative to. `saveOptimizedTo`: where ORT writes the graph it optimised (for
   * checks of what it folded).
   */
  static async create(name: string, source: string | InMemoryGraph, device: Exclude<Device, 'auto'>, saveOptimizedTo?: string): Promise<ModelSession> {
    const inMemory = typeof source !== 'string';
    const options: ort.InferenceSession.SessionOptions = {
      ...(saveOptimizedTo ? { optimizedModelFilePath: saveOptimizedTo } : {}),
      executionProviders: [EP_OF_DEVICE[device]],
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      // Spinning intra-op threads keep both cores busy between ops; the JS around each step
      // (scheduler, previews, PNG, the server) then waits for a core. DEPTHCAST_ORT_SPIN=1 restores it.
      extra: {
        session: {
          intra_op: { allow_spinning: process.env.DEPTHCAST_ORT_SPIN === '1' ? '1' : '0' },
          ...(inMemory ? { model_external_initializers_file_folder_path: source.externalDataDir } : {}),
        },
      },
    };
    const session = inMemory ? await ort.InferenceSession.create(source.bytes, options) : await ort.InferenceSession.create(source, options);
    return new ModelSession(name, inMemory ? source.label : source, device, session, specsOf(session.inputMetadata), specsOf(session.outputMetadata));
  }

  input(name: string): TensorSpec | undefined {
    return this.inputs.find((i) => i.name === name);
  }

  output(name: string): TensorSpec | undefined {
    return this.outputs.find((o) => o.name === name);
  }

  private toTensor(spec: TensorSpec, feed: Feed): ort.Tensor {
    const dims = scalarDims(spec, feed);
    const n = sizeOf(dims);
    const { data } = feed;
    switch (spec.type) {
      case 'float64': {
        // Published ControlNet exports declare conditioning_scale as a double (their code feeds one).
        if (typeof data === 'number') return new ort.Tensor('float64', new Float64Array(n).fill(data), dims);
        const f32 = data instanceof Uint16Array ? float16ToFloat32(data) : data;
        return new ort.Tensor('float64', Float64Array.from(f32 as ArrayLike<number>, Number), dims);
      }
      case 'float32':
      case 'float16': {
        if (spec.type === 'float16' && data instanceof Uint16Array) return new ort.Tensor('float16', data, dims);
        let f32: Float32Array;
        if (typeof data === 'number') f32 = new Float32Array(n).fill(data);
        else if (data instanceof Float32Array) f32 = data;
        else if (data instanceof Uint16Array) f32 = float16ToFloat32(data);
        else f32 = Float32Array.from(data as ArrayLike<number>, Number);
        if (spec.type === 'float32') return new ort.Tensor('float32', f32, dims);
        if (!feed.stableFor) return new ort.Tensor('float16', float32ToFloat16(f32), dims);
        const cached = halfCopies.get(f32);
        if (cached?.key === feed.stableFor) return new ort.Tensor('float16', cached.half, dims);
        const half = float32ToFloat16(f32, cached?.half);
        halfCopies.set(f32, { key: feed.stableFor, half });
        return new ort.Tensor('float16', half, dims);
      }
      case 'int64': {
        // Timesteps: truncation toward zero of the float32 value, as numpy's astype(int64).
        if (typeof data === 'number') return new ort.Tensor('int64', new BigInt64Array(n).fill(BigInt(Math.trunc(Math.fround(data)))), dims);
        if (data instanceof BigInt64Array) return new ort.Tensor('int64', data, dims);
        return new ort.Tensor('int64', BigInt64Array.from(data as ArrayLike<number>, (v) => BigInt(Math.trunc(Math.fround(v)))), dims);
      }
      case 'int32': {
        if (typeof data === 'number') return new ort.Tensor('int32', new Int32Array(n).fill(Math.trunc(data)), dims);
        if (data instanceof Int32Array) return new ort.Tensor('int32', data, dims);
        return new ort.Tensor('int32', Int32Array.from(data as ArrayLike<number>, Number), dims);
      }
      case 'uint8':
      case 'uint16': {
        const Typed = spec.type === 'uint8' ? Uint8Array : Uint16Array;
        if (typeof data === 'number') return new ort.Tensor(spec.type, new Typed(n).fill(data), dims);
        if (data instanceof Typed) return new ort.Tensor(spec.type, data, dims);
        throw new DepthcastError('BAD_MODEL', `${this.name}: input "${spec.name}" takes ${spec.type}, fed ${data.constructor.name}`);
      }
      default:
        throw new DepthcastError('BAD_MODEL', `${this.name}: input "${spec.name}" has an element type depthcast cannot feed`);
    }
  }

  /**
   * Runs the session. Every declared input must be fed and no unknown name may be; float outputs
   * come back as Float32Array. A float32 output named in `into` is written into that buffer
   * (onnxruntime-node copies its result there) and comes back as it: for a caller that wants the
   * values in a particular memory (a WebAssembly module's), without a copy of its own.
   */
  async run(feeds: Record<string, Feed>, outputNames?: string[], into?: Record<string, { data: Float32Array; dims: number[] }>): Promise<Record<string, OutputTensor>> {
    if (this.released) throw new DepthcastError('BAD_MODEL', `${this.name} (${this.path}) was released; this model runs it inside a composed graph`);
    const missing = this.inputs.filter((i) => !(i.name in feeds)).map((i) => i.name);
    const unknown = Object.keys(feeds).filter((k) => !this.input(k));
    if (missing.length || unknown.length) {
      throw new DepthcastError(
        'BAD_MODEL',
        `${this.name} (${this.path}): ${missing.length ? `missing inputs ${missing.join(', ')}` : ''}${missing.length && unknown.length ? '; ' : ''}${unknown.length ? `unknown inputs ${unknown.join(', ')}` : ''}; the model declares ${this.inputs.map((i) => i.name).join(', ')}`,
      );
    }
    const tensors: Record<string, ort.Tensor> = {};
    const onGpu = new Set<string>();
    let bytesIn = 0;
    for (const spec of this.inputs) {
      const feed = feeds[spec.name]!;
      const tensor = this.toTensor(spec, feed);
      if (this.residentFeeds && feed.stableFor && typeof feed.data !== 'number' && GPU_BUFFER_TYPES.has(tensor.type) && onGpu.size < MAX_RESIDENT) {
        try {
          const { tensor: resident, uploaded } = await residentTensor(feed.data, feed.stableFor, tensor);
          tensor.dispose?.();
          tensors[spec.name] = resident;
          onGpu.add(spec.name);
          this.traffic.bytesUploaded += uploaded;
          continue;
        } catch (err) {
          for (const name of Object.keys(tensors)) if (!onGpu.has(name)) tensors[name]!.dispose?.();
          throw new DepthcastError('INFERENCE_FAILED', `${this.name}: keeping "${spec.name}" on the GPU failed: ${((err as Error).message ?? String(err)).split('\n')[0]}`);
        }
      }
      tensors[spec.name] = tensor;
      bytesIn += (tensor.data as ArrayBufferView).byteLength;
    }
    let results: ort.InferenceSession.OnnxValueMapType;
    const fetches = into && outputNames ? preallocated(outputNames, into, this) : undefined;
    try {
      results = fetches ? await this.session.run(tensors, fetches) : outputNames ? await this.session.run(tensors, outputNames) : await this.session.run(tensors);
    } catch (err) {
      const message = (err as Error).message ?? String(err);
      // Dawn builds most kernels on their first run, so an adapter without 16-bit float shaders
      // can fail an fp16 model here rather than at load.
      if (NO_SHADER_F16.test(message)) throw noShaderF16(this.name, this.device, message);
      const oom = /out of memory|bad_alloc|failed to allocate/i.test(message);
      throw new DepthcastError(
        'INFERENCE_FAILED',
        `${this.name} failed on ${this.device}${oom ? ' (out of memory: try a smaller size or the CPU)' : ''}: ${message.split('\n')[0]} | feeds: ${describeFeeds(feeds)}`,
      );
    } finally {
      // The GPU copies stay for later runs; only this run's own tensors go.
      for (const [name, t] of Object.entries(tensors)) if (!onGpu.has(name)) t.dispose?.();
    }
    this.traffic.runs++;
    this.traffic.bytesIn += bytesIn;
    for (const v of Object.values(results)) this.traffic.bytesOut += ((v as ort.Tensor).data as ArrayBufferView).byteLength;
    const out: Record<string, OutputTensor> = {};
    for (const [name, value] of Object.entries(results)) {
      const target = fetches?.[name] ? into![name]! : undefined;
      if (target) {
        out[name] = new OutputTensor([...target.dims], target.data);
        continue;
      }
      const tensor = value as ort.Tensor;
      const dims = [...tensor.dims];
      if (tensor.type === 'float16') out[name] = new OutputTensor(dims, undefined, tensor.data as Uint16Array);
      else if (tensor.type === 'float32') out[name] = new OutputTensor(dims, tensor.data as Float32Array);
      else out[name] = new OutputTensor(dims, Float32Array.from(tensor.data as ArrayLike<number>, Number));
    }
    return out;
  }

  /**
   * The runtime floor for benchmarks: builds the tensors once and times `iterations` bare
   * session.run calls with them. Returns milliseconds per run.
   */
  async timeBareRuns(feeds: Record<string, Feed>, iterations: number): Promise<number> {
    const tensors: Record<string, ort.Tensor> = {};
    for (const spec of this.inputs) tensors[spec.name] = this.toTensor(spec, feeds[spec.name]!);
    await this.session.run(tensors);
    const start = performance.now();
    for (let i = 0; i < iterations; i++) await this.session.run(tensors);
    return (performance.now() - start) / iterations;
  }

  /**
   * Bytes fed to and taken from onnxruntime by run(), over this session's life: what crosses
   * the boundary (on a GPU, host↔device copies). `bytesUploaded`: stable feeds sent to the GPU
   * once for many runs (residentFeeds), not in `bytesIn`.
   */
  readonly traffic = { runs: 0, bytesIn: 0, bytesOut: 0, bytesUploaded: 0 };

  /**
   * Whether feeds marked `stableFor` stay on the GPU between runs (on by default for WebGPU, the
   * one provider whose outputs onnxruntime-node can leave there; a no-op elsewhere).
   */
  residentFeeds: boolean;

  /** Whether release() ran: a released session's specs stay readable, its run() refuses. */
  released = false;

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.session.release();
  }
}

/** Fetches for session.run: the float32 outputs named in `into` as tensors over those buffers, the rest left to ORT (null). */
function preallocated(outputNames: string[], into: Record<string, { data: Float32Array; dims: number[] }>, session: ModelSession): Record<string, ort.Tensor | null> {
  const fetches: Record<string, ort.Tensor | null> = {};
  for (const name of outputNames) {
    const target = into[name];
    fetches[name] = target && session.output(name)?.type === 'float32' ? new ort.Tensor('float32', target.data, target.dims) : null;
  }
  return fetches;
}

/** Dawn's message for an fp16 kernel on an adapter without 16-bit float shaders. */
const NO_SHADER_F16 = /requires f16 but the device does not support it/;

function noShaderF16(name: string, device: string, message: string): DepthcastError {
  return new DepthcastError('UNSUPPORTED_DEVICE', `${name} on ${device}: this adapter has no 16-bit float shaders (shader-f16), which an fp16 model needs. Use the float32 model, or --device cpu. (${message.split('\n')[0]})`);
}

let webgpuProbe: Promise<string | undefined> | undefined;

/**
 * Whether WebGPU gives onnxruntime an adapter, asked in a child process: Dawn writes its Vulkan
 * and XDG_RUNTIME_DIR complaints straight to stderr, where a GPU-less machine would show them on
 * every model load. Resolves undefined when it works, else the reason; asked once per process.
 * The session is released before the child exits: process.exit with a live WebGPU session can
 * segfault in Dawn (seen on SwiftShader with a UNet), which would read as "no adapter".
 */
function probeWebgpu(): Promise<string | undefined> {
  webgpuProbe ??= (async () => {
    const { GraphBuilder } = await import('../models/onnx-graph.ts');
    const g = new GraphBuilder('webgpu-probe');
    g.op('Relu', [g.input('x', 'float32', [1])], {}, 'y');
    g.output('y', 'float32', [1]);
    const model = g.toBytes({ producer: 'depthcast', version: 'probe' });
    const script = `const ort = require(${JSON.stringify(createRequire(import.meta.url).resolve('onnxruntime-node'))});
const chunks = []; process.stdin.on('data', (c) => chunks.push(c)).on('end', async () => {
  try { const s = await ort.InferenceSession.create(Buffer.concat(chunks), { executionProviders: ['webgpu'] }); await s.release(); process.exit(0); }
  catch (e) { process.stdout.write(String(e && e.message).split('\\n')[0]); process.exit(1); } });`;
    const { spawn } = await import('node:child_process');
    return new Promise<string | undefined>((resolve) => {
      const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.resume();
      child.on('error', (err) => resolve(`probe failed: ${err.message}`));
      child.on('close', (code) => {
        clearTimeout(timer);
        const reason = out.replace(/^.*?(Failed to get a WebGPU adapter[^\n]*|$)/s, '$1').trim() || out.trim();
        resolve(code === 0 ? undefined : reason || `probe exited ${code}`);
      });
      child.stdin.end(model);
    });
  })();
  return webgpuProbe;
}

/**
 * Opens a session on the requested device. `auto` tries the platform's devices best first and
 * falls back to the CPU; `onFallback` hears about each device that did not work.
 */
export async function openSession(
  name: string,
  path: string | InMemoryGraph,
  device: Device,
  onFallback?: (device: string, reason: string) => void,
): Promise<ModelSession> {
  if (device !== 'auto') {
    if (device === 'cuda' && !cudaProviderInstalled()) {
      throw new DepthcastError('UNSUPPORTED_DEVICE', `device "cuda" is not available: the CUDA EP is not installed. Install it with \`node node_modules/onnxruntime-node/script/install --onnxruntime-node-install=cuda12\` (needs CUDA 12 and cuDNN 9), or use --device cpu.`);
    }
    try {
      return await ModelSession.create(name, path, device);
    } catch (err) {
      const message = (err as Error).message ?? String(err);
      if (NO_SHADER_F16.test(message)) throw noShaderF16(name, device, message);
      if (device !== 'cpu' || /backend not found|Failed to load/i.test(message)) {
        throw new DepthcastError(
          'UNSUPPORTED_DEVICE',
          `device "${device}" is not available for ${name}: ${message.split('\n')[0]}. ` +
            (device === 'cuda' ? 'Install the CUDA EP with `node node_modules/onnxruntime-node/script/install --onnxruntime-node-install=cuda12`, or use --device cpu.' : 'Use --device auto or --device cpu.'),
        );
      }
      throw new DepthcastError('BAD_MODEL', `${name}: ${typeof path === 'string' ? path : path.label} could not be loaded: ${message.split('\n')[0]}`);
    }
  }
  let lastError: unknown;
  for (const candidate of autoDeviceOrder()) {
    if (candidate === 'cuda' && !cudaProviderInstalled()) {
      onFallback?.('cuda', 'CUDA EP not installed (node node_modules/onnxruntime-node/script/install --onnxruntime-node-install=cuda12)');
      continue;
    }
    if (candidate === 'webgpu') {
      const why = await probeWebgpu();
      if (why) {
        onFallback?.('webgpu', why);
        continue;
      }
    }
    try {
      return await ModelSession.create(name, path, candidate);
    } catch (err) {
      lastError = err;
      if (candidate !== 'cpu') onFallback?.(candidate, ((err as Error).message ?? String(err)).split('\n')[0]!);
    }
  }
  throw new DepthcastError('BAD_MODEL', `${name}: ${typeof path === 'string' ? path : path.label} could not be loaded on any device: ${(lastError as Error)?.message?.split('\n')[0]}`);
}
