/**
 * Edits of ONNX files for tests: copies of the tiny models with the I/O conventions of published
 * exports (a float64 conditioning_scale, a timestep_cond input, other residual names), made with
 * onnx-proto on the decoded ModelProto.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';

const { onnx } = onnxProto;
export type Graph = OnnxTypes.IGraphProto;

/** onnx TensorProto.DataType codes used here. */
export const DTYPE = { float: 1, float16: 10, double: 11 } as const;

export function editOnnx(path: string, edit: (graph: Graph) => void): void {
  const model = onnx.ModelProto.decode(readFileSync(path));
  edit(model.graph!);
  writeFileSync(path, onnx.ModelProto.encode(model).finish());
}

/** Copies a model folder and applies `edits` (layout path → graph edit) to the copy. */
export function copyModel(from: string, to: string, edits: Record<string, (graph: Graph) => void>): string {
  cpSync(from, to, { recursive: true });
  for (const [rel, edit] of Object.entries(edits)) editOnnx(join(to, rel), edit);
  return to;
}

/** Renames a value everywhere: graph inputs/outputs and every node input/output. */
export function renameValue(graph: Graph, from: string, to: string): void {
  for (const v of [...(graph.input ?? []), ...(graph.output ?? [])]) if (v.name === from) v.name = to;
  for (const node of graph.node ?? []) {
    node.input = (node.input ?? []).map((n) => (n === from ? to : n));
    node.output = (node.output ?? []).map((n) => (n === from ? to : n));
  }
}

/**
 * Re-declares graph input `name` with element type `elemType` and `dims`, and casts it back to
 * float32 for the nodes that read it (what an export that feeds a double does).
 */
export function retypeInput(graph: Graph, name: string, elemType: number, dims: number[]): void {
  const input = graph.input!.find((v) => v.name === name);
  if (!input) throw new Error(`no graph input ${name}`);
  const cast = `${name}__as_float`;
  for (const node of graph.node ?? []) node.input = (node.input ?? []).map((n) => (n === name ? cast : n));
  input.type = { tensorType: { elemType, shape: { dim: dims.map((d) => ({ dimValue: d })) } } };
  graph.node!.unshift({ opType: 'Cast', input: [name], output: [cast], name: `${cast}_node`, attribute: [{ name: 'to', type: 2, i: DTYPE.float }] });
}

/**
 * Adds a [batch, width] float input that the output depends on only through 0·sum(input), so the
 * graph computes what it did but must be fed the input (elemType: the model's float I/O type).
 */
export function addUnusedInput(graph: Graph, name: string, width: number, elemType: number, output: string): void {
  graph.input!.push({ name, type: { tensorType: { elemType, shape: { dim: [{ dimParam: 'batch' }, { dimValue: width }] } } } });
  const asFloat = `${name}__f`;
  const nodes = graph.node!;
  const producer = nodes.findIndex((n) => n.output?.includes(output));
  const before = `${output}__before_${name}`;
  nodes[producer]!.output = nodes[producer]!.output!.map((o) => (o === output ? before : o));
  const sum = `${name}__sum`;
  const zero = `${name}__zero`;
  const zeroed = `${name}__zeroed`;
  const beforeF = `${before}__f`;
  const summedF = `${output}__f`;
  const outType = graph.output!.find((o) => o.name === output)!.type!.tensorType!.elemType!;
  nodes.push(
    { opType: 'Cast', input: [name], output: [asFloat], attribute: [{ name: 'to', type: 2, i: DTYPE.float }] },
    { opType: 'ReduceSum', input: [asFloat], output: [sum], attribute: [{ name: 'keepdims', type: 2, i: 0 }] },
    { opType: 'Mul', input: [sum, zero], output: [zeroed] },
    { opType: 'Cast', input: [before], output: [beforeF], attribute: [{ name: 'to', type: 2, i: DTYPE.float }] },
    { opType: 'Add', input: [beforeF, zeroed], output: [summedF] },
    { opType: 'Cast', input: [summedF], output: [output], attribute: [{ name: 'to', type: 2, i: outType }] },
  );
  graph.initializer!.push({ name: zero, dims: [], dataType: DTYPE.float, floatData: [0] });
}

/**
 * Adds com.microsoft nodes (as fused GPU exports have) reading `x` [B,C,H,W] and `seq` [B,S,D],
 * each giving an extra graph output so that no optimiser drops them.
 */
export function addContribNodes(graph: Graph, ops: ('BiasAdd' | 'GroupNorm' | 'NhwcConv')[], x: string, seq: string, seqWidth: number): void {
  const float = (name: string, dims: number[]) => graph.initializer!.push({ name, dims, dataType: DTYPE.float, floatData: new Array(dims.reduce((a, b) => a * b, 1)).fill(0.5) });
  for (const op of ops) {
    const out = `extra_${op}`;
    if (op === 'BiasAdd') {
      float('extra_bias', [seqWidth]);
      graph.node!.push({ opType: op, domain: 'com.microsoft', input: [seq, 'extra_bias', seq], output: [out] });
    } else if (op === 'GroupNorm') {
      float('extra_gamma', [4]);
      float('extra_beta', [4]);
      graph.node!.push({ opType: op, domain: 'com.microsoft', input: [x, 'extra_gamma', 'extra_beta'], output: [out], attribute: [{ name: 'epsilon', type: 1, f: 1e-5 }, { name: 'groups', type: 2, i: 2 }, { name: 'activation', type: 2, i: 0 }] });
    } else {
      float('extra_w', [4, 1, 1, 4]);
      graph.node!.push({ opType: op, domain: 'com.microsoft', input: [x, 'extra_w'], output: [out], attribute: [{ name: 'kernel_shape', type: 7, ints: [1, 1] }] });
    }
    graph.output!.push({ name: out, type: { tensorType: { elemType: DTYPE.float } } });
  }
}

/** Declares the com.microsoft opset a graph with contrib nodes needs. */
export function editModelOpsets(path: string): void {
  const model = onnx.ModelProto.decode(readFileSync(path));
  if (!model.opsetImport!.some((o) => o.domain === 'com.microsoft')) model.opsetImport!.push({ domain: 'com.microsoft', version: 1 });
  writeFileSync(path, onnx.ModelProto.encode(model).finish());
}
