/**
 * UNet2DConditionModel (diffusers 0.27) from its config.json and weights, as an ONNX graph in
 * depthcast's layout: sample [B,C,h,w], timestep float32 [B] (not truncated),
 * encoder_hidden_states [B,77,D] → out_sample [B,out,h,w]; with `residuals`, also the ControlNet
 * inputs down_block_additional_residual_{i} and mid_block_additional_residual.
 * The down path (time embedding, down blocks, mid block) is shared with ControlNetModel.
 */
import { DepthcastError } from '../errors.ts';
import { attr } from '../models/onnx-graph.ts';
import { checkConfig, is, num, perBlock, type Rule } from './config.ts';
import type { Net } from './nn.ts';

export const TEXT_LENGTH = 77;

/** The config keys UNet2DConditionModel and ControlNetModel share, with what the builder supports. */
export const DOWN_PATH_RULES: Record<string, Rule> = {
  in_channels: is.count,
  flip_sin_to_cos: is.bool,
  freq_shift: is.number,
  down_block_types: is.listOf('CrossAttnDownBlock2D', 'DownBlock2D'),
  mid_block_type: is.value('UNetMidBlock2DCrossAttn'),
  only_cross_attention: (v) => (v === false || (Array.isArray(v) && v.every((x) => x === false)) ? null : 'supported: false (or a list of false)'),
  block_out_channels: is.counts,
  layers_per_block: is.countOrCounts,
  downsample_padding: is.value(1),
  mid_block_scale_factor: is.positiveNumber,
  act_fn: is.value('silu'),
  norm_num_groups: is.count,
  norm_eps: is.positiveNumber,
  cross_attention_dim: is.count,
  transformer_layers_per_block: is.countOrCounts,
  encoder_hid_dim: is.value(null),
  encoder_hid_dim_type: is.value(null),
  attention_head_dim: is.countOrCounts,
  num_attention_heads: is.value(null),
  use_linear_projection: is.bool,
  class_embed_type: is.value(null),
  addition_embed_type: is.value(null),
  addition_time_embed_dim: is.value(null),
  addition_embed_type_num_heads: 'info',
  num_class_embeds: is.value(null),
  upcast_attention: is.bool,
  resnet_time_scale_shift: is.value('default'),
  projection_class_embeddings_input_dim: is.value(null),
};

const UNET_RULES: Record<string, Rule> = {
  ...DOWN_PATH_RULES,
  sample_size: 'info',
  dropout: 'info',
  out_channels: is.count,
  center_input_sample: is.value(false),
  up_block_types: is.listOf('CrossAttnUpBlock2D', 'UpBlock2D'),
  dual_cross_attention: is.value(false),
  reverse_transformer_layers_per_block: is.value(null),
  resnet_skip_time_act: is.value(false),
  resnet_out_scale_factor: is.positiveNumber,
  time_embedding_type: is.value('positional'),
  time_embedding_dim: is.value(null),
  time_embedding_act_fn: is.value(null),
  timestep_post_act: is.value(null),
  time_cond_proj_dim: is.value(null),
  conv_in_kernel: is.oddCount,
  conv_out_kernel: is.oddCount,
  attention_type: is.value('default'),
  class_embeddings_concat: is.value(false),
  mid_block_only_cross_attention: is.value(null, false),
  cross_attention_norm: is.value(null),
};

/** The resolved architecture of a UNet's (or ControlNet's) down path. */
export interface DownPath {
  inChannels: number;
  channels: number[];
  crossAttention: boolean[];
  layers: number[];
  heads: number[];
  transformerLayers: number[];
  groups: number;
  eps: number;
  linearProjection: boolean;
  flipSinToCos: boolean;
  freqShift: number;
  midScale: number;
}

export function resolveDownPath(config: Record<string, unknown>, what: string): DownPath {
  const types = config.down_block_types as string[];
  const channels = config.block_out_channels as number[];
  const n = types.length;
  if (channels.length !== n) throw new DepthcastError('BAD_MODEL', `${what}: block_out_channels has ${channels.length} entries for ${n} down blocks`);
  if (channels[0]! % 2 !== 0) throw new DepthcastError('BAD_MODEL', `${what}: block_out_channels[0] = ${channels[0]} must be even (sinusoidal time embedding)`);
  return {
    inChannels: config.in_channels as number,
    channels,
    crossAttention: types.map((t) => t === 'CrossAttnDownBlock2D'),
    layers: perBlock(config.layers_per_block ?? 2, n, 'layers_per_block', what),
    // diffusers: heads = num_attention_heads or attention_head_dim (so the latter is a head COUNT).
    heads: perBlock(config.num_attention_heads ?? config.attention_head_dim ?? 8, n, config.num_attention_heads ? 'num_attention_heads' : 'attention_head_dim', what),
    transformerLayers: perBlock(config.transformer_layers_per_block ?? 1, n, 'transformer_layers_per_block', what),
    groups: num(config, 'norm_num_groups', 32),
    eps: num(config, 'norm_eps', 1e-5),
    linearProjection: config.use_linear_projection === true,
    flipSinToCos: config.flip_sin_to_cos !== false,
    freqShift: num(config, 'freq_shift', 0),
    midScale: num(config, 'mid_block_scale_factor', 1),
  };
}

/** Sinusoidal embedding of the float32 timestep (diffusers get_timestep_embedding, in float32), then the MLP. */
async function timeEmbedding(net: Net, arch: DownPath): Promise<string> {
  const half = arch.channels[0]! / 2;
  const f = Math.fround;
  const freqs = Array.from({ length: half }, (_, k) => f(Math.exp(f(f(f(-Math.log(10000)) * k) / (half - arch.freqShift)))));
  const t = net.mul(net.op('Unsqueeze', ['timestep', net.ints([1])]), net.floats([1, half], freqs));
  const [sin, cos] = [net.op('Sin', [t]), net.op('Cos', [t])];
  const emb = net.op('Concat', arch.flipSinToCos ? [cos, sin] : [sin, cos], { axis: attr.int(1) });
  return net.linear(net.silu(await net.linear(emb, 'time_embedding.linear_1')), 'time_embedding.linear_2');
}

/** ResnetBlock2D: GroupNorm, SiLU, conv, + time projection, GroupNorm, SiLU, conv, + shortcut; / scale. */
export async function resnet(net: Net, x: string, p: string, groups: number, eps: number, tembAct?: string, outScale = 1): Promise<string> {
  let h = await net.conv(net.silu(await net.groupNorm(x, `${p}.norm1`, groups, eps)), `${p}.conv1`);
  if (tembAct) h = net.add(h, net.op('Unsqueeze', [await net.linear(tembAct, `${p}.time_emb_proj`), net.ints([2, 3])]));
  h = await net.conv(net.silu(await net.groupNorm(h, `${p}.norm2`, groups, eps)), `${p}.conv2`);
  const shortcut = net.has(`${p}.conv_shortcut.weight`) ? await net.conv(x, `${p}.conv_shortcut`) : x;
  const sum = net.add(shortcut, h);
  return outScale === 1 ? sum : net.mul(sum, net.constant(1 / outScale));
}

/** Transformer2DModel: GroupNorm(eps 1e-6), proj_in, BasicTransformerBlocks (self-attn, cross-attn, GEGLU), proj_out, + input. */
async function transformer(net: Net, x: string, p: string, channels: number, heads: number, layers: number, arch: DownPath): Promise<string> {
  const normed = await net.groupNorm(x, `${p}.norm`, arch.groups, 1e-6);
  let h = arch.linearProjection ? await net.linear(net.toTokens(normed, channels), `${p}.proj_in`) : net.toTokens(await net.conv(normed, `${p}.proj_in`), channels);
  const text = 'encoder_hidden_states';
  for (let l = 0; l < layers; l++) {
    const b = `${p}.transformer_blocks.${l}`;
    const n1 = await net.layerNorm(h, `${b}.norm1`, 1e-5);
    h = net.add(await net.attention(n1, n1, { q: `${b}.attn1.to_q`, k: `${b}.attn1.to_k`, v: `${b}.attn1.to_v`, out: `${b}.attn1.to_out.0` }, heads), h);
    const n2 = await net.layerNorm(h, `${b}.norm2`, 1e-5);
    h = net.add(await net.attention(n2, text, { q: `${b}.attn2.to_q`, k: `${b}.attn2.to_k`, v: `${b}.attn2.to_v`, out: `${b}.attn2.to_out.0` }, heads), h);
    const projected = await net.linear(await net.layerNorm(h, `${b}.norm3`, 1e-5), `${b}.ff.net.0.proj`);
    const inner = net.outChannels(`${b}.ff.net.0.proj`) / 2;
    const [value, gate] = net.g.opN('Split', [projected, net.ints([inner, inner])], { axis: attr.int(-1) }, ['', '']);
    h = net.add(await net.linear(net.mul(value!, net.gelu(gate!)), `${b}.ff.net.2`), h);
  }
  const out = arch.linearProjection ? net.fromTokens(await net.linear(h, `${p}.proj_out`), x) : await net.conv(net.fromTokens(h, x), `${p}.proj_out`);
  return net.add(out, x);
}

export interface DownPathResult {
  /** SiLU of the time embedding, as every resnet takes it. */
  temb: string;
  /** Every kept tensor of the down path, in order, with its channel count. */
  skips: { value: string; channels: number }[];
  /** The mid block's output. */
  mid: string;
}

/**
 * conv_in (its output given by `afterConvIn` a chance to add the ControlNet hint), the down
 * blocks (keeping every resnet/attention and down-sampler output as a skip) and the mid block.
 */
export async function downPath(net: Net, arch: DownPath, afterConvIn?: (h: string) => Promise<string>): Promise<DownPathResult> {
  const temb = net.silu(await timeEmbedding(net, arch));
  let h = await net.conv('sample', 'conv_in');
  if (afterConvIn) h = await afterConvIn(h);
  const skips = [{ value: h, channels: arch.channels[0]! }];
  let channels = arch.channels[0]!;
  for (let i = 0; i < arch.channels.length; i++) {
    for (let l = 0; l < arch.layers[i]!; l++) {
      h = await resnet(net, h, `down_blocks.${i}.resnets.${l}`, arch.groups, arch.eps, temb);
      channels = arch.channels[i]!;
      if (arch.crossAttention[i]) h = await transformer(net, h, `down_blocks.${i}.attentions.${l}`, channels, arch.heads[i]!, arch.transformerLayers[i]!, arch);
      skips.push({ value: h, channels });
    }
    if (i < arch.channels.length - 1) {
      h = await net.conv(h, `down_blocks.${i}.downsamplers.0.conv`, { stride: 2 });
      skips.push({ value: h, channels });
    }
  }
  const last = arch.channels.length - 1;
  h = await resnet(net, h, 'mid_block.resnets.0', arch.groups, arch.eps, temb, arch.midScale);
  h = await transformer(net, h, 'mid_block.attentions.0', channels, arch.heads[last]!, arch.transformerLayers[last]!, arch);
  h = await resnet(net, h, 'mid_block.resnets.1', arch.groups, arch.eps, temb, arch.midScale);
  return { temb, skips, mid: h };
}

export function declareDownPathInputs(net: Net, arch: DownPath, crossAttentionDim: number): void {
  net.g.input('sample', 'float32', ['batch', arch.inChannels, 'height', 'width']);
  net.g.input('timestep', 'float32', ['batch']);
  net.g.input('encoder_hidden_states', 'float32', ['batch', TEXT_LENGTH, crossAttentionDim]);
}

export const residualInput = (i: number) => `down_block_additional_residual_${i}`;
export const MID_RESIDUAL_INPUT = 'mid_block_additional_residual';

export interface UnetInfo {
  inChannels: number;
  outChannels: number;
  crossAttentionDim: number;
  /** Channels of each ControlNet residual input (down path order), then the mid block's. */
  residualChannels: number[];
}

/** Builds the UNet graph into `net`; with `residuals` it takes ControlNet residual inputs. */
export async function buildUnet(net: Net, config: Record<string, unknown>, options: { residuals: boolean }): Promise<UnetInfo> {
  checkConfig('unet', config, UNET_RULES);
  const arch = resolveDownPath(config, 'unet');
  const upTypes = config.up_block_types as string[];
  const n = arch.channels.length;
  if (upTypes.length !== n) throw new DepthcastError('BAD_MODEL', `unet: ${upTypes.length} up blocks for ${n} down blocks`);
  const outScale = num(config, 'resnet_out_scale_factor', 1);
  const crossAttentionDim = config.cross_attention_dim as number;
  const outChannels = num(config, 'out_channels', 4);
  declareDownPathInputs(net, arch, crossAttentionDim);
  if (outScale !== 1) throw new DepthcastError('BAD_MODEL', 'unet: config key "resnet_out_scale_factor" other than 1 is not supported by the builder');

  const { temb, skips, mid } = await downPath(net, arch);
  let h = mid;
  const residualChannels = [...skips.map((s) => s.channels), arch.channels[n - 1]!];
  if (options.residuals) {
    skips.forEach((s, i) => {
      net.g.input(residualInput(i), 'float32', ['batch', s.channels, `res${i}_height`, `res${i}_width`]);
      s.value = net.add(s.value, residualInput(i));
    });
    net.g.input(MID_RESIDUAL_INPUT, 'float32', ['batch', arch.channels[n - 1]!, 'mid_height', 'mid_width']);
    h = net.add(h, MID_RESIDUAL_INPUT);
  }

  // Up blocks mirror the down path: block j uses the reversed per-block values.
  const rev = <T>(list: T[]) => [...list].reverse();
  const heads = rev(arch.heads);
  const layers = rev(arch.layers);
  const tl = rev(arch.transformerLayers);
  for (let j = 0; j < n; j++) {
    const out = rev(arch.channels)[j]!;
    const cross = upTypes[j] === 'CrossAttnUpBlock2D';
    for (let l = 0; l <= layers[j]!; l++) {
      const skip = skips.pop();
      if (!skip) throw new DepthcastError('BAD_MODEL', 'unet: the up blocks take more skip connections than the down blocks keep (layers_per_block)');
      h = await resnet(net, net.op('Concat', [h, skip.value], { axis: attr.int(1) }), `up_blocks.${j}.resnets.${l}`, arch.groups, arch.eps, temb);
      if (cross) h = await transformer(net, h, `up_blocks.${j}.attentions.${l}`, out, heads[j]!, tl[j]!, arch);
    }
    if (j < n - 1) {
      // Up-sample to the size of the skip the next block takes first, so odd latent sides work.
      h = await net.conv(net.resizeLike(h, skips[skips.length - 1]!.value), `up_blocks.${j}.upsamplers.0.conv`);
    }
  }
  const out = await net.conv(net.silu(await net.groupNorm(h, 'conv_norm_out', arch.groups, arch.eps)), 'conv_out');
  net.op('Identity', [out], {}, 'out_sample');
  net.g.output('out_sample', 'float32', ['batch', outChannels, 'height', 'width']);
  return { inChannels: arch.inChannels, outChannels, crossAttentionDim, residualChannels };
}
