/**
 * Reads the external-data references of an ONNX file (TensorProto.external_data `location`,
 * `offset`, `length`) with the onnx-proto decoder, and checks that each one stays inside the model
 * folder. onnxruntime resolves `location` relative to the .onnx file's folder, so a hostile model
 * could otherwise make it read `../../etc/passwd` into a weight tensor.
 */
import { createRequire } from 'node:module';
import { lstat, readFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { checkRelPath, isInside } from './paths.ts';

const require = createRequire(import.meta.url);
const { onnx } = require('onnx-proto') as typeof import('onnx-proto');

export interface ExternalRef {
  tensor: string;
  location: string;
  offset: number;
  length?: number;
}

type Graph = import('onnx-proto').onnx.IGraphProto;
type Tensor = import('onnx-proto').onnx.ITensorProto;
type Node = import('onnx-proto').onnx.INodeProto;

function num(v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = Number(String(v));
  return Number.isSafeInteger(n) && n >= 0 ? n : NaN;
}

/** Every external-data reference in an encoded ModelProto, including subgraphs, node attributes and functions. */
export function externalRefsOf(bytes: Uint8Array, what = 'ONNX file'): ExternalRef[] {
  let model;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (err) {
    throw new DepthcastError('BAD_MODEL', `${what} is not a valid ONNX model (${(err as Error).message}); re-download or re-export it`);
  }
  const refs: ExternalRef[] = [];
  const seenGraphs = new Set<Graph>();
  const tensor = (t: Tensor | null | undefined): void => {
    if (!t) return;
    const external = t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL || (t.externalData?.length ?? 0) > 0;
    if (!external) return;
    const kv = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
    const location = kv.get('location');
    if (location === undefined) {
      throw new DepthcastError('BAD_MODEL', `${what}: tensor ${t.name ?? '?'} is stored externally but names no location`);
    }
    const offset = num(kv.get('offset')) ?? 0;
    const length = num(kv.get('length'));
    if (Number.isNaN(offset) || Number.isNaN(length)) {
      throw new DepthcastError('BAD_MODEL', `${what}: tensor ${t.name ?? '?'} has an invalid external-data offset/length`);
    }
    refs.push({ tensor: t.name ?? '', location, offset, length });
  };
  const node = (n: Node): void => {
    for (const a of n.attribute ?? []) {
      tensor(a.t);
      for (const t of a.tensors ?? []) tensor(t);
      if (a.sparseTensor) {
        tensor(a.sparseTensor.values);
        tensor(a.sparseTensor.indices);
      }
      for (const s of a.sparseTensors ?? []) {
        tensor(s.values);
        tensor(s.indices);
      }
      if (a.g) graph(a.g);
      for (const g of a.graphs ?? []) graph(g);
    }
  };
  const graph = (g: Graph | null | undefined): void => {
    if (!g || seenGraphs.has(g)) return;
    seenGraphs.add(g);
    for (const t of g.initializer ?? []) tensor(t);
    for (const s of g.sparseInitializer ?? []) {
      tensor(s.values);
      tensor(s.indices);
    }
    for (const n of g.node ?? []) node(n);
  };
  graph(model.graph);
  for (const f of model.functions ?? []) for (const n of f.node ?? []) node(n);
  return refs;
}

export async function readExternalRefs(onnxPath: string, what = onnxPath): Promise<ExternalRef[]> {
  return externalRefsOf(await readFile(onnxPath), what);
}

/**
 * The model-folder-relative `/` path that an external `location` of the ONNX file at
 * `onnxRel` (model-relative) points to. Throws UNSAFE_PATH when the location is absolute, has
 * backslashes/NUL, or climbs out of the model folder.
 */
export function resolveRefPath(onnxRel: string, location: string): string {
  // Locations are checked as relative names, except that leading `..` is allowed so long as the result stays inside the model.
  const what = `external-data location in ${onnxRel}`;
  if (location.startsWith('/') || /^[A-Za-z]:/.test(location) || location.includes('\\') || location.includes('\0')) {
    checkRelPath(location, what); // throws with the precise reason
  }
  const parts = [...onnxRel.split('/').slice(0, -1)];
  for (const s of location.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..') {
      if (parts.length === 0) {
        throw new DepthcastError('UNSAFE_PATH', `refusing ${what} ${JSON.stringify(location)}: it points outside the model folder`, { path: location, onnx: onnxRel });
      }
      parts.pop();
    } else parts.push(s);
  }
  const rel = parts.join('/');
  checkRelPath(rel, what);
  return rel;
}

export interface ExternalCheck {
  refs: { location: string; file: string }[];
  problems: { code: 'UNSAFE_PATH' | 'BAD_MODEL'; message: string; path: string }[];
}

/**
 * Checks that every external-data file referenced by `root/onnxRel` lies inside `root`, is a
 * regular file (not a link), and is long enough for the offsets/lengths the model declares.
 */
export async function checkExternalData(root: string, onnxRel: string): Promise<ExternalCheck> {
  const out: ExternalCheck = { refs: [], problems: [] };
  let refs: ExternalRef[];
  try {
    refs = await readExternalRefs(join(root, ...onnxRel.split('/')), onnxRel);
  } catch (err) {
    const e = err instanceof DepthcastError ? err : new DepthcastError('BAD_MODEL', `${onnxRel}: ${(err as Error).message}`);
    out.problems.push({ code: 'BAD_MODEL', message: e.message, path: onnxRel });
    return out;
  }
  const needed = new Map<string, number>();
  for (const r of refs) {
    let rel: string;
    try {
      rel = resolveRefPath(onnxRel, r.location);
    } catch (err) {
      out.problems.push({ code: 'UNSAFE_PATH', message: (err as Error).message, path: onnxRel });
      continue;
    }
    const end = r.length !== undefined ? r.offset + r.length : r.offset;
    needed.set(rel, Math.max(needed.get(rel) ?? 0, end));
  }
  for (const [rel, end] of needed) {
    const abs = join(root, ...rel.split('/'));
    if (!isInside(root, abs)) {
      out.problems.push({ code: 'UNSAFE_PATH', message: `${onnxRel}: external data ${rel} is outside the model folder`, path: onnxRel });
      continue;
    }
    // No component between root and the file may be a link.
    let cur = root;
    let problem: string | undefined;
    for (const s of relative(root, abs).split(sep)) {
      cur = join(cur, s);
      try {
        const st = await lstat(cur);
        if (st.isSymbolicLink()) {
          problem = `${onnxRel}: external data ${rel} goes through the symbolic link ${cur}; replace it with the real file`;
          out.problems.push({ code: 'UNSAFE_PATH', message: problem, path: onnxRel });
          break;
        }
        if (cur === abs) {
          if (!st.isFile()) {
            problem = `${onnxRel}: external data ${rel} is not a regular file`;
            out.problems.push({ code: 'BAD_MODEL', message: problem, path: onnxRel });
          } else if (st.size < end) {
            problem = `${onnxRel}: external data ${rel} has ${st.size} bytes but the model reads up to byte ${end}; re-download it`;
            out.problems.push({ code: 'BAD_MODEL', message: problem, path: onnxRel });
          }
        }
      } catch {
        problem = `${onnxRel}: external data file ${rel} is missing`;
        out.problems.push({ code: 'BAD_MODEL', message: problem, path: onnxRel });
        break;
      }
    }
    if (!problem) out.refs.push({ location: rel, file: abs });
  }
  return out;
}
