/**
 * `npm run bench` runs its pipeline and codec figures in a worker thread set up as the
 * service's inference worker. These check that path end to end with real sessions (few steps,
 * few repeats); the figures themselves are printed by the bench, never asserted.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BenchWorker } from '../src/bench/in-worker.ts';
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
