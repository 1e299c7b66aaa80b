/**
 * Decodes a ModelProto as onnxruntime reads it. The checkpoint builder writes each weight as its
 * own `graph { initializer }` fragment followed by the graph (src/checkpoint/weights.ts): protobuf
 * merges repeated occurrences of a message field, but protobufjs keeps only the last one, which
 * would drop every streamed weight. Here the graph fragments are joined first (a GraphProto's
 * nodes, initializers and I/O are repeated fields, so joined bytes are the merge).
 */
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

const { onnx } = onnxProto;
/** ModelProto.graph's field number. */
const GRAPH_FIELD = 7;

function varint(bytes: Uint8Array, at: number): [value: number, next: number] {
  let value = 0;
  let scale = 1;
  for (let i = at; i < bytes.length; i++) {
    const b = bytes[i]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, i + 1];
    scale *= 128;
  }
  throw new RangeError('truncated varint');
}

export function decodeModel(bytes: Uint8Array): OnnxTypes.ModelProto {
  const rest: Uint8Array[] = [];
  const graph: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    const start = at;
    const [tag, afterTag] = varint(bytes, at);
    const wire = tag % 8;
    let end: number;
    if (wire === 0) end = varint(bytes, afterTag)[1];
    else if (wire === 1) end = afterTag + 8;
    else if (wire === 5) end = afterTag + 4;
    else if (wire === 2) {
      const [length, afterLength] = varint(bytes, afterTag);
      end = afterLength + length;
      if (Math.floor(tag / 8) === GRAPH_FIELD) {
        if (end > bytes.length) throw new RangeError('truncated graph');
        graph.push(bytes.subarray(afterLength, end));
        at = end;
        continue;
      }
    } else throw new RangeError(`wire type ${wire} at byte ${start}`);
    if (end > bytes.length) throw new RangeError(`truncated field at byte ${start}`);
    rest.push(bytes.subarray(start, end));
    at = end;
  }
  const join = (parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  const model = onnx.ModelProto.decode(join(rest));
  if (graph.length) model.graph = onnx.GraphProto.decode(graph.length === 1 ? graph[0]! : join(graph));
  return model;
}
