/**
 * The checkpoint builder (src/checkpoint/) on configs the public checkpoint cases do not cover,
 * against an independent float64 evaluation of the diffusers/transformers modules
 * (test/support/diffusers-reference.ts), plus the public checkpoints themselves: the synthetic
 * state dicts match their real headers, fp16-only weights stay within the conformance tolerance,
 * unsupported configs are refused by name, and external data builds the same network.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { cp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFromCheckpoint } from '../src/checkpoint/build.ts';
import { cachedBuild } from '../src/checkpoint/cache.ts';
import { SafetensorsFile } from '../src/checkpoint/safetensors.ts';
import {
  clipTextConfig, clipTextShapes, controlnetConfig, controlnetShapes, unetConfig, unetShapes, vaeConfig, vaeShapes,
  writeSyntheticControlnet, writeSyntheticPipeline, type TensorShapes,
} from '../src/checkpoint/synthetic.ts';
import { runConformance } from '../tools/conformance/run.ts';
import { DepthcastError } from '../src/errors.ts';
import { type ModelSession, openSession } from '../src/runtime/ort.ts';
import { tinyTokenizerFiles } from '../src/tiny/tokenizer-files.ts';
import * as ref from './support/diffusers-reference.ts';
import { REPO_ROOT } from './support/tiny.ts';

const CHECKPOINTS = join(REPO_ROOT, '..', 'shared', 'checkpoints');
const root = mkdtempSync(join(tmpdir(), 'depthcast-checkpoint-test-'));
afterAll(() => rm(root, { recursive: true, force: true }));

/** A deterministic spread of values. */
function pseudo(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sin(seed * 12.9898 + i * 78.233) * 0.9;
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): { diff: number; scale: number } {
  expect(a.length).toBe(b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    diff = Number.isNaN(d) ? Infinity : Math.max(diff, d);
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return { diff, scale };
}

/** ORT (float32) against the float64 reference: relative to the output's magnitude. */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel = 2e-4): void {
  const { diff, scale } = maxDiff(actual, expected);
  expect(diff).toBeLessThanOrEqual(rel * Math.max(1, scale));
}

const slice = (data: Float32Array, i: number, per: number) => data.subarray(i * per, (i + 1) * per);
const T = (shape: number[], data: ArrayLike<number>): ref.T => ({ shape, data: Float64Array.from(data) });

async function weightsOf(path: string): Promise<ref.Weights> {
  const f = await SafetensorsFile.open(path);
  try {
    return await ref.loadWeights(f);
  } finally {
    await f.close();
  }
}

function headerShapes(file: SafetensorsFile): string[] {
  return [...file.tensors.values()].map((e) => `${e.name}:${e.shape.join('x')}`).sort();
}
const listShapes = (s: TensorShapes) => s.map(([n, shape]) => `${n}:${shape.join('x')}`).sort();

describe.skipIf(!existsSync(CHECKPOINTS))('synthetic checkpoints have the real state-dict layout', () => {
  const cases: [string, string, (cfg: Record<string, any>) => TensorShapes][] = [
    ['sd15-tiny/unet/config.json', 'sd15-tiny/unet/diffusion_pytorch_model.safetensors', unetShapes],
    ['sd2-depth-tiny/unet/config.json', 'sd2-depth-tiny/unet/diffusion_pytorch_model.safetensors', unetShapes],
    ['controlnet-sd15-tiny/config.json', 'controlnet-sd15-tiny/diffusion_pytorch_model.safetensors', controlnetShapes],
    ['sd15-tiny/vae/config.json', 'sd15-tiny/vae/diffusion_pytorch_model.safetensors', vaeShapes],
    ['sd2-depth-tiny/text_encoder/config.json', 'sd2-depth-tiny/text_encoder/model.safetensors', clipTextShapes],
  ];
  it.each(cases)('%s', async (config, weights, shapes) => {
    const cfg = JSON.parse(await readFile(join(CHECKPOINTS, 'models', config), 'utf8'));
    const f = await SafetensorsFile.open(join(CHECKPOINTS, 'models', weights));
    try {
      expect(listShapes(shapes(cfg))).toEqual(headerShapes(f));
    } finally {
      await f.close();
    }
  });
});

// A depth2img pipeline unlike the public ones: 3 blocks in a mixed order, 1 layer per block,
// per-block head counts, 2 transformer layers, linear projections, upcast_attention, 4 groups,
// a 3-layer gelu text encoder with non-legacy end-of-text pooling, a 3-block VAE.
const UNET = unetConfig({
  in_channels: 5, block_out_channels: [8, 16, 16], down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D', 'CrossAttnDownBlock2D'],
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D', 'CrossAttnUpBlock2D'], layers_per_block: 1, attention_head_dim: [2, 4, 4], transformer_layers_per_block: 2,
  use_linear_projection: true, upcast_attention: true, norm_num_groups: 4, cross_attention_dim: 6,
});
const TEXT = clipTextConfig({ hidden_size: 6, intermediate_size: 10, num_attention_heads: 2, num_hidden_layers: 3, hidden_act: 'gelu', vocab_size: 562, eos_token_id: 300 });
const VAE = vaeConfig({ block_out_channels: [4, 8, 8], layers_per_block: 1, norm_num_groups: 2, scaling_factor: 0.13025, down_block_types: new Array(3).fill('DownEncoderBlock2D'), up_block_types: new Array(3).fill('UpDecoderBlock2D') });
const UNET_REF: ref.UnetRefConfig = {
  channels: [8, 16, 16], cross: [true, false, true], upCross: [true, false, true], layers: [1, 1, 1], heads: [2, 4, 4], transformerLayers: [2, 2, 2], groups: 4, eps: 1e-5, linear: true,
};

describe('a depth2img checkpoint with other block counts, heads and options', () => {
  const src = join(root, 'd2i-src');
  const out = join(root, 'd2i-out');
  const sessions: ModelSession[] = [];
  const open = async (c: string) => {
    const s = await openSession(c, join(out, c, 'model.onnx'), 'cpu');
    sessions.push(s);
    return s;
  };
  beforeAll(async () => {
    await writeSyntheticPipeline(src, { className: 'StableDiffusionDepth2ImgPipeline', unet: UNET, text: TEXT, vae: VAE, tokenizer: tinyTokenizerFiles() }, { seed: 7 });
    await buildFromCheckpoint({ dir: src }, undefined, out);
  });
  afterAll(() => Promise.all(sessions.map((s) => s.release())));

  it('UNet: odd latent sides (7×5 → 4×3 → 2×2 and back), fractional timesteps, batch 2', async () => {
    const unet = await open('unet');
    const [h, w] = [5, 7];
    const per = 5 * h * w;
    const sample = pseudo(2 * per, 1);
    const text = pseudo(2 * 77 * 6, 2);
    const timesteps = [981.5, 3];
    const r = await unet.run({ sample: { data: sample, dims: [2, 5, h, w] }, timestep: { data: Float32Array.from(timesteps), dims: [2] }, encoder_hidden_states: { data: text, dims: [2, 77, 6] } });
    expect(r.out_sample!.dims).toEqual([2, 4, h, w]);
    const W = await weightsOf(join(src, 'unet', 'diffusion_pytorch_model.safetensors'));
    for (let b = 0; b < 2; b++) {
      const expected = ref.unetForward(W, UNET_REF, T([5, h, w], slice(sample, b, per)), timesteps[b]!, T([77, 6], slice(text, b, 77 * 6)));
      expectClose(slice(r.out_sample!.data, b, 4 * h * w), expected.data);
    }
  });

  it('text encoder: gelu, 3 layers, causal attention; pooled at the first eos_token_id', async () => {
    const enc = await open('text_encoder');
    const ids = Array.from({ length: 77 }, (_, i) => (i === 0 ? 560 : i < 9 ? (i * 37) % 500 : 561));
    ids[4] = 300; // the config's eos_token_id (not the legacy 2): pooled at its first position, not at argmax(ids)
    const r = await enc.run({ input_ids: { data: Int32Array.from(ids), dims: [1, 77] } });
    const W = await weightsOf(join(src, 'text_encoder', 'model.safetensors'));
    const expected = ref.clipForward(W, ids, { layers: 3, heads: 2, eps: 1e-5, act: 'gelu' });
    expectClose(r.last_hidden_state!.data, expected.data);
    expectClose(r.pooler_output!.data, expected.data.slice(4 * 6, 5 * 6));
  });

  it('VAE: posterior mean of the encoder, and the decoder', async () => {
    const [encoder, decoder] = [await open('vae_encoder'), await open('vae_decoder')];
    const W = await weightsOf(join(src, 'vae', 'diffusion_pytorch_model.safetensors'));
    const image = pseudo(3 * 12 * 20, 3);
    const mean = await encoder.run({ sample: { data: image, dims: [1, 3, 12, 20] } });
    expect(mean.latent_sample!.dims).toEqual([1, 4, 3, 5]);
    expectClose(mean.latent_sample!.data, ref.vaeEncodeMean(W, T([3, 12, 20], image), { blocks: 3, layers: 1, groups: 2, latent: 4 }).data);
    const z = pseudo(4 * 3 * 5, 4, 2);
    const decoded = await decoder.run({ latent_sample: { data: z, dims: [1, 4, 3, 5] } });
    expect(decoded.sample!.dims).toEqual([1, 3, 12, 20]);
    expectClose(decoded.sample!.data, ref.vaeDecode(W, T([4, 3, 5], z), { blocks: 3, layers: 1, groups: 2 }).data);
  });

  it('records what it was built from and copies the VAE config', async () => {
    const record = JSON.parse(await readFile(join(out, 'depthcast-build.json'), 'utf8'));
    expect(record.family).toBe('depth2img');
    expect(Object.keys(record.sources[0].files)).toContain('unet/diffusion_pytorch_model.safetensors');
    expect(JSON.parse(await readFile(join(out, 'vae_decoder', 'config.json'), 'utf8')).scaling_factor).toBe(0.13025);
  });
});

describe('a ControlNet checkpoint: residual inputs on the UNet, BGR hint order', () => {
  const src = join(root, 'cn-src');
  const cnSrc = join(root, 'cn-net');
  const out = join(root, 'cn-out');
  const base = { in_channels: 4, block_out_channels: [8, 8, 16], down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'], layers_per_block: 1, attention_head_dim: 2, norm_num_groups: 4, cross_attention_dim: 6 };
  beforeAll(async () => {
    await writeSyntheticPipeline(src, { className: 'StableDiffusionPipeline', unet: unetConfig(base), text: TEXT, vae: VAE, tokenizer: tinyTokenizerFiles() }, { seed: 11 });
    await writeSyntheticControlnet(cnSrc, controlnetConfig({ ...base, conditioning_embedding_out_channels: [4, 4, 8], controlnet_conditioning_channel_order: 'bgr' }), { seed: 12 });
    await buildFromCheckpoint({ dir: src }, { dir: cnSrc }, out);
  });

  it('the ControlNet matches the reference; the UNet adds each residual to its skip and the mid residual to the mid block', async () => {
    const unet = await openSession('unet', join(out, 'unet', 'model.onnx'), 'cpu');
    const cn = await openSession('controlnet', join(out, 'controlnet', 'model.onnx'), 'cpu');
    try {
      const [h, w] = [6, 5];
      const sample = pseudo(4 * h * w, 5);
      const text = pseudo(77 * 6, 6);
      const control = pseudo(3 * 4 * h * 4 * w, 7).map((v) => 0.5 + 0.5 * v);
      const common = { sample: { data: sample, dims: [1, 4, h, w] }, timestep: { data: Float32Array.of(500), dims: [1] }, encoder_hidden_states: { data: text, dims: [1, 77, 6] } };
      const res = await cn.run({ ...common, controlnet_cond: { data: control, dims: [1, 3, 4 * h, 4 * w] }, conditioning_scale: { data: 0.75, dims: [] } });
      const names = [...Array(6).keys()].map((i) => `down_block_res_sample_${i}`).concat('mid_block_res_sample');
      expect(cn.outputs.map((o) => o.name).sort()).toEqual([...names].sort());
      const feeds: Record<string, { data: Float32Array; dims: number[] }> = { ...common };
      names.forEach((n, i) => (feeds[i < 6 ? `down_block_additional_residual_${i}` : 'mid_block_additional_residual'] = { data: res[n]!.data, dims: res[n]!.dims }));
      const out1 = await unet.run(feeds);
      const cfg: ref.UnetRefConfig = { channels: [8, 8, 16], cross: [true, true, false], upCross: [false, true, true], layers: [1, 1, 1], heads: [2, 2, 2], transformerLayers: [1, 1, 1], groups: 4, eps: 1e-5, linear: false };
      const W = await weightsOf(join(src, 'unet', 'diffusion_pytorch_model.safetensors'));
      // The ControlNet itself: BGR hint order, 3-entry hint encoder, scale 0.75.
      const cnW = await weightsOf(join(cnSrc, 'diffusion_pytorch_model.safetensors'));
      const cnExpected = ref.controlnetForward(cnW, { ...cfg, upCross: [], embedBlocks: 3, bgr: true, globalPool: false }, T([4, h, w], sample), 500, T([77, 6], text), T([3, 4 * h, 4 * w], control), 0.75);
      names.forEach((n, i) => expectClose(res[n]!.data, cnExpected[i]!.data));
      const residuals = names.map((n) => T(res[n]!.dims.slice(1), res[n]!.data));
      const expected = ref.unetForward(W, cfg, T([4, h, w], sample), 500, T([77, 6], text), residuals);
      expectClose(out1.out_sample!.data, expected.data);
      // The residuals matter: without them the output is another one.
      const plain = ref.unetForward(W, cfg, T([4, h, w], sample), 500, T([77, 6], text));
      expect(maxDiff(out1.out_sample!.data, plain.data).diff).toBeGreaterThan(1e-2);
    } finally {
      await unet.release();
      await cn.release();
    }
  });
});

describe('a ControlNet with global_pool_conditions', () => {
  it('averages each scaled residual over the image, as the reference does', async () => {
    const base = { in_channels: 4, block_out_channels: [8, 16], down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
      layers_per_block: 1, attention_head_dim: [2, 4], norm_num_groups: 4, cross_attention_dim: 6 };
    const vae = vaeConfig({ block_out_channels: [4, 8], layers_per_block: 1, norm_num_groups: 2, down_block_types: new Array(2).fill('DownEncoderBlock2D'), up_block_types: new Array(2).fill('UpDecoderBlock2D') });
    const [src, cnSrc, out] = [join(root, 'pool-src'), join(root, 'pool-net'), join(root, 'pool-out')];
    await writeSyntheticPipeline(src, { className: 'StableDiffusionPipeline', unet: unetConfig(base), text: TEXT, vae, tokenizer: tinyTokenizerFiles() }, { seed: 31 });
    await writeSyntheticControlnet(cnSrc, controlnetConfig({ ...base, conditioning_embedding_out_channels: [4, 8], global_pool_conditions: true }), { seed: 32 });
    await buildFromCheckpoint({ dir: src }, { dir: cnSrc }, out);
    const cn = await openSession('controlnet', join(out, 'controlnet', 'model.onnx'), 'cpu');
    try {
      const [h, w] = [3, 5];
      const sample = pseudo(4 * h * w, 33);
      const text = pseudo(77 * 6, 34);
      const control = pseudo(3 * 2 * h * 2 * w, 35).map((v) => 0.5 + 0.5 * v);
      const res = await cn.run({
        sample: { data: sample, dims: [1, 4, h, w] }, timestep: { data: Float32Array.of(250.5), dims: [1] }, encoder_hidden_states: { data: text, dims: [1, 77, 6] },
        controlnet_cond: { data: control, dims: [1, 3, 2 * h, 2 * w] }, conditioning_scale: { data: 0.5, dims: [] },
      });
      const W = await weightsOf(join(cnSrc, 'diffusion_pytorch_model.safetensors'));
      const cfg = { channels: [8, 16], cross: [true, false], upCross: [], layers: [1, 1], heads: [2, 4], transformerLayers: [1, 1], groups: 4, eps: 1e-5, linear: false, embedBlocks: 2, bgr: false, globalPool: true };
      const expected = ref.controlnetForward(W, cfg, T([4, h, w], sample), 250.5, T([77, 6], text), T([3, 2 * h, 2 * w], control), 0.5);
      const names = [0, 1, 2, 3].map((i) => `down_block_res_sample_${i}`).concat('mid_block_res_sample');
      names.forEach((n, i) => {
        expect(res[n]!.dims.slice(2)).toEqual([1, 1]);
        expectClose(res[n]!.data, expected[i]!.data);
      });
    } finally {
      await cn.release();
    }
  });
});

describe.skipIf(!existsSync(CHECKPOINTS))('the public checkpoint cases', () => {
  it('pass 3/3 through the builder, and a second run reuses the cached builds', async () => {
    const saved = process.env.DEPTHCAST_BUILD_CACHE;
    process.env.DEPTHCAST_BUILD_CACHE = join(root, 'build-cache');
    try {
      const lines: string[] = [];
      expect(await runConformance(CHECKPOINTS, (l) => lines.push(l))).toEqual({ passed: 3, failed: 0 });
      expect(lines.at(-1)).toBe('3 passed, 0 failed');
      const again = await cachedBuild({ dir: join(CHECKPOINTS, 'models', 'sd2-depth-tiny') }, undefined);
      expect(again.built).toBe(false);
      expect(again.dir.startsWith(join(root, 'build-cache'))).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.DEPTHCAST_BUILD_CACHE;
      else process.env.DEPTHCAST_BUILD_CACHE = saved;
    }
  }, 120_000);
});

describe.skipIf(!existsSync(CHECKPOINTS))('fp16-only weights', () => {
  it('are upcast and stay within the case tolerance of the float32 reference', async () => {
    const set = join(root, 'fp16-set');
    await mkdir(join(set, 'cases'), { recursive: true });
    await mkdir(join(set, 'models', 'controlnet-sd15-tiny'), { recursive: true });
    await cp(join(CHECKPOINTS, 'cases', 'ck-cn-pndm'), join(set, 'cases', 'ck-cn-pndm'), { recursive: true });
    await symlink(join(CHECKPOINTS, 'models', 'sd15-tiny'), join(set, 'models', 'sd15-tiny'));
    for (const f of ['config.json', 'diffusion_pytorch_model.fp16.safetensors']) {
      await writeFile(join(set, 'models', 'controlnet-sd15-tiny', f), await readFile(join(CHECKPOINTS, 'models', 'controlnet-sd15-tiny', f)));
    }
    const lines: string[] = [];
    const result = await runConformance(set, (l) => lines.push(l));
    expect(lines.join('\n')).toMatch(/PASS ck-cn-pndm/);
    expect(result).toEqual({ passed: 1, failed: 0 });
    const maxAbs = Number(/max_abs=([\d.e+-]+)/.exec(lines[0]!)![1]);
    // Rounded weights move the image (by 5e-4..9e-4 per the case notes), unlike the float32 build's ~3e-6.
    expect(maxAbs).toBeGreaterThan(1e-4);
  }, 60_000);
});

describe('refusals', () => {
  const write = async (name: string, unet: Record<string, any>, extraWeight = false) => {
    const dir = join(root, name);
    await writeSyntheticPipeline(dir, { className: 'StableDiffusionDepth2ImgPipeline', unet, text: TEXT, vae: VAE, tokenizer: tinyTokenizerFiles() }, { seed: 1 });
    if (extraWeight) {
      const { writeRandomSafetensors } = await import('../src/checkpoint/synthetic.ts');
      await writeRandomSafetensors(join(dir, 'unet', 'diffusion_pytorch_model.safetensors'), [...unetShapes(unet), ['class_embedding.linear_1.weight', [32, 8]]], { seed: 1 });
    }
    return dir;
  };
  const refusal = async (dir: string) => {
    const err = await buildFromCheckpoint({ dir }, undefined, join(dir, 'out')).then(() => null, (e) => e);
    expect(err).toBeInstanceOf(DepthcastError);
    expect((err as DepthcastError).code).toBe('BAD_MODEL');
    return (err as DepthcastError).message;
  };

  it('names an unknown config key and an unsupported value', async () => {
    const message = await refusal(await write('refuse-keys', { ...UNET, class_embed_type: 'timestep', some_new_option: true }));
    expect(message).toContain('"class_embed_type" = "timestep"');
    expect(message).toContain('"some_new_option"');
  });

  it('names weights the config does not account for', async () => {
    expect(await refusal(await write('refuse-weights', UNET, true))).toContain('class_embedding.linear_1.weight');
  });

  it('asks for a ControlNet when the pipeline is not a depth model by itself', async () => {
    const dir = join(root, 'refuse-family');
    await writeSyntheticPipeline(dir, { className: 'StableDiffusionPipeline', unet: unetConfig({ ...UNET, in_channels: 4 }), text: TEXT, vae: VAE, tokenizer: tinyTokenizerFiles() }, { seed: 1 });
    expect(await refusal(dir)).toContain('--controlnet');
  });
});

describe('external data', () => {
  it('a lowered inline limit moves weights to model.onnx_data; the network computes the same', async () => {
    const src = join(root, 'ext-src');
    await writeSyntheticPipeline(src, { className: 'StableDiffusionDepth2ImgPipeline', unet: UNET, text: TEXT, vae: VAE, tokenizer: tinyTokenizerFiles() }, { seed: 3 });
    const [inline, external] = [join(root, 'ext-inline'), join(root, 'ext-external')];
    await buildFromCheckpoint({ dir: src }, undefined, inline);
    await buildFromCheckpoint({ dir: src }, undefined, external, { inlineLimitBytes: 64 * 1024 });
    expect(existsSync(join(inline, 'unet', 'model.onnx_data'))).toBe(false);
    expect(existsSync(join(external, 'unet', 'model.onnx_data'))).toBe(true);
    const feeds = { sample: { data: pseudo(5 * 16, 9), dims: [1, 5, 4, 4] }, timestep: { data: Float32Array.of(10), dims: [1] }, encoder_hidden_states: { data: pseudo(77 * 6, 8), dims: [1, 77, 6] } };
    const outs: Float32Array[] = [];
    for (const dir of [inline, external]) {
      const s = await openSession('unet', join(dir, 'unet', 'model.onnx'), 'cpu');
      outs.push((await s.run(feeds)).out_sample!.data.slice());
      await s.release();
    }
    expect(maxDiff(outs[1]!, outs[0]!).diff).toBe(0);
  });
});
