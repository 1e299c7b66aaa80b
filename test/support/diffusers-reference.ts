/**
 * An independent float64 evaluation of the diffusers / transformers modules the checkpoint
 * builder compiles (written from the modules' definitions, plain loops, batch 1), so tests can
 * check built ONNX graphs on configs no public case covers.
 */
import type { SafetensorsFile } from '../../src/checkpoint/safetensors.ts';

export interface T {
  data: Float64Array;
  shape: number[];
}

export type Weights = Map<string, T>;

export async function loadWeights(file: SafetensorsFile): Promise<Weights> {
  const out: Weights = new Map();
  for (const [name, e] of file.tensors) out.set(name, { data: Float64Array.from(await file.readFloat32(name)), shape: e.shape });
  return out;
}

const t = (shape: number[], data?: Float64Array): T => ({ shape, data: data ?? new Float64Array(shape.reduce((a, b) => a * b, 1)) });

function w(W: Weights, name: string): T {
  const v = W.get(name);
  if (!v) throw new Error(`reference: no weight ${name}`);
  return v;
}

export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let sum = 0;
    let term = x;
    for (let n = 0; n < 200; n++) {
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
      term *= (-x * x) / (n + 1);
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc by its continued fraction (modified Lentz), accurate for |x| >= 3.
  let f = ax;
  let c = ax;
  let d = 0;
  for (let n = 1; n < 200; n++) {
    const a = n / 2;
    d = ax + a * d;
    d = 1 / d;
    c = ax + a / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export const silu = (x: number) => x / (1 + Math.exp(-x));
export const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const quickGelu = (x: number) => x / (1 + Math.exp(-1.702 * x));
const map = (x: T, f: (v: number) => number): T => t(x.shape, x.data.map(f));
const add = (a: T, b: T): T => t(a.shape, a.data.map((v, i) => v + b.data[i]!));

/** x [C,H,W]; pads [top, left, bottom, right]. */
export function conv2d(x: T, W: Weights, p: string, stride = 1, pads?: number[]): T {
  const wt = w(W, `${p}.weight`);
  const bias = W.get(`${p}.bias`);
  const [O, I, KH, KW] = wt.shape as [number, number, number, number];
  const [C, H, Wd] = x.shape as [number, number, number];
  if (C !== I) throw new Error(`reference ${p}: ${C} channels in, weight takes ${I}`);
  const [pt, pl, pb, pr] = pads ?? [(KH - 1) / 2, (KW - 1) / 2, (KH - 1) / 2, (KW - 1) / 2];
  const OH = Math.floor((H + pt! + pb! - KH) / stride) + 1;
  const OW = Math.floor((Wd + pl! + pr! - KW) / stride) + 1;
  const out = t([O, OH, OW]);
  for (let o = 0; o < O; o++)
    for (let y = 0; y < OH; y++)
      for (let xx = 0; xx < OW; xx++) {
        let s = bias ? bias.data[o]! : 0;
        for (let i = 0; i < I; i++)
          for (let ky = 0; ky < KH; ky++) {
            const iy = y * stride + ky - pt!;
            if (iy < 0 || iy >= H) continue;
            for (let kx = 0; kx < KW; kx++) {
              const ix = xx * stride + kx - pl!;
              if (ix < 0 || ix >= Wd) continue;
              s += wt.data[((o * I + i) * KH + ky) * KW + kx]! * x.data[(i * H + iy) * Wd + ix]!;
            }
          }
        out.data[(o * OH + y) * OW + xx] = s;
      }
  return out;
}

export function groupNorm(x: T, W: Weights, p: string, groups: number, eps: number): T {
  const [C] = x.shape as [number];
  const per = x.data.length / C;
  const cg = C / groups;
  const out = t(x.shape);
  const g = w(W, `${p}.weight`).data;
  const b = w(W, `${p}.bias`).data;
  for (let k = 0; k < groups; k++) {
    const from = k * cg * per;
    const n = cg * per;
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x.data[from + i]!;
    mean /= n;
    let v = 0;
    for (let i = 0; i < n; i++) v += (x.data[from + i]! - mean) ** 2;
    v /= n;
    for (let i = 0; i < n; i++) {
      const c = k * cg + Math.floor(i / per);
      out.data[from + i] = ((x.data[from + i]! - mean) / Math.sqrt(v + eps)) * g[c]! + b[c]!;
    }
  }
  return out;
}

/** x [N, in] → [N, out] */
export function linear(x: T, W: Weights, p: string): T {
  const wt = w(W, `${p}.weight`);
  const bias = W.get(`${p}.bias`);
  const [O, I] = wt.shape as [number, number];
  const N = x.data.length / I;
  const out = t([N, O]);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      let s = bias ? bias.data[o]! : 0;
      for (let i = 0; i < I; i++) s += x.data[n * I + i]! * wt.data[o * I + i]!;
      out.data[n * O + o] = s;
    }
  return out;
}

export function layerNorm(x: T, W: Weights, p: string, eps: number): T {
  const D = x.shape[x.shape.length - 1]!;
  const out = t(x.shape);
  const g = w(W, `${p}.weight`).data;
  const b = w(W, `${p}.bias`).data;
  for (let n = 0; n < x.data.length / D; n++) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x.data[n * D + i]!;
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x.data[n * D + i]! - mean) ** 2;
    v /= D;
    for (let i = 0; i < D; i++) out.data[n * D + i] = ((x.data[n * D + i]! - mean) / Math.sqrt(v + eps)) * g[i]! + b[i]!;
  }
  return out;
}

export function attention(x: T, ctx: T, W: Weights, p: { q: string; k: string; v: string; out: string }, heads: number, causal = false): T {
  const q = linear(x, W, p.q);
  const k = linear(ctx, W, p.k);
  const v = linear(ctx, W, p.v);
  const [N, C] = q.shape as [number, number];
  const M = k.shape[0]!;
  const d = C / heads;
  const out = t([N, C]);
  const scores = new Float64Array(M);
  for (let h = 0; h < heads; h++)
    for (let n = 0; n < N; n++) {
      let max = -Infinity;
      for (let m = 0; m < M; m++) {
        let s = 0;
        for (let i = 0; i < d; i++) s += q.data[n * C + h * d + i]! * k.data[m * C + h * d + i]!;
        scores[m] = causal && m > n ? -Infinity : s / Math.sqrt(d);
        max = Math.max(max, scores[m]!);
      }
      let sum = 0;
      for (let m = 0; m < M; m++) sum += scores[m] = Math.exp(scores[m]! - max);
      for (let i = 0; i < d; i++) {
        let s = 0;
        for (let m = 0; m < M; m++) s += (scores[m]! / sum) * v.data[m * C + h * d + i]!;
        out.data[n * C + h * d + i] = s;
      }
    }
  return linear(out, W, p.out);
}

/** [C,H,W] ↔ [HW,C] */
export function tokens(x: T): T {
  const [C, H, Wd] = x.shape as [number, number, number];
  const out = t([H * Wd, C]);
  for (let c = 0; c < C; c++) for (let i = 0; i < H * Wd; i++) out.data[i * C + c] = x.data[c * H * Wd + i]!;
  return out;
}
export function untokens(x: T, like: T): T {
  const [C, H, Wd] = like.shape as [number, number, number];
  const out = t([C, H, Wd]);
  for (let c = 0; c < C; c++) for (let i = 0; i < H * Wd; i++) out.data[c * H * Wd + i] = x.data[i * C + c]!;
  return out;
}

/** PyTorch nearest: src = floor(dst · in / out). */
export function nearest(x: T, OH: number, OW: number): T {
  const [C, H, Wd] = x.shape as [number, number, number];
  const out = t([C, OH, OW]);
  for (let c = 0; c < C; c++)
    for (let y = 0; y < OH; y++)
      for (let xx = 0; xx < OW; xx++) out.data[(c * OH + y) * OW + xx] = x.data[(c * H + Math.floor((y * H) / OH)) * Wd + Math.floor((xx * Wd) / OW)]!;
  return out;
}

export function concat(a: T, b: T): T {
  return t([a.shape[0]! + b.shape[0]!, a.shape[1]!, a.shape[2]!], Float64Array.from([...a.data, ...b.data]));
}

export function resnet(x: T, W: Weights, p: string, groups: number, eps: number, temb?: T): T {
  let h = conv2d(map(groupNorm(x, W, `${p}.norm1`, groups, eps), silu), W, `${p}.conv1`);
  if (temb) {
    const proj = linear(map(temb, silu), W, `${p}.time_emb_proj`);
    const per = h.data.length / h.shape[0]!;
    h = t(h.shape, h.data.map((v, i) => v + proj.data[Math.floor(i / per)]!));
  }
  h = conv2d(map(groupNorm(h, W, `${p}.norm2`, groups, eps), silu), W, `${p}.conv2`);
  const shortcut = W.has(`${p}.conv_shortcut.weight`) ? conv2d(x, W, `${p}.conv_shortcut`) : x;
  return add(shortcut, h);
}

export interface UnetRefConfig {
  channels: number[];
  cross: boolean[];
  upCross: boolean[];
  layers: number[];
  heads: number[];
  transformerLayers: number[];
  groups: number;
  eps: number;
  linear: boolean;
}

function transformer(x: T, text: T, W: Weights, p: string, heads: number, layers: number, cfg: UnetRefConfig): T {
  const normed = groupNorm(x, W, `${p}.norm`, cfg.groups, 1e-6);
  let h = cfg.linear ? linear(tokens(normed), W, `${p}.proj_in`) : tokens(conv2d(normed, W, `${p}.proj_in`));
  for (let l = 0; l < layers; l++) {
    const b = `${p}.transformer_blocks.${l}`;
    const n1 = layerNorm(h, W, `${b}.norm1`, 1e-5);
    h = add(attention(n1, n1, W, { q: `${b}.attn1.to_q`, k: `${b}.attn1.to_k`, v: `${b}.attn1.to_v`, out: `${b}.attn1.to_out.0` }, heads), h);
    const n2 = layerNorm(h, W, `${b}.norm2`, 1e-5);
    h = add(attention(n2, text, W, { q: `${b}.attn2.to_q`, k: `${b}.attn2.to_k`, v: `${b}.attn2.to_v`, out: `${b}.attn2.to_out.0` }, heads), h);
    const proj = linear(layerNorm(h, W, `${b}.norm3`, 1e-5), W, `${b}.ff.net.0.proj`);
    const [N, C2] = proj.shape as [number, number];
    const inner = C2 / 2;
    const geglu = t([N, inner]);
    for (let n = 0; n < N; n++) for (let i = 0; i < inner; i++) geglu.data[n * inner + i] = proj.data[n * C2 + i]! * gelu(proj.data[n * C2 + inner + i]!);
    h = add(linear(geglu, W, `${b}.ff.net.2`), h);
  }
  const out = cfg.linear ? untokens(linear(h, W, `${p}.proj_out`), x) : conv2d(untokens(h, x), W, `${p}.proj_out`);
  return add(out, x);
}

function timeEmbedding(W: Weights, timestep: number, c0: number): T {
  const half = c0 / 2;
  const emb = t([1, c0]);
  for (let k = 0; k < half; k++) {
    const a = timestep * Math.exp((-Math.log(10000) * k) / half);
    emb.data[k] = Math.cos(a);
    emb.data[half + k] = Math.sin(a);
  }
  return linear(map(linear(emb, W, 'time_embedding.linear_1'), silu), W, 'time_embedding.linear_2');
}

/** conv_in (+ `hint`), down blocks and mid block: the kept skips and the mid output. */
function downPath(W: Weights, cfg: UnetRefConfig, sample: T, temb: T, text: T, hint?: T): { skips: T[]; mid: T } {
  let h = conv2d(sample, W, 'conv_in');
  if (hint) h = add(h, hint);
  const skips: T[] = [h];
  const n = cfg.channels.length;
  for (let i = 0; i < n; i++) {
    for (let l = 0; l < cfg.layers[i]!; l++) {
      h = resnet(h, W, `down_blocks.${i}.resnets.${l}`, cfg.groups, cfg.eps, temb);
      if (cfg.cross[i]) h = transformer(h, text, W, `down_blocks.${i}.attentions.${l}`, cfg.heads[i]!, cfg.transformerLayers[i]!, cfg);
      skips.push(h);
    }
    if (i < n - 1) {
      h = conv2d(h, W, `down_blocks.${i}.downsamplers.0.conv`, 2);
      skips.push(h);
    }
  }
  h = resnet(h, W, 'mid_block.resnets.0', cfg.groups, cfg.eps, temb);
  h = transformer(h, text, W, 'mid_block.attentions.0', cfg.heads[n - 1]!, cfg.transformerLayers[n - 1]!, cfg);
  h = resnet(h, W, 'mid_block.resnets.1', cfg.groups, cfg.eps, temb);
  return { skips, mid: h };
}

/**
 * ControlNetModel.forward for one sample: the hint encoder on `cond` [cc,H,W] (channels reversed
 * first for `bgr`), added to conv_in's output; each kept tensor and the mid output through its
 * 1×1 convolution, times `scale` (then averaged over H×W with global pooling).
 */
export function controlnetForward(W: Weights, cfg: UnetRefConfig & { embedBlocks: number; bgr: boolean; globalPool: boolean }, sample: T, timestep: number, text: T, cond: T, scale: number): T[] {
  let c = cond;
  if (cfg.bgr) {
    const per = c.shape[1]! * c.shape[2]!;
    const C = c.shape[0]!;
    c = t(c.shape, Float64Array.from({ length: c.data.length }, (_, i) => c.data[(C - 1 - Math.floor(i / per)) * per + (i % per)]!));
  }
  c = map(conv2d(c, W, 'controlnet_cond_embedding.conv_in'), silu);
  for (let i = 0; i < cfg.embedBlocks - 1; i++) {
    c = map(conv2d(c, W, `controlnet_cond_embedding.blocks.${2 * i}`), silu);
    c = map(conv2d(c, W, `controlnet_cond_embedding.blocks.${2 * i + 1}`, 2), silu);
  }
  const hint = conv2d(c, W, 'controlnet_cond_embedding.conv_out');
  const { skips, mid } = downPath(W, cfg, sample, timeEmbedding(W, timestep, cfg.channels[0]!), text, hint);
  const outs = [...skips.map((s, i) => conv2d(s, W, `controlnet_down_blocks.${i}`)), conv2d(mid, W, 'controlnet_mid_block')];
  return outs.map((o) => {
    const scaled = map(o, (v) => v * scale);
    if (!cfg.globalPool) return scaled;
    const per = o.shape[1]! * o.shape[2]!;
    const pooled = t([o.shape[0]!, 1, 1]);
    for (let k = 0; k < o.shape[0]!; k++) for (let i = 0; i < per; i++) pooled.data[k] += scaled.data[k * per + i]! / per;
    return pooled;
  });
}

/** UNet2DConditionModel.forward for one sample [C,h,w], text [77,D]; residuals added to the skips and mid output when given. */
export function unetForward(W: Weights, cfg: UnetRefConfig, sample: T, timestep: number, text: T, residuals?: T[]): T {
  const temb = timeEmbedding(W, timestep, cfg.channels[0]!);
  const down = downPath(W, cfg, sample, temb, text);
  const skips = down.skips;
  let h = down.mid;
  if (residuals) {
    skips.forEach((s, i) => (skips[i] = add(s, residuals[i]!)));
    h = add(h, residuals[residuals.length - 1]!);
  }
  const n = cfg.channels.length;
  for (let j = 0; j < n; j++) {
    const i = n - 1 - j;
    for (let l = 0; l <= cfg.layers[i]!; l++) {
      h = resnet(concat(h, skips.pop()!), W, `up_blocks.${j}.resnets.${l}`, cfg.groups, cfg.eps, temb);
      if (cfg.upCross[j]) h = transformer(h, text, W, `up_blocks.${j}.attentions.${l}`, cfg.heads[i]!, cfg.transformerLayers[i]!, cfg);
    }
    if (j < n - 1) {
      const next = skips[skips.length - 1]!;
      h = conv2d(nearest(h, next.shape[1]!, next.shape[2]!), W, `up_blocks.${j}.upsamplers.0.conv`);
    }
  }
  return conv2d(map(groupNorm(h, W, 'conv_norm_out', cfg.groups, cfg.eps), silu), W, 'conv_out');
}

/** CLIPTextModel: last_hidden_state [77,D] for one id sequence. */
export function clipForward(W: Weights, ids: number[], cfg: { layers: number; heads: number; eps: number; act: 'gelu' | 'quick_gelu' }): T {
  const tok = w(W, 'text_model.embeddings.token_embedding.weight');
  const pos = w(W, 'text_model.embeddings.position_embedding.weight');
  const D = tok.shape[1]!;
  let h = t([ids.length, D]);
  ids.forEach((id, n) => {
    for (let i = 0; i < D; i++) h.data[n * D + i] = tok.data[id * D + i]! + pos.data[n * D + i]!;
  });
  const act = cfg.act === 'gelu' ? gelu : quickGelu;
  for (let l = 0; l < cfg.layers; l++) {
    const p = `text_model.encoder.layers.${l}`;
    const n1 = layerNorm(h, W, `${p}.layer_norm1`, cfg.eps);
    const a = `${p}.self_attn`;
    h = add(h, attention(n1, n1, W, { q: `${a}.q_proj`, k: `${a}.k_proj`, v: `${a}.v_proj`, out: `${a}.out_proj` }, cfg.heads, true));
    h = add(h, linear(map(linear(layerNorm(h, W, `${p}.layer_norm2`, cfg.eps), W, `${p}.mlp.fc1`), act), W, `${p}.mlp.fc2`));
  }
  return layerNorm(h, W, 'text_model.final_layer_norm', cfg.eps);
}

function vaeMid(x: T, W: Weights, p: string, groups: number): T {
  let h = resnet(x, W, `${p}.resnets.0`, groups, 1e-6);
  const a = `${p}.attentions.0`;
  const tk = tokens(groupNorm(h, W, `${a}.group_norm`, groups, 1e-6));
  h = add(untokens(attention(tk, tk, W, { q: `${a}.to_q`, k: `${a}.to_k`, v: `${a}.to_v`, out: `${a}.to_out.0` }, 1), h), h);
  return resnet(h, W, `${p}.resnets.1`, groups, 1e-6);
}

/** AutoencoderKL posterior mean for one image [3,H,W]. */
export function vaeEncodeMean(W: Weights, x: T, cfg: { blocks: number; layers: number; groups: number; latent: number }): T {
  let h = conv2d(x, W, 'encoder.conv_in');
  for (let i = 0; i < cfg.blocks; i++) {
    for (let l = 0; l < cfg.layers; l++) h = resnet(h, W, `encoder.down_blocks.${i}.resnets.${l}`, cfg.groups, 1e-6);
    if (i < cfg.blocks - 1) h = conv2d(h, W, `encoder.down_blocks.${i}.downsamplers.0.conv`, 2, [0, 0, 1, 1]);
  }
  h = vaeMid(h, W, 'encoder.mid_block', cfg.groups);
  h = conv2d(map(groupNorm(h, W, 'encoder.conv_norm_out', cfg.groups, 1e-6), silu), W, 'encoder.conv_out');
  h = conv2d(h, W, 'quant_conv');
  const per = h.shape[1]! * h.shape[2]!;
  return t([cfg.latent, h.shape[1]!, h.shape[2]!], h.data.slice(0, cfg.latent * per));
}

export function vaeDecode(W: Weights, z: T, cfg: { blocks: number; layers: number; groups: number }): T {
  let h = conv2d(conv2d(z, W, 'post_quant_conv'), W, 'decoder.conv_in');
  h = vaeMid(h, W, 'decoder.mid_block', cfg.groups);
  for (let j = 0; j < cfg.blocks; j++) {
    for (let l = 0; l <= cfg.layers; l++) h = resnet(h, W, `decoder.up_blocks.${j}.resnets.${l}`, cfg.groups, 1e-6);
    if (j < cfg.blocks - 1) h = conv2d(nearest(h, 2 * h.shape[1]!, 2 * h.shape[2]!), W, `decoder.up_blocks.${j}.upsamplers.0.conv`);
  }
  return conv2d(map(groupNorm(h, W, 'decoder.conv_norm_out', cfg.groups, 1e-6), silu), W, 'decoder.conv_out');
}
