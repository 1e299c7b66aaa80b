/**
 * The tiny model builder: folder contents, the ONNX I/O layout of ../shared/conformance/README.md §1
 * as onnxruntime-node sees it, sensible runs (finite, right shapes, every input matters), and
 * byte-identical rebuilds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maxAbsDiff } from './support/arrays.ts';
import * as ort from 'onnxruntime-node';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTinyModel, TINY_MODEL_NOTE, type TinyModelOptions } from '../src/tiny/build-tiny.ts';

const tempDirs: string[] = [];
async function build(options: TinyModelOptions): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'depthcast-tiny-'));
  tempDirs.push(dir);
  await createTinyModel(dir, options);
  return dir;
}
afterAll(async () => {
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else out.push(rel);
  }
  return out.sort();
}

async function readJson(file: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
}

// ---- float16 helpers (Node 20 has no Float16Array; ORT hands float16 data over as Uint16Array bits) ----
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function toHalf(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    f32[0] = values[i]!;
    const x = u32[0]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = ((x >>> 23) & 0xff) - 127 + 15;
    let mant = x & 0x7fffff;
    if (exp <= 0) {
      out[i] = sign; // flush tiny values to zero: fine for test data
    } else if (exp >= 31) {
      out[i] = sign | 0x7c00;
    } else {
      // round to nearest even
      const rounded = (exp << 10) | (mant >>> 13);
      mant &= 0x1fff;
      out[i] = sign | (rounded + (mant > 0x1000 || (mant === 0x1000 && (rounded & 1)) ? 1 : 0));
    }
  }
  return out;
}
function fromHalf(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i]!;
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    out[i] = exp === 0 ? sign * mant * 2 ** -24 : exp === 31 ? (mant ? NaN : sign * Infinity) : sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return out;
}

type Values = Float32Array | Int32Array | number[];
type Session = ort.InferenceSession;

function inputType(session: Session, name: string): string {
  const meta = session.inputMetadata.find((m) => m.name === name);
  if (!meta || !meta.isTensor) throw new Error(`no tensor input ${name}`);
  return meta.type;
}

/** Builds a tensor of the element type the session declares for `name` (float data converted as needed). */
function feed(session: Session, name: string, values: Values, dims: number[]): ort.Tensor {
  const type = inputType(session, name);
  const floats = values instanceof Float32Array ? values : Float32Array.from(values);
  switch (type) {
    case 'float32':
      return new ort.Tensor('float32', floats, dims);
    case 'float16':
      return new ort.Tensor('float16', toHalf(floats), dims);
    case 'int32':
      return new ort.Tensor('int32', values instanceof Int32Array ? values : Int32Array.from(values), dims);
    case 'int64':
      return new ort.Tensor('int64', BigInt64Array.from(Array.from(values, (v) => BigInt(Math.trunc(v)))), dims);
    default:
      throw new Error(`unexpected input type ${type}`);
  }
}

interface Out {
  data: Float32Array;
  dims: readonly number[];
  type: string;
}
async function run(session: Session, feeds: Record<string, [Values, number[]]>): Promise<Record<string, Out>> {
  const tensors: Record<string, ort.Tensor> = {};
  for (const [name, [values, dims]] of Object.entries(feeds)) tensors[name] = feed(session, name, values, dims);
  const result = await session.run(tensors);
  const out: Record<string, Out> = {};
  for (const [name, t] of Object.entries(result)) {
    const data = t.type === 'float16' ? fromHalf(t.data as Uint16Array) : Float32Array.from(t.data as Float32Array);
    out[name] = { data, dims: t.dims, type: t.type };
  }
  return out;
}

function expectFinite(o: Out): void {
  for (let i = 0; i < o.data.length; i++) {
    if (!Number.isFinite(o.data[i]!)) throw new Error(`non-finite value at ${i}: ${o.data[i]}`);
  }
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const v of a) m = Math.max(m, Math.abs(v));
  return m;
}

/** A clearly visible change (well above fp16 rounding). */
function expectChanged(a: Out, b: Out): void {
  expect(maxAbsDiff(a.data, b.data)).toBeGreaterThan(1e-2);
}

/** Deterministic test data ~ U(-1,1) (scaled, shifted). */
function pseudo(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = offset + scale * ((s / 4294967296) * 2 - 1);
  }
  return out;
}

// ---- layout expectations (README §1) ----
const B = 2;
const W = 64;
const H = 48;
const w = W / 8;
const h = H / 8;

function ids(tokens: number[], eos: number): Int32Array {
  const out = new Int32Array(77).fill(eos);
  out[0] = eos - 1;
  tokens.forEach((t, i) => (out[i + 1] = t));
  out[tokens.length + 1] = eos;
  return out;
}
function batchIds(...rows: Int32Array[]): Int32Array {
  const out = new Int32Array(rows.length * 77);
  rows.forEach((r, i) => out.set(r, i * 77));
  return out;
}

const RESIDUALS = [
  { cn: 'down_block_res_sample_0', alt: 'down_block_0', unet: 'down_block_additional_residual_0', dims: ['batch', 16, 'height', 'width'] },
  { cn: 'down_block_res_sample_1', alt: 'down_block_1', unet: 'down_block_additional_residual_1', dims: ['batch', 16, 'height', 'width'] },
  { cn: 'down_block_res_sample_2', alt: 'down_block_2', unet: 'down_block_additional_residual_2', dims: ['batch', 16, 'half_height', 'half_width'] },
  { cn: 'down_block_res_sample_3', alt: 'down_block_3', unet: 'down_block_additional_residual_3', dims: ['batch', 32, 'half_height', 'half_width'] },
  { cn: 'mid_block_res_sample', alt: 'mid_block', unet: 'mid_block_additional_residual', dims: ['batch', 32, 'half_height', 'half_width'] },
] as const;

function residualShape(dims: readonly (string | number)[]): number[] {
  const half = dims[2] === 'half_height';
  return [B, dims[1] as number, half ? Math.ceil(h / 2) : h, half ? Math.ceil(w / 2) : w];
}

function metaOf(list: readonly ort.InferenceSession.ValueMetadata[]): Record<string, { type: string; shape: readonly (number | string)[] }> {
  const out: Record<string, { type: string; shape: readonly (number | string)[] }> = {};
  for (const m of list) {
    if (!m.isTensor) throw new Error(`${m.name} is not a tensor`);
    out[m.name] = { type: m.type, shape: m.shape };
  }
  return out;
}

const CASES = [
  { family: 'depth2img', dtype: 'fp32' },
  { family: 'depth2img', dtype: 'fp16' },
  { family: 'controlnet', dtype: 'fp32' },
  { family: 'controlnet', dtype: 'fp16' },
] as const;

describe.each(CASES)('tiny $family model, $dtype', ({ family, dtype }) => {
  const d2i = family === 'depth2img';
  const D = d2i ? 32 : 24;
  const C = d2i ? 5 : 4;
  const F = dtype === 'fp16' ? 'float16' : 'float32';
  const timestepType = d2i ? 'int64' : 'float32';
  let dir = '';
  const sessions: Record<string, Session> = {};
  let eos = 0;
  let embeddings: Out;

  beforeAll(async () => {
    dir = await build({ family, dtype, tinyDecoder: true });
    for (const part of ['text_encoder', 'unet', 'vae_encoder', 'vae_decoder', 'vae_decoder_tiny', ...(d2i ? [] : ['controlnet'])]) {
      sessions[part] = await ort.InferenceSession.create(path.join(dir, part, 'model.onnx'), { executionProviders: ['cpu'] });
    }
    const vocab = await readJson(path.join(dir, 'tokenizer/vocab.json'));
    eos = vocab['<|endoftext|>'] as number;
    embeddings = (await run(sessions.text_encoder!, { input_ids: [batchIds(ids([], eos), ids([320, 525, 78], eos)), [B, 77]] })).last_hidden_state!;
  });

  it('writes every file of the layout, with the tiny markers and configs', async () => {
    const expected = [
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder/config.json',
      'text_encoder/model.onnx',
      'tokenizer/merges.txt',
      'tokenizer/special_tokens_map.json',
      'tokenizer/tokenizer_config.json',
      'tokenizer/vocab.json',
      'unet/config.json',
      'unet/model.onnx',
      'vae_decoder/config.json',
      'vae_decoder/model.onnx',
      'vae_decoder_tiny/config.json',
      'vae_decoder_tiny/model.onnx',
      'vae_encoder/config.json',
      'vae_encoder/model.onnx',
      ...(d2i ? [] : ['controlnet/config.json', 'controlnet/model.onnx']),
    ].sort();
    expect(await listFiles(dir)).toEqual(expected);

    const index = await readJson(path.join(dir, 'model_index.json'));
    expect(index._class_name).toBe(d2i ? 'StableDiffusionDepth2ImgPipeline' : 'StableDiffusionControlNetPipeline');
    expect(index.depthcast_tiny).toBe(true);
    expect(index._note).toBe(TINY_MODEL_NOTE);
    expect(TINY_MODEL_NOTE).toMatch(/random/);
    expect(TINY_MODEL_NOTE).not.toMatch(/\n/);

    const scheduler = await readJson(path.join(dir, 'scheduler/scheduler_config.json'));
    expect(scheduler).toMatchObject({ _class_name: 'PNDMScheduler', beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, num_train_timesteps: 1000, steps_offset: 1, skip_prk_steps: true, set_alpha_to_one: false, prediction_type: 'epsilon' });

    const unet = await readJson(path.join(dir, 'unet/config.json'));
    expect(unet).toMatchObject({ in_channels: C, out_channels: 4, cross_attention_dim: D, timestep_dtype: timestepType });
    for (const vae of ['vae_encoder', 'vae_decoder', 'vae_decoder_tiny']) {
      const cfg = await readJson(path.join(dir, vae, 'config.json'));
      expect(cfg.scaling_factor).toBe(d2i ? 0.18215 : 0.5);
      expect(cfg.latent_channels).toBe(4);
      expect(cfg.block_out_channels).toHaveLength(4);
    }
    const text = await readJson(path.join(dir, 'text_encoder/config.json'));
    expect(text).toMatchObject({ hidden_size: D, vocab_size: eos + 1, max_position_embeddings: 77, eos_token_id: eos, bos_token_id: eos - 1 });
    if (!d2i) expect(await readJson(path.join(dir, 'controlnet/config.json'))).toMatchObject({ in_channels: 4, cross_attention_dim: D, conditioning_channels: 3 });
  });

  it('writes a tiny CLIP byte-level BPE tokenizer', async () => {
    const vocab = await readJson(path.join(dir, 'tokenizer/vocab.json'));
    const entries = Object.entries(vocab) as [string, number][];
    const V = entries.length;
    expect(V).toBeGreaterThan(540);
    expect(V).toBeLessThan(600);
    expect(new Set(entries.map(([, id]) => id)).size).toBe(V);
    expect(Math.max(...entries.map(([, id]) => id))).toBe(V - 1);
    expect(vocab['<|startoftext|>']).toBe(V - 2);
    expect(vocab['<|endoftext|>']).toBe(V - 1);
    // The 256 byte symbols come first in GPT-2 order ('!' is byte 33, the first printable), then the same with </w>.
    expect(vocab['!']).toBe(0);
    expect(vocab['!</w>']).toBe(256);
    expect(vocab['Ā']).toBeLessThan(256); // byte 0's symbol
    expect(vocab['Ġ']).toBeLessThan(256); // byte 32 (space)
    const merges = (await readFile(path.join(dir, 'tokenizer/merges.txt'), 'utf8')).split('\n');
    expect(merges[0]).toBe('#version: 0.2');
    const rules = merges.slice(1).filter((l) => l.length > 0);
    expect(rules.length).toBeGreaterThanOrEqual(40);
    expect(rules.length).toBe(V - 512 - 2);
    rules.forEach((rule, rank) => {
      const [a, b] = rule.split(' ');
      expect(vocab[a!], rule).toBeDefined();
      expect(vocab[b!], rule).toBeDefined();
      expect(vocab[a! + b!], rule).toBe(512 + rank);
    });
    expect(vocab['the</w>']).toBeDefined();
    const config = await readJson(path.join(dir, 'tokenizer/tokenizer_config.json'));
    expect(config).toMatchObject({ model_max_length: 77, pad_token: '<|endoftext|>', bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', tokenizer_class: 'CLIPTokenizer' });
    expect(await readJson(path.join(dir, 'tokenizer/special_tokens_map.json'))).toMatchObject({ pad_token: '<|endoftext|>', unk_token: '<|endoftext|>' });
  });

  it('declares the README §1 input/output names, element types and dynamic shapes', () => {
    expect(metaOf(sessions.text_encoder!.inputMetadata)).toEqual({ input_ids: { type: 'int32', shape: ['batch', 77] } });
    expect(metaOf(sessions.text_encoder!.outputMetadata)).toEqual({
      last_hidden_state: { type: F, shape: ['batch', 77, D] },
      pooler_output: { type: F, shape: ['batch', D] },
    });

    const unetInputs: Record<string, { type: string; shape: readonly (number | string)[] }> = {
      sample: { type: F, shape: ['batch', C, 'height', 'width'] },
      timestep: { type: timestepType, shape: ['batch'] },
      encoder_hidden_states: { type: F, shape: ['batch', 77, D] },
    };
    if (!d2i) for (const r of RESIDUALS) unetInputs[r.unet] = { type: F, shape: r.dims };
    expect(metaOf(sessions.unet!.inputMetadata)).toEqual(unetInputs);
    expect(sessions.unet!.inputNames).toEqual(Object.keys(unetInputs));
    expect(metaOf(sessions.unet!.outputMetadata)).toEqual({ out_sample: { type: F, shape: ['batch', 4, 'height', 'width'] } });

    expect(metaOf(sessions.vae_encoder!.inputMetadata)).toEqual({ sample: { type: F, shape: ['batch', 3, 'height', 'width'] } });
    expect(metaOf(sessions.vae_encoder!.outputMetadata)).toEqual({ latent_sample: { type: F, shape: ['batch', 4, 'latent_height', 'latent_width'] } });
    for (const dec of ['vae_decoder', 'vae_decoder_tiny']) {
      expect(metaOf(sessions[dec]!.inputMetadata)).toEqual({ latent_sample: { type: F, shape: ['batch', 4, 'latent_height', 'latent_width'] } });
      expect(metaOf(sessions[dec]!.outputMetadata)).toEqual({ sample: { type: F, shape: ['batch', 3, 'height', 'width'] } });
    }

    if (!d2i) {
      expect(metaOf(sessions.controlnet!.inputMetadata)).toEqual({
        sample: { type: F, shape: ['batch', 4, 'height', 'width'] },
        timestep: { type: 'float32', shape: ['batch'] },
        encoder_hidden_states: { type: F, shape: ['batch', 77, D] },
        controlnet_cond: { type: F, shape: ['batch', 3, 'image_height', 'image_width'] },
        conditioning_scale: { type: F, shape: [] },
      });
      expect(metaOf(sessions.controlnet!.outputMetadata)).toEqual(Object.fromEntries(RESIDUALS.map((r) => [r.cn, { type: F, shape: r.dims }])));
    }
  });

  it('text encoder: finite [B,77,D] / [B,D]; text and token positions matter; pooler is the eos row', async () => {
    const te = sessions.text_encoder!;
    expect(embeddings.dims).toEqual([B, 77, D]);
    expect(embeddings.type).toBe(F);
    expectFinite(embeddings);
    const a = ids([320, 525, 78], eos);
    const swapped = ids([78, 525, 320], eos);
    const other = ids([100, 200, 300, 400], eos);
    const out = await run(te, { input_ids: [batchIds(a, swapped, other), [3, 77]] });
    const hidden = out.last_hidden_state!;
    const pooled = out.pooler_output!;
    expect(pooled.dims).toEqual([3, D]);
    expectFinite(hidden);
    const row = (b: number) => hidden.data.subarray(b * 77 * D, (b + 1) * 77 * D);
    expect(maxAbsDiff(row(0), row(1))).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(row(0), row(2))).toBeGreaterThan(1e-2);
    // Batch rows are independent: row 1 of the earlier batch-2 run used the same ids as row 0 here.
    expect(maxAbsDiff(row(0), embeddings.data.subarray(77 * D))).toBeLessThan(1e-5);
    // pooler_output = hidden state at the first <|endoftext|> (position 4 for 3 tokens, 5 for 4).
    const at = (b: number, pos: number) => hidden.data.subarray((b * 77 + pos) * D, (b * 77 + pos + 1) * D);
    expect(maxAbsDiff(pooled.data.subarray(0, D), at(0, 4))).toBeLessThan(1e-6);
    expect(maxAbsDiff(pooled.data.subarray(2 * D, 3 * D), at(2, 5))).toBeLessThan(1e-6);
    expect(maxAbs(hidden.data)).toBeLessThan(20);
  });

  it('vae: encoder [B,4,h,w], decoders [B,3,8h,8w] in [-1,1]; the image matters and round trips', async () => {
    const image = pseudo(B * 3 * H * W, 7, 0.9);
    const enc = (await run(sessions.vae_encoder!, { sample: [image, [B, 3, H, W]] })).latent_sample!;
    expect(enc.dims).toEqual([B, 4, h, w]);
    expect(enc.type).toBe(F);
    expectFinite(enc);
    const image2 = image.slice();
    for (let i = 0; i < W; i++) image2[i] = -image2[i]!; // the first image row: 8 latent pixels see it
    expectChanged(enc, (await run(sessions.vae_encoder!, { sample: [image2, [B, 3, H, W]] })).latent_sample!);

    const latents = pseudo(B * 4 * h * w, 11, 2);
    for (const dec of ['vae_decoder', 'vae_decoder_tiny']) {
      const img = (await run(sessions[dec]!, { latent_sample: [latents, [B, 4, h, w]] })).sample!;
      expect(img.dims).toEqual([B, 3, H, W]);
      expect(img.type).toBe(F);
      expectFinite(img);
      expect(maxAbs(img.data)).toBeLessThanOrEqual(1);
      const latents2 = latents.slice();
      latents2[5] = latents2[5]! + 1;
      expectChanged(img, (await run(sessions[dec]!, { latent_sample: [latents2, [B, 4, h, w]] })).sample!);
    }

    // A flat colour survives encode → decode: exactly with the preview decoder, up to a texture with the full one…
    const flat = new Float32Array(B * 3 * H * W);
    const colour = [0.3, -0.2, 0.1];
    for (let i = 0; i < flat.length; i++) flat[i] = colour[Math.floor(i / (H * W)) % 3]!;
    const z = (await run(sessions.vae_encoder!, { sample: [flat, [B, 3, H, W]] })).latent_sample!;
    const back = (await run(sessions.vae_decoder_tiny!, { latent_sample: [z.data, [B, 4, h, w]] })).sample!;
    expect(maxAbsDiff(back.data, flat)).toBeLessThan(dtype === 'fp16' ? 5e-3 : 1e-4);
    const full = (await run(sessions.vae_decoder!, { latent_sample: [z.data, [B, 4, h, w]] })).sample!;
    expect(maxAbsDiff(full.data, flat)).toBeLessThan(0.3); // the texture
    expect(maxAbsDiff(full.data, flat)).toBeGreaterThan(1e-3);
    // …whose 8×8-block mean is zero, so the encoder gives back the latents.
    const again = (await run(sessions.vae_encoder!, { sample: [full.data, [B, 3, H, W]] })).latent_sample!;
    expect(maxAbsDiff(again.data, z.data) * (d2i ? 0.18215 : 0.5)).toBeLessThan(dtype === 'fp16' ? 5e-3 : 1e-4);
  });

  if (!d2i) {
    it('controlnet: 5 finite residuals of the README shapes; every input matters; scaled by conditioning_scale', async () => {
      const cn = sessions.controlnet!;
      const base = {
        sample: [pseudo(B * 4 * h * w, 3), [B, 4, h, w]],
        timestep: [[500, 500], [B]],
        encoder_hidden_states: [embeddings.data, [B, 77, D]],
        controlnet_cond: [pseudo(B * 3 * H * W, 5, 0.5, 0.5), [B, 3, H, W]],
        conditioning_scale: [[1], []],
      } satisfies Record<string, [Values, number[]]>;
      const out = await run(cn, base);
      expect(Object.keys(out).sort()).toEqual(RESIDUALS.map((r) => r.cn).sort());
      for (const r of RESIDUALS) {
        expect(out[r.cn]!.dims).toEqual(residualShape(r.dims));
        expect(out[r.cn]!.type).toBe(F);
        expectFinite(out[r.cn]!);
        expect(maxAbs(out[r.cn]!.data)).toBeLessThanOrEqual(1);
      }
      const changes: Record<string, [Values, number[]]> = {
        sample: [pseudo(B * 4 * h * w, 4), [B, 4, h, w]],
        timestep: [[300, 300], [B]],
        encoder_hidden_states: [pseudo(B * 77 * D, 9), [B, 77, D]],
        controlnet_cond: [pseudo(B * 3 * H * W, 6, 0.5, 0.5), [B, 3, H, W]],
        conditioning_scale: [[0.5], []],
      };
      for (const [name, value] of Object.entries(changes)) {
        const changed = await run(cn, { ...base, [name]: value });
        for (const r of RESIDUALS) {
          expect(maxAbsDiff(out[r.cn]!.data, changed[r.cn]!.data), `${name} → ${r.cn}`).toBeGreaterThan(1e-2);
        }
      }
      const half = await run(cn, { ...base, conditioning_scale: [[0.5], []] });
      const zero = await run(cn, { ...base, conditioning_scale: [[0], []] });
      for (const r of RESIDUALS) {
        const scaled = out[r.cn]!.data.map((v) => v * 0.5);
        expect(maxAbsDiff(half[r.cn]!.data, scaled)).toBeLessThan(dtype === 'fp16' ? 2e-3 : 1e-6);
        expect(maxAbs(zero[r.cn]!.data)).toBe(0);
      }
    });
  }

  it('unet: finite [B,4,h,w] of moderate size; every input matters', async () => {
    const unet = sessions.unet!;
    const sample = pseudo(B * C * h * w, 21);
    const base: Record<string, [Values, number[]]> = {
      sample: [sample, [B, C, h, w]],
      timestep: [[500, 500], [B]],
      encoder_hidden_states: [embeddings.data, [B, 77, D]],
    };
    if (!d2i) {
      RESIDUALS.forEach((r, i) => {
        const dims = residualShape(r.dims);
        base[r.unet] = [pseudo(dims.reduce((a, b) => a * b, 1), 30 + i, 0.8), dims];
      });
    }
    const out = (await run(unet, base)).out_sample!;
    expect(out.dims).toEqual([B, 4, h, w]);
    expect(out.type).toBe(F);
    expectFinite(out);
    expect(maxAbs(out.data)).toBeLessThan(10);

    const hw = h * w;
    const changes: Record<string, [Values, number[]]> = {
      timestep: [[400, 400], [B]],
      encoder_hidden_states: [pseudo(B * 77 * D, 22), [B, 77, D]],
    };
    const latents = sample.slice();
    for (let b = 0; b < B; b++) for (let i = 0; i < 4 * hw; i++) latents[b * C * hw + i] = latents[b * C * hw + i]! * 0.5;
    changes.sample = [latents, [B, C, h, w]];
    if (d2i) {
      const depth = sample.slice();
      for (let b = 0; b < B; b++) for (let i = 0; i < hw; i++) depth[b * C * hw + 4 * hw + i] = -depth[b * C * hw + 4 * hw + i]!;
      changes.depth = [depth, [B, C, h, w]];
    } else {
      RESIDUALS.forEach((r, i) => {
        const dims = residualShape(r.dims);
        changes[r.unet] = [pseudo(dims.reduce((a, b) => a * b, 1), 40 + i, 0.8), dims];
      });
    }
    for (const [what, value] of Object.entries(changes)) {
      const input = what === 'depth' ? 'sample' : what;
      const changed = (await run(unet, { ...base, [input]: value })).out_sample!;
      expect(maxAbsDiff(out.data, changed.data), what).toBeGreaterThan(1e-2);
    }
    // The two batch rows use different text: their predictions differ even for the same latents.
    const same = sample.slice(0, C * hw);
    const twice = new Float32Array(B * C * hw);
    twice.set(same);
    twice.set(same, C * hw);
    const split = (await run(unet, { ...base, sample: [twice, [B, C, h, w]] })).out_sample!;
    expect(maxAbsDiff(split.data.subarray(0, 4 * hw), split.data.subarray(4 * hw))).toBeGreaterThan(1e-3);
  });

  it('a 20-step DDIM loop with guidance 7.5 stays finite and moderate, and decodes', async () => {
    // alphas_cumprod of the scheduler config the folder ships (scaled_linear 0.00085 → 0.012).
    const abar: number[] = [];
    let prod = 1;
    for (let i = 0; i < 1000; i++) {
      const beta = (Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * i) / 999) ** 2;
      prod *= 1 - beta;
      abar.push(prod);
    }
    const hw = h * w;
    let x = pseudo(4 * hw, 99, Math.sqrt(3)); // unit variance
    const depth = pseudo(hw, 98);
    const cond = pseudo(3 * H * W, 97, 0.5, 0.5);
    const controlBatch = new Float32Array(B * 3 * H * W);
    controlBatch.set(cond);
    controlBatch.set(cond, 3 * H * W);
    for (let k = 0; k < 20; k++) {
      const t = 951 - 50 * k;
      const sample = new Float32Array(B * C * hw);
      for (let b = 0; b < B; b++) {
        sample.set(x, b * C * hw);
        if (d2i) sample.set(depth, b * C * hw + 4 * hw);
      }
      const feeds: Record<string, [Values, number[]]> = {
        sample: [sample, [B, C, h, w]],
        timestep: [[t, t], [B]],
        encoder_hidden_states: [embeddings.data, [B, 77, D]],
      };
      if (!d2i) {
        const res = await run(sessions.controlnet!, { ...feeds, controlnet_cond: [controlBatch, [B, 3, H, W]], conditioning_scale: [[1], []] });
        RESIDUALS.forEach((r) => (feeds[r.unet] = [res[r.cn]!.data, residualShape(r.dims)]));
      }
      const pred = (await run(sessions.unet!, feeds)).out_sample!.data;
      const a = abar[t]!;
      const prev = t - 50 >= 0 ? abar[t - 50]! : abar[0]!;
      const next = new Float32Array(4 * hw);
      for (let i = 0; i < 4 * hw; i++) {
        const eps = pred[i]! + 7.5 * (pred[4 * hw + i]! - pred[i]!);
        const x0 = (x[i]! - Math.sqrt(1 - a) * eps) / Math.sqrt(a);
        next[i] = Math.sqrt(prev) * x0 + Math.sqrt(1 - prev) * eps;
      }
      x = next;
      expect(x.every(Number.isFinite)).toBe(true);
    }
    expect(maxAbs(x)).toBeLessThan(10);
    const sf = d2i ? 0.18215 : 0.5;
    const image = (await run(sessions.vae_decoder!, { latent_sample: [x.map((v) => v / sf), [1, 4, h, w]] })).sample!;
    expect(image.dims).toEqual([1, 3, H, W]);
    expectFinite(image);
  });
});

describe('tiny model builder options', () => {
  it('same options give byte-identical files; another seed changes the weights only', async () => {
    const options: TinyModelOptions = { family: 'controlnet', dtype: 'fp16', seed: 42, tinyDecoder: true };
    const [a, b, c] = await Promise.all([build(options), build({ ...options }), build({ ...options, seed: 43 })]);
    const files = await listFiles(a);
    expect(await listFiles(b)).toEqual(files);
    expect(await listFiles(c)).toEqual(files);
    for (const f of files) {
      const [x, y, z] = await Promise.all([readFile(path.join(a, f)), readFile(path.join(b, f)), readFile(path.join(c, f))]);
      expect(x.equals(y), f).toBe(true);
      if (f.endsWith('.onnx')) expect(x.equals(z), f).toBe(false);
      else if (f !== 'model_index.json') expect(x.equals(z), f).toBe(true);
    }
  });

  it("controlnetNames: 'down_block' names the ControlNet outputs down_block_0..3 and mid_block", async () => {
    const dir = await build({ family: 'controlnet', controlnetNames: 'down_block' });
    const cn = await ort.InferenceSession.create(path.join(dir, 'controlnet/model.onnx'));
    expect(cn.outputNames).toEqual(RESIDUALS.map((r) => r.alt));
    const out = await run(cn, {
      sample: [pseudo(4 * h * w, 1), [1, 4, h, w]],
      timestep: [[10], [1]],
      encoder_hidden_states: [pseudo(77 * 24, 2), [1, 77, 24]],
      controlnet_cond: [pseudo(3 * H * W, 3, 0.5, 0.5), [1, 3, H, W]],
      conditioning_scale: [[1], []],
    });
    expect(out.mid_block!.dims).toEqual([1, 32, Math.ceil(h / 2), Math.ceil(w / 2)]);
  });

  it('honours timestepDtype, scalingFactor and hiddenSize overrides', async () => {
    const dir = await build({ family: 'depth2img', timestepDtype: 'float32', scalingFactor: 0.25, hiddenSize: 16 });
    const unet = await ort.InferenceSession.create(path.join(dir, 'unet/model.onnx'));
    expect(metaOf(unet.inputMetadata).timestep).toEqual({ type: 'float32', shape: ['batch'] });
    expect(metaOf(unet.inputMetadata).encoder_hidden_states!.shape).toEqual(['batch', 77, 16]);
    expect((await readJson(path.join(dir, 'unet/config.json'))).timestep_dtype).toBe('float32');
    expect((await readJson(path.join(dir, 'vae_decoder/config.json'))).scaling_factor).toBe(0.25);
    const cnDir = await build({ family: 'controlnet', timestepDtype: 'int64' });
    for (const part of ['unet', 'controlnet']) {
      const s = await ort.InferenceSession.create(path.join(cnDir, part, 'model.onnx'));
      expect(metaOf(s.inputMetadata).timestep!.type, part).toBe('int64');
    }
    await expect(createTinyModel(path.join(dir, 'bad'), { family: 'depth2img', hiddenSize: 0 })).rejects.toThrow(/hiddenSize/);
  });

  it('a default folder is well under 2 MB, and no vae_decoder_tiny unless asked', async () => {
    for (const family of ['depth2img', 'controlnet'] as const) {
      const dir = await build({ family });
      const files = await listFiles(dir);
      expect(files.some((f) => f.startsWith('vae_decoder_tiny/'))).toBe(false);
      let total = 0;
      for (const f of files) total += (await stat(path.join(dir, f))).size;
      expect(total).toBeLessThan(512 * 1024);
    }
  });

  it('hiddenSize 768 builds and runs at a Stable Diffusion text size', async () => {
    const dir = await build({ family: 'controlnet', hiddenSize: 768 });
    const te = await ort.InferenceSession.create(path.join(dir, 'text_encoder/model.onnx'));
    const vocab = await readJson(path.join(dir, 'tokenizer/vocab.json'));
    const eos = vocab['<|endoftext|>'] as number;
    const emb = (await run(te, { input_ids: [batchIds(ids([], eos), ids([320, 77], eos)), [B, 77]] })).last_hidden_state!;
    expect(emb.dims).toEqual([B, 77, 768]);
    const unet = await ort.InferenceSession.create(path.join(dir, 'unet/model.onnx'));
    const feeds: Record<string, [Values, number[]]> = {
      sample: [pseudo(B * 4 * h * w, 1), [B, 4, h, w]],
      timestep: [[999, 999], [B]],
      encoder_hidden_states: [emb.data, [B, 77, 768]],
    };
    RESIDUALS.forEach((r, i) => {
      const dims = residualShape(r.dims);
      feeds[r.unet] = [pseudo(dims.reduce((a, b) => a * b, 1), 50 + i), dims];
    });
    const out = (await run(unet, feeds)).out_sample!;
    expect(out.dims).toEqual([B, 4, h, w]);
    expectFinite(out);
  });
});
