/**
 * ControlNet + UNet as one ONNX graph, so the residuals (SD 1.5: 13 tensors, ~54 MB per CFG step
 * in fp32) never leave onnxruntime. onnxruntime-node has no IO binding: with two sessions every
 * residual is copied out into JavaScript and back in each step, and on a GPU that is two PCIe
 * trips.
 *
 * The composed graph takes the union of both graphs' inputs (the UNet's residual inputs removed;
 * shared names such as `sample`, `timestep`, `encoder_hidden_states` fed once) plus
 * `conditioning_scale`, with the control image once in place of the ControlNet's batched RGB
 * `controlnet_cond` (see CONTROL_INPUTS), and gives the UNet's outputs. `sample` may come as one
 * batch entry: every entry of a step's batch holds the same latents, so the graph broadcasts it
 * to the batch of `encoder_hidden_states`. Every other name of each graph gets its own
 * prefix, so nothing clashes; residual outputs are wired to residual inputs by the residual map.
 * A ControlNet without `conditioning_scale` gets one: a Mul per residual, as the two-session path
 * multiplies in JavaScript. Graphs that cannot be joined this way (a shared input typed differently,
 * conflicting opsets, clashing local functions) are refused by name, and the caller keeps two sessions.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import onnxProto from 'onnx-proto';
import type { onnx as OnnxTypes } from 'onnx-proto';
import { type Device, type ModelSession, openSession } from '../runtime/ort.ts';
import { SESSION_FILES } from './layout.ts';
import { decodeModel } from './onnx-decode.ts';

const { onnx } = onnxProto;
type Graph = OnnxTypes.IGraphProto;
type Node = OnnxTypes.INodeProto;
type Tensor = OnnxTypes.ITensorProto;
type ValueInfo = OnnxTypes.IValueInfoProto;

/** Why a pair of graphs cannot be composed; the caller falls back to two sessions. */
export class NotComposable extends Error {}

export interface ComposeInput {
  controlnet: Uint8Array;
  unet: Uint8Array;
  /** [controlnet output, unet input] pairs (mapControlnetResiduals). */
  residualMap: readonly (readonly [string, string])[];
  /**
   * Folder of each graph relative to the folder the composed graph's external data is resolved
   * from (e.g. "controlnet", "unet"): external-data locations get this prefix.
   */
  externalDataDirs?: { controlnet: string; unet: string };
}

const CN = 'controlnet/';
const UN = 'unet/';
/** Prefix of the values and nodes this module adds. */
const OWN = 'compose/';
const FLOAT = onnx.TensorProto.DataType.FLOAT;

function elemType(v: ValueInfo | undefined): number | undefined {
  return v?.type?.tensorType?.elemType ?? undefined;
}

/** Applies `rename` to every value name in a graph and its subgraphs (ONNX forbids shadowing, so one map serves all scopes). */
function renameGraph(g: Graph, rename: (n: string) => string, prefix: string): void {
  const infos = (list?: ValueInfo[] | null) => list?.forEach((v) => (v.name = rename(v.name ?? '')));
  infos(g.input);
  infos(g.output);
  infos(g.valueInfo);
  for (const t of g.initializer ?? []) t.name = rename(t.name ?? '');
  for (const s of g.sparseInitializer ?? []) {
    if (s.values) s.values.name = rename(s.values.name ?? '');
  }
  for (const node of g.node ?? []) renameNode(node, rename, prefix);
}

function renameNode(node: Node, rename: (n: string) => string, prefix: string): void {
  node.input = (node.input ?? []).map(rename);
  node.output = (node.output ?? []).map(rename);
  if (node.name) node.name = prefix + node.name;
  for (const a of node.attribute ?? []) {
    if (a.g) renameGraph(a.g, rename, prefix);
    for (const sub of a.graphs ?? []) renameGraph(sub, rename, prefix);
  }
}

/** Prefixes the `location` of external-data tensors, including those in subgraphs. */
function relocateExternalData(g: Graph, dir: string): void {
  const fix = (t: Tensor) => {
    if (t.dataLocation !== onnx.TensorProto.DataLocation.EXTERNAL) return;
    for (const e of t.externalData ?? []) if (e.key === 'location' && e.value) e.value = `${dir}/${e.value}`;
  };
  for (const t of g.initializer ?? []) fix(t);
  for (const node of g.node ?? []) {
    for (const a of node.attribute ?? []) {
      if (a.t) fix(a.t);
      a.tensors?.forEach(fix);
      if (a.g) relocateExternalData(a.g, dir);
      a.graphs?.forEach((s) => relocateExternalData(s, dir));
    }
  }
}

function decode(bytes: Uint8Array, what: string): OnnxTypes.ModelProto {
  try {
    return decodeModel(bytes);
  } catch (err) {
    throw new NotComposable(`${what} could not be parsed (${(err as Error).message})`);
  }
}

function mergeOpsets(a: OnnxTypes.IOperatorSetIdProto[], b: OnnxTypes.IOperatorSetIdProto[]): OnnxTypes.IOperatorSetIdProto[] {
  const byDomain = new Map<string, OnnxTypes.IOperatorSetIdProto>();
  for (const o of [...a, ...b]) {
    const domain = o.domain ?? '';
    const seen = byDomain.get(domain);
    if (seen && Number(seen.version) !== Number(o.version)) {
      throw new NotComposable(`the graphs import opset ${Number(seen.version)} and ${Number(o.version)} of domain "${domain || 'ai.onnx'}"`);
    }
    byDomain.set(domain, o);
  }
  return [...byDomain.values()];
}

/** The composed graph's control-image input: [1, 1 or 3, H, W], near-is-white, as the ControlNet's controlnet_cond takes it. */
export const CONTROL_IMAGE = 'control_image';

/**
 * The control image goes in as exactly one of three inputs, the other two fed as one zero
 * ([1, 1, 1, 1]): `control_image` (the ControlNet's own element type), or, when every value is
 * exactly k/255 or k/65535 (8- and 16-bit sources), those levels k as uint8 or uint16. The graph
 * decodes levels as float32 k/255 and k/65535 (a correctly rounded division, as Math.fround(k/255)
 * in JavaScript), casts to the ControlNet's type and adds the three: x + 0 is x, so each form
 * gives the same bits. A quarter or half of the float32 bytes cross per step; a float source
 * (Blender's float32 depth) still goes in as floats, unrounded.
 */
export const CONTROL_INPUTS = { float: CONTROL_IMAGE, levels8: 'control_image_u8', levels16: 'control_image_u16' } as const;

function int64s(name: string, values: number[]): Tensor {
  return { name, dataType: onnx.TensorProto.DataType.INT64, dims: [values.length], int64Data: values };
}

function attrInt(name: string, i: number): OnnxTypes.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i };
}

/**
 * sample = Expand(the fed sample, [batch of encoder_hidden_states, C, H, W]);
 * controlnet_cond = Expand(the decoded control image, [that batch, 3, H, W]).
 */
function broadcastNodes(condType: number): Node[] {
  const node = (opType: string, input: string[], output: string, attribute?: OnnxTypes.IAttributeProto[]): Node => ({ name: `${output}:${opType}`, opType, input, output: [output], ...(attribute ? { attribute } : {}) });
  const cast8 = node('Cast', [CONTROL_INPUTS.levels8], `${OWN}levels8.f32`, [attrInt('to', FLOAT)]);
  const cast16 = node('Cast', [CONTROL_INPUTS.levels16], `${OWN}levels16.f32`, [attrInt('to', FLOAT)]);
  const decoded: Node[] = [
    cast8,
    node('Div', [cast8.output![0]!, `${OWN}max8`], `${OWN}levels8`),
    cast16,
    node('Div', [cast16.output![0]!, `${OWN}max16`], `${OWN}levels16`),
    node('Add', [`${OWN}levels8`, `${OWN}levels16`], `${OWN}levels`),
  ];
  if (condType !== FLOAT) decoded.push(node('Cast', [`${OWN}levels`], `${OWN}levels_typed`, [attrInt('to', condType)]));
  const levelsTyped = condType !== FLOAT ? `${OWN}levels_typed` : `${OWN}levels`;
  return [
    ...decoded,
    node('Add', [CONTROL_INPUTS.float, levelsTyped], `${OWN}control`),
    node('Shape', ['encoder_hidden_states'], `${OWN}text_shape`),
    node('Slice', [`${OWN}text_shape`, `${OWN}at0`, `${OWN}at1`], `${OWN}batch`),
    node('Shape', ['sample'], `${OWN}sample_shape`),
    node('Slice', [`${OWN}sample_shape`, `${OWN}at1`, `${OWN}at4`], `${OWN}chw`),
    node('Concat', [`${OWN}batch`, `${OWN}chw`], `${OWN}batch_shape`, [attrInt('axis', 0)]),
    node('Expand', ['sample', `${OWN}batch_shape`], `${OWN}sample`),
    node('Shape', [`${OWN}control`], `${OWN}control_shape`),
    node('Slice', [`${OWN}control_shape`, `${OWN}at2`, `${OWN}at4`], `${OWN}hw`),
    node('Concat', [`${OWN}batch`, `${OWN}rgb`, `${OWN}hw`], `${OWN}cond_shape`, [attrInt('axis', 0)]),
    node('Expand', [`${OWN}control`, `${OWN}cond_shape`], 'controlnet_cond'),
  ];
}

/** The composed ModelProto's bytes. Throws NotComposable with the reason when the pair cannot be joined. */
export function composeControlnetUnet(input: ComposeInput): Uint8Array {
  const cnModel = decode(input.controlnet, 'the ControlNet');
  const unModel = decode(input.unet, 'the UNet');
  const cn = cnModel.graph!;
  const un = unModel.graph!;
  if (!cn || !un) throw new NotComposable('a model has no graph');

  const residualInputs = new Map(input.residualMap.map(([out, inp]) => [inp, out]));
  const cnOutputs = new Map((cn.output ?? []).map((o) => [o.name!, o]));
  const unInputs = new Map((un.input ?? []).map((i) => [i.name!, i]));
  const cnInputs = new Map((cn.input ?? []).map((i) => [i.name!, i]));
  const initializerNames = (g: Graph) => new Set((g.initializer ?? []).map((t) => t.name!));
  const cnInits = initializerNames(cn);
  const unInits = initializerNames(un);

  // Shared inputs are fed once, so both graphs must take them with the same element type.
  for (const [name, info] of cnInputs) {
    if (cnInits.has(name)) continue;
    const other = unInputs.get(name);
    if (other && !residualInputs.has(name) && elemType(other) !== elemType(info)) {
      throw new NotComposable(`input "${name}" is element type ${elemType(info)} in the ControlNet and ${elemType(other)} in the UNet`);
    }
  }
  for (const [out, inp] of input.residualMap) {
    const o = cnOutputs.get(out);
    const i = unInputs.get(inp);
    if (!o) throw new NotComposable(`the ControlNet has no output "${out}"`);
    if (!i) throw new NotComposable(`the UNet has no input "${inp}"`);
    if (elemType(o) !== elemType(i)) throw new NotComposable(`residual "${out}" is element type ${elemType(o)}, UNet input "${inp}" takes ${elemType(i)}`);
  }
  const cnFunctions = new Set((cnModel.functions ?? []).map((f) => `${f.domain}/${f.name}`));
  for (const f of unModel.functions ?? []) {
    if (cnFunctions.has(`${f.domain}/${f.name}`)) throw new NotComposable(`both graphs define the local function ${f.domain}/${f.name}`);
  }
  const opsetImport = mergeOpsets(cnModel.opsetImport ?? [], unModel.opsetImport ?? []);

  const cond = cnInputs.get('controlnet_cond');
  if (!cond || cnInits.has('controlnet_cond')) throw new NotComposable('the ControlNet has no controlnet_cond input');
  for (const name of Object.values(CONTROL_INPUTS)) {
    if (unInputs.has(name) || cnInputs.has(name)) throw new NotComposable(`a graph already has an input named ${name}`);
  }
  for (const name of ['sample', 'encoder_hidden_states']) {
    if (!cnInputs.has(name) || cnInits.has(name)) throw new NotComposable(`the ControlNet has no ${name} input`);
  }
  // Graph inputs keep their names; everything else gets the graph's prefix.
  const keptCn = new Set([...cnInputs.keys()].filter((n) => !cnInits.has(n)));
  const keptUn = new Set([...unInputs.keys()].filter((n) => !unInits.has(n) && !residualInputs.has(n)));
  const unOutputs = new Set((un.output ?? []).map((o) => o.name!));
  // Both graphs read `sample` broadcast to the batch (broadcastNodes), not the fed one.
  renameGraph(cn, (n) => (n === 'sample' ? OWN + n : n === '' || keptCn.has(n) ? n : CN + n), CN);
  renameGraph(un, (n) => {
    if (n === 'sample') return OWN + n;
    if (n === '' || keptUn.has(n) || unOutputs.has(n)) return n;
    const residual = residualInputs.get(n);
    return residual !== undefined ? OWN + residual : UN + n;
  }, UN);
  if (input.externalDataDirs) {
    relocateExternalData(cn, input.externalDataDirs.controlnet);
    relocateExternalData(un, input.externalDataDirs.unet);
  }

  // The control image goes in once, [1, 1 or 3, H, W], and is broadcast to the batch and to RGB
  // inside the graph: per step, that is a third (grey) of one batch entry instead of the whole batch.
  const condType = elemType(cond) ?? FLOAT;
  const nodes: Node[] = [...broadcastNodes(condType), ...(cn.node ?? [])];
  const inputs: ValueInfo[] = [];
  for (const i of cn.input ?? []) {
    if (i.name === OWN + 'sample') {
      // The fed `sample` (renamed above with its uses): one batch entry may come; the graph broadcasts it.
      const dims = i.type?.tensorType?.shape?.dim;
      if (dims?.length) dims[0] = { dimParam: 'sample_batch' };
      inputs.push({ ...i, name: 'sample' });
    } else if (keptCn.has(i.name!) && i.name !== 'controlnet_cond') {
      inputs.push(i);
    }
  }
  const controlDims = (name: string) => ({ dim: [{ dimParam: `${name}_batch` }, { dimParam: `${name}_channels` }, { dimParam: `${name}_height` }, { dimParam: `${name}_width` }] });
  inputs.push(
    { name: CONTROL_INPUTS.float, type: { tensorType: { elemType: condType, shape: controlDims(CONTROL_INPUTS.float) } } },
    { name: CONTROL_INPUTS.levels8, type: { tensorType: { elemType: onnx.TensorProto.DataType.UINT8, shape: controlDims(CONTROL_INPUTS.levels8) } } },
    { name: CONTROL_INPUTS.levels16, type: { tensorType: { elemType: onnx.TensorProto.DataType.UINT16, shape: controlDims(CONTROL_INPUTS.levels16) } } },
  );
  const initializers: Tensor[] = [
    int64s(`${OWN}at0`, [0]), int64s(`${OWN}at1`, [1]), int64s(`${OWN}at2`, [2]), int64s(`${OWN}at4`, [4]), int64s(`${OWN}rgb`, [3]),
    { name: `${OWN}max8`, dataType: FLOAT, dims: [], floatData: [255] },
    { name: `${OWN}max16`, dataType: FLOAT, dims: [], floatData: [65535] },
  ];
  const takesScale = cnInputs.has('conditioning_scale');
  if (!takesScale) {
    inputs.push({ name: 'conditioning_scale', type: { tensorType: { elemType: FLOAT, shape: { dim: [] } } } });
  }
  const scaleAs = new Map<number, string>([[FLOAT, 'conditioning_scale']]);
  const scaleOfType = (type: number) => {
    let name = scaleAs.get(type);
    if (!name) {
      name = `${OWN}conditioning_scale.${type}`;
      nodes.push({ name: `${OWN}scale_cast_${type}`, opType: 'Cast', input: ['conditioning_scale'], output: [name], attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: type }] });
      scaleAs.set(type, name);
    }
    return name;
  };
  for (const [out] of input.residualMap) {
    const from = CN + out;
    const to = `${OWN}${out}`;
    if (takesScale) nodes.push({ name: `${OWN}residual_${out}`, opType: 'Identity', input: [from], output: [to] });
    else nodes.push({ name: `${OWN}residual_scale_${out}`, opType: 'Mul', input: [from, scaleOfType(elemType(cnOutputs.get(out)) ?? FLOAT)], output: [to] });
  }
  nodes.push(...(un.node ?? []));
  const taken = new Set(inputs.map((i) => i.name!));
  for (const i of un.input ?? []) if (keptUn.has(i.name!) && !taken.has(i.name!)) inputs.push(i);
  const composed: OnnxTypes.IModelProto = {
    irVersion: Math.max(Number(cnModel.irVersion ?? 0), Number(unModel.irVersion ?? 0)),
    producerName: 'depthcast-compose',
    producerVersion: '1',
    docString: 'ControlNet and UNet composed into one graph: residuals stay inside onnxruntime',
    opsetImport,
    functions: [...(cnModel.functions ?? []), ...(unModel.functions ?? [])],
    graph: {
      name: 'controlnet_unet',
      node: nodes,
      initializer: [...initializers, ...(cn.initializer ?? []), ...(un.initializer ?? [])],
      sparseInitializer: [...(cn.sparseInitializer ?? []), ...(un.sparseInitializer ?? [])],
      input: inputs,
      output: un.output ?? [],
      valueInfo: [...(cn.valueInfo ?? []), ...(un.valueInfo ?? []), ...(cn.output ?? [])],
    },
  };
  return onnx.ModelProto.encode(composed).finish();
}

export interface ComposedControlnet {
  /** The one session: the ControlNet's and the UNet's inputs (residuals excepted) → the UNet's outputs. */
  session?: ModelSession;
  /** Why the model keeps two sessions, when it does. */
  notComposed?: string;
}

/**
 * At load: composes the folder's ControlNet and UNet and opens the result on `device`. A pair
 * that cannot be composed, or a composed graph that onnxruntime refuses, leaves the two-session
 * path in place, with the reason.
 */
export async function openComposedControlnet(dir: string, residualMap: readonly (readonly [string, string])[], device: Exclude<Device, 'auto'>): Promise<ComposedControlnet> {
  let bytes: Uint8Array;
  try {
    bytes = composeControlnetUnet({
      controlnet: await readFile(join(dir, SESSION_FILES.controlnet)),
      unet: await readFile(join(dir, SESSION_FILES.unet)),
      residualMap,
      externalDataDirs: { controlnet: dirname(SESSION_FILES.controlnet), unet: dirname(SESSION_FILES.unet) },
    });
  } catch (err) {
    if (err instanceof NotComposable) return { notComposed: err.message };
    throw err;
  }
  try {
    return { session: await openSession('controlnet+unet', { bytes, externalDataDir: dir, label: `${dir} (controlnet + unet composed)` }, device) };
  } catch (err) {
    return { notComposed: `onnxruntime did not open the composed graph: ${(err as Error).message.split('\n')[0]}` };
  }
}
