/**
 * A small ONNX graph builder: named inputs/outputs with symbolic dims, float/int64 initializers,
 * nodes with typed attributes, and deterministic ModelProto bytes.
 *
 * Encoding goes through the `onnx-proto` package (protobufjs-generated ModelProto), so there is
 * no hand-written protobuf writer here. Tensor payloads are written little-endian into
 * `raw_data`, and every name is derived from a counter, so the same build calls give the same bytes.
 */
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

const { onnx } = onnxProto;

/** ONNX IR version we write (ONNX 1.10 / what `onnx-proto` 8 knows); onnxruntime-node 1.30 loads it. */
export const IR_VERSION = 8;
/** Default-domain opset of every graph we write. */
export const OPSET = 17;

export type ElemType = 'float32' | 'float16' | 'int32' | 'int64' | 'uint8' | 'uint16' | 'bool';

const ELEM_TYPE: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  int32: onnx.TensorProto.DataType.INT32,
  int64: onnx.TensorProto.DataType.INT64,
  uint8: onnx.TensorProto.DataType.UINT8,
  uint16: onnx.TensorProto.DataType.UINT16,
  bool: onnx.TensorProto.DataType.BOOL,
};

/** A dimension: a fixed size, or the name of a symbolic (dynamic) one. */
export type Dim = number | string;

/** Typed attribute values; build them with the `attr` helpers so ints and floats never get confused. */
export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'string'; value: string };

export const attr = {
  int: (value: number): Attr => ({ kind: 'int', value }),
  float: (value: number): Attr => ({ kind: 'float', value }),
  ints: (value: readonly number[]): Attr => ({ kind: 'ints', value }),
  floats: (value: readonly number[]): Attr => ({ kind: 'floats', value }),
  string: (value: string): Attr => ({ kind: 'string', value }),
};

function encodeAttr(name: string, a: Attr): OnnxTypes.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.kind) {
    case 'int':
      return { name, type: T.INT, i: a.value };
    case 'float':
      return { name, type: T.FLOAT, f: a.value };
    case 'ints':
      return { name, type: T.INTS, ints: [...a.value] };
    case 'floats':
      return { name, type: T.FLOATS, floats: [...a.value] };
    case 'string':
      return { name, type: T.STRING, s: new TextEncoder().encode(a.value) };
  }
}

function valueInfo(name: string, type: ElemType, dims: readonly Dim[]): OnnxTypes.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM_TYPE[type],
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function checkDims(name: string, dims: readonly number[], length: number): void {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (expected !== length) throw new Error(`initializer ${name}: ${length} values for dims [${dims.join(',')}]`);
}

export class GraphBuilder {
  private readonly nodes: OnnxTypes.INodeProto[] = [];
  private readonly inits: OnnxTypes.ITensorProto[] = [];
  private readonly inputs: OnnxTypes.IValueInfoProto[] = [];
  private readonly outputs: OnnxTypes.IValueInfoProto[] = [];
  private readonly names = new Set<string>();
  private counter = 0;

  constructor(readonly name: string) {}

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`duplicate value name ${name} in graph ${this.name}`);
    this.names.add(name);
    return name;
  }

  private fresh(hint: string): string {
    let name: string;
    do name = `${hint}_${this.counter++}`;
    while (this.names.has(name));
    return this.claim(name);
  }

  /** Declares a graph input; returns its name. */
  input(name: string, type: ElemType, dims: readonly Dim[]): string {
    this.inputs.push(valueInfo(this.claim(name), type, dims));
    return name;
  }

  /** Declares a graph output; some node must produce `name` (pass it as that node's `out`). */
  output(name: string, type: ElemType, dims: readonly Dim[]): void {
    this.outputs.push(valueInfo(name, type, dims));
  }

  /** A float32 initializer (stored little-endian in raw_data). */
  float(name: string, dims: readonly number[], values: ArrayLike<number>): string {
    checkDims(name, dims, values.length);
    const bytes = new Uint8Array(values.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
    this.inits.push({ name: this.claim(name), dims: [...dims], dataType: ELEM_TYPE.float32, rawData: bytes });
    return name;
  }

  /**
   * Claims the name of a float initializer that is written outside this graph, as an
   * `initializerChunk` in the same file (so big weights never sit in memory together).
   */
  streamed(name: string): string {
    return this.claim(name);
  }

  /** A float32 scalar (shape []) initializer. */
  scalar(name: string, value: number): string {
    return this.float(name, [], [value]);
  }

  /** An int64 initializer (stored little-endian in raw_data). */
  int64(name: string, dims: readonly number[], values: readonly number[]): string {
    checkDims(name, dims, values.length);
    const bytes = new Uint8Array(values.length * 8);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setBigInt64(i * 8, BigInt(values[i]!), true);
    this.inits.push({ name: this.claim(name), dims: [...dims], dataType: ELEM_TYPE.int64, rawData: bytes });
    return name;
  }

  /**
   * Adds one node with a single output and returns the output's name: `out` when given (a graph
   * output, say), otherwise a fresh name. Empty strings in `inputs` are ONNX's omitted optional inputs.
   */
  op(type: string, inputs: readonly string[], attrs: Record<string, Attr> = {}, out?: string): string {
    return this.opN(type, inputs, attrs, [out ?? ''])[0]!;
  }

  /** Like `op` for nodes with several outputs; an empty string in `outs` asks for a fresh name. */
  opN(type: string, inputs: readonly string[], attrs: Record<string, Attr>, outs: readonly string[]): string[] {
    for (const i of inputs) if (i !== '' && !this.names.has(i)) throw new Error(`${type} in ${this.name}: unknown input ${i}`);
    const outputs = outs.map((o) => (o === '' ? this.fresh(type.toLowerCase()) : this.claim(o)));
    this.nodes.push({
      name: `${type}_${this.nodes.length}`,
      opType: type,
      input: [...inputs],
      output: outputs,
      attribute: Object.keys(attrs)
        .sort()
        .map((k) => encodeAttr(k, attrs[k]!)),
    });
    return outputs;
  }

  /** Serialises the graph as an opset-17 ModelProto. */
  toBytes(meta: { producer: string; version: string; doc?: string; metadata?: Record<string, string> }): Uint8Array {
    for (const o of this.outputs) if (!this.names.has(o.name!)) throw new Error(`graph ${this.name}: output ${o.name} is never produced`);
    const model: OnnxTypes.IModelProto = {
      irVersion: IR_VERSION,
      producerName: meta.producer,
      producerVersion: meta.version,
      docString: meta.doc ?? '',
      opsetImport: [{ domain: '', version: OPSET }],
      metadataProps: Object.entries(meta.metadata ?? {}).map(([key, value]) => ({ key, value })),
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.inits,
        input: this.inputs,
        output: this.outputs,
      },
    };
    return onnx.ModelProto.encode(model).finish();
  }
}

/**
 * One float32 initializer as a ModelProto fragment: `graph { initializer { ... } }`. Protobuf
 * merges repeated occurrences of an embedded message, so a model file may be written as these
 * fragments one weight at a time followed by `toBytes()` of the graph (which declares them with
 * `streamed`). The data is either inline little-endian bytes or a place in an external data file.
 */
export function initializerChunk(
  name: string,
  dims: readonly number[],
  data: { bytes: Uint8Array } | { location: string; offset: number; length: number },
): Uint8Array {
  const tensor: OnnxTypes.ITensorProto = { name, dims: [...dims], dataType: ELEM_TYPE.float32 };
  if ('bytes' in data) {
    checkDims(name, dims, data.bytes.length / 4);
    tensor.rawData = data.bytes;
  } else {
    checkDims(name, dims, data.length / 4);
    tensor.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    tensor.externalData = [
      { key: 'location', value: data.location },
      { key: 'offset', value: String(data.offset) },
      { key: 'length', value: String(data.length) },
    ];
  }
  return onnx.ModelProto.encode({ graph: { initializer: [tensor] } }).finish();
}
