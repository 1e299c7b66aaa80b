/**
 * The buffer-ownership contract (src/schedulers/types.ts) through the real denoising loop: every
 * scheduler runs inside `generate` on real tiny ONNX models three ways, and the results must be
 * identical bit for bit:
 *  - as the pipeline lends its arrays (one reused guidance buffer for every step),
 *  - with a fresh copy of every array argument on every call,
 *  - with every array argument copied into ONE reused buffer per argument that is overwritten
 *    with NaN as soon as the call returns (a scheduler that keeps a borrowed array sees NaN).
 * PNDM's trajectory is also checked against the PLMS recurrences of diffusers 0.27.2's
 * PNDMScheduler, written out here independently, for txt2img and img2img.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { maxAbsDiff } from './support/arrays.ts';
import { controlImageFromNearness } from '../src/depth/convert.ts';
import { type LoadedModel, loadModel } from '../src/models/load.ts';
import { generate } from '../src/pipelines/index.ts';
import type { GenerateInput } from '../src/pipelines/types.ts';
import { SCHEDULER_NAMES } from '../src/protocol/schemas.ts';
import type { Scheduler } from '../src/schedulers/types.ts';
import { nearnessOf, sceneDepth, tinyModelDir } from './support/tiny.ts';

type Lending = 'as-is' | 'fresh' | 'reused-then-poisoned';

/** What the wrapped scheduler saw, copied at call time (for the PNDM reference). */
interface Seen {
  steps: { t: number; modelOutput: Float32Array; sample: Float32Array; out: Float32Array }[];
  addNoise: { original: Float32Array; noise: Float32Array; t: number; out: Float32Array }[];
}

const lendingState: { mode: Lending; seen: Seen } = { mode: 'as-is', seen: { steps: [], addNoise: [] } };

/** Wraps the real scheduler so that its array arguments are lent the way `lendingState.mode` says. */
function lendAs(inner: Scheduler): Scheduler {
  const buffers = new Map<string, Float32Array>();
  const lend = (slot: string, a: Float32Array): Float32Array => {
    if (lendingState.mode === 'as-is') return a;
    if (lendingState.mode === 'fresh') return a.slice();
    let b = buffers.get(slot);
    if (b?.length !== a.length) buffers.set(slot, (b = new Float32Array(a.length)));
    b.set(a);
    return b;
  };
  const poison = (): void => {
    if (lendingState.mode === 'reused-then-poisoned') for (const b of buffers.values()) b.fill(NaN);
  };
  const isLent = (x: Float32Array): boolean => [...buffers.values()].includes(x);
  return {
    get className() { return inner.className; },
    get order() { return inner.order; },
    get initNoiseSigma() { return inner.initNoiseSigma; },
    get timesteps() { return inner.timesteps; },
    setTimesteps: (n) => inner.setTimesteps(n),
    setBeginIndex: (i) => inner.setBeginIndex(i),
    scaleModelInput(sample, t) {
      const lent = lend('sample', sample);
      const out = inner.scaleModelInput(lent, t);
      // Returning the argument itself is allowed: it is the caller's own array again.
      const result = out === lent ? sample : out.slice();
      poison();
      return result;
    },
    step(modelOutput, t, sample, noise) {
      const out = inner.step(lend('modelOutput', modelOutput), t, lend('sample', sample), noise);
      expect(isLent(out) || out === modelOutput || out === sample).toBe(false);
      lendingState.seen.steps.push({ t, modelOutput: modelOutput.slice(), sample: sample.slice(), out: out.slice() });
      poison();
      return out;
    },
    addNoise(original, noise, t) {
      const out = inner.addNoise(lend('original', original), lend('noise', noise), t);
      lendingState.seen.addNoise.push({ original: original.slice(), noise: noise.slice(), t, out: out.slice() });
      poison();
      return out;
    },
  };
}

vi.mock('../src/schedulers/index.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/schedulers/index.ts')>();
  return { ...real, createScheduler: (config: Parameters<typeof real.createScheduler>[0]) => lendAs(real.createScheduler(config)) };
});

const { schedulerConfigFor } = await import('../src/schedulers/index.ts');

function baseInput(model: LoadedModel, extra: Partial<GenerateInput>): GenerateInput {
  const n = nearnessOf(sceneDepth());
  const input: GenerateInput = { prompt: 'a small red house', negativePrompt: 'fog', width: 64, height: 64, steps: 6, guidanceScale: 5, seed: 7, ...extra };
  if (model.family === 'depth2img') input.depth = { data: n, width: 64, height: 64, channels: 1 };
  else input.controlImage = controlImageFromNearness(n, 64, 64, 64, 64);
  return input;
}

async function run(model: LoadedModel, mode: Lending, input: GenerateInput): Promise<{ latents: Float32Array; seen: Seen }> {
  lendingState.mode = mode;
  lendingState.seen = { steps: [], addNoise: [] };
  const out = await generate(model, input);
  return { latents: out.latents, seen: lendingState.seen };
}

const same = (a: Float32Array, b: Float32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** ᾱ for the tiny models' training schedule (scaled_linear 0.00085..0.012 over 1000 steps). */
function alphasCumprod(): Float64Array {
  const n = 1000;
  const a = Math.sqrt(0.00085);
  const b = Math.sqrt(0.012);
  const out = new Float64Array(n);
  let prod = 1;
  for (let i = 0; i < n; i++) {
    const beta = (a + ((b - a) * i) / (n - 1)) ** 2;
    prod *= 1 - beta;
    out[i] = prod;
  }
  return out;
}

/**
 * diffusers 0.27.2 PNDMScheduler.step_plms, epsilon prediction, set_alpha_to_one false: returns
 * every step's prev_sample for the given model outputs and first sample.
 */
function plmsReference(steps: number, outputs: { t: number; e: Float32Array }[], first: Float32Array): Float64Array[] {
  const ac = alphasCumprod();
  const finalAlpha = ac[0]!;
  const stride = Math.floor(1000 / steps);
  const ets: Float32Array[] = [];
  let curSample: Float64Array<ArrayBufferLike> | null = null;
  let sample: Float64Array<ArrayBufferLike> = Float64Array.from(first);
  const results: Float64Array[] = [];
  outputs.forEach(({ t, e }, counter) => {
    let timestep = t;
    let prev = t - stride;
    if (counter !== 1) {
      if (ets.length > 3) ets.shift();
      ets.push(e);
    } else {
      prev = t;
      timestep = t + stride;
    }
    const n = e.length;
    const m = new Float64Array(n);
    let from = sample;
    const E = (k: number, i: number) => ets[ets.length - k]![i]!;
    for (let i = 0; i < n; i++) {
      if (ets.length === 1 && counter === 0) m[i] = e[i]!;
      else if (ets.length === 1 && counter === 1) m[i] = (e[i]! + E(1, i)) / 2;
      else if (ets.length === 2) m[i] = (3 * E(1, i) - E(2, i)) / 2;
      else if (ets.length === 3) m[i] = (23 * E(1, i) - 16 * E(2, i) + 5 * E(3, i)) / 12;
      else m[i] = (55 * E(1, i) - 59 * E(2, i) + 37 * E(3, i) - 9 * E(4, i)) / 24;
    }
    if (ets.length === 1 && counter === 0) curSample = sample;
    if (ets.length === 1 && counter === 1) {
      from = curSample!;
      curSample = null;
    }
    const aT = ac[timestep]!;
    const aPrev = prev >= 0 ? ac[prev]! : finalAlpha;
    const sampleCoeff = Math.sqrt(aPrev / aT);
    const denom = aT * Math.sqrt(1 - aPrev) + Math.sqrt(aT * (1 - aT) * aPrev);
    const next = new Float64Array(n);
    for (let i = 0; i < n; i++) next[i] = sampleCoeff * from[i]! - ((aPrev - aT) * m[i]!) / denom;
    results.push(next);
    sample = next;
  });
  return results;
}

const grey = { data: new Float32Array(3 * 64 * 64).fill(0.4), width: 64, height: 64, channels: 3 };

for (const family of ['controlnet', 'depth2img'] as const) {
  describe(`every scheduler through denoise() on the tiny ${family} model`, () => {
    let model: LoadedModel;
    beforeAll(async () => {
      model = await loadModel(await tinyModelDir({ family }), { device: 'cpu' });
    });
    afterAll(() => model?.release());

    for (const name of SCHEDULER_NAMES) {
      for (const img2img of [false, true]) {
        it(`${name} ${img2img ? 'img2img' : 'txt2img'}: borrowed, fresh and reused-then-poisoned arrays give identical latents`, async () => {
          const input = baseInput(model, { schedulerConfig: schedulerConfigFor(name, model.schedulerConfig), ...(img2img ? { initImage: grey, strength: 0.7 } : {}) });
          const fresh = await run(model, 'fresh', input);
          const asIs = await run(model, 'as-is', input);
          const poisoned = await run(model, 'reused-then-poisoned', input);
          expect(fresh.seen.steps.length).toBeGreaterThanOrEqual(4);
          expect(fresh.latents.every(Number.isFinite)).toBe(true);
          expect(same(asIs.latents, fresh.latents)).toBe(true);
          expect(same(poisoned.latents, fresh.latents)).toBe(true);
        });
      }
    }

    for (const img2img of [false, true]) {
      it(`pndm ${img2img ? 'img2img' : 'txt2img'} follows diffusers' PLMS recurrences step by step`, async () => {
        const steps = 8;
        const input = baseInput(model, { steps, schedulerConfig: schedulerConfigFor('pndm', model.schedulerConfig), ...(img2img ? { initImage: grey, strength: 0.6 } : {}) });
        const { latents, seen } = await run(model, 'as-is', input);
        // diffusers: t_start = steps − int(steps·strength) = 4 of the 9 PLMS timesteps are skipped.
        expect(seen.steps.length).toBe(img2img ? 5 : steps + 1);
        if (img2img) {
          // add_noise: √ᾱ_t·x0 + √(1−ᾱ_t)·ε at the first timestep run.
          const [{ original, noise, t, out }] = seen.addNoise as [Seen['addNoise'][0]];
          const a = alphasCumprod()[t]!;
          expect(maxAbsDiff(out, original.map((x, i) => Math.sqrt(a) * x + Math.sqrt(1 - a) * noise[i]!))).toBeLessThan(1e-5);
          expect(same(seen.steps[0]!.sample, out)).toBe(true);
        }
        const reference = plmsReference(steps, seen.steps.map((s) => ({ t: s.t, e: s.modelOutput })), seen.steps[0]!.sample);
        seen.steps.forEach((s, k) => {
          const scale = Math.max(1, ...Array.from(reference[k]!, Math.abs));
          expect(maxAbsDiff(s.out, reference[k]!) / scale, `step ${k} (t=${s.t})`).toBeLessThan(2e-5);
          // Each step starts from the previous step's result (not from a recomputed reference).
          if (k > 0) expect(same(s.sample, seen.steps[k - 1]!.out)).toBe(true);
        });
        expect(same(latents, seen.steps.at(-1)!.out)).toBe(true);
      });
    }
  });
}
