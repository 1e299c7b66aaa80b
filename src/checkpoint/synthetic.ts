/**
 * Random-weight diffusers checkpoints of any size, for tests and for measuring the builder:
 * the state-dict names and shapes that diffusers 0.27 / transformers 4.36 modules have for a
 * config, written as `.safetensors` (F32 or F16) one tensor at a time.
 */
import { mkdir, open, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { float32ToFloat16 } from '../runtime/float16.ts';

export type TensorShapes = [name: string, shape: number[]][];

const vec = (out: TensorShapes, p: string, n: number, bias = true) => {
  out.push([`${p}.weight`, [n]]);
  if (bias) out.push([`${p}.bias`, [n]]);
};
const lin = (out: TensorShapes, p: string, o: number, i: number, bias = true) => {
  out.push([`${p}.weight`, [o, i]]);
  if (bias) out.push([`${p}.bias`, [o]]);
};
const conv = (out: TensorShapes, p: string, o: number, i: number, k = 3) => {
  out.push([`${p}.weight`, [o, i, k, k]], [`${p}.bias`, [o]]);
};

function resnet(out: TensorShapes, p: string, i: number, o: number, temb?: number): void {
  vec(out, `${p}.norm1`, i);
  conv(out, `${p}.conv1`, o, i);
  if (temb) lin(out, `${p}.time_emb_proj`, o, temb);
  vec(out, `${p}.norm2`, o);
  conv(out, `${p}.conv2`, o, o);
  if (i !== o) conv(out, `${p}.conv_shortcut`, o, i, 1);
}

function transformer(out: TensorShapes, p: string, c: number, cross: number, linear: boolean, layers: number): void {
  vec(out, `${p}.norm`, c);
  const proj = (name: string) => (linear ? lin(out, `${p}.${name}`, c, c) : conv(out, `${p}.${name}`, c, c, 1));
  proj('proj_in');
  for (let l = 0; l < layers; l++) {
    const b = `${p}.transformer_blocks.${l}`;
    for (const n of ['norm1', 'norm2', 'norm3']) vec(out, `${b}.${n}`, c);
    for (const [a, ctx] of [['attn1', c], ['attn2', cross]] as const) {
      lin(out, `${b}.${a}.to_q`, c, c, false);
      lin(out, `${b}.${a}.to_k`, c, ctx, false);
      lin(out, `${b}.${a}.to_v`, c, ctx, false);
      lin(out, `${b}.${a}.to_out.0`, c, c);
    }
    lin(out, `${b}.ff.net.0.proj`, 8 * c, c);
    lin(out, `${b}.ff.net.2`, c, 4 * c);
  }
  proj('proj_out');
}

const list = (v: unknown, n: number): number[] => (Array.isArray(v) ? (v as number[]) : new Array(n).fill(v));

/** Down path (conv_in, time embedding, down blocks, mid block) of a UNet or ControlNet config. */
function downPath(out: TensorShapes, cfg: Record<string, any>): { skips: number[] } {
  const ch: number[] = cfg.block_out_channels;
  const n = ch.length;
  const layers = list(cfg.layers_per_block, n);
  const tl = list(cfg.transformer_layers_per_block ?? 1, n);
  const temb = 4 * ch[0]!;
  conv(out, 'conv_in', ch[0]!, cfg.in_channels, cfg.conv_in_kernel ?? 3);
  lin(out, 'time_embedding.linear_1', temb, ch[0]!);
  lin(out, 'time_embedding.linear_2', temb, temb);
  const skips = [ch[0]!];
  let prev = ch[0]!;
  for (let i = 0; i < n; i++) {
    for (let l = 0; l < layers[i]!; l++) {
      resnet(out, `down_blocks.${i}.resnets.${l}`, l === 0 ? prev : ch[i]!, ch[i]!, temb);
      if (cfg.down_block_types[i] === 'CrossAttnDownBlock2D') transformer(out, `down_blocks.${i}.attentions.${l}`, ch[i]!, cfg.cross_attention_dim, cfg.use_linear_projection, tl[i]!);
      skips.push(ch[i]!);
    }
    if (i < n - 1) {
      conv(out, `down_blocks.${i}.downsamplers.0.conv`, ch[i]!, ch[i]!);
      skips.push(ch[i]!);
    }
    prev = ch[i]!;
  }
  resnet(out, 'mid_block.resnets.0', prev, prev, temb);
  transformer(out, 'mid_block.attentions.0', prev, cfg.cross_attention_dim, cfg.use_linear_projection, tl[n - 1]!);
  resnet(out, 'mid_block.resnets.1', prev, prev, temb);
  return { skips };
}

export function unetShapes(cfg: Record<string, any>): TensorShapes {
  const out: TensorShapes = [];
  downPath(out, cfg);
  const ch: number[] = cfg.block_out_channels;
  const n = ch.length;
  const rev = [...ch].reverse();
  const layers = list(cfg.layers_per_block, n).reverse();
  const tl = list(cfg.transformer_layers_per_block ?? 1, n).reverse();
  const temb = 4 * ch[0]!;
  let outC = rev[0]!;
  for (let j = 0; j < n; j++) {
    const prev = outC;
    outC = rev[j]!;
    const input = rev[Math.min(j + 1, n - 1)]!;
    for (let l = 0; l <= layers[j]!; l++) {
      const skip = l === layers[j]! ? input : outC;
      resnet(out, `up_blocks.${j}.resnets.${l}`, (l === 0 ? prev : outC) + skip, outC, temb);
      if (cfg.up_block_types[j] === 'CrossAttnUpBlock2D') transformer(out, `up_blocks.${j}.attentions.${l}`, outC, cfg.cross_attention_dim, cfg.use_linear_projection, tl[j]!);
    }
    if (j < n - 1) conv(out, `up_blocks.${j}.upsamplers.0.conv`, outC, outC);
  }
  vec(out, 'conv_norm_out', ch[0]!);
  conv(out, 'conv_out', cfg.out_channels, ch[0]!, cfg.conv_out_kernel ?? 3);
  return out;
}

export function controlnetShapes(cfg: Record<string, any>): TensorShapes {
  const out: TensorShapes = [];
  const { skips } = downPath(out, cfg);
  const e: number[] = cfg.conditioning_embedding_out_channels;
  conv(out, 'controlnet_cond_embedding.conv_in', e[0]!, cfg.conditioning_channels ?? 3);
  for (let i = 0; i < e.length - 1; i++) {
    conv(out, `controlnet_cond_embedding.blocks.${2 * i}`, e[i]!, e[i]!);
    conv(out, `controlnet_cond_embedding.blocks.${2 * i + 1}`, e[i + 1]!, e[i]!);
  }
  conv(out, 'controlnet_cond_embedding.conv_out', cfg.block_out_channels[0], e[e.length - 1]!);
  skips.forEach((c, i) => conv(out, `controlnet_down_blocks.${i}`, c, c, 1));
  const last = cfg.block_out_channels[cfg.block_out_channels.length - 1];
  conv(out, 'controlnet_mid_block', last, last, 1);
  return out;
}

export function vaeShapes(cfg: Record<string, any>): TensorShapes {
  const out: TensorShapes = [];
  const ch: number[] = cfg.block_out_channels;
  const n = ch.length;
  const lat: number = cfg.latent_channels;
  const mid = (p: string, c: number) => {
    resnet(out, `${p}.resnets.0`, c, c);
    vec(out, `${p}.attentions.0.group_norm`, c);
    for (const q of ['to_q', 'to_k', 'to_v', 'to_out.0']) lin(out, `${p}.attentions.0.${q}`, c, c);
    resnet(out, `${p}.resnets.1`, c, c);
  };
  conv(out, 'encoder.conv_in', ch[0]!, cfg.in_channels ?? 3);
  let prev = ch[0]!;
  for (let i = 0; i < n; i++) {
    for (let l = 0; l < cfg.layers_per_block; l++) resnet(out, `encoder.down_blocks.${i}.resnets.${l}`, l === 0 ? prev : ch[i]!, ch[i]!);
    if (i < n - 1) conv(out, `encoder.down_blocks.${i}.downsamplers.0.conv`, ch[i]!, ch[i]!);
    prev = ch[i]!;
  }
  mid('encoder.mid_block', prev);
  vec(out, 'encoder.conv_norm_out', prev);
  conv(out, 'encoder.conv_out', 2 * lat, prev);
  conv(out, 'quant_conv', 2 * lat, 2 * lat, 1);
  conv(out, 'post_quant_conv', lat, lat, 1);
  const rev = [...ch].reverse();
  conv(out, 'decoder.conv_in', rev[0]!, lat);
  mid('decoder.mid_block', rev[0]!);
  prev = rev[0]!;
  for (let j = 0; j < n; j++) {
    for (let l = 0; l <= cfg.layers_per_block; l++) resnet(out, `decoder.up_blocks.${j}.resnets.${l}`, l === 0 ? prev : rev[j]!, rev[j]!);
    if (j < n - 1) conv(out, `decoder.up_blocks.${j}.upsamplers.0.conv`, rev[j]!, rev[j]!);
    prev = rev[j]!;
  }
  vec(out, 'decoder.conv_norm_out', ch[0]!);
  conv(out, 'decoder.conv_out', cfg.out_channels ?? 3, ch[0]!);
  return out;
}

export function clipTextShapes(cfg: Record<string, any>): TensorShapes {
  const out: TensorShapes = [];
  const d: number = cfg.hidden_size;
  out.push(['text_model.embeddings.token_embedding.weight', [cfg.vocab_size, d]], ['text_model.embeddings.position_embedding.weight', [cfg.max_position_embeddings, d]]);
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `text_model.encoder.layers.${l}`;
    vec(out, `${p}.layer_norm1`, d);
    for (const q of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) lin(out, `${p}.self_attn.${q}`, d, d);
    vec(out, `${p}.layer_norm2`, d);
    lin(out, `${p}.mlp.fc1`, cfg.intermediate_size, d);
    lin(out, `${p}.mlp.fc2`, d, cfg.intermediate_size);
  }
  vec(out, 'text_model.final_layer_norm', d);
  return out;
}

/** A small fast deterministic generator (mulberry32), uniform in [-1, 1). */
function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
}

/** Random values in a range that keeps activations finite: ±√(3/fan-in) for weights, 1 ± 0.1 for norm scales, ±0.1 for biases. */
function values(name: string, shape: number[], next: () => number): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const isNormScale = shape.length === 1 && /norm[^.]*\.weight$|layer_norm\d?\.weight$|group_norm\.weight$/.test(name);
  const scale = shape.length >= 2 ? Math.sqrt(3 / shape.slice(1).reduce((a, b) => a * b, 1)) : 0.1;
  for (let i = 0; i < n; i++) out[i] = (isNormScale ? 1 : 0) + scale * next();
  return out;
}

/** Writes `.safetensors` with random values for `shapes`, one tensor at a time (F16: the values rounded to half). */
export async function writeRandomSafetensors(path: string, shapes: TensorShapes, options: { seed: number; dtype?: 'F32' | 'F16' }): Promise<number> {
  const dtype = options.dtype ?? 'F32';
  const size = dtype === 'F32' ? 4 : 2;
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * size;
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  await mkdir(dirname(path), { recursive: true });
  const fh = await open(path, 'w');
  try {
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
    await fh.write(head);
    await fh.write(Buffer.from(text, 'utf8'));
    const next = uniform(options.seed);
    for (const [name, shape] of shapes) {
      const v = values(name, shape, next);
      const data = dtype === 'F32' ? v : float32ToFloat16(v);
      await fh.write(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  } finally {
    await fh.close();
  }
  return offset;
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
}


/** Full configs as diffusers 0.27.2 / transformers 4.36 write them (SD 1.5's key set), at a given size. */
export function unetConfig(o: Record<string, unknown> = {}): Record<string, any> {
  return {
    _class_name: 'UNet2DConditionModel', _diffusers_version: '0.27.2', act_fn: 'silu', addition_embed_type: null, addition_embed_type_num_heads: 64,
    addition_time_embed_dim: null, attention_head_dim: 8, attention_type: 'default', block_out_channels: [320, 640, 1280, 1280], center_input_sample: false,
    class_embed_type: null, class_embeddings_concat: false, conv_in_kernel: 3, conv_out_kernel: 3, cross_attention_dim: 768, cross_attention_norm: null,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'], downsample_padding: 1, dropout: 0.0,
    dual_cross_attention: false, encoder_hid_dim: null, encoder_hid_dim_type: null, flip_sin_to_cos: true, freq_shift: 0, in_channels: 4, layers_per_block: 2,
    mid_block_only_cross_attention: null, mid_block_scale_factor: 1, mid_block_type: 'UNetMidBlock2DCrossAttn', norm_eps: 1e-5, norm_num_groups: 32,
    num_attention_heads: null, num_class_embeds: null, only_cross_attention: false, out_channels: 4, projection_class_embeddings_input_dim: null,
    resnet_out_scale_factor: 1.0, resnet_skip_time_act: false, resnet_time_scale_shift: 'default', reverse_transformer_layers_per_block: null, sample_size: 64,
    time_cond_proj_dim: null, time_embedding_act_fn: null, time_embedding_dim: null, time_embedding_type: 'positional', timestep_post_act: null,
    transformer_layers_per_block: 1, up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'], upcast_attention: false,
    use_linear_projection: false, ...o,
  };
}

export function controlnetConfig(o: Record<string, unknown> = {}): Record<string, any> {
  const u = unetConfig(o);
  const keys = ['act_fn', 'addition_embed_type', 'addition_embed_type_num_heads', 'addition_time_embed_dim', 'attention_head_dim', 'block_out_channels', 'class_embed_type',
    'cross_attention_dim', 'down_block_types', 'downsample_padding', 'encoder_hid_dim', 'encoder_hid_dim_type', 'flip_sin_to_cos', 'freq_shift', 'in_channels',
    'layers_per_block', 'mid_block_scale_factor', 'mid_block_type', 'norm_eps', 'norm_num_groups', 'num_attention_heads', 'num_class_embeds', 'only_cross_attention',
    'projection_class_embeddings_input_dim', 'resnet_time_scale_shift', 'transformer_layers_per_block', 'upcast_attention', 'use_linear_projection'];
  return {
    _class_name: 'ControlNetModel', _diffusers_version: '0.27.2', ...Object.fromEntries(keys.map((k) => [k, u[k]])),
    conditioning_channels: 3, conditioning_embedding_out_channels: [16, 32, 96, 256], controlnet_conditioning_channel_order: 'rgb', global_pool_conditions: false,
    ...Object.fromEntries(Object.entries(o).filter(([k]) => !(k in unetConfig()) || keys.includes(k))),
  };
}

export function vaeConfig(o: Record<string, unknown> = {}): Record<string, any> {
  return {
    _class_name: 'AutoencoderKL', _diffusers_version: '0.27.2', act_fn: 'silu', block_out_channels: [128, 256, 512, 512],
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'], force_upcast: true, in_channels: 3, latent_channels: 4,
    latents_mean: null, latents_std: null, layers_per_block: 2, norm_num_groups: 32, out_channels: 3, sample_size: 512, scaling_factor: 0.18215,
    up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'], ...o,
  };
}

export function clipTextConfig(o: Record<string, unknown> = {}): Record<string, any> {
  return {
    architectures: ['CLIPTextModel'], attention_dropout: 0.0, bos_token_id: 0, eos_token_id: 2, hidden_act: 'quick_gelu', hidden_size: 768, initializer_factor: 1.0,
    initializer_range: 0.02, intermediate_size: 3072, layer_norm_eps: 1e-5, max_position_embeddings: 77, model_type: 'clip_text_model', num_attention_heads: 12,
    num_hidden_layers: 12, pad_token_id: 1, projection_dim: 768, torch_dtype: 'float32', transformers_version: '4.36.0', vocab_size: 49408, ...o,
  };
}

export const SD15_SCHEDULER = {
  _class_name: 'PNDMScheduler', _diffusers_version: '0.6.0', beta_end: 0.012, beta_schedule: 'scaled_linear', beta_start: 0.00085, num_train_timesteps: 1000,
  set_alpha_to_one: false, skip_prk_steps: true, steps_offset: 1, trained_betas: null, clip_sample: false,
};

export interface SyntheticPipeline {
  className: 'StableDiffusionPipeline' | 'StableDiffusionDepth2ImgPipeline';
  unet: Record<string, any>;
  text: Record<string, any>;
  vae: Record<string, any>;
  /** Tokenizer files (name → content). */
  tokenizer: Record<string, string | Uint8Array>;
  scheduler?: Record<string, unknown>;
}

/**
 * A diffusers pipeline checkpoint folder with random weights; `dtype` F16 writes only the
 * `.fp16.safetensors` variants, `both` writes float32 files and their fp16 variants.
 */
export async function writeSyntheticPipeline(dir: string, p: SyntheticPipeline, options: { seed: number; dtype?: 'F32' | 'F16' | 'both' }): Promise<number> {
  const dtype = options.dtype ?? 'F32';
  const component: [string, string, TensorShapes, Record<string, any>][] = [
    ['text_encoder', 'model', clipTextShapes(p.text), p.text],
    ['unet', 'diffusion_pytorch_model', unetShapes(p.unet), p.unet],
    ['vae', 'diffusion_pytorch_model', vaeShapes(p.vae), p.vae],
  ];
  let bytes = 0;
  for (const [i, [sub, stem, shapes, config]] of component.entries()) {
    await writeJson(`${dir}/${sub}/config.json`, config);
    if (dtype !== 'F16') bytes += await writeRandomSafetensors(`${dir}/${sub}/${stem}.safetensors`, shapes, { seed: options.seed + i });
    if (dtype !== 'F32') bytes += await writeRandomSafetensors(`${dir}/${sub}/${stem}.fp16.safetensors`, shapes, { seed: options.seed + i, dtype: 'F16' });
  }
  const nothing = [null, null];
  await writeJson(`${dir}/model_index.json`, {
    _class_name: p.className, _diffusers_version: '0.27.2', feature_extractor: nothing, safety_checker: nothing, scheduler: ['diffusers', 'PNDMScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'], tokenizer: ['transformers', 'CLIPTokenizer'], unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'],
  });
  await writeJson(`${dir}/scheduler/scheduler_config.json`, p.scheduler ?? SD15_SCHEDULER);
  await mkdir(`${dir}/tokenizer`, { recursive: true });
  for (const [name, content] of Object.entries(p.tokenizer)) await writeFile(`${dir}/tokenizer/${name}`, content);
  return bytes;
}

export async function writeSyntheticControlnet(dir: string, config: Record<string, any>, options: { seed: number; dtype?: 'F32' | 'F16' | 'both' }): Promise<number> {
  const dtype = options.dtype ?? 'F32';
  await writeJson(`${dir}/config.json`, config);
  let bytes = 0;
  if (dtype !== 'F16') bytes += await writeRandomSafetensors(`${dir}/diffusion_pytorch_model.safetensors`, controlnetShapes(config), { seed: options.seed });
  if (dtype !== 'F32') bytes += await writeRandomSafetensors(`${dir}/diffusion_pytorch_model.fp16.safetensors`, controlnetShapes(config), { seed: options.seed, dtype: 'F16' });
  return bytes;
}
