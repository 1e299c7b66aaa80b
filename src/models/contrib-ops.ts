/**
 * Operators from onnxruntime's com.microsoft domain that an execution provider may lack. Published
 * GPU-optimised exports (TensorStack's converter, ORT's SD optimizer) fuse GroupNorm, NhwcConv,
 * BiasSplitGelu and BiasAdd; onnxruntime-node's CPU provider has no kernels for them, and ORT
 * names only the first it meets. This names every one before a session is opened.
 */
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import type { Device } from '../runtime/ort.ts';

const require = createRequire(import.meta.url);
const { onnx } = require('onnx-proto') as typeof import('onnx-proto');
type Graph = import('onnx-proto').onnx.IGraphProto;

/**
 * com.microsoft operators without a kernel, per provider. CPU: probed against onnxruntime-node's
 * CPU provider (session creation fails with "Could not find an implementation" / "Kernel not
 * found", float32 and float16); the other providers are not listed (not checked here).
 */
export const MISSING_CONTRIB_OPS: Partial<Record<Exclude<Device, 'auto'>, readonly string[]>> = {
  cpu: ['GroupNorm', 'SkipGroupNorm', 'NhwcConv', 'BiasSplitGelu', 'BiasAdd'],
};

/** The com.microsoft operator types an encoded ModelProto uses (subgraphs and functions included). */
export function contribOpsOf(bytes: Uint8Array): Set<string> {
  const model = onnx.ModelProto.decode(bytes);
  const ops = new Set<string>();
  const graph = (g: Graph | null | undefined): void => {
    for (const n of g?.node ?? []) {
      if (n.domain === 'com.microsoft' && n.opType) ops.add(n.opType);
      for (const a of n.attribute ?? []) {
        graph(a.g);
        for (const sub of a.graphs ?? []) graph(sub);
      }
    }
  };
  graph(model.graph);
  for (const f of model.functions ?? []) graph({ node: f.node });
  return ops;
}

/** The operators of `path` that `device`'s provider lacks, sorted; empty when none (or not known). */
export async function missingContribOps(path: string, device: Exclude<Device, 'auto'>): Promise<string[]> {
  const lacking = MISSING_CONTRIB_OPS[device];
  if (!lacking) return [];
  const used = contribOpsOf(await readFile(path));
  return lacking.filter((op) => used.has(op)).sort();
}

/** One line naming what a component needs that the provider lacks. */
export function describeMissingOps(component: string, device: string, ops: string[]): string {
  return `${component}: uses com.microsoft ${ops.join(', ')}, which the ${device} provider has no kernels for; run it on a provider that has them (e.g. --device cuda), or use an export made without these fusions`;
}
