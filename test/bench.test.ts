/**
 * `npm run bench` runs its pipeline and codec figures in a worker thread set up as the
 * service's inference worker. These check that path end to end with real sessions (few steps,
 * few repeats); the figures themselves are printed by the bench, never asserted.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BenchWorker } from '../tools/bench/in-worker.ts';
import { benchSdUnet } from '../tools/bench/sd-unet-bench.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';

describe('bench tasks in the inference worker', () => {
  const worker = new BenchWorker();
  afterAll(() => worker.close());

  it('times a pipeline at SD tensor sizes against its bare session loop', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'depthcast-bench-test-')), 'sd-depth2img');
    await createTinyModel(dir, { family: 'depth2img', hiddenSize: 768 });
    const f = await worker.run('benchPipeline', dir, 'cpu', 2, 1, 'dpmpp-2m');
    expect(f).toMatchObject({ family: 'depth2img', dtype: 'fp32', scheduler: 'dpmpp-2m', steps: 2 });
    expect(f.perImage.sessionRun).toBeGreaterThan(0);
    expect(f.perImage.total).toBeGreaterThanOrEqual(f.perImage.sessionRun);
    expect(f.stages.decodeToRgb8).toBeGreaterThan(0);
    expect(f.bare.ratio).toBeGreaterThan(0);
  });

  it('times the per-frame codecs', async () => {
    const codecs = await worker.run('benchCodecs', 1);
    for (const key of ['depthDecodeAndConvert', 'decodeToRgb8', 'latentPreview', 'previewJpeg', 'pngLive', 'pngBatch', 'jpeg512']) {
      expect(codecs[key], key).toBeGreaterThan(0);
    }
  });

  it('reports a failing task as an error, not a hang, and keeps serving', async () => {
    await expect(worker.run('benchPipeline', join(tmpdir(), 'no-such-model-dir'), 'cpu', 2, 1, 'dpmpp-2m')).rejects.toThrow(/bench task benchPipeline failed/);
    expect((await worker.run('benchCodecs', 1)).pngLive).toBeGreaterThan(0);
  });
});

describe('bench --sd-unet', () => {
  it('times a real-architecture UNet (here a narrow twin, 16×16 latents) and names the device and the published references', async () => {
    const f = await benchSdUnet('sd2-depth', 'fp32', 'cpu', 2, 16, 10);
    expect(f).toMatchObject({ architecture: 'sd2-depth-unet', dtype: 'fp32', device: 'cpu', sample: [2, 5, 16, 16] });
    expect(f.runsMs).toHaveLength(2);
    expect(f.perStepMs).toBeGreaterThan(0);
    expect(f.references.join(' ')).toMatch(/RTX 4090.*H100/);
  }, 60_000);

  it('builds and runs the fp16 form (halves in and out, as on a GPU)', async () => {
    const f = await benchSdUnet('sd15', 'fp16', 'cpu', 1, 16, 10);
    expect(f).toMatchObject({ architecture: 'sd15-unet', dtype: 'fp16', sample: [2, 4, 16, 16] });
    expect(f.perStepMs).toBeGreaterThan(0);
  }, 60_000);

  it('refuses an unknown architecture by name', async () => {
    await expect(benchSdUnet('sdxl', 'fp32', 'cpu', 1)).rejects.toThrow(/unknown UNet architecture "sdxl"; choose sd15 or sd2-depth/);
  });
});
