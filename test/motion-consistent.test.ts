/**
 * The consistent mode through real tiny ONNX pipelines: kept latents end exactly on the warp for
 * every scheduler and both pipelines, new parts are generated, noise moves with the surfaces, a
 * frame without motion falls back and says so, and warp error drops against per-frame mode.
 */
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/models/load.ts';
import { CarriedNoise, fusePixels, planConsistentFrame, type PreviousFrame } from '../src/motion/consistent.ts';
import { movingObjectScene, panScene } from '../src/motion/scenes.ts';
import { renderScorePlot, scorePlotSvg } from '../src/motion/plot.ts';
import { runSequence, scoreSequence } from '../src/motion/sequence.ts';
import sharp from 'sharp';
import { generate } from '../src/pipelines/index.ts';
import { SeededNoise } from '../src/pipelines/noise.ts';
import { SCHEDULER_NAMES } from '../src/protocol/schemas.ts';
import { schedulerConfigFor } from '../src/schedulers/index.ts';
import { tinyModelDir } from './support/tiny.ts';

const S = 32;

/** Flow of a whole-frame shift by (sx, sy) pixels (content moved right/down), with the left 16 columns new. */
function shiftFlow(sx: number, sy: number): { width: number; height: number; data: Float32Array } {
  const data = new Float32Array(2 * S * S);
  data.fill(-sx, 0, S * S);
  data.fill(-sy, S * S);
  return { width: S, height: S, data };
}

describe('consistent mode, every scheduler, both pipelines', () => {
  for (const family of ['depth2img', 'controlnet'] as const) {
    for (const scheduler of SCHEDULER_NAMES) {
      it(`${family} / ${scheduler}: kept latents end on the warped latents, disoccluded ones do not`, async () => {
        const model = await loadModel(await tinyModelDir({ family }), { device: 'cpu' });
        const depth = new Float32Array(S * S).fill(0.5);
        for (let i = 0; i < S * S; i++) depth[i] = 0.3 + 0.4 * ((i % S) / S);
        const cond = family === 'depth2img' ? { depth: { data: depth, width: S, height: S, channels: 1 }, depthNormalization: 'fixed' as const } : { controlImage: { data: depth, width: S, height: S, channels: 1 } };
        const base = { prompt: 'a box', width: S, height: S, steps: 4, guidanceScale: 3, seed: 7, schedulerConfig: schedulerConfigFor(scheduler, model.schedulerConfig), ...cond };
        const first = await generate(model, { ...base, noise: new CarriedNoise(new SeededNoise(7), [], new Int32Array(0)) });
        // Everything moved 8 px (one latent pixel) right; the first 8 columns are new (depth says so).
        const z = new Float32Array(S * S).fill(4);
        const previous: PreviousFrame = { image: first.image!.data.slice(), depth: z, width: S, height: S, draws: [], latents: first.latents.slice() };
        const expected = new Float32Array(S * S).fill(4);
        for (let y = 0; y < S; y++) for (let x = 0; x < 8; x++) expected[y * S + x] = 2;
        const plan = planConsistentFrame(previous, shiftFlow(8, 0), expected, model.pixelsPerLatent, 'latents');
        const out = await generate(model, { ...base, initImage: plan.initImage, strength: 0.75, latentBlend: plan.latentBlend });
        const w = S / 8;
        const plane = w * w;
        let keptDiff = 0;
        let newDiff = 0;
        for (let c = 0; c < 4; c++) {
          for (let ly = 0; ly < w; ly++) {
            for (let lx = 0; lx < w; lx++) {
              const j = c * plane + ly * w + lx;
              if (lx === 0) {
                expect(plan.latentBlend.keep[ly * w + lx]).toBe(0);
                newDiff = Math.max(newDiff, Math.abs(out.latents[j]! - plan.latentBlend.initLatents![j]!));
              } else {
                expect(plan.latentBlend.keep[ly * w + lx]).toBe(1);
                // Latent pixel lx came from lx − 1 of the previous frame.
                expect(plan.latentBlend.initLatents![j]).toBeCloseTo(first.latents[c * plane + ly * w + lx - 1]!, 5);
                keptDiff = Math.max(keptDiff, Math.abs(out.latents[j]! - first.latents[c * plane + ly * w + lx - 1]!));
              }
            }
          }
        }
        expect(keptDiff).toBe(0);
        expect(newDiff).toBeGreaterThan(1e-3);
      });
    }
  }
});

describe('noise carried along the motion', () => {
  it('moves each previous draw with the surfaces and draws fresh noise where they are new', () => {
    const previous: PreviousFrame = { image: new Float32Array(3 * S * S), depth: new Float32Array(S * S).fill(4), width: S, height: S, draws: [] };
    const expected = new Float32Array(S * S).fill(4);
    for (let y = 0; y < S; y++) for (let x = 0; x < 16; x++) expected[y * S + x] = 2;
    // Content moved 16 px right and 8 px down: latent (lx, ly) came from (lx − 2, ly − 1).
    const plan = planConsistentFrame(previous, shiftFlow(16, 8), expected, 8, 'image');
    const before = new SeededNoise(1).next(4 * 16);
    const carried = new CarriedNoise(new SeededNoise(2), [before], plan.latentSource);
    const fresh = new SeededNoise(2).next(4 * 16);
    const now = carried.next(4 * 16);
    for (let c = 0; c < 4; c++) {
      for (let ly = 0; ly < 4; ly++) {
        for (let lx = 0; lx < 4; lx++) {
          const j = c * 16 + ly * 4 + lx;
          const moved = lx >= 2 && ly >= 1;
          expect(now[j]).toBe(moved ? before[c * 16 + (ly - 1) * 4 + lx - 2] : fresh[j]);
        }
      }
    }
    expect(carried.draws[0]).toEqual(now);
  });
});

describe('sequences', () => {
  it('a frame without motion falls back to per-frame mode and says so; consistent mode lowers the warp error', async () => {
    const model = await loadModel(await tinyModelDir({ family: 'depth2img' }), { device: 'cpu' });
    const scene = movingObjectScene(4, 64, 64);
    const base = { prompt: 'a box', width: 64, height: 64, steps: 6, guidanceScale: 7.5, seed: 42 };
    const options = { base, strength: 0.6, near: scene.near, far: scene.far, source: 'image' as const };
    const perFrame = await runSequence(model, scene.frames, { ...options, mode: 'per-frame' });
    const consistent = await runSequence(model, scene.frames, { ...options, mode: 'consistent' });
    expect(consistent.fallbacks).toEqual([]);
    const a = scoreSequence(perFrame.images, scene.frames, 64, 64);
    const b = scoreSequence(consistent.images, scene.frames, 64, 64);
    expect(a.pairs.length).toBe(3);
    expect(b.meanError).toBeLessThan(0.8 * a.meanError);
    expect(b.worst!.error).toBe(Math.max(...b.pairs.map((p) => p.error)));
    // Where the box uncovered the wall, the consistent mode generates rather than copies.
    const uncovered = b.pairs.reduce((t, p) => t + p.disoccludedDifference, 0) / b.pairs.length;
    console.log(`consistent: warp error ${b.meanError.toFixed(4)}, disoccluded difference ${uncovered.toFixed(4)}; per frame ${a.meanError.toFixed(4)}`);
    expect(uncovered).toBeGreaterThan(2 * b.meanError);
    const series = [{ label: 'per-frame', score: a }, { label: 'consistent', score: b }];
    expect(scorePlotSvg(series, 'moving object')).toContain(`consistent: mean ${b.meanError.toFixed(4)}`);
    const png = await sharp(await renderScorePlot(series, 'moving object')).metadata();
    expect([png.format, png.width, png.height]).toEqual(['png', 480, 220]);
    const broken = scene.frames.map((f, i) => (i === 2 ? { depth: f.depth } : f));
    const fallback = await runSequence(model, broken, { ...options, mode: 'consistent' });
    expect(fallback.fallbacks).toEqual([{ frame: 2, reason: 'no motion to the previous frame' }]);
  });
});

describe('pixel-space fusion after decoding', () => {
  it('keeps disoccluded pixels generated and ramps the warp in over the feather', () => {
    const W = 16;
    const decoded = new Float32Array(3 * W * W).fill(0.2);
    const warped = new Float32Array(3 * W * W).fill(1);
    const valid = new Uint8Array(W * W).fill(1);
    for (let y = 0; y < W; y++) for (let x = 0; x < 4; x++) valid[y * W + x] = 0;
    const out = fusePixels(decoded, warped, valid, W, W, { weight: 0.5, feather: 3 });
    for (let c = 0; c < 3; c++) {
      const row = Array.from(out.subarray(c * W * W + 5 * W, c * W * W + 6 * W));
      // Columns 0-3 invalid: the generated value; then 1/4, 2/4, 3/4 of the weight; then the weight.
      expect(row.slice(0, 4)).toEqual([0.2, 0.2, 0.2, 0.2].map(Math.fround));
      expect(row.slice(4, 9).map((v) => Number(((v - 0.2) / 0.8).toFixed(4)))).toEqual([0.125, 0.25, 0.375, 0.5, 0.5]);
    }
    expect(() => fusePixels(decoded, warped, valid, W, W, { weight: 1, feather: 3 })).toThrow(/weight must be in \[0, 1\)/);
  });

  it('brings the pan, where the camera moves, to half the per-frame warp error or less, fidelity within 10 %, new surfaces generated', async () => {
    const model = await loadModel(await tinyModelDir({ family: 'depth2img' }), { device: 'cpu' });
    const scene = panScene(5, 64, 64);
    const base = { prompt: 'a box', width: 64, height: 64, steps: 8, guidanceScale: 7.5, seed: 42 };
    const options = { base, strength: 0.6, near: scene.near, far: scene.far };
    const a = scoreSequence((await runSequence(model, scene.frames, { ...options, mode: 'per-frame' })).images, scene.frames, 64, 64);
    const b = scoreSequence((await runSequence(model, scene.frames, { ...options, mode: 'consistent' })).images, scene.frames, 64, 64);
    console.log(`pan: warp error per-frame ${a.meanError.toFixed(4)}, consistent ${b.meanError.toFixed(4)}; fidelity ${a.meanFidelity.toFixed(3)} vs ${b.meanFidelity.toFixed(3)}`);
    expect(b.meanError).toBeLessThanOrEqual(0.5 * a.meanError);
    expect(b.meanFidelity).toBeGreaterThanOrEqual(0.9 * a.meanFidelity);
    const uncovered = b.pairs.reduce((t, p) => t + p.disoccludedDifference, 0) / b.pairs.length;
    expect(uncovered).toBeGreaterThan(2 * b.meanError);
  });
});
