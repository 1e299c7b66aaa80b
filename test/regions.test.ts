import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LoadedModel, loadModel } from '../src/models/load.ts';
import { generate } from '../src/pipelines/index.ts';
import { planPrediction } from '../src/pipelines/guidance.ts';
import { prepareRegions } from '../src/pipelines/regions.ts';
import type { GenerateInput, RegionPrompt } from '../src/pipelines/types.ts';
import { nearnessOf, sceneDepth, tinyModelDir } from './support/tiny.ts';

const W = 64;
const H = 64;
const PLANE = (W / 8) * (H / 8);

/** Left half of the frame (x < 32) or right half, as a frame-size mask. */
function halfMask(side: 'left' | 'right'): Float32Array {
  const m = new Float32Array(W * H);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) m[y * W + x] = (side === 'left' ? x < 32 : x >= 32) ? 1 : 0;
  return m;
}

function input(extra: Partial<GenerateInput> = {}): GenerateInput {
  return {
    prompt: 'a quiet street', width: W, height: H, steps: 3, guidanceScale: 4, seed: 5,
    depth: { data: nearnessOf(sceneDepth()), width: W, height: H, channels: 1 }, ...extra,
  };
}

const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('regional prompting on the tiny depth2img model', () => {
  let model: LoadedModel;
  beforeAll(async () => {
    model = await loadModel(await tinyModelDir({ family: 'depth2img' }), { device: 'cpu' });
  });
  afterAll(() => model?.release());

  it('at every step, blends to each region\'s own prediction inside it and the global one outside', async () => {
    // Region "house" covers the left quarter (x < 16 latent-wise 0..1), feather 1 latent pixel.
    const mask = new Float32Array(W * H);
    for (let y = 0; y < H; y++) for (let x = 0; x < 24; x++) mask[y * W + x] = 1;
    const regions: RegionPrompt[] = [{ prompt: 'a red brick house', mask, weight: 1 }];
    const g = 4;
    const checks: number[] = [];
    await generate(model, input({
      regions, regionFeather: 1,
      onPrediction: (_step, batch, noisePrediction) => {
        // Batch layout: [uncond, global, house].
        const n = noisePrediction.length;
        let maxInside = 0;
        let maxOutside = 0;
        for (let c = 0; c < 4; c++) {
          for (let y = 0; y < 8; y++) {
            for (let x = 0; x < 8; x++) {
              const i = c * PLANE + y * 8 + x;
              const u = batch[i]!;
              if (x <= 1) maxInside = Math.max(maxInside, Math.abs(noisePrediction[i]! - (u + g * (batch[2 * n + i]! - u))));
              if (x >= 5) maxOutside = Math.max(maxOutside, Math.abs(noisePrediction[i]! - (u + g * (batch[n + i]! - u))));
            }
          }
        }
        checks.push(maxInside, maxOutside);
        // The region's prediction really differs from the global one, so the check has teeth.
        let differs = 0;
        for (let i = 0; i < n; i++) differs = Math.max(differs, Math.abs(batch[2 * n + i]! - batch[n + i]!));
        expect(differs).toBeGreaterThan(1e-4);
      },
    }));
    expect(checks.length).toBeGreaterThan(0);
    for (const c of checks) expect(c).toBeLessThan(1e-5);
  });

  it('the region entry of the batch is the region prompt\'s own prediction', async () => {
    const regions: RegionPrompt[] = [{ prompt: 'a red brick house', mask: halfMask('left'), weight: 1 }];
    let regional: Float32Array | undefined;
    let single: Float32Array | undefined;
    await generate(model, input({ regions, onPrediction: (k, batch, noisePrediction) => { if (k === 0) regional = batch.slice(2 * noisePrediction.length, 3 * noisePrediction.length); } }));
    await generate(model, input({ prompt: 'a red brick house', onPrediction: (k, batch, noisePrediction) => { if (k === 0) single = batch.slice(noisePrediction.length, 2 * noisePrediction.length); } }));
    let max = 0;
    for (let i = 0; i < single!.length; i++) max = Math.max(max, Math.abs(regional![i]! - single![i]!));
    expect(max).toBeLessThan(1e-5);
  });

  it('a two-region image differs from both single-prompt images', async () => {
    const regions: RegionPrompt[] = [
      { prompt: 'a red brick house', mask: halfMask('left'), weight: 1 },
      { prompt: 'pine trees', mask: halfMask('right'), weight: 1 },
    ];
    const two = await generate(model, input({ regions }));
    const house = await generate(model, input({ prompt: 'a red brick house' }));
    const trees = await generate(model, input({ prompt: 'pine trees' }));
    expect(same(two.image!.data, house.image!.data)).toBe(false);
    expect(same(two.image!.data, trees.image!.data)).toBe(false);
  });

  it('no regions, or a region whose prompt is the global prompt, gives exactly the plain output', async () => {
    const plain = await generate(model, input());
    const none = await generate(model, input({ regions: [] }));
    const sameAsGlobal = await generate(model, input({ regions: [{ prompt: 'a quiet street', mask: halfMask('left'), weight: 1 }] }));
    expect(same(plain.image!.data, none.image!.data)).toBe(true);
    expect(same(plain.image!.data, sameAsGlobal.image!.data)).toBe(true);
  });

  it('refuses masks of the wrong size and too many regions', async () => {
    await expect(generate(model, input({ regions: [{ prompt: 'x', mask: new Float32Array(10), weight: 1 }] }))).rejects.toMatchObject({ code: 'BAD_LAYOUT' });
    const many = Array.from({ length: 9 }, (_, i) => ({ prompt: `object ${i}`, mask: halfMask('left'), weight: 1 }));
    await expect(generate(model, input({ regions: many }))).rejects.toMatchObject({ code: 'BAD_LAYOUT', message: expect.stringMatching(/at most 8/) });
  });
});

describe('region weights', () => {
  it('merge regions that share a prompt and keep the inside exactly 1', () => {
    const merged = prepareRegions(
      [
        { prompt: 'tree', mask: halfMask('left'), weight: 1 },
        { prompt: 'tree', mask: halfMask('right'), weight: 1 },
      ],
      'global', W, H, 8, 2,
    );
    expect(merged).toHaveLength(1);
    expect([...merged[0]!.weights].every((v) => v === 1)).toBe(true);
  });

  it('overlapping regions are normalised so weights never exceed 1', () => {
    const plan = planPrediction(new Float32Array(77), undefined, 1, [
      { embeds: new Float32Array(77), weights: new Float32Array(4).fill(1) },
      { embeds: new Float32Array(77), weights: new Float32Array(4).fill(1) },
    ], 4);
    // Batch: [global=0, r1=2, r2=4] → blend = (2+4)/2 = 3 everywhere.
    const batch = new Float32Array([0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4]);
    const out = new Float32Array(4);
    plan.reduceBatch(batch, out);
    expect([...out]).toEqual([3, 3, 3, 3]);
  });
});
