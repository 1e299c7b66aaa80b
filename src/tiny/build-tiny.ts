/**
 * Builds small deterministic models in the diffusers ONNX layout that depthcast loads
 * (../shared/conformance/README.md §1), so tests and a first run need no download.
 *
 * The weights are random, but the unet is not an arbitrary random function: it is the exact
 * noise predictor for a Gaussian prior centred on a "clean latent" computed from the conditioning
 * (depth channel or ControlNet residuals, text). So every sampler converges to a finite latent
 * that follows the depth map / control image, seeds give different images, img2img keeps some of
 * its init image, and every value stays bounded whatever the scheduler does. Details at each graph.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { GraphBuilder, attr, type Dim, type ElemType } from '../models/onnx-graph.ts';
import { randomNormal } from './random.ts';
import { END_TOKEN, START_TOKEN, tinyTokenizerFiles, tinyVocab } from './tokenizer-files.ts';

export const TINY_MODEL_NOTE =
  'This is a depthcast tiny model: its weights are random (built locally, no download), so it makes abstract images that follow the depth map or control image, not pictures of the prompt.';

export interface TinyModelOptions {
  family: 'depth2img' | 'controlnet';
  /** fp16: every float session input/output is tensor(float16); the math inside runs in float32. */
  dtype?: 'fp32' | 'fp16';
  /** Text hidden size D (default 32 for depth2img, 24 for controlnet). */
  hiddenSize?: number;
  /** Weights come from a keyed deterministic generator; same options → byte-identical files. */
  seed?: number;
  /** VAE scaling factor written to vae_*\/config.json (default 0.18215 depth2img, 0.5 controlnet). */
  scalingFactor?: number;
  /** unet and controlnet `timestep` element type (default int64 for depth2img, float32 for controlnet). */
  timestepDtype?: 'int64' | 'float32';
  /** ControlNet output names: 'diffusers' = down_block_res_sample_0..3 + mid_block_res_sample (default); 'down_block' = down_block_0..3 + mid_block. */
  controlnetNames?: 'diffusers' | 'down_block';
  /** Also write vae_decoder_tiny/model.onnx, a cheaper preview decoder with the vae_decoder's I/O. */
  tinyDecoder?: boolean;
}

export type ResolvedTinyOptions = Required<TinyModelOptions>;

export function resolveTinyOptions(options: TinyModelOptions): ResolvedTinyOptions {
  const d2i = options.family === 'depth2img';
  if (!d2i && options.family !== 'controlnet') throw new Error(`tiny model: unknown family ${String(options.family)}`);
  const r: ResolvedTinyOptions = {
    family: options.family,
    dtype: options.dtype ?? 'fp32',
    hiddenSize: options.hiddenSize ?? (d2i ? 32 : 24),
    seed: options.seed ?? 0,
    scalingFactor: options.scalingFactor ?? (d2i ? 0.18215 : 0.5),
    timestepDtype: options.timestepDtype ?? (d2i ? 'int64' : 'float32'),
    controlnetNames: options.controlnetNames ?? 'diffusers',
    tinyDecoder: options.tinyDecoder ?? false,
  };
  if (r.dtype !== 'fp32' && r.dtype !== 'fp16') throw new Error(`tiny model: dtype must be fp32 or fp16, not ${String(r.dtype)}`);
  if (!Number.isInteger(r.hiddenSize) || r.hiddenSize < 1 || r.hiddenSize > 4096) throw new Error(`tiny model: hiddenSize must be an integer in 1..4096, not ${r.hiddenSize}`);
  if (!Number.isSafeInteger(r.seed)) throw new Error(`tiny model: seed must be a safe integer, not ${r.seed}`);
  if (!(Number.isFinite(r.scalingFactor) && r.scalingFactor > 0)) throw new Error(`tiny model: scalingFactor must be a positive number, not ${r.scalingFactor}`);
  if (r.timestepDtype !== 'int64' && r.timestepDtype !== 'float32') throw new Error(`tiny model: timestepDtype must be int64 or float32`);
  if (r.controlnetNames !== 'diffusers' && r.controlnetNames !== 'down_block') throw new Error(`tiny model: controlnetNames must be diffusers or down_block`);
  return r;
}

const MAX_LENGTH = 77;
const PRODUCER = 'depthcast-tiny';
const PRODUCER_VERSION = '1';
/** Training-schedule constants the unet's noise tables assume (the PNDM defaults written to scheduler_config.json). */
const TRAIN_STEPS = 1000;
const BETA_START = 0.00085;
const BETA_END = 0.012;
/** Variance of the Gaussian prior around the conditional clean latent: how much seeds change the image. */
const PRIOR_VARIANCE = 0.03;

export const CONTROLNET_RESIDUALS = [
  { diffusers: 'down_block_res_sample_0', downBlock: 'down_block_0', unet: 'down_block_additional_residual_0', channels: 16, half: false },
  { diffusers: 'down_block_res_sample_1', downBlock: 'down_block_1', unet: 'down_block_additional_residual_1', channels: 16, half: false },
  { diffusers: 'down_block_res_sample_2', downBlock: 'down_block_2', unet: 'down_block_additional_residual_2', channels: 16, half: true },
  { diffusers: 'down_block_res_sample_3', downBlock: 'down_block_3', unet: 'down_block_additional_residual_3', channels: 32, half: true },
  { diffusers: 'mid_block_res_sample', downBlock: 'mid_block', unet: 'mid_block_additional_residual', channels: 32, half: true },
] as const;

const CAST_FLOAT = attr.int(1);
const CAST_FLOAT16 = attr.int(10);
const CAST_INT64 = attr.int(7);

/** A GraphBuilder plus the conventions of these models: keyed random weights, float I/O in the chosen dtype. */
class Net {
  readonly g: GraphBuilder;

  constructor(
    private readonly key: string,
    name: string,
    private readonly io: ElemType,
  ) {
    this.g = new GraphBuilder(name);
  }

  /** A random float32 initializer ~ N(mean, std²). */
  w(name: string, dims: number[], std: number, mean = 0): string {
    const count = dims.reduce((a, b) => a * b, 1);
    return this.g.float(name, dims, randomNormal(`${this.key}/${name}`, count, std, mean));
  }

  random(name: string, count: number, std: number): Float32Array {
    return randomNormal(`${this.key}/${name}`, count, std);
  }

  i64(name: string, values: number[]): string {
    return this.g.int64(name, [values.length], values);
  }

  /** Declares a float input in the I/O dtype; returns a float32 value. */
  floatIn(name: string, dims: Dim[]): string {
    this.g.input(name, this.io, dims);
    return this.io === 'float16' ? this.g.op('Cast', [name], { to: CAST_FLOAT }) : name;
  }

  /** Publishes a float32 value as a graph output in the I/O dtype. */
  floatOut(value: string, name: string, dims: Dim[]): void {
    this.g.output(name, this.io, dims);
    if (this.io === 'float16') this.g.op('Cast', [value], { to: CAST_FLOAT16 }, name);
    else this.g.op('Identity', [value], {}, name);
  }

  /** Conv with square kernel k (same padding), random weights unless given. */
  conv(x: string, name: string, outC: number, inC: number, k: number, std: number, opts: { weights?: ArrayLike<number>; bias?: ArrayLike<number>; biasStd?: number } = {}): string {
    const wName = `${name}.weight`;
    const weight = opts.weights ? this.g.float(wName, [outC, inC, k, k], opts.weights) : this.w(wName, [outC, inC, k, k], std);
    const bName = `${name}.bias`;
    const bias = opts.bias ? this.g.float(bName, [outC], opts.bias) : this.w(bName, [outC], opts.biasStd ?? 0);
    const p = (k - 1) / 2;
    return this.g.op('Conv', [x, weight, bias], { kernel_shape: attr.ints([k, k]), pads: attr.ints([p, p, p, p]) });
  }

  /** [B,D] → MatMul [D,out] → [B,out,1,1]: a per-batch, per-channel bias. */
  channelBias(vec: string, name: string, inDim: number, outC: number, std: number): string {
    const m = this.g.op('MatMul', [vec, this.w(`${name}.weight`, [inDim, outC], std)]);
    return this.g.op('Reshape', [m, this.i64(`${name}.shape`, [-1, outC, 1, 1])]);
  }

  /** Timestep input → float32 [B]. */
  timestep(dtype: 'int64' | 'float32'): string {
    this.g.input('timestep', dtype, ['batch']);
    return dtype === 'int64' ? this.g.op('Cast', ['timestep'], { to: CAST_FLOAT }) : 'timestep';
  }

  bytes(): Uint8Array {
    return this.g.toBytes({ producer: PRODUCER, version: PRODUCER_VERSION, doc: TINY_MODEL_NOTE, metadata: { depthcast_tiny: 'true' } });
  }
}

function ioType(o: ResolvedTinyOptions): ElemType {
  return o.dtype === 'fp16' ? 'float16' : 'float32';
}

/**
 * Text encoder: input_ids int32 [B,77] → last_hidden_state [B,77,D], pooler_output [B,D].
 *   x   = tok_emb[ids] + pos_emb                      (Gather from [V,D], + [77,D])
 *   ctx = cumsum(x over positions) / (position + 1)   (causal running mean, like CLIP's causal mask)
 *   y   = LayerNorm(tanh([x ‖ ctx]·A·U + b) + 0.5·x)      (A·U a rank-≤16 mix [2D,D])
 *   pooler_output = y at the first <|endoftext|> (the id is the largest in the vocab, so ArgMax finds it, as CLIP does)
 */
function buildTextEncoder(o: ResolvedTinyOptions, vocabSize: number): Uint8Array {
  const n = new Net(`${o.seed}/text_encoder`, 'tiny_text_encoder', ioType(o));
  const g = n.g;
  const D = o.hiddenSize;
  g.input('input_ids', 'int32', ['batch', MAX_LENGTH]);
  const tok = g.op('Gather', [n.w('token_embedding', [vocabSize, D], 1), 'input_ids'], { axis: attr.int(0) });
  const x = g.op('Add', [tok, n.w('position_embedding', [MAX_LENGTH, D], 0.5)]);
  const sum = g.op('CumSum', [x, g.int64('positions_axis', [], [1])]);
  const invCount = Array.from({ length: MAX_LENGTH }, (_, i) => 1 / (i + 1));
  const ctx = g.op('Mul', [sum, g.float('inverse_count', [MAX_LENGTH, 1], invCount)]);
  // Low rank (R ≤ 16) so hiddenSize 768 stays small and cheap: [x ‖ ctx]·A [2D,R] · U [R,D].
  const R = Math.min(D, 16);
  const both = g.op('Concat', [x, ctx], { axis: attr.int(-1) });
  const low = g.op('MatMul', [both, n.w('mix.down', [2 * D, R], 1 / Math.sqrt(2 * D))]);
  const h = g.op('MatMul', [low, n.w('mix.up', [R, D], 1.2 / Math.sqrt(R))]);
  const act = g.op('Tanh', [g.op('Add', [h, n.w('mix.bias', [D], 0.1)])]);
  const y = g.op('Add', [act, g.op('Mul', [x, g.scalar('skip_scale', 0.5)])]);
  const hidden = g.op('LayerNormalization', [y, n.w('final_norm.weight', [D], 0.1, 1), n.w('final_norm.bias', [D], 0.1)], {
    axis: attr.int(-1),
    epsilon: attr.float(1e-5),
  });
  n.floatOut(hidden, 'last_hidden_state', ['batch', MAX_LENGTH, D]);

  const idsFloat = g.op('Cast', ['input_ids'], { to: CAST_FLOAT });
  const eosPos = g.op('ArgMax', [idsFloat], { axis: attr.int(1), keepdims: attr.int(1), select_last_index: attr.int(0) });
  const positions = g.int64('position_ids', [MAX_LENGTH], Array.from({ length: MAX_LENGTH }, (_, i) => i));
  const oneHot = g.op('Cast', [g.op('Equal', [positions, eosPos])], { to: CAST_FLOAT });
  const pick = g.op('MatMul', [g.op('Unsqueeze', [oneHot, n.i64('axis_1', [1])]), hidden]);
  n.floatOut(g.op('Squeeze', [pick, 'axis_1']), 'pooler_output', ['batch', D]);
  return n.bytes();
}

/** ᾱ_t of the scaled_linear schedule (float64). */
function alphasCumprod(): Float64Array {
  const out = new Float64Array(TRAIN_STEPS);
  const a = Math.sqrt(BETA_START);
  const b = Math.sqrt(BETA_END);
  let prod = 1;
  for (let i = 0; i < TRAIN_STEPS; i++) {
    const beta = (a + ((b - a) * i) / (TRAIN_STEPS - 1)) ** 2;
    prod *= 1 - beta;
    out[i] = prod;
  }
  return out;
}

/**
 * The unet: sample [B,C,h,w], timestep [B], encoder_hidden_states [B,77,D] (+ the 5 ControlNet
 * residuals) → out_sample [B,4,h,w], an epsilon prediction.
 *
 * A clean-latent guess m (|m| < 0.6) comes from the conditioning:
 *   structure S [B,8,h,w] = tanh(conv3×3(depth channel))                         (depth2img)
 *                         = tanh(conv1×1(res0‖res1) + up2(conv1×1(res2‖res3‖mid)))  (controlnet; nearest upsampling to h×w)
 *   m = 0.6·tanh(conv3×3(S) + pooled-text bias + cross-attention(queries from S, keys/values from the text))
 * and the output is the exact posterior-mean noise prediction for x_t = √ᾱ·x0 + √(1-ᾱ)·ε with
 * prior x0 ~ N(m, 0.03·I):  ε̂ = c1(t)·x_t − c2(t)·m, with c1 = √(1-ᾱ)/(0.03·ᾱ + 1 − ᾱ), c2 = √ᾱ·c1
 * (looked up at floor(t) clamped to [0,999]; both < 3, so outputs stay moderate for any input).
 */
function buildUnet(o: ResolvedTinyOptions): Uint8Array {
  const n = new Net(`${o.seed}/unet`, 'tiny_unet', ioType(o));
  const g = n.g;
  const D = o.hiddenSize;
  const d2i = o.family === 'depth2img';
  const C = d2i ? 5 : 4;
  const sample = n.floatIn('sample', ['batch', C, 'height', 'width']);
  const t = n.timestep(o.timestepDtype);
  const ehs = n.floatIn('encoder_hidden_states', ['batch', MAX_LENGTH, D]);

  let latents: string;
  let structure: string;
  if (d2i) {
    const ch = n.i64('channel_axis', [1]);
    latents = g.op('Slice', [sample, n.i64('latent_start', [0]), n.i64('latent_end', [4]), ch]);
    const depth = g.op('Slice', [sample, n.i64('depth_start', [4]), n.i64('depth_end', [5]), ch]);
    structure = g.op('Tanh', [n.conv(depth, 'depth_in', 8, 1, 3, 1.0, { biasStd: 0.3 })]);
  } else {
    latents = sample;
    const res = CONTROLNET_RESIDUALS.map((r) => n.floatIn(r.unet, ['batch', r.channels, r.half ? 'half_height' : 'height', r.half ? 'half_width' : 'width']));
    const full = n.conv(g.op('Concat', [res[0]!, res[1]!], { axis: attr.int(1) }), 'residual_full', 8, 32, 1, 1.2 / Math.sqrt(32), { biasStd: 0.2 });
    const half = n.conv(g.op('Concat', [res[2]!, res[3]!, res[4]!], { axis: attr.int(1) }), 'residual_half', 8, 80, 1, 1.2 / Math.sqrt(80));
    const up = g.op('Resize', [half, '', '', g.op('Shape', [full])], { mode: attr.string('nearest') });
    structure = g.op('Tanh', [g.op('Add', [full, up])]);
  }

  // Text: a pooled per-channel bias plus one tiny cross-attention head (queries from the structure).
  const pooled = g.op('ReduceMean', [ehs], { axes: attr.ints([1]), keepdims: attr.int(0) });
  const textBias = n.channelBias(pooled, 'text_bias', D, 4, 0.2 / Math.sqrt(D));
  const q = g.op('Reshape', [n.conv(structure, 'attn_q', 8, 8, 1, 1.5 / Math.sqrt(8)), n.i64('flat_8', [0, 8, -1])]);
  const qT = g.op('Transpose', [q], { perm: attr.ints([0, 2, 1]) });
  const kT = g.op('Transpose', [g.op('MatMul', [ehs, n.w('attn_k.weight', [D, 8], 1 / Math.sqrt(D))])], { perm: attr.ints([0, 2, 1]) });
  const scores = g.op('Mul', [g.op('MatMul', [qT, kT]), g.scalar('attn_scale', 1 / Math.sqrt(8))]);
  const probs = g.op('Softmax', [scores], { axis: attr.int(-1) });
  const v = g.op('MatMul', [ehs, n.w('attn_v.weight', [D, 4], 0.4 / Math.sqrt(D))]);
  const attnT = g.op('Transpose', [g.op('MatMul', [probs, v])], { perm: attr.ints([0, 2, 1]) });
  const attn = g.op('Reshape', [attnT, g.op('Shape', [latents])]);

  const pre = g.op('Add', [g.op('Add', [n.conv(structure, 'out', 4, 8, 3, 1.5 / Math.sqrt(72), { biasStd: 0.2 }), textBias]), attn]);
  const mean = g.op('Mul', [g.op('Tanh', [pre]), g.scalar('mean_scale', 0.6)]);

  // Posterior-mean noise prediction at floor(t).
  const abar = alphasCumprod();
  const c1 = new Float32Array(TRAIN_STEPS);
  const c2 = new Float32Array(TRAIN_STEPS);
  for (let i = 0; i < TRAIN_STEPS; i++) {
    const a = abar[i]!;
    c1[i] = Math.sqrt(1 - a) / (PRIOR_VARIANCE * a + 1 - a);
    c2[i] = Math.sqrt(a) * c1[i]!;
  }
  const idx = g.op('Cast', [g.op('Clip', [g.op('Floor', [t]), g.scalar('t_min', 0), g.scalar('t_max', TRAIN_STEPS - 1)])], { to: CAST_INT64 });
  const perBatch = n.i64('per_batch', [-1, 1, 1, 1]);
  const k1 = g.op('Reshape', [g.op('Gather', [g.float('eps_sample_coef', [TRAIN_STEPS], c1), idx], { axis: attr.int(0) }), perBatch]);
  const k2 = g.op('Reshape', [g.op('Gather', [g.float('eps_mean_coef', [TRAIN_STEPS], c2), idx], { axis: attr.int(0) }), perBatch]);
  const eps = g.op('Sub', [g.op('Mul', [latents, k1]), g.op('Mul', [mean, k2])]);
  n.floatOut(eps, 'out_sample', ['batch', 4, 'height', 'width']);
  return n.bytes();
}

/** Sinusoidal timestep features [B,16] (8 frequencies as SD's, sin ‖ cos). */
function timestepFeatures(n: Net, tFloat: string): string {
  const g = n.g;
  const freqs = Array.from({ length: 8 }, (_, k) => Math.exp((-Math.log(10000) * k) / 8));
  const e = g.op('Mul', [g.op('Unsqueeze', [tFloat, n.i64('axis_1', [1])]), g.float('time_freqs', [1, 8], freqs)]);
  return g.op('Concat', [g.op('Sin', [e]), g.op('Cos', [e])], { axis: attr.int(1) });
}

/**
 * ControlNet: sample [B,4,h,w], timestep [B], encoder_hidden_states [B,77,D], controlnet_cond [B,3,8h,8w],
 * conditioning_scale [] → 5 residuals, already multiplied by the scale.
 *   c  = avgpool8(controlnet_cond) − 0.5
 *   r0 = tanh(conv3×3(c ‖ sample) + timestep-embedding bias + pooled-text bias)     [B,16,h,w]  (control weights ≫ sample weights)
 *   r1 = tanh(conv1×1(r0))                                                          [B,16,h,w]
 *   r2 = tanh(conv1×1(avgpool2(r1)))  (ceil mode, as a stride-2 conv)                [B,16,⌈h/2⌉,⌈w/2⌉]
 *   r3 = tanh(conv1×1(r2)) [B,32,…];  mid = tanh(conv1×1(r3)) [B,32,…]
 */
function buildControlNet(o: ResolvedTinyOptions): Uint8Array {
  const n = new Net(`${o.seed}/controlnet`, 'tiny_controlnet', ioType(o));
  const g = n.g;
  const D = o.hiddenSize;
  const sample = n.floatIn('sample', ['batch', 4, 'height', 'width']);
  const t = n.timestep(o.timestepDtype);
  const ehs = n.floatIn('encoder_hidden_states', ['batch', MAX_LENGTH, D]);
  const cond = n.floatIn('controlnet_cond', ['batch', 3, 'image_height', 'image_width']);
  const scale = n.floatIn('conditioning_scale', []);

  const pooledCond = g.op('AveragePool', [cond], { kernel_shape: attr.ints([8, 8]), strides: attr.ints([8, 8]) });
  const c = g.op('Sub', [pooledCond, g.scalar('cond_center', 0.5)]);
  const x = g.op('Concat', [c, sample], { axis: attr.int(1) });
  const inW = n.random('cond_in.weight', 16 * 7 * 9, 1);
  for (let oc = 0; oc < 16; oc++) {
    for (let ic = 0; ic < 7; ic++) {
      const s = ic < 3 ? 3 / Math.sqrt(27) : 0.2 / Math.sqrt(36);
      for (let k = 0; k < 9; k++) inW[(oc * 7 + ic) * 9 + k]! *= s;
    }
  }
  const f = n.conv(x, 'cond_in', 16, 7, 3, 0, { weights: inW, biasStd: 0.1 });
  const timeBias = n.channelBias(timestepFeatures(n, t), 'time_bias', 16, 16, 0.45 / Math.sqrt(16));
  const pooled = g.op('ReduceMean', [ehs], { axes: attr.ints([1]), keepdims: attr.int(0) });
  const textBias = n.channelBias(pooled, 'text_bias', D, 16, 0.4 / Math.sqrt(D));
  const r0 = g.op('Tanh', [g.op('Add', [g.op('Add', [f, timeBias]), textBias])]);
  const r1 = g.op('Tanh', [n.conv(r0, 'block1', 16, 16, 1, 1.2 / 4, { biasStd: 0.1 })]);
  const down = g.op('AveragePool', [r1], { kernel_shape: attr.ints([2, 2]), strides: attr.ints([2, 2]), ceil_mode: attr.int(1) });
  const r2 = g.op('Tanh', [n.conv(down, 'block2', 16, 16, 1, 1.2 / 4, { biasStd: 0.1 })]);
  const r3 = g.op('Tanh', [n.conv(r2, 'block3', 32, 16, 1, 1.2 / 4, { biasStd: 0.1 })]);
  const mid = g.op('Tanh', [n.conv(r3, 'mid', 32, 32, 1, 1.2 / Math.sqrt(32), { biasStd: 0.1 })]);

  [r0, r1, r2, r3, mid].forEach((value, i) => {
    const spec = CONTROLNET_RESIDUALS[i]!;
    const name = o.controlnetNames === 'down_block' ? spec.downBlock : spec.diffusers;
    const dims: Dim[] = ['batch', spec.channels, spec.half ? 'half_height' : 'height', spec.half ? 'half_width' : 'width'];
    n.floatOut(g.op('Mul', [value, scale]), name, dims);
  });
  return n.bytes();
}

/**
 * The VAE is linear at heart: encoder latents (scaled by sf) = We·avgpool8(rgb) + be, with We a fixed
 * well-conditioned 4×3 mix (brightness, red–blue, green–magenta, one more) slightly perturbed by the
 * seed; the decoders apply its pseudo-inverse, so decode(encode(x)) gives back the 8×8-block average of
 * x (img2img keeps its image) and any latent decodes to sensible colours.
 */
function vaeLinear(o: ResolvedTinyOptions): { we: Float64Array; be: Float64Array; wd: Float64Array; bd: Float64Array } {
  const base = [0.45, 0.45, 0.45, 0.6, 0, -0.6, -0.35, 0.7, -0.35, 0.3, -0.2, 0.1];
  const noise = randomNormal(`${o.seed}/vae/mix`, 12, 0.05);
  const we = Float64Array.from(base, (v, i) => v + noise[i]!);
  const be = Float64Array.from(randomNormal(`${o.seed}/vae/mix_bias`, 4, 0.05));
  // wd = (weᵀwe)⁻¹ weᵀ  (3×4)
  const m = new Float64Array(9);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) m[i * 3 + j]! += we[k * 3 + i]! * we[k * 3 + j]!;
  const inv = invert3(m);
  const wd = new Float64Array(12);
  for (let i = 0; i < 3; i++) for (let k = 0; k < 4; k++) for (let j = 0; j < 3; j++) wd[i * 4 + k]! += inv[i * 3 + j]! * we[k * 3 + j]!;
  const bd = new Float64Array(3);
  for (let i = 0; i < 3; i++) for (let k = 0; k < 4; k++) bd[i]! -= wd[i * 4 + k]! * be[k]!;
  return { we, be, wd, bd };
}

function invert3(m: Float64Array): Float64Array {
  const [a, b, c, d, e, f, g, h, i] = m as unknown as number[];
  const A = e! * i! - f! * h!;
  const B = -(d! * i! - f! * g!);
  const C = d! * h! - e! * g!;
  const det = a! * A + b! * B + c! * C;
  if (Math.abs(det) < 1e-6) throw new Error('tiny model: singular VAE mix');
  return Float64Array.from([A, -(b! * i! - c! * h!), b! * f! - c! * e!, B, a! * i! - c! * g!, -(a! * f! - c! * d!), C, -(a! * h! - b! * g!), a! * e! - b! * d!], (v) => v / det);
}

/** vae_encoder: sample [B,3,H,W] → latent_sample [B,4,H/8,W/8] = (We·avgpool8(x) + be)/sf (unscaled distribution mean). */
function buildVaeEncoder(o: ResolvedTinyOptions): Uint8Array {
  const n = new Net(`${o.seed}/vae_encoder`, 'tiny_vae_encoder', ioType(o));
  const g = n.g;
  const { we, be } = vaeLinear(o);
  const x = n.floatIn('sample', ['batch', 3, 'height', 'width']);
  const pooled = g.op('AveragePool', [x], { kernel_shape: attr.ints([8, 8]), strides: attr.ints([8, 8]) });
  const sf = o.scalingFactor;
  const lat = n.conv(pooled, 'mix', 4, 3, 1, 0, { weights: Array.from(we, (v) => v / sf), bias: Array.from(be, (v) => v / sf) });
  n.floatOut(lat, 'latent_sample', ['batch', 4, 'latent_height', 'latent_width']);
  return n.bytes();
}

/**
 * vae_decoder: latent_sample [B,4,h,w] → sample [B,3,8h,8w]
 *   = depthToSpace8(clip(conv1×1 4→192 (z), −1, 1))
 * Output channel (p, c) of the conv (p = position in the 8×8 block, DCR order) computes the block
 * colour Wd·(sf·z) + bd plus a small texture, linear in z, whose mean over the 64 positions is zero:
 * each 8×8 block still averages to the block colour (before clipping), so the encoder (an 8×8 average)
 * inverts the decoder, and the whole decoder is one 1×1 conv and a reshuffle, cheap at any size.
 * The tiny (preview) decoder is the block colour alone: conv1×1 4→3, clip, nearest ×8 Resize.
 */
function buildVaeDecoder(o: ResolvedTinyOptions, tiny: boolean): Uint8Array {
  const n = new Net(`${o.seed}/vae_decoder`, tiny ? 'tiny_vae_decoder_preview' : 'tiny_vae_decoder', ioType(o));
  const g = n.g;
  const { wd, bd } = vaeLinear(o);
  const sf = o.scalingFactor;
  const z = n.floatIn('latent_sample', ['batch', 4, 'latent_height', 'latent_width']);
  const clip = (x: string) => g.op('Clip', [x, g.scalar('min', -1), g.scalar('max', 1)]);
  let out: string;
  if (tiny) {
    const colour = n.conv(z, 'mix', 3, 4, 1, 0, { weights: Array.from(wd, (v) => v * sf), bias: Array.from(bd) });
    out = g.op('Resize', [clip(colour), '', g.float('upsample_scales', [4], [1, 1, 8, 8])], { mode: attr.string('nearest') });
  } else {
    const P = 64;
    const texW = n.random('texture.weight', P * 3 * 4, 1);
    const texB = n.random('texture.bias', P * 3, 0.5);
    // Zero mean over the 64 block positions, per (colour, latent channel) and per colour.
    for (let c = 0; c < 3; c++) {
      for (let k = 0; k <= 4; k++) {
        const at = (p: number) => (k < 4 ? (p * 3 + c) * 4 + k : p * 3 + c);
        const arr = k < 4 ? texW : texB;
        let mean = 0;
        for (let p = 0; p < P; p++) mean += arr[at(p)]! / P;
        for (let p = 0; p < P; p++) arr[at(p)]! -= mean;
      }
    }
    const TEXTURE = 0.05;
    const weights = new Float32Array(P * 3 * 4);
    const bias = new Float32Array(P * 3);
    for (let p = 0; p < P; p++) {
      for (let c = 0; c < 3; c++) {
        for (let k = 0; k < 4; k++) weights[(p * 3 + c) * 4 + k] = sf * (wd[c * 4 + k]! + TEXTURE * texW[(p * 3 + c) * 4 + k]!);
        bias[p * 3 + c] = bd[c]! + TEXTURE * texB[p * 3 + c]!;
      }
    }
    const blocks = n.conv(z, 'blocks', P * 3, 4, 1, 0, { weights, bias });
    out = g.op('DepthToSpace', [clip(blocks)], { blocksize: attr.int(8), mode: attr.string('DCR') });
  }
  n.floatOut(out, 'sample', ['batch', 3, 'height', 'width']);
  return n.bytes();
}

const SCHEDULER_CONFIG = {
  _class_name: 'PNDMScheduler',
  _diffusers_version: '0.27.2',
  beta_end: BETA_END,
  beta_schedule: 'scaled_linear',
  beta_start: BETA_START,
  clip_sample: false,
  num_train_timesteps: TRAIN_STEPS,
  prediction_type: 'epsilon',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

function modelIndex(o: ResolvedTinyOptions): Record<string, unknown> {
  const onnxModel = ['diffusers', 'OnnxRuntimeModel'];
  const common = {
    _diffusers_version: '0.27.2',
    scheduler: ['diffusers', 'PNDMScheduler'],
    text_encoder: onnxModel,
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: onnxModel,
    vae_encoder: onnxModel,
    vae_decoder: onnxModel,
  };
  const tail = {
    depthcast_tiny: true,
    _note: TINY_MODEL_NOTE,
    depthcast_tiny_options: o,
  };
  return o.family === 'depth2img'
    ? { _class_name: 'StableDiffusionDepth2ImgPipeline', ...common, depth_estimator: [null, null], feature_extractor: [null, null], ...tail }
    : { _class_name: 'StableDiffusionControlNetPipeline', ...common, controlnet: onnxModel, safety_checker: [null, null], feature_extractor: [null, null], requires_safety_checker: false, ...tail };
}

function vaeConfig(o: ResolvedTinyOptions): Record<string, unknown> {
  return { scaling_factor: o.scalingFactor, latent_channels: 4, in_channels: 3, out_channels: 3, block_out_channels: [8, 16, 16, 32] };
}

/** Every file of a tiny model folder, by relative path, in write order. */
export function tinyModelFiles(options: TinyModelOptions): Map<string, Uint8Array | string> {
  const o = resolveTinyOptions(options);
  const vocab = tinyVocab();
  const V = vocab.size;
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  const files = new Map<string, Uint8Array | string>();
  files.set('model_index.json', json(modelIndex(o)));
  files.set('scheduler/scheduler_config.json', json(SCHEDULER_CONFIG));
  for (const [name, text] of Object.entries(tinyTokenizerFiles())) files.set(`tokenizer/${name}`, text);
  files.set('text_encoder/config.json', json({ hidden_size: o.hiddenSize, vocab_size: V, max_position_embeddings: MAX_LENGTH, bos_token_id: vocab.get(START_TOKEN), eos_token_id: vocab.get(END_TOKEN) }));
  files.set('text_encoder/model.onnx', buildTextEncoder(o, V));
  files.set('unet/config.json', json({ in_channels: o.family === 'depth2img' ? 5 : 4, out_channels: 4, sample_size: 64, cross_attention_dim: o.hiddenSize, timestep_dtype: o.timestepDtype }));
  files.set('unet/model.onnx', buildUnet(o));
  if (o.family === 'controlnet') {
    files.set('controlnet/config.json', json({ in_channels: 4, cross_attention_dim: o.hiddenSize, conditioning_channels: 3, num_down_residuals: 4, timestep_dtype: o.timestepDtype }));
    files.set('controlnet/model.onnx', buildControlNet(o));
  }
  files.set('vae_encoder/config.json', json(vaeConfig(o)));
  files.set('vae_encoder/model.onnx', buildVaeEncoder(o));
  files.set('vae_decoder/config.json', json(vaeConfig(o)));
  files.set('vae_decoder/model.onnx', buildVaeDecoder(o, false));
  if (o.tinyDecoder) {
    files.set('vae_decoder_tiny/config.json', json(vaeConfig(o)));
    files.set('vae_decoder_tiny/model.onnx', buildVaeDecoder(o, true));
  }
  return files;
}

/** Writes a complete tiny model folder into `dir` (created if missing; existing files are overwritten). */
export async function createTinyModel(dir: string, options: TinyModelOptions): Promise<void> {
  const files = tinyModelFiles(options);
  for (const [rel, content] of files) {
    const file = path.join(dir, ...rel.split('/'));
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, content);
  }
}
