import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlImageFromNearness } from '../src/depth/convert.ts';
import { type LoadedModel, loadModel } from '../src/models/load.ts';
import { generate } from '../src/pipelines/index.ts';
import type { GenerateInput } from '../src/pipelines/types.ts';
import { schedulerConfigFor } from '../src/schedulers/index.ts';
import { SCHEDULER_NAMES } from '../src/protocol/schemas.ts';
import { nearnessOf, sceneDepth, tinyModelDir } from './support/tiny.ts';

const families = ['depth2img', 'controlnet'] as const;
const dtypes = ['fp32', 'fp16'] as const;

function baseInput(model: LoadedModel, extra: Partial<GenerateInput> = {}): GenerateInput {
  const n = nearnessOf(sceneDepth());
  const input: GenerateInput = { prompt: 'a small red house', width: 64, height: 64, steps: 3, guidanceScale: 5, seed: 42, ...extra };
  if (model.family === 'depth2img') input.depth = { data: n, width: 64, height: 64, channels: 1 };
  else input.controlImage = controlImageFromNearness(n, 64, 64, 64, 64);
  return input;
}

function checkImage(image: { data: Float32Array; width: number; height: number }) {
  expect(image.width).toBe(64);
  expect(image.height).toBe(64);
  expect(image.data.length).toBe(3 * 64 * 64);
  for (const v of image.data) expect(v >= 0 && v <= 1).toBe(true);
}

for (const family of families) {
  for (const dtype of dtypes) {
    describe(`${family} ${dtype} pipeline on a tiny model`, () => {
      let model: LoadedModel;
      beforeAll(async () => {
        model = await loadModel(await tinyModelDir({ family, dtype }), { device: 'cpu' });
      });
      afterAll(() => model?.release());

      it('reports its family and precision', () => {
        expect(model.family).toBe(family);
        expect(model.dtype).toBe(dtype);
      });

      for (const name of SCHEDULER_NAMES) {
        it(`runs with the ${name} scheduler, deterministically per seed`, async () => {
          const schedulerConfig = schedulerConfigFor(name, model.schedulerConfig);
          const a = await generate(model, baseInput(model, { schedulerConfig }));
          const b = await generate(model, baseInput(model, { schedulerConfig }));
          const c = await generate(model, baseInput(model, { schedulerConfig, seed: 43 }));
          checkImage(a.image!);
          expect(Buffer.from(a.image!.data.buffer).equals(Buffer.from(b.image!.data.buffer))).toBe(true);
          expect(Buffer.from(a.image!.data.buffer).equals(Buffer.from(c.image!.data.buffer))).toBe(false);
          expect(a.timesteps.length).toBeGreaterThanOrEqual(3);
        });
      }

      it('img2img runs only the strength share of the steps and depends on the init image', async () => {
        const grey = { data: new Float32Array(3 * 64 * 64).fill(0.5), width: 64, height: 64, channels: 3 };
        const dark = { data: new Float32Array(3 * 64 * 64).fill(0.1), width: 64, height: 64, channels: 3 };
        const a = await generate(model, baseInput(model, { steps: 10, strength: 0.5, initImage: grey }));
        const b = await generate(model, baseInput(model, { steps: 10, strength: 0.5, initImage: dark }));
        // The tiny models default to PNDM (PLMS): 10 steps give 11 timesteps; strength 0.5 drops the first 5.
        expect(a.timesteps.length).toBe(6);
        checkImage(a.image!);
        expect(Buffer.from(a.image!.data.buffer).equals(Buffer.from(b.image!.data.buffer))).toBe(false);
      });

      it('guidance off uses no negative prompt; on, the negative prompt matters', async () => {
        const off1 = await generate(model, baseInput(model, { guidanceScale: 1, negativePrompt: 'blurry' }));
        const off2 = await generate(model, baseInput(model, { guidanceScale: 1, negativePrompt: 'sharp' }));
        expect(Buffer.from(off1.image!.data.buffer).equals(Buffer.from(off2.image!.data.buffer))).toBe(true);
        const on1 = await generate(model, baseInput(model, { negativePrompt: 'blurry' }));
        const on2 = await generate(model, baseInput(model, { negativePrompt: 'sharp' }));
        expect(Buffer.from(on1.image!.data.buffer).equals(Buffer.from(on2.image!.data.buffer))).toBe(false);
      });

      it('calls back every step with a preview and can be cancelled between steps', async () => {
        const steps: number[] = [];
        let previewSize = 0;
        await generate(model, baseInput(model, { previewEvery: 1, onStep: (e) => { steps.push(e.step); previewSize = e.preview?.rgb.length ?? 0; } }));
        expect(steps[0]).toBe(0);
        expect(previewSize).toBe(8 * 8 * 3);
        const controller = new AbortController();
        const run = generate(model, baseInput(model, { steps: 6, signal: controller.signal, onStep: (e) => { if (e.step === 1) controller.abort(); } }));
        await expect(run).rejects.toMatchObject({ code: 'CANCELLED' });
      });

      it('caches prompt embeddings', async () => {
        model.textCache.clear();
        await generate(model, baseInput(model));
        expect(model.textCache.has('a small red house')).toBe(true);
        expect(model.textCache.has('')).toBe(true);
      });

      it('refuses sizes that are not multiples of 8 and bad strength', async () => {
        await expect(generate(model, baseInput(model, { width: 60 }))).rejects.toMatchObject({ code: 'BAD_REQUEST' });
        await expect(generate(model, baseInput(model, { strength: 1.5, initImage: { data: new Float32Array(3 * 64 * 64), width: 64, height: 64, channels: 3 } }))).rejects.toMatchObject({ code: 'BAD_REQUEST' });
      });
    });
  }
}

describe('fp16 and fp32 tiny models agree', () => {
  it('within half-precision error', async () => {
    const m32 = await loadModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp32' }), { device: 'cpu' });
    const m16 = await loadModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp16' }), { device: 'cpu' });
    const a = await generate(m32, baseInput(m32));
    const b = await generate(m16, baseInput(m16));
    let max = 0;
    for (let i = 0; i < a.image!.data.length; i++) max = Math.max(max, Math.abs(a.image!.data[i]! - b.image!.data[i]!));
    expect(max).toBeLessThan(0.05);
    await m32.release();
    await m16.release();
  });
});

describe('pipeline output options', () => {
  it('an fp16 ControlNet fed from reused scratch buffers sees each generation\'s own control image', async () => {
    const { Scratch } = await import('../src/util/scratch.ts');
    const model = await loadModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp16' }), { device: 'cpu' });
    const flipped = (input: GenerateInput): GenerateInput => {
      const data = input.controlImage!.data.map((v) => 1 - v);
      return { ...input, controlImage: { ...input.controlImage!, data } };
    };
    const fresh = Buffer.from((await generate(model, flipped(baseInput(model, { output: 'rgb8' })))).rgb8!);
    const scratch = new Scratch();
    await generate(model, baseInput(model, { output: 'rgb8', scratch }));
    const reused = await generate(model, flipped(baseInput(model, { output: 'rgb8', scratch })));
    expect(Buffer.from(reused.rgb8!).equals(fresh)).toBe(true);
    await model.release();
  });

  it('an fp16 composed ControlNet sees a control image its caller refilled in place (its halves are cached per generation)', async () => {
    const model = await loadModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp16' }), { device: 'cpu' });
    try {
      expect(model.controlnetUnet).toBeDefined();
      const input = baseInput(model, { output: 'rgb8' });
      const data = input.controlImage!.data;
      const flipped = data.map((v) => 1 - v);
      const fresh = Buffer.from((await generate(model, { ...input, controlImage: { ...input.controlImage!, data: flipped } })).rgb8!);
      await generate(model, input);
      data.set(flipped);
      expect(Buffer.from((await generate(model, input)).rgb8!).equals(fresh)).toBe(true);
    } finally {
      await model.release();
    }
  });

  it.each(dtypes)("output 'rgb8' gives the bytes toRgb8 gives for the planar image, without the float image (%s)", async (dtype) => {
    const { toRgb8 } = await import('../src/pipelines/steps.ts');
    const { Scratch } = await import('../src/util/scratch.ts');
    const model = await loadModel(await tinyModelDir({ family: 'depth2img', dtype }), { device: 'cpu' });
    const plain = await generate(model, baseInput(model));
    const expected = Buffer.from(toRgb8(plain.image!));
    const out = await generate(model, baseInput(model, { output: 'rgb8' }));
    expect(out.image).toBeUndefined();
    expect([out.width, out.height]).toEqual([plain.image!.width, plain.image!.height]);
    expect(Buffer.from(out.rgb8!).equals(expected)).toBe(true);
    // Through reused scratch buffers, twice: the second run must not see the first one's leftovers.
    const scratch = new Scratch();
    const other = await generate(model, baseInput(model, { output: 'rgb8', scratch, seed: 99 }));
    const otherBytes = Buffer.from(other.rgb8!);
    const again = await generate(model, baseInput(model, { output: 'rgb8', scratch }));
    expect(Buffer.from(again.rgb8!).equals(expected)).toBe(true);
    expect(otherBytes.equals(expected)).toBe(false);
    await model.release();
  });

  it('inputsValidated skips only the NaN scans; shapes are still checked', async () => {
    const model = await loadModel(await tinyModelDir({ family: 'controlnet' }), { device: 'cpu' });
    const bad = { data: new Float32Array(3 * 64 * 64).fill(NaN), width: 64, height: 64, channels: 3 };
    const withNaN = { ...baseInput(model), controlImage: bad };
    await expect(generate(model, withNaN)).rejects.toMatchObject({ code: 'BAD_IMAGE' });
    const wrongSize = { ...baseInput(model, { inputsValidated: true }), controlImage: { data: new Float32Array(3 * 32 * 32), width: 32, height: 32, channels: 3 } };
    await expect(generate(model, wrongSize)).rejects.toMatchObject({ code: 'BAD_IMAGE' });
    await model.release();
  });
});

describe('decoded image to bytes', () => {
  // Expected bytes computed with numpy, as the reference's numpy_to_pil does it:
  // (np.clip(x / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8), all in float32. The first two
  // values sit where the float32 product rounds onto k + 0.5 (205.49999535 → 205.5 → 206):
  // rounding the exact product half up gave 205 and 215 there.
  const decoder = [0.6117647290229797, 0.6901959776878357, -0.003921568859368563, 1, -1, 0, 2, -2, Infinity, -Infinity];
  const expected = [206, 216, 127, 255, 0, 128, 255, 0, 255, 0];

  it('decoderOutputToRgb8 matches numpy byte for byte, NaN included', async () => {
    const { decoderOutputToRgb8 } = await import('../src/pipelines/steps.ts');
    const values = [...decoder, NaN, NaN];
    const plane = values.length / 3;
    // Planar input: channel c of pixel i is values[c * plane + i]; output interleaves them.
    const rgb = decoderOutputToRgb8(Float32Array.from(values), plane);
    const want = [...expected, 0, 0];
    for (let c = 0; c < 3; c++) for (let i = 0; i < plane; i++) expect(rgb[i * 3 + c]).toBe(want[c * plane + i]);
  });

  it('an fp16 decoder output gives the same bytes from its halves as from their float32 values', async () => {
    const { decoderOutputToRgb8, halfDecoderOutputToRgb8 } = await import('../src/pipelines/steps.ts');
    const { float16ToFloat32 } = await import('../src/runtime/float16.ts');
    // Every half value (NaN, infinities, subnormals included), in a different order per plane.
    const plane = 65536;
    const half = new Uint16Array(3 * plane);
    for (let i = 0; i < plane; i++) {
      half[i] = i;
      half[plane + i] = (i * 40503) & 0xffff;
      half[2 * plane + i] = 0xffff - i;
    }
    const viaFloat = decoderOutputToRgb8(float16ToFloat32(half), plane);
    expect(Buffer.from(halfDecoderOutputToRgb8(half, plane)).equals(Buffer.from(viaFloat))).toBe(true);
  });

  it('toRgb8 rounds the float32 product half to even, as numpy', async () => {
    const { toRgb8 } = await import('../src/pipelines/steps.ts');
    // 0.80588233 · 255 is 205.4999953… exactly but 205.5 in float32; 1/510 becomes 0.5 → 0.
    const data = Float32Array.from([0.5, 0.8058823347091675, 0.8450980186462402, 0.0019607844296842813, 0, 1]);
    // Planar R = [0.5, 0.806], G = [0.845, 1/510], B = [0, 1] → pixels (R, G, B) interleaved.
    expect([...toRgb8({ data, width: 2, height: 1, channels: 3 })]).toEqual([128, 216, 0, 206, 0, 255]);
  });
});

describe('cancellation points', () => {
  /** Counts each session's runs; `stopAfter` flips the signal once that session has run that often. */
  function counted(model: LoadedModel, stopAfter: [name: 'controlnet' | 'unet', runs: number]) {
    const runs: Record<string, number> = {};
    for (const name of ['controlnet', 'unet', 'vaeDecoder'] as const) {
      const session = model.sessions[name];
      if (!session) continue;
      const run = session.run.bind(session);
      runs[name] = 0;
      session.run = (...args: Parameters<typeof run>) => {
        runs[name]!++;
        return run(...args);
      };
    }
    return { runs, signal: { get aborted() { return (runs[stopAfter[0]] ?? 0) >= stopAfter[1]; } } };
  }

  // Two sessions: a composed ControlNet + UNet is one run, with no point between the two.
  it('stops between a ControlNet and its UNet, and a frame cancelled in its last step is never decoded', async () => {
    const model = await loadModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp32' }), { device: 'cpu', controlnetGraph: 'separate' });
    try {
      const mid = counted(model, ['controlnet', 2]);
      await expect(generate(model, baseInput(model, { signal: mid.signal }))).rejects.toMatchObject({ code: 'CANCELLED', message: expect.stringMatching(/between the ControlNet and the UNet/) });
      expect(mid.runs).toMatchObject({ controlnet: 2, unet: 1, vaeDecoder: 0 });
    } finally {
      await model.release();
    }
    const again = await loadModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp32' }), { device: 'cpu', controlnetGraph: 'separate' });
    try {
      const input = baseInput(again);
      const total = (await generate(again, input)).timesteps.length;
      const last = counted(again, ['unet', total]);
      await expect(generate(again, { ...input, signal: last.signal })).rejects.toMatchObject({ code: 'CANCELLED', message: expect.stringMatching(/before decoding/) });
      expect(last.runs).toMatchObject({ unet: total, vaeDecoder: 0 });
    } finally {
      await again.release();
    }
  });
});

describe('ControlNet control batch', () => {
  it('repeats the control image per batch entry, as halves converted once for an fp16 ControlNet', async () => {
    const { controlBatchFor } = await import('../src/pipelines/controlnet.ts');
    const { float32ToFloat16 } = await import('../src/runtime/float16.ts');
    const { Scratch } = await import('../src/util/scratch.ts');
    const rgb = Float32Array.from({ length: 3 * 16 }, (_, i) => (i * 0.37) % 1);
    const grey = rgb.slice(0, 16);
    const greyAsRgb = Float32Array.from({ length: 3 * 16 }, (_, i) => grey[i % 16]!);
    const scratch = new Scratch();
    for (const [image, expected] of [[{ data: rgb, channels: 3 }, rgb], [{ data: grey, channels: 1 }, greyAsRgb]] as const) {
      const control = { ...image, width: 4, height: 4 };
      for (const batch of [1, 2, 4]) {
        const repeated = new Float32Array(batch * expected.length);
        for (let b = 0; b < batch; b++) repeated.set(expected, b * expected.length);
        expect([...controlBatchFor(control, batch, false, scratch)]).toEqual([...repeated]);
        // Reused scratch: earlier contents must not leak into a later, different batch.
        expect([...controlBatchFor(control, batch, true, scratch)]).toEqual([...float32ToFloat16(repeated)]);
      }
    }
  });

  it('gives the same image for a grey control image as for the same grey spread over RGB', async () => {
    const model = await loadModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp32' }), { device: 'cpu' });
    try {
      const rgb = baseInput(model);
      const plane = rgb.controlImage!.data.subarray(0, 64 * 64);
      const grey = { ...rgb, controlImage: { data: plane.slice(), width: 64, height: 64, channels: 1 } };
      const a = await generate(model, rgb);
      const b = await generate(model, grey);
      expect(Buffer.from(b.image!.data.buffer).equals(Buffer.from(a.image!.data.buffer))).toBe(true);
      // A grey image of the wrong size is still refused.
      await expect(generate(model, { ...grey, controlImage: { ...grey.controlImage, width: 32 } })).rejects.toMatchObject({ code: 'BAD_IMAGE' });
    } finally {
      await model.release();
    }
  });
});
