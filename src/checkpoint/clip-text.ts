/**
 * CLIPTextModel (transformers 4.36) from its config.json and weights: input_ids int32 [B,77] →
 * last_hidden_state [B,77,D] (after final_layer_norm; causal self-attention, no padding mask)
 * and pooler_output [B,D] (the hidden state at the end-of-text position).
 */
import { DepthcastError } from '../errors.ts';
import { attr } from '../models/onnx-graph.ts';
import { checkConfig, is, num, type Rule } from './config.ts';
import type { Net } from './nn.ts';
import { TEXT_LENGTH } from './unet.ts';

const CLIP_RULES: Record<string, Rule> = {
  vocab_size: is.count,
  hidden_size: is.count,
  intermediate_size: is.count,
  projection_dim: 'info',
  num_hidden_layers: is.count,
  num_attention_heads: is.count,
  max_position_embeddings: (v) => (Number.isInteger(v) && (v as number) >= TEXT_LENGTH ? null : `must be at least ${TEXT_LENGTH}`),
  hidden_act: is.value('quick_gelu', 'gelu'),
  layer_norm_eps: is.positiveNumber,
  attention_dropout: 'info',
  dropout: 'info',
  initializer_range: 'info',
  initializer_factor: 'info',
  pad_token_id: 'info',
  bos_token_id: 'info',
  eos_token_id: 'info',
  model_type: is.value('clip_text_model'),
};

export interface ClipInfo {
  hiddenSize: number;
}

export async function buildClipText(net: Net, config: Record<string, unknown>): Promise<ClipInfo> {
  checkConfig('text_encoder', config, CLIP_RULES);
  const layers = num(config, 'num_hidden_layers', 12);
  const heads = num(config, 'num_attention_heads', 8);
  const eps = num(config, 'layer_norm_eps', 1e-5);
  const act = config.hidden_act === 'gelu' ? (x: string) => net.gelu(x) : (x: string) => net.quickGelu(x);
  const [, hidden] = net.shapeOf('text_model.embeddings.token_embedding.weight') as [number, number];
  if (hidden % heads !== 0) throw new DepthcastError('BAD_MODEL', `text_encoder: hidden_size ${hidden} does not split into ${heads} heads`);
  net.g.input('input_ids', 'int32', ['batch', TEXT_LENGTH]);

  const tokens = net.op('Gather', [await net.param('text_model.embeddings.token_embedding.weight'), 'input_ids'], { axis: attr.int(0) });
  // Positions are 0..76: the first rows of the position table.
  const positions = await net.param('text_model.embeddings.position_embedding.weight', [TEXT_LENGTH, hidden], (v) => v.slice(0, TEXT_LENGTH * hidden));
  let h = net.add(tokens, positions);
  const mask = new Float32Array(TEXT_LENGTH * TEXT_LENGTH);
  for (let i = 0; i < TEXT_LENGTH; i++) for (let j = i + 1; j < TEXT_LENGTH; j++) mask[i * TEXT_LENGTH + j] = -3.4028234663852886e38;
  const causal = net.floats([TEXT_LENGTH, TEXT_LENGTH], mask);
  for (let l = 0; l < layers; l++) {
    const p = `text_model.encoder.layers.${l}`;
    const n1 = await net.layerNorm(h, `${p}.layer_norm1`, eps);
    const a = `${p}.self_attn`;
    h = net.add(h, await net.attention(n1, n1, { q: `${a}.q_proj`, k: `${a}.k_proj`, v: `${a}.v_proj`, out: `${a}.out_proj` }, heads, causal));
    const n2 = await net.layerNorm(h, `${p}.layer_norm2`, eps);
    h = net.add(h, await net.linear(act(await net.linear(n2, `${p}.mlp.fc1`)), `${p}.mlp.fc2`));
  }
  const last = await net.layerNorm(h, 'text_model.final_layer_norm', eps);
  net.op('Identity', [last], {}, 'last_hidden_state');
  net.g.output('last_hidden_state', 'float32', ['batch', TEXT_LENGTH, hidden]);

  // transformers 4.36: with the legacy eos_token_id 2 the pooled position is argmax(input_ids), else the first eos.
  const eos = num(config, 'eos_token_id', 2);
  const ids = net.op('Cast', ['input_ids'], { to: attr.int(1) });
  const key = eos === 2 ? ids : net.op('Cast', [net.op('Equal', [ids, net.constant(eos)])], { to: attr.int(1) });
  const at = net.op('ArgMax', [key], { axis: attr.int(1), keepdims: attr.int(1) });
  const onehot = net.op('Cast', [net.op('Equal', [net.ints(Array.from({ length: TEXT_LENGTH }, (_, i) => i)), at])], { to: attr.int(1) });
  const pooled = net.op('Squeeze', [net.op('MatMul', [net.op('Unsqueeze', [onehot, net.ints([1])]), last]), net.ints([1])]);
  net.op('Identity', [pooled], {}, 'pooler_output');
  net.g.output('pooler_output', 'float32', ['batch', hidden]);
  return { hiddenSize: hidden };
}
