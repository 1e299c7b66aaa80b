/**
 * The schedulers against the reference's per-step latents: drives each public conformance case
 * that has `trace/latents_{i}.npy` with the case's own ONNX models (text encoder on the expected
 * token ids, VAE encoder, ControlNet, UNet via onnxruntime-node) and compares the latents after
 * every scheduler step. Only the scheduler is under test here; the rest is a minimal stand-in for
 * the pipeline (README sections 3-4). Skipped, with the reason printed, when the cases are absent.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { createScheduler, type NoiseSource } from '../src/schedulers/index.ts';
import { DepthcastError } from '../src/errors.ts';

const casesDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'shared', 'conformance', 'cases');
const traced = existsSync(casesDir)
  ? readdirSync(casesDir).filter((d) => existsSync(join(casesDir, d, 'case.json')) && existsSync(join(casesDir, d, 'trace', 'latents_0.npy')))
  : [];
if (traced.length === 0) console.log(`schedulers.trace: no traced conformance cases at ${casesDir}; skipped`);

function readNpy(path: string): { data: Float32Array; shape: number[] } {
  const buf = readFileSync(path);
  const headerLength = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLength).toString('latin1');
  if (!header.includes("'<f4'") || header.includes("'fortran_order': True")) throw new Error(`${path}: expected little-endian C-order float32`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)![1]!.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const start = 10 + headerLength;
  const bytes = buf.subarray(start);
  const data = new Float32Array(bytes.length / 4);
  for (let i = 0; i < data.length; i++) data[i] = bytes.readFloatLE(i * 4);
  return { data, shape };
}

/** torch bicubic resize (A = −0.75, align_corners False, clamped borders) of one [H, W] plane. */
function bicubic(src: Float32Array, H: number, W: number, h: number, w: number): Float32Array {
  const A = -0.75;
  const near = (x: number): number => ((A + 2) * x - (A + 3)) * x * x + 1;
  const far = (x: number): number => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  const weights = (t: number): number[] => [far(t + 1), near(t), near(1 - t), far(2 - t)];
  const clamp = (v: number, n: number): number => Math.min(Math.max(v, 0), n - 1);
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    const sy = (y + 0.5) * (H / h) - 0.5;
    const iy = Math.floor(sy);
    const wy = weights(sy - iy);
    for (let x = 0; x < w; x++) {
      const sx = (x + 0.5) * (W / w) - 0.5;
      const ix = Math.floor(sx);
      const wx = weights(sx - ix);
      let acc = 0;
      for (let a = 0; a < 4; a++) {
        let row = 0;
        for (let b = 0; b < 4; b++) row += wx[b]! * src[clamp(iy - 1 + a, H) * W + clamp(ix - 1 + b, W)]!;
        acc += wy[a]! * row;
      }
      out[y * w + x] = acc;
    }
  }
  return out;
}

const tile = (x: Float32Array, times: number): Float32Array => {
  const out = new Float32Array(x.length * times);
  for (let i = 0; i < times; i++) out.set(x, i * x.length);
  return out;
};

describe.skipIf(traced.length === 0)('scheduler steps match the reference traces', () => {
  it.each(traced)('%s', async (name) => {
    const dir = join(casesDir, name);
    const c = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8'));
    const model = join(dir, c.model);
    const session = (part: string): Promise<ort.InferenceSession> => ort.InferenceSession.create(join(model, part, 'model.onnx'));
    const f32 = (data: Float32Array, dims: number[]): ort.Tensor => new ort.Tensor('float32', data, dims);

    const textEncoder = await session('text_encoder');
    const encode = async (ids: number[]): Promise<Float32Array> =>
      (await textEncoder.run({ input_ids: new ort.Tensor('int32', Int32Array.from(ids), [1, 77]) })).last_hidden_state!.data as Float32Array;
    const cond = await encode(c.expected.prompt_ids);
    const guided: boolean = c.expected.do_classifier_free_guidance;
    const batch = guided ? 2 : 1;
    const hidden = guided ? new Float32Array(2 * cond.length) : cond;
    if (guided) {
      hidden.set(await encode(c.expected.negative_prompt_ids));
      hidden.set(cond, cond.length);
    }
    const hiddenTensor = f32(hidden, [batch, 77, cond.length / 77]);

    const h = c.height / 8;
    const w = c.width / 8;
    const size = 4 * h * w;
    const scheduler = createScheduler(c.scheduler);
    const n: number = c.num_inference_steps;
    scheduler.setTimesteps(n);
    let begin = 0;
    if (c.strength !== null) {
      begin = Math.max(n - Math.min(Math.floor(n * c.strength), n), 0);
      scheduler.setBeginIndex(begin);
    }
    const run = scheduler.timesteps.slice(begin);

    const latentNoise = readNpy(join(dir, c.inputs.latent_noise)).data;
    const stepNoise = c.inputs.step_noise ? readNpy(join(dir, c.inputs.step_noise)).data : new Float32Array(0);
    let draws = 0;
    const noise: NoiseSource = {
      next(length) {
        if ((draws + 1) * length > stepNoise.length) throw new DepthcastError('OUT_OF_NOISE', 'case step noise exhausted');
        return stepNoise.slice(draws * length, ++draws * length);
      },
    };

    let latents: Float32Array;
    if (c.pipeline === 'controlnet') {
      latents = latentNoise.map((v) => v * scheduler.initNoiseSigma);
    } else {
      const vae = await session('vae_encoder');
      const image = readNpy(join(dir, c.inputs.init_image)).data.map((v) => v * 2 - 1);
      const encoded = (await vae.run({ sample: f32(image, [1, 3, c.height, c.width]) })).latent_sample!.data as Float32Array;
      const sf: number = JSON.parse(readFileSync(join(model, 'vae_encoder', 'config.json'), 'utf8')).scaling_factor;
      latents = scheduler.addNoise(encoded.map((v) => v * sf), latentNoise, run[0]!);
    }

    let depth: Float32Array | null = null;
    if (c.pipeline === 'depth2img') {
      const map = readNpy(join(dir, c.inputs.depth_map));
      const resized = bicubic(map.data, map.shape[1]!, map.shape[2]!, h, w);
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of resized) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      depth = resized.map((v) => (2 * (v - lo)) / (hi - lo) - 1);
    }
    const unet = await session('unet');
    const controlnet = c.pipeline === 'depth2img' ? null : await session('controlnet');
    const control = c.inputs.control_image ? readNpy(join(dir, c.inputs.control_image)).data : null;
    const intTimestep = c.pipeline === 'depth2img';

    for (let i = 0; i < run.length; i++) {
      const t = run[i]!;
      const input = scheduler.scaleModelInput(latents, t);
      const timestep = intTimestep
        ? new ort.Tensor('int64', new BigInt64Array(batch).fill(BigInt(Math.trunc(Math.fround(t)))), [batch])
        : f32(new Float32Array(batch).fill(t), [batch]);
      let pred: Float32Array;
      if (depth) {
        const withDepth = new Float32Array(5 * h * w);
        withDepth.set(input);
        withDepth.set(depth, size);
        pred = (await unet.run({ sample: f32(tile(withDepth, batch), [batch, 5, h, w]), timestep, encoder_hidden_states: hiddenTensor })).out_sample!
          .data as Float32Array;
      } else {
        const sample = f32(tile(input, batch), [batch, 4, h, w]);
        const residuals = await controlnet!.run({
          sample,
          timestep,
          encoder_hidden_states: hiddenTensor,
          controlnet_cond: f32(tile(control!, batch), [batch, 3, c.height, c.width]),
          conditioning_scale: f32(Float32Array.from([c.controlnet_conditioning_scale]), []),
        });
        const feeds: Record<string, ort.Tensor> = { sample, timestep, encoder_hidden_states: hiddenTensor };
        for (let k = 0; k < 4; k++) feeds[`down_block_additional_residual_${k}`] = residuals[`down_block_res_sample_${k}`]!;
        feeds.mid_block_additional_residual = residuals.mid_block_res_sample!;
        pred = (await unet.run(feeds)).out_sample!.data as Float32Array;
      }
      let guidedPred = pred.slice(0, size);
      if (guided) {
        guidedPred = new Float32Array(size);
        for (let k = 0; k < size; k++) guidedPred[k] = pred[k]! + c.guidance_scale * (pred[size + k]! - pred[k]!);
      }
      latents = scheduler.step(guidedPred, t, latents, noise);

      const trace = readNpy(join(dir, 'trace', `latents_${i}.npy`)).data;
      let worst = 0;
      let magnitude = 1;
      for (let k = 0; k < size; k++) {
        worst = Math.max(worst, Math.abs(trace[k]! - latents[k]!));
        magnitude = Math.max(magnitude, Math.abs(trace[k]!));
      }
      // Observed ≤ 1.4e-5 (at |latents| ≈ 24); onnxruntime vs torch and float64 scheduler math.
      expect(worst, `${name} step ${i} (t=${t})`).toBeLessThan(2e-5 * magnitude);
    }
    expect(draws * size).toBe(stepNoise.length);
  });
});
