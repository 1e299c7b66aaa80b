/**
 * AutoencoderKL (diffusers 0.27) from its config.json and weights, as two graphs:
 * the encoder, sample [B,3,H,W] in [-1,1] → latent_sample = posterior mean (the first
 * latent_channels of quant_conv(encoder(x)), not scaled), and the decoder, latent_sample →
 * sample = decoder(post_quant_conv(z)) (not clamped). The pipelines apply scaling_factor.
 */
import { DepthcastError } from '../errors.ts';
import { checkConfig, is, num, type Rule } from './config.ts';
import type { Net } from './nn.ts';
import { resnet } from './unet.ts';

const VAE_RULES: Record<string, Rule> = {
  in_channels: is.count,
  out_channels: is.count,
  down_block_types: is.listOf('DownEncoderBlock2D'),
  up_block_types: is.listOf('UpDecoderBlock2D'),
  block_out_channels: is.counts,
  layers_per_block: is.count,
  act_fn: is.value('silu'),
  latent_channels: is.count,
  norm_num_groups: is.count,
  sample_size: 'info',
  scaling_factor: is.positiveNumber,
  shift_factor: is.value(null, 0),
  latents_mean: is.value(null),
  latents_std: is.value(null),
  // Half-precision advice for the reference; the builder computes in float32.
  force_upcast: 'info',
  use_quant_conv: is.bool,
  use_post_quant_conv: is.bool,
  mid_block_add_attention: is.bool,
};

/** VAE norms use eps 1e-6 everywhere. */
const EPS = 1e-6;

export interface VaeArch {
  channels: number[];
  layers: number;
  groups: number;
  latentChannels: number;
  inChannels: number;
  outChannels: number;
  midAttention: boolean;
  quantConv: boolean;
  postQuantConv: boolean;
}

export function resolveVae(config: Record<string, unknown>): VaeArch {
  checkConfig('vae', config, VAE_RULES);
  const channels = (config.block_out_channels as number[] | undefined) ?? [64];
  const down = (config.down_block_types as string[] | undefined) ?? ['DownEncoderBlock2D'];
  const up = (config.up_block_types as string[] | undefined) ?? ['UpDecoderBlock2D'];
  if (down.length !== channels.length || up.length !== channels.length) {
    throw new DepthcastError('BAD_MODEL', `vae: ${down.length} down and ${up.length} up blocks for ${channels.length} block_out_channels`);
  }
  return {
    channels,
    layers: num(config, 'layers_per_block', 1),
    groups: num(config, 'norm_num_groups', 32),
    latentChannels: num(config, 'latent_channels', 4),
    inChannels: num(config, 'in_channels', 3),
    outChannels: num(config, 'out_channels', 3),
    midAttention: config.mid_block_add_attention !== false,
    quantConv: config.use_quant_conv !== false,
    postQuantConv: config.use_post_quant_conv !== false,
  };
}

/** UNetMidBlock2D: resnet, single-head self-attention over all pixels (GroupNorm first, biases, + input), resnet. */
async function midBlock(net: Net, x: string, p: string, arch: VaeArch, channels: number): Promise<string> {
  let h = await resnet(net, x, `${p}.resnets.0`, arch.groups, EPS);
  if (arch.midAttention) {
    const a = `${p}.attentions.0`;
    const tokens = net.toTokens(await net.groupNorm(h, `${a}.group_norm`, arch.groups, EPS), channels);
    const attended = await net.attention(tokens, tokens, { q: `${a}.to_q`, k: `${a}.to_k`, v: `${a}.to_v`, out: `${a}.to_out.0` }, 1);
    h = net.add(net.fromTokens(attended, h), h);
  }
  return resnet(net, h, `${p}.resnets.1`, arch.groups, EPS);
}

export async function buildVaeEncoder(net: Net, arch: VaeArch): Promise<void> {
  net.g.input('sample', 'float32', ['batch', arch.inChannels, 'height', 'width']);
  let h = await net.conv('sample', 'encoder.conv_in');
  const n = arch.channels.length;
  for (let i = 0; i < n; i++) {
    for (let l = 0; l < arch.layers; l++) h = await resnet(net, h, `encoder.down_blocks.${i}.resnets.${l}`, arch.groups, EPS);
    // Down-sampling pads right and bottom by one pixel, then a stride-2 convolution without padding.
    if (i < n - 1) h = await net.conv(h, `encoder.down_blocks.${i}.downsamplers.0.conv`, { stride: 2, pads: [0, 0, 1, 1] });
  }
  h = await midBlock(net, h, 'encoder.mid_block', arch, arch.channels[n - 1]!);
  h = await net.conv(net.silu(await net.groupNorm(h, 'encoder.conv_norm_out', arch.groups, EPS)), 'encoder.conv_out');
  if (arch.quantConv) h = await net.conv(h, 'quant_conv');
  // The posterior mean: the first latent_channels channels (the rest are log-variances).
  const mean = net.op('Slice', [h, net.ints([0]), net.ints([arch.latentChannels]), net.ints([1])]);
  net.op('Identity', [mean], {}, 'latent_sample');
  net.g.output('latent_sample', 'float32', ['batch', arch.latentChannels, 'latent_height', 'latent_width']);
}

export async function buildVaeDecoder(net: Net, arch: VaeArch): Promise<void> {
  net.g.input('latent_sample', 'float32', ['batch', arch.latentChannels, 'latent_height', 'latent_width']);
  let h = 'latent_sample';
  if (arch.postQuantConv) h = await net.conv(h, 'post_quant_conv');
  h = await net.conv(h, 'decoder.conv_in');
  const n = arch.channels.length;
  h = await midBlock(net, h, 'decoder.mid_block', arch, arch.channels[n - 1]!);
  for (let j = 0; j < n; j++) {
    for (let l = 0; l <= arch.layers; l++) h = await resnet(net, h, `decoder.up_blocks.${j}.resnets.${l}`, arch.groups, EPS);
    if (j < n - 1) h = await net.conv(net.upsample2x(h), `decoder.up_blocks.${j}.upsamplers.0.conv`);
  }
  h = await net.conv(net.silu(await net.groupNorm(h, 'decoder.conv_norm_out', arch.groups, EPS)), 'decoder.conv_out');
  net.op('Identity', [h], {}, 'sample');
  net.g.output('sample', 'float32', ['batch', arch.outChannels, 'height', 'width']);
}
