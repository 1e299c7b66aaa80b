/**
 * A UNet with Stable Diffusion's real architecture and size, for timing the model itself on a
 * device (the tiny bench models have SD's I/O shapes but trivial compute). It follows diffusers'
 * UNet2DConditionModel: conv_in, four down blocks (three with cross-attention transformers),
 * a mid block, four up blocks with skip concatenation, GroupNorm/SiLU/conv_out; ResNet blocks take
 * the timestep embedding, transformers do self-attention, cross-attention on the text and a GEGLU
 * feed-forward. SD 1.5 and SD 2 (depth: 5 input channels, 1024-wide text, linear projections,
 * 64-wide heads) are presets.
 *
 * Weights are not stored: each is `Expand(constant, shape)`, which ONNX Runtime folds into an
 * initializer when the session is created. So the file is a few hundred KB instead of 3.4 GB (it
 * travels to a GPU machine within its 64 MiB limit, and needs no external-data files), and the
 * session holds every weight in memory as a real checkpoint would. Each weight is one value,
 * ±1/√fan-in, slightly different for every weight: with equal values ORT's constant sharing
 * merged same-shaped weights (0.9 instead of 3.4 GiB), which would flatter the cache. Timing does
 * not depend on the values, and GroupNorm keeps the activations in range.
 */
import { attr, type Dim, type ElemType, GraphBuilder } from '../../src/models/onnx-graph.ts';

export interface UnetArchitecture {
  name: string;
  inChannels: number;
  blockOutChannels: readonly number[];
  /** Whether each down block has transformers (the up blocks mirror it). */
  crossAttention: readonly boolean[];
  layersPerBlock: number;
  crossAttentionDim: number;
  /** Attention heads per block: SD 1.5 has 8 everywhere; SD 2 has 64-wide heads. */
  heads: readonly number[];
  /** SD 2: Linear proj_in/proj_out; SD 1.5: 1×1 convolutions. */
  linearProjection: boolean;
}

export const SD15_UNET: UnetArchitecture = {
  name: 'sd15-unet', inChannels: 4, blockOutChannels: [320, 640, 1280, 1280], crossAttention: [true, true, true, false],
  layersPerBlock: 2, crossAttentionDim: 768, heads: [8, 8, 8, 8], linearProjection: false,
};

export const SD2_DEPTH_UNET: UnetArchitecture = {
  name: 'sd2-depth-unet', inChannels: 5, blockOutChannels: [320, 640, 1280, 1280], crossAttention: [true, true, true, false],
  layersPerBlock: 2, crossAttentionDim: 1024, heads: [5, 10, 20, 20], linearProjection: true,
};

const GROUPS = 32;
const TEXT_LENGTH = 77;

/** Builds the graph with the weights as folded constants; dtype is the compute and I/O type. */
class UnetGraph {
  readonly g = new GraphBuilder('unet');
  /** Parameters the folded weights add up to (the checkpoint's size). */
  params = 0;
  private weights = 0;
  private readonly half: boolean;

  constructor(dtype: 'fp32' | 'fp16') {
    this.half = dtype === 'fp16';
  }

  get type(): ElemType {
    return this.half ? 'float16' : 'float32';
  }

  /** A weight of `dims`, folded by ORT from a scalar: value ±1/√fanIn, alternating in sign from one weight to the next. */
  weight(dims: number[], fanIn: number): string {
    const n = ++this.weights;
    this.params += dims.reduce((a, b) => a * b, 1);
    const value = ((n % 2 ? 1 : -1) * (1 + n * 1e-4)) / Math.sqrt(fanIn);
    let scalar = this.g.float(`w${n}.value`, [], [value]);
    if (this.half) scalar = this.g.op('Cast', [scalar], { to: attr.int(10) });
    return this.g.op('Expand', [scalar, this.g.int64(`w${n}.shape`, [dims.length], dims)]);
  }

  constant(name: string, value: number): string {
    const c = this.g.float(name, [], [value]);
    return this.half ? this.g.op('Cast', [c], { to: attr.int(10) }) : c;
  }

  /** A small vector of one value that is not a weight of the model (InstanceNormalization's identity affine). */
  fixed(name: string, length: number, value: number): string {
    const v = this.g.float(name, [length], new Array(length).fill(value));
    return this.half ? this.g.op('Cast', [v], { to: attr.int(10) }) : v;
  }

  shape(name: string, dims: number[]): string {
    return this.g.int64(name, [dims.length], dims);
  }

  conv(x: string, inC: number, outC: number, k: number, stride = 1): string {
    const p = (k - 1) / 2;
    return this.g.op('Conv', [x, this.weight([outC, inC, k, k], inC * k * k), this.weight([outC], inC)], {
      kernel_shape: attr.ints([k, k]), pads: attr.ints([p, p, p, p]), strides: attr.ints([stride, stride]),
    });
  }

  linear(x: string, inDim: number, outDim: number, bias = true): string {
    const y = this.g.op('MatMul', [x, this.weight([inDim, outDim], inDim)]);
    return bias ? this.g.op('Add', [y, this.weight([outDim], inDim)]) : y;
  }

  silu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x])]);
  }

  /** GroupNorm(32) as opset 17 exports it: InstanceNormalization over [B, 32, rest], then a per-channel affine. */
  groupNorm(x: string, channels: number, eps: number): string {
    const grouped = this.g.op('Reshape', [x, this.shape(`gn${this.weights}.groups`, [0, GROUPS, -1])]);
    const ones = this.fixed(`gn${this.weights}.ones`, GROUPS, 1);
    const zeros = this.fixed(`gn${this.weights}.zeros`, GROUPS, 0);
    const normed = this.g.op('InstanceNormalization', [grouped, ones, zeros], { epsilon: attr.float(eps) });
    const back = this.g.op('Reshape', [normed, this.g.op('Shape', [x])]);
    return this.g.op('Add', [this.g.op('Mul', [back, this.weight([channels, 1, 1], 1)]), this.weight([channels, 1, 1], channels)]);
  }

  layerNorm(x: string, dim: number): string {
    return this.g.op('LayerNormalization', [x, this.weight([dim], 1), this.weight([dim], dim)], { axis: attr.int(-1), epsilon: attr.float(1e-5) });
  }

  resnet(x: string, temb: string, inC: number, outC: number): string {
    let h = this.conv(this.silu(this.groupNorm(x, inC, 1e-5)), inC, outC, 3);
    const t = this.g.op('Unsqueeze', [this.linear(this.silu(temb), 1280, outC), this.shape(`r${this.weights}.axes`, [2, 3])]);
    h = this.g.op('Add', [h, t]);
    h = this.conv(this.silu(this.groupNorm(h, outC, 1e-5)), outC, outC, 3);
    const shortcut = inC === outC ? x : this.conv(x, inC, outC, 1);
    return this.g.op('Add', [shortcut, h]);
  }

  /** Multi-head attention of x [B,N,C] over context [B,M,ctxDim]. */
  attention(x: string, context: string, dim: number, ctxDim: number, heads: number): string {
    const d = dim / heads;
    const split = (t: string, name: string) =>
      this.g.op('Transpose', [this.g.op('Reshape', [t, this.shape(`${name}${this.weights}`, [0, -1, heads, d])])], { perm: attr.ints([0, 2, 1, 3]) });
    const q = split(this.linear(x, dim, dim, false), 'q');
    const k = split(this.linear(context, ctxDim, dim, false), 'k');
    const v = split(this.linear(context, ctxDim, dim, false), 'v');
    const kT = this.g.op('Transpose', [k], { perm: attr.ints([0, 1, 3, 2]) });
    const scores = this.g.op('Mul', [this.g.op('MatMul', [q, kT]), this.constant(`scale${this.weights}`, 1 / Math.sqrt(d))]);
    const attended = this.g.op('MatMul', [this.g.op('Softmax', [scores], { axis: attr.int(-1) }), v]);
    const merged = this.g.op('Reshape', [this.g.op('Transpose', [attended], { perm: attr.ints([0, 2, 1, 3]) }), this.shape(`o${this.weights}`, [0, -1, dim])]);
    return this.linear(merged, dim, dim);
  }

  /** GELU as opset 17 exports it (ORT fuses it): x·½(1 + erf(x/√2)). */
  gelu(x: string): string {
    const erf = this.g.op('Erf', [this.g.op('Mul', [x, this.constant(`gelu${this.weights}.a`, Math.SQRT1_2)])]);
    return this.g.op('Mul', [x, this.g.op('Mul', [this.g.op('Add', [erf, this.constant(`gelu${this.weights}.one`, 1)]), this.constant(`gelu${this.weights}.half`, 0.5)])]);
  }

  transformer(x: string, text: string, channels: number, heads: number, arch: UnetArchitecture): string {
    const residual = x;
    const normed = this.groupNorm(x, channels, 1e-6);
    // [B,C,H,W] → [B,HW,C]
    const flatten = (t: string) => this.g.op('Transpose', [this.g.op('Reshape', [t, this.shape(`flat${this.weights}`, [0, channels, -1])])], { perm: attr.ints([0, 2, 1]) });
    let h = arch.linearProjection ? this.linear(flatten(normed), channels, channels) : flatten(this.conv(normed, channels, channels, 1));
    const selfInput = this.layerNorm(h, channels);
    h = this.g.op('Add', [this.attention(selfInput, selfInput, channels, channels, heads), h]);
    h = this.g.op('Add', [this.attention(this.layerNorm(h, channels), text, channels, arch.crossAttentionDim, heads), h]);
    const [value, gate] = this.g.opN('Split', [this.linear(this.layerNorm(h, channels), channels, 8 * channels), this.shape(`ff${this.weights}`, [4 * channels, 4 * channels])], { axis: attr.int(-1) }, ['', '']);
    h = this.g.op('Add', [this.linear(this.g.op('Mul', [value!, this.gelu(gate!)]), 4 * channels, channels), h]);
    // [B,HW,C] → [B,C,H,W]
    const unflatten = (t: string) => this.g.op('Reshape', [this.g.op('Transpose', [t], { perm: attr.ints([0, 2, 1]) }), this.g.op('Shape', [residual])]);
    const out = arch.linearProjection ? unflatten(this.linear(h, channels, channels)) : this.conv(unflatten(h), channels, channels, 1);
    return this.g.op('Add', [out, residual]);
  }

  /** Sinusoidal embedding of the timestep (flip_sin_to_cos, shift 0), then the two-layer MLP. */
  timeEmbedding(timestep: string, baseChannels: number): string {
    const half = baseChannels / 2;
    const freqs = Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / half));
    const t = this.g.op('Mul', [this.g.op('Unsqueeze', [timestep, this.shape('t.axes', [1])]), this.g.float('t.freqs', [1, half], freqs)]);
    let emb = this.g.op('Concat', [this.g.op('Cos', [t]), this.g.op('Sin', [t])], { axis: attr.int(1) });
    if (this.half) emb = this.g.op('Cast', [emb], { to: attr.int(10) });
    return this.linear(this.silu(this.linear(emb, baseChannels, 1280)), 1280, 1280);
  }
}

export interface BuiltUnet {
  bytes: Uint8Array;
  /** The parameter count of the folded weights (SD 1.5's UNet: 859.5 M). */
  params: number;
}

/**
 * The UNet's ONNX bytes: sample [B,in,h,w], timestep float32 [B], encoder_hidden_states [B,77,ctx]
 * → out_sample [B,4,h,w], in `dtype`. `widthScale` divides every channel count (tests build a
 * narrow twin that runs in a moment; 1 is the real model).
 */
export function buildSdUnet(arch: UnetArchitecture, dtype: 'fp32' | 'fp16' = 'fp32', widthScale = 1): BuiltUnet {
  const net = new UnetGraph(dtype);
  const { g } = net;
  const ch = arch.blockOutChannels.map((c) => c / widthScale);
  g.input('timestep', 'float32', ['batch']);
  const temb = net.timeEmbedding('timestep', ch[0]!);
  const spatial: Dim[] = ['batch', arch.inChannels, 'height', 'width'];
  g.input('sample', net.type, spatial);
  g.input('encoder_hidden_states', net.type, ['batch', TEXT_LENGTH, arch.crossAttentionDim]);
  const text = 'encoder_hidden_states';
  // The time MLP is 1280 wide whatever widthScale, so ResNets project from 1280.
  const headsAt = (i: number) => Math.max(1, Math.round(arch.heads[i]! / (arch.linearProjection ? widthScale : 1)));

  let h = net.conv('sample', arch.inChannels, ch[0]!, 3);
  const skips: { value: string; channels: number }[] = [{ value: h, channels: ch[0]! }];
  let channels = ch[0]!;
  ch.forEach((out, i) => {
    for (let l = 0; l < arch.layersPerBlock; l++) {
      h = net.resnet(h, temb, channels, out);
      channels = out;
      if (arch.crossAttention[i]) h = net.transformer(h, text, channels, headsAt(i), arch);
      skips.push({ value: h, channels });
    }
    if (i < ch.length - 1) {
      h = net.conv(h, channels, channels, 3, 2);
      skips.push({ value: h, channels });
    }
  });

  h = net.resnet(h, temb, channels, channels);
  h = net.transformer(h, text, channels, headsAt(ch.length - 1), arch);
  h = net.resnet(h, temb, channels, channels);

  const reversed = [...ch].reverse();
  reversed.forEach((out, j) => {
    const i = ch.length - 1 - j;
    for (let l = 0; l <= arch.layersPerBlock; l++) {
      const skip = skips.pop()!;
      h = net.resnet(g.op('Concat', [h, skip.value], { axis: attr.int(1) }), temb, channels + skip.channels, out);
      channels = out;
      if (arch.crossAttention[i]) h = net.transformer(h, text, channels, headsAt(i), arch);
    }
    if (j < ch.length - 1) {
      const up = g.op('Resize', [h, '', g.float(`up${j}.scales`, [4], [1, 1, 2, 2])], { mode: attr.string('nearest') });
      h = net.conv(up, channels, channels, 3);
    }
  });

  const out = net.conv(net.silu(net.groupNorm(h, channels, 1e-5)), channels, 4, 3);
  g.op('Identity', [out], {}, 'out_sample');
  g.output('out_sample', net.type, ['batch', 4, 'height', 'width']);
  return {
    bytes: g.toBytes({ producer: 'depthcast-bench', version: '1', doc: `${arch.name}: Stable Diffusion UNet architecture, constant weights folded at load (for timing only)` }),
    params: net.params,
  };
}
