/**
 * The fp16 boundary of src/runtime/ort.ts on a real fp16 UNet: stable feeds converted once and
 * shared by every session (a ControlNet and its UNet take the same latents), rewritten in place
 * when their key changes, and fp16 outputs read back into a caller's buffer.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Feed, type ModelSession, openSession } from '../src/runtime/ort.ts';
import { concatEmbeddings } from '../src/pipelines/steps.ts';
import { float16ToFloat32 } from '../src/runtime/float16.ts';
import { tinyModelDir } from './support/tiny.ts';

let first: ModelSession;
let second: ModelSession;

beforeAll(async () => {
  const file = join(await tinyModelDir({ family: 'depth2img', dtype: 'fp16' }), 'unet', 'model.onnx');
  first = await openSession('unet', file, 'cpu');
  second = await openSession('unet', file, 'cpu');
});

afterAll(async () => {
  await first?.release();
  await second?.release();
});

function feeds(sample: Float32Array, stableFor?: object): Record<string, Feed> {
  const [, c, h, w] = first.input('sample')!.shape.map((d) => (typeof d === 'number' && d > 0 ? d : 0));
  const D = Number(first.input('encoder_hidden_states')!.shape[2]);
  return {
    sample: { data: sample, dims: [1, c!, h || 8, w || 8], stableFor },
    timestep: { data: 500, dims: [1] },
    encoder_hidden_states: { data: new Float32Array(77 * D).fill(0.1), dims: [1, 77, D] },
  };
}

async function predict(session: ModelSession, sample: Float32Array, stableFor?: object): Promise<Float32Array> {
  return (await session.run(feeds(sample, stableFor), ['out_sample'])).out_sample!.data;
}

function sampleOfSize(): Float32Array {
  const [, c, h, w] = first.input('sample')!.shape;
  const n = Number(c) * (Number(h) > 0 ? Number(h) : 8) * (Number(w) > 0 ? Number(w) : 8);
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i));
}

describe('fp16 session boundary', () => {
  it('converts a stable feed once for every session, and again in place when its key changes', async () => {
    const sample = sampleOfSize();
    const before = await predict(first, sample);
    const stepOne = {};
    expect(await predict(first, sample, stepOne)).toEqual(before);
    // New contents under the same key: by the contract they are not converted again, in either
    // session, which is what shows the second session reused the first one's halves.
    const original = sample.slice();
    for (let i = 0; i < sample.length; i++) sample[i] = Math.cos(i);
    expect(await predict(second, sample, stepOne)).toEqual(before);
    // A new key (the next step): converted again, into the same halves, giving the new answer.
    const fresh = await predict(first, sample);
    expect(fresh).not.toEqual(before);
    expect(await predict(second, sample, {})).toEqual(fresh);
    sample.set(original);
    expect(await predict(first, sample, {})).toEqual(before);
  });

  it('reads fp16 outputs back into the caller\'s buffer', async () => {
    const out = (await first.run(feeds(sampleOfSize()), ['out_sample'])).out_sample!;
    expect(out.half).toBeInstanceOf(Uint16Array);
    expect(() => out.float32Into(new Float32Array(3))).toThrow(RangeError);
    const reuse = new Float32Array(out.half!.length);
    expect(out.float32Into(reuse)).toBe(reuse);
    expect(reuse).toEqual(float16ToFloat32(out.half!));
  });
});

describe('outputs written into a given buffer', () => {
  it('writes a float32 output where the caller asks and returns that buffer; an fp16 output ignores it', async () => {
    for (const dtype of ['fp32', 'fp16'] as const) {
      const file = join(await tinyModelDir({ family: 'depth2img', dtype }), 'vae_decoder', 'model.onnx');
      const vae = await openSession('vae_decoder', file, 'cpu');
      try {
        const latents = { latent_sample: { data: Float32Array.from({ length: 4 * 8 * 8 }, (_, i) => Math.cos(i)), dims: [1, 4, 8, 8] } };
        const plain = (await vae.run(latents, ['sample'])).sample!;
        const target = new Float32Array(plain.data.length).fill(-7);
        const into = (await vae.run(latents, ['sample'], { sample: { data: target, dims: plain.dims } })).sample!;
        if (dtype === 'fp32') {
          expect(into.data).toBe(target);
          expect(target).toEqual(plain.data);
        } else {
          expect(into.half).toBeInstanceOf(Uint16Array);
          expect(target[0]).toBe(-7);
        }
      } finally {
        await vae.release();
      }
    }
  });
});

describe('batched text embeddings', () => {
  it('joins the same prompts once and keeps a bounded number of batches per first embedding', () => {
    const uncond = new Float32Array([1, 2]);
    const conds = Array.from({ length: 10 }, (_, i) => new Float32Array([i, i]));
    const joined = concatEmbeddings([uncond, conds[0]!]);
    expect([...joined]).toEqual([1, 2, 0, 0]);
    expect(concatEmbeddings([uncond, conds[0]!])).toBe(joined);
    expect(concatEmbeddings([uncond, conds[1]!])).not.toBe(joined);
    expect(concatEmbeddings([uncond, conds[0]!, conds[1]!])).not.toBe(joined);
    for (const c of conds) concatEmbeddings([uncond, c]);
    // Ten more batches under the same first embedding pushed the oldest out.
    const again = concatEmbeddings([uncond, conds[0]!]);
    expect(again).not.toBe(joined);
    expect([...again]).toEqual([1, 2, 0, 0]);
  });
});
