/**
 * fp16 graphs for GPUs: rewrites a float32 ONNX model so that its weights and math are float16
 * while its inputs and outputs stay float32 (a Cast after each float input, one before each float
 * output), so callers and the composed ControlNet + UNet graph see the same I/O as before.
 *
 * No op is forced to stay in float32 for accuracy: this is what onnxruntime's Stable Diffusion
 * optimizer does for SD 1.x (its float16 step blocks only RandomNormalLike, for the UNet, VAE and
 * text encoder alike), and onnxruntime's fp16 kernels for the reductions (LayerNormalization,
 * InstanceNormalization as GroupNorm, Softmax) accumulate in float32 on the CUDA EP. On the CPU EP,
 * ops with no fp16 kernel run in float32 between Casts that onnxruntime inserts itself. Because no
 * Cast is added inside the graph, the patterns the CUDA and WebGPU paths fuse (GroupNorm as
 * Reshape → InstanceNormalization → Reshape → Mul → Add; attention as MatMul → Mul → Softmax →
 * MatMul with the head Reshape/Transpose around it) are left as they were, in one type.
 *
 * Kept float32 because the ONNX spec types them `tensor(float)` whatever the data's type: Resize's
 * roi and scales and Upsample's scales (initializers, Constants and Casts that feed them; a value
 * computed otherwise gets a Cast to float32 in front of that input). Other types (double, ints) are
 * not touched. Weights beyond fp16's range (|v| > 65504) are clamped to it and counted.
 */
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import { DepthcastError } from '../errors.ts';
import { decodeModel } from '../models/onnx-decode.ts';
import { float32ToFloat16 } from '../runtime/float16.ts';

const { onnx } = onnxProto;
type Tensor = OnnxTypes.ITensorProto;
type Node = OnnxTypes.INodeProto;
const FLOAT = onnx.TensorProto.DataType.FLOAT;
const FLOAT16 = onnx.TensorProto.DataType.FLOAT16;
const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;
const FP16_MAX = 65504;
/** External data offsets are aligned so that onnxruntime can map them. */
const EXTERNAL_ALIGN = 4096;

/** Inputs (by index) the ONNX spec types tensor(float) whatever T is. */
const FLOAT32_INPUTS: Record<string, readonly number[]> = { Resize: [1, 2], Upsample: [1] };
/** Ops whose `dtype` attribute says the float type they make. */
const DTYPE_OPS = new Set(['RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'EyeLike', 'Multinomial', 'Bernoulli']);

export interface Fp16Report {
  /** Float weight bytes before (float32) and after (float16) conversion. */
  weightBytesBefore: number;
  weightBytesAfter: number;
  /** Initializers converted, and those kept float32 (Resize scales and the like). */
  converted: number;
  keptFloat32: number;
  /** Weight values clamped to ±65504. */
  clamped: number;
}

/** Reads an external-data tensor's bytes; `location` is relative to the model file's folder. */
export type ExternalReader = (location: string, offset: number, length: number) => Promise<Uint8Array>;

/** An external-data writer: appends bytes and says where they went. */
export type ExternalWriter = (bytes: Uint8Array) => Promise<{ location: string; offset: number; length: number }>;

function floatValues(t: Tensor, raw: Uint8Array | undefined): Float32Array {
  if (raw) {
    const copy = new Uint8Array(raw); // a copy at offset 0 (a decoded Buffer may be a view at any offset)
    return new Float32Array(copy.buffer, copy.byteOffset, copy.byteLength / 4);
  }
  return Float32Array.from(t.floatData ?? []);
}

function externalPlace(t: Tensor): { location: string; offset: number; length: number } {
  const kv = new Map((t.externalData ?? []).map((e) => [e.key, e.value ?? '']));
  const count = (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
  return { location: kv.get('location') ?? '', offset: Number(kv.get('offset') ?? 0), length: Number(kv.get('length') ?? count * 4) };
}

/** Float initializers to fp16 (those in `keep32` stay float32); external data read and written through `read`/`write`. */
async function convertInitializers(list: Tensor[], keep32: Set<string>, report: Fp16Report, read?: ExternalReader, write?: ExternalWriter): Promise<void> {
  for (const t of list) {
    if (t.dataType !== FLOAT) continue;
    const external = t.dataLocation === EXTERNAL;
    let raw: Uint8Array | undefined = t.rawData?.length ? t.rawData : undefined;
    if (external) {
      if (!read) throw new DepthcastError('BAD_MODEL', `fp16 conversion: weight "${t.name}" is external data and no reader was given`);
      const place = externalPlace(t);
      raw = await read(place.location, place.offset, place.length);
    }
    const values = floatValues(t, raw);
    report.weightBytesBefore += values.byteLength;
    let bytes: Uint8Array;
    if (keep32.has(t.name!)) {
      report.keptFloat32++;
      bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    } else {
      report.converted++;
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        if (v > FP16_MAX || v < -FP16_MAX) {
          values[i] = v > 0 ? FP16_MAX : -FP16_MAX;
          report.clamped++;
        }
      }
      const half = float32ToFloat16(values);
      bytes = new Uint8Array(half.buffer, half.byteOffset, half.byteLength);
      t.dataType = FLOAT16;
    }
    report.weightBytesAfter += bytes.byteLength;
    t.floatData = [];
    if (write && (external || bytes.byteLength >= 1024)) {
      const place = await write(bytes);
      t.rawData = new Uint8Array(0);
      t.dataLocation = EXTERNAL;
      t.externalData = [{ key: 'location', value: place.location }, { key: 'offset', value: String(place.offset) }, { key: 'length', value: String(place.length) }];
    } else {
      t.rawData = bytes;
      t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
      t.externalData = [];
    }
  }

}

/**
 * Nodes that make float values from attributes: Constants, Casts, ConstantOfShape, random ops.
 * Subgraphs (If, Loop, Scan bodies) are converted the same way, and their float outputs become
 * float16: they carry the outer graph's values, which are float16 now.
 */
async function convertNodes(nodes: Node[], keep32: Set<string>, report: Fp16Report): Promise<void> {
  for (const n of nodes) {
    const out = n.output?.[0] ?? '';
    if (keep32.has(out)) continue;
    // Without `value`, ConstantOfShape makes float32 zeros.
    if (n.opType === 'ConstantOfShape' && !(n.attribute ?? []).some((a) => a.name === 'value')) {
      n.attribute = [...(n.attribute ?? []), { name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: { dataType: FLOAT16, dims: [1], rawData: new Uint8Array(2) } }];
    }
    for (const a of n.attribute ?? []) {
      if (n.opType === 'Cast' && a.name === 'to' && Number(a.i) === FLOAT) a.i = FLOAT16;
      else if (DTYPE_OPS.has(n.opType ?? '') && a.name === 'dtype' && Number(a.i) === FLOAT) a.i = FLOAT16;
      else if ((n.opType === 'Constant' || n.opType === 'ConstantOfShape') && a.name === 'value' && a.t?.dataType === FLOAT) {
        const half = float32ToFloat16(floatValues(a.t, a.t.rawData?.length ? a.t.rawData : undefined));
        a.t = { ...a.t, dataType: FLOAT16, floatData: [], rawData: new Uint8Array(half.buffer, half.byteOffset, half.byteLength) };
      } else if (n.opType === 'Constant' && (a.name === 'value_float' || a.name === 'value_floats')) {
        const list = a.name === 'value_float' ? [a.f ?? 0] : (a.floats ?? []);
        const half = float32ToFloat16(Float32Array.from(list));
        n.attribute = [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: { dataType: FLOAT16, dims: a.name === 'value_float' ? [] : [list.length], rawData: new Uint8Array(half.buffer, half.byteOffset, half.byteLength) } }];
        break;
      }
    }
  }
  for (const n of nodes) {
    for (const a of n.attribute ?? []) {
      for (const sub of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) {
        await convertInitializers(sub.initializer ?? [], keep32, report);
        await convertNodes(sub.node ?? [], keep32, report);
        for (const v of [...(sub.input ?? []), ...(sub.output ?? [])]) {
          if (v.type?.tensorType?.elemType === FLOAT) v.type.tensorType.elemType = FLOAT16;
        }
        sub.valueInfo = [];
      }
    }
  }
}

/**
 * Converts `model` in place. `read` resolves external-data weights; `write`, when given, puts the
 * converted weights into external data (else they go inline).
 */
export async function convertModelToFp16(model: OnnxTypes.IModelProto, read?: ExternalReader, write?: ExternalWriter): Promise<Fp16Report> {
  const g = model.graph;
  if (!g) throw new DepthcastError('BAD_MODEL', 'fp16 conversion: the model has no graph');
  const nodes = g.node ?? [];
  const report: Fp16Report = { weightBytesBefore: 0, weightBytesAfter: 0, converted: 0, keptFloat32: 0, clamped: 0 };

  // 1. Values that stay float32: what feeds Resize's roi/scales.
  const keep32 = new Set<string>();
  for (const n of nodes) for (const i of FLOAT32_INPUTS[n.opType ?? ''] ?? []) if (n.input?.[i]) keep32.add(n.input[i]!);
  const initNames = new Set((g.initializer ?? []).map((t) => t.name!));
  const producedBy = new Map<string, Node>();
  for (const n of nodes) for (const o of n.output ?? []) producedBy.set(o, n);
  const extraCasts: Node[] = [];
  for (const name of [...keep32]) {
    if (initNames.has(name)) continue;
    const producer = producedBy.get(name);
    if (producer && (producer.opType === 'Constant' || producer.opType === 'Cast')) continue;
    // Computed in the graph (now float16): cast it back for this input only.
    keep32.delete(name);
    const as32 = `${name}/float32`;
    extraCasts.push({ name: `${as32}:Cast`, opType: 'Cast', input: [name], output: [as32], attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: FLOAT }] });
    for (const n of nodes) for (const i of FLOAT32_INPUTS[n.opType ?? ''] ?? []) if (n.input?.[i] === name) n.input[i] = as32;
  }

  // 2. Weights.
  await convertInitializers(g.initializer ?? [], keep32, report, read, write);

  // 3. Nodes that make float values from attributes (Constants, Casts, ConstantOfShape, random ops), and subgraphs.
  await convertNodes(nodes, keep32, report);

  // 4. float32 at the edges: a Cast after each float input, one before each float output.
  const head: Node[] = [];
  const tail: Node[] = [];
  const renames = new Map<string, string>();
  for (const i of g.input ?? []) {
    if (initNames.has(i.name!) || i.type?.tensorType?.elemType !== FLOAT) continue;
    const half = `${i.name}/float16`;
    renames.set(i.name!, half);
    head.push({ name: `${half}:Cast`, opType: 'Cast', input: [i.name!], output: [half], attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: FLOAT16 }] });
  }
  for (const o of g.output ?? []) {
    if (o.type?.tensorType?.elemType !== FLOAT) continue;
    const half = `${o.name}/float16`;
    renames.set(o.name!, renames.get(o.name!) ?? half);
    tail.push({ name: `${o.name}:Cast`, opType: 'Cast', input: [renames.get(o.name!)!], output: [o.name!], attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: FLOAT }] });
  }
  const rename = (list: Node[]) => {
    for (const n of list) {
      n.input = (n.input ?? []).map((x) => renames.get(x) ?? x);
      n.output = (n.output ?? []).map((x) => renames.get(x) ?? x);
      // Subgraphs may read the outer graph's values by name (ONNX forbids shadowing them).
      for (const a of n.attribute ?? []) for (const sub of [...(a.g ? [a.g] : []), ...(a.graphs ?? [])]) rename(sub.node ?? []);
    }
  };
  rename([...nodes, ...extraCasts]);
  g.node = [...head, ...nodes, ...extraCasts, ...tail];
  // Types of intermediate values changed: onnxruntime infers them again.
  g.valueInfo = [];
  model.producerName = `${model.producerName ?? ''}+depthcast-fp16`;
  return report;
}

/** Converts one ONNX file; external data (read relative to `src`) goes to `<dst>_data` beside the output. */
export async function convertModelFileToFp16(src: string, dst: string): Promise<Fp16Report> {
  const model = decodeModel(await readFile(src));
  const srcDir = dirname(src);
  const hasExternal = (model.graph?.initializer ?? []).some((t) => t.dataLocation === EXTERNAL);
  const read: ExternalReader = async (location, offset, length) => {
    const file = await open(join(srcDir, location), 'r');
    try {
      const bytes = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await file.read(bytes, done, length - done, offset + done);
        if (bytesRead === 0) throw new DepthcastError('BAD_MODEL', `${src}: external data ${location} ends before byte ${offset + length}`);
        done += bytesRead;
      }
      return bytes;
    } finally {
      await file.close();
    }
  };
  await mkdir(dirname(dst), { recursive: true });
  const dataName = `${dst.split('/').pop()}_data`;
  let writer: ExternalWriter | undefined;
  const data = hasExternal ? await open(join(dirname(dst), dataName), 'w') : undefined;
  if (data) {
    let at = 0;
    writer = async (bytes) => {
      const offset = at;
      let done = 0;
      while (done < bytes.length) done += (await data.write(bytes, done, bytes.length - done, offset + done)).bytesWritten;
      at = Math.ceil((offset + bytes.length) / EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
      return { location: dataName, offset, length: bytes.length };
    };
  }
  try {
    const report = await convertModelToFp16(model, read, writer);
    await writeFile(dst, onnx.ModelProto.encode(model).finish());
    return report;
  } finally {
    await data?.close();
  }
}
