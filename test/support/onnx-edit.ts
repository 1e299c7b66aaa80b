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
