/**
 * The real-architecture UNet the bench times on a device (tools/bench/sd-unet.ts): its size is
 * Stable Diffusion's to the parameter, a narrow twin of the same graph runs on ONNX Runtime, and
 * ORT turns every Expand into its own weight (folded, none merged), so a session holds a
 * checkpoint's worth of memory, as a real model would.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, describe, expect, it } from 'vitest';
import { buildSdUnet, SD15_UNET, SD2_DEPTH_UNET } from '../tools/bench/sd-unet.ts';
import { ModelSession } from '../src/runtime/ort.ts';

const dir = mkdtempSync(join(tmpdir(), 'depthcast-sd-unet-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('SD-architecture UNet for the device bench', () => {
  it('has exactly the parameters of SD 1.5 and of SD 2 depth, in a file of a few hundred KB', () => {
    const sd15 = buildSdUnet(SD15_UNET);
    // diffusers' UNet2DConditionModel of runwayml/stable-diffusion-v1-5: 859,520,964 parameters.
    expect(sd15.params).toBe(859_520_964);
    // stabilityai/stable-diffusion-2-depth: SD 2's 865,910,724 plus conv_in's fifth (depth) input channel (320×3×3).
    expect(buildSdUnet(SD2_DEPTH_UNET).params).toBe(865_910_724 + 320 * 9);
    expect(sd15.bytes.length).toBeLessThan(1 << 20);
  });

  it('runs a narrow twin on the CPU with SD I/O names and shapes, every weight folded and distinct', async () => {
    const twin = buildSdUnet(SD15_UNET, 'fp32', 10);
    const path = join(dir, 'twin.onnx');
    const optimized = join(dir, 'twin.optimized.onnx');
    writeFileSync(path, twin.bytes);
    const session = await ModelSession.create('unet', path, 'cpu', optimized);
    try {
      expect(session.inputs.map((i) => i.name).sort()).toEqual(['encoder_hidden_states', 'sample', 'timestep']);
      const out = await session.run({
        sample: { data: new Float32Array(2 * 4 * 16 * 16).map((_, i) => Math.sin(i)), dims: [2, 4, 16, 16] },
        timestep: { data: 981, dims: [2] },
        encoder_hidden_states: { data: new Float32Array(2 * 77 * 768).map((_, i) => Math.cos(i)), dims: [2, 77, 768] },
      });
      expect(out.out_sample!.dims).toEqual([2, 4, 16, 16]);
      expect(out.out_sample!.data.every(Number.isFinite)).toBe(true);
    } finally {
      await session.release();
    }
    const graph = onnxProto.onnx.ModelProto.decode(readFileSync(optimized)).graph!;
    expect(graph.node!.filter((n) => n.opType === 'Expand')).toEqual([]);
    // Merged (shared) weights would hold fewer bytes than the parameters need.
    const weightBytes = graph.initializer!.reduce((sum, t) => sum + (t.rawData?.length ?? 4 * (t.floatData?.length ?? 0)), 0);
    expect(weightBytes).toBeGreaterThanOrEqual(4 * twin.params);
  }, 120_000);
});
