/**
 * Sizes a UNet can run. An export traced at one size (torch.onnx at 64×64 latents, as published
 * converters do) keeps its up-samplers as Resize nodes with constant ×2 scales; the result must
 * match the skip connection's size, so with k such up-samplers only latent sides that are
 * multiples of 2^k run, and any other size fails inside onnxruntime mid-run. Found at load, so a
 * request is refused before any work with the sizes that do run.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { onnx } = require('onnx-proto') as typeof import('onnx-proto');
type Graph = import('onnx-proto').onnx.IGraphProto;
type Tensor = import('onnx-proto').onnx.ITensorProto;

function floats(t: Tensor): number[] {
  if (t.floatData?.length) return t.floatData;
  const raw = t.rawData;
  if (!raw?.length) return [];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getFloat32(i * 4, true));
}

/** How many Resize nodes of the graph up-sample by constant scales (an input `sizes` makes one size-following). */
export function fixedScaleUpsamplers(bytes: Uint8Array): number {
  const model = onnx.ModelProto.decode(bytes);
  const graph: Graph = model.graph ?? {};
  const constants = new Map<string, Tensor>();
  for (const t of graph.initializer ?? []) if (t.name) constants.set(t.name, t);
  for (const n of graph.node ?? []) {
    if (n.opType === 'Constant' && n.output?.[0]) {
      const value = n.attribute?.find((a) => a.name === 'value')?.t;
      if (value) constants.set(n.output[0], value);
    }
  }
  let count = 0;
  for (const n of graph.node ?? []) {
    if (n.opType !== 'Resize') continue;
    const [, , scales, sizes] = n.input ?? [];
    if (sizes) continue;
    const t = scales ? constants.get(scales) : undefined;
    if (t && floats(t).some((s) => s > 1)) count++;
  }
  return count;
}

/** The latent-side multiple a UNet with `upsamplers` fixed ×2 up-samplers needs (1: any size). */
export function latentMultipleOf(upsamplers: number): number {
  return 2 ** Math.min(upsamplers, 6);
}

/** The runnable sizes nearest a refused one, for the message. */
export function nearestSizes(width: number, height: number, step: number): string {
  const around = (v: number) => [...new Set([Math.max(step, Math.floor(v / step) * step), Math.ceil(v / step) * step])];
  const sizes: string[] = [];
  for (const w of around(width)) for (const h of around(height)) sizes.push(`${w}×${h}`);
  return sizes.join(', ');
}
