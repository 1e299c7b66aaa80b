/**
 * ControlNetModel (diffusers 0.27) from its config.json and weights: the UNet's down path with
 * the hint encoder added to conv_in's output, then a 1×1 convolution per kept tensor and for the
 * mid block, each times conditioning_scale. I/O as depthcast's ControlNet layout: sample,
 * timestep (float32), encoder_hidden_states, controlnet_cond [B,cc,H,W] in [0,1],
 * conditioning_scale (scalar) → down_block_res_sample_{i}, mid_block_res_sample.
 */
import { DepthcastError } from '../errors.ts';
import { attr } from '../models/onnx-graph.ts';
import { checkConfig, is, type Rule } from './config.ts';
import type { Net } from './nn.ts';
import { declareDownPathInputs, DOWN_PATH_RULES, downPath, resolveDownPath, type UnetInfo } from './unet.ts';

const CONTROLNET_RULES: Record<string, Rule> = {
  ...DOWN_PATH_RULES,
  conditioning_channels: is.count,
  conditioning_embedding_out_channels: is.counts,
  controlnet_conditioning_channel_order: is.value('rgb', 'bgr'),
  global_pool_conditions: is.bool,
  // ControlNetModel (unlike UNet2DConditionModel in diffusers 0.27) accepts a head count here.
  num_attention_heads: (v) => (v === null || (is.countOrCounts as (v: unknown) => string | null)(v) === null ? null : 'must be null, a positive integer or a list of them'),
};

export const controlnetOutput = (i: number) => `down_block_res_sample_${i}`;
export const MID_OUTPUT = 'mid_block_res_sample';

export async function buildControlnet(net: Net, config: Record<string, unknown>, unet: UnetInfo): Promise<void> {
  checkConfig('controlnet', config, CONTROLNET_RULES);
  const arch = resolveDownPath(config, 'controlnet');
  if (arch.inChannels !== unet.inChannels) {
    throw new DepthcastError('BAD_MODEL', `controlnet: in_channels ${arch.inChannels} differs from the base UNet's ${unet.inChannels}`);
  }
  const crossAttentionDim = config.cross_attention_dim as number;
  if (crossAttentionDim !== unet.crossAttentionDim) {
    throw new DepthcastError('BAD_MODEL', `controlnet: cross_attention_dim ${crossAttentionDim} differs from the base UNet's ${unet.crossAttentionDim}`);
  }
  const condChannels = (config.conditioning_channels as number | undefined) ?? 3;
  const embedChannels = (config.conditioning_embedding_out_channels as number[] | undefined) ?? [16, 32, 96, 256];
  declareDownPathInputs(net, arch, crossAttentionDim);
  net.g.input('controlnet_cond', 'float32', ['batch', condChannels, 'image_height', 'image_width']);
  net.g.input('conditioning_scale', 'float32', []);

  let cond = 'controlnet_cond';
  if (config.controlnet_conditioning_channel_order === 'bgr') {
    cond = net.op('Slice', [cond, net.ints([-1]), net.ints([-(2 ** 53)]), net.ints([1]), net.ints([-1])]);
  }
  // Hint encoder: conv_in, SiLU; per next entry a conv and a stride-2 conv, each with SiLU; conv_out.
  const hint = async (): Promise<string> => {
    let c = net.silu(await net.conv(cond, 'controlnet_cond_embedding.conv_in'));
    for (let i = 0; i < embedChannels.length - 1; i++) {
      c = net.silu(await net.conv(c, `controlnet_cond_embedding.blocks.${2 * i}`));
      c = net.silu(await net.conv(c, `controlnet_cond_embedding.blocks.${2 * i + 1}`, { stride: 2 }));
    }
    return net.conv(c, 'controlnet_cond_embedding.conv_out');
  };
  const { skips, mid } = await downPath(net, arch, async (h) => net.add(h, await hint()));
  if (skips.length + 1 !== unet.residualChannels.length || skips.some((s, i) => s.channels !== unet.residualChannels[i])) {
    throw new DepthcastError('BAD_MODEL', `controlnet: its ${skips.length} residuals do not match the base UNet's down path (block_out_channels, layers_per_block)`);
  }
  const finish = (x: string, name: string, channels: number) => {
    let y = net.mul(x, 'conditioning_scale');
    if (config.global_pool_conditions === true) y = net.op('ReduceMean', [y], { axes: attr.ints([2, 3]), keepdims: attr.int(1) });
    net.op('Identity', [y], {}, name);
    net.g.output(name, 'float32', ['batch', channels, `${name}_height`, `${name}_width`]);
  };
  for (let i = 0; i < skips.length; i++) finish(await net.conv(skips[i]!.value, `controlnet_down_blocks.${i}`), controlnetOutput(i), skips[i]!.channels);
  finish(await net.conv(mid, 'controlnet_mid_block'), MID_OUTPUT, arch.channels[arch.channels.length - 1]!);
}
