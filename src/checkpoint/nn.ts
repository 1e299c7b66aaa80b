/**
 * The layers the checkpoint builders share, as ONNX subgraphs whose weights come from a
 * safetensors file by their state-dict names (diffusers / transformers module semantics).
 * Every weight read is recorded, so a builder can refuse a checkpoint that holds weights its
 * config did not account for.
 */
import { DepthcastError } from '../errors.ts';
import { attr, GraphBuilder } from '../models/onnx-graph.ts';
import type { SafetensorsFile } from './safetensors.ts';
import type { ModelFileWriter } from './weights.ts';

export class Net {
  readonly g: GraphBuilder;
  private readonly used = new Set<string>();
  private constants = 0;
  /** Called after each weight is written (progress). */
  onWeight?: (name: string, bytes: number) => void;

  constructor(
    name: string,
    private readonly file: SafetensorsFile,
    private readonly writer: ModelFileWriter,
  ) {
    this.g = new GraphBuilder(name);
  }

  has(name: string): boolean {
    return this.file.tensors.has(name);
  }

  shapeOf(name: string): number[] {
    const e = this.file.tensors.get(name);
    if (!e) throw new DepthcastError('BAD_MODEL', `${this.file.path}: missing weight ${name} (the config asks for it)`);
    return e.shape;
  }

  /** Checkpoint tensors no layer read: weights of a module the builder does not know. */
  unused(): string[] {
    return [...this.file.tensors.keys()].filter((n) => !this.used.has(n));
  }

  /** A weight as an initializer, optionally re-laid out (`dims`) or transformed (e.g. transposed). */
  async param(name: string, dims?: number[], transform?: (values: Float32Array, shape: number[]) => Float32Array): Promise<string> {
    const shape = this.shapeOf(name);
    this.used.add(name);
    let values = await this.file.readFloat32(name);
    if (transform) values = transform(values, shape);
    const out = await this.writer.put(this.g, name, dims ?? shape, values);
    this.onWeight?.(name, values.byteLength);
    return out;
  }

  constant(value: number): string {
    return this.g.float(`const_${this.constants++}`, [], [value]);
  }

  floats(dims: number[], values: ArrayLike<number>): string {
    return this.g.float(`const_${this.constants++}`, dims, values);
  }

  ints(values: number[]): string {
    return this.g.int64(`const_${this.constants++}`, [values.length], values);
  }

  op(type: string, inputs: string[], attrs: Parameters<GraphBuilder['op']>[2] = {}, out?: string): string {
    return this.g.op(type, inputs, attrs, out);
  }

  add(a: string, b: string): string {
    return this.op('Add', [a, b]);
  }

  mul(a: string, b: string): string {
    return this.op('Mul', [a, b]);
  }

  silu(x: string): string {
    return this.mul(x, this.op('Sigmoid', [x]));
  }

  /** Exact (erf) GELU. */
  gelu(x: string): string {
    const erf = this.op('Erf', [this.mul(x, this.constant(Math.SQRT1_2))]);
    return this.mul(x, this.mul(this.add(erf, this.constant(1)), this.constant(0.5)));
  }

  /** CLIP's quick_gelu: x·σ(1.702x). */
  quickGelu(x: string): string {
    return this.mul(x, this.op('Sigmoid', [this.mul(x, this.constant(1.702))]));
  }

  /** Conv2d from `<prefix>.weight` [out,in,kh,kw] and `<prefix>.bias`; pads are [top, left, bottom, right]. */
  async conv(x: string, prefix: string, options: { stride?: number; pads?: [number, number, number, number] } = {}): Promise<string> {
    const [, , kh, kw] = this.shapeOf(`${prefix}.weight`) as [number, number, number, number];
    const ph = (kh - 1) / 2;
    const pw = (kw - 1) / 2;
    const stride = options.stride ?? 1;
    const inputs = [x, await this.param(`${prefix}.weight`)];
    if (this.has(`${prefix}.bias`)) inputs.push(await this.param(`${prefix}.bias`));
    return this.op('Conv', inputs, {
      kernel_shape: attr.ints([kh, kw]),
      pads: attr.ints(options.pads ?? [ph, pw, ph, pw]),
      strides: attr.ints([stride, stride]),
    });
  }

  /** Linear y = x·Wᵀ + b over the last axis; W [out,in] is stored transposed for MatMul. */
  async linear(x: string, prefix: string): Promise<string> {
    const [outDim, inDim] = this.shapeOf(`${prefix}.weight`) as [number, number];
    const w = await this.param(`${prefix}.weight`, [inDim, outDim], (v) => {
      const t = new Float32Array(v.length);
      for (let o = 0; o < outDim; o++) for (let i = 0; i < inDim; i++) t[i * outDim + o] = v[o * inDim + i]!;
      return t;
    });
    const y = this.op('MatMul', [x, w]);
    return this.has(`${prefix}.bias`) ? this.add(y, await this.param(`${prefix}.bias`)) : y;
  }

  /** A [out,in,1,1] convolution weight used as a linear layer, or a [out,in] linear weight as a 1×1 convolution: by the stored shape. */
  outChannels(prefix: string): number {
    return this.shapeOf(`${prefix}.weight`)[0]!;
  }

  /** GroupNorm over [B,C,...]: InstanceNormalization on [B,G,rest], then the per-channel affine. */
  async groupNorm(x: string, prefix: string, groups: number, eps: number): Promise<string> {
    const [channels] = this.shapeOf(`${prefix}.weight`) as [number];
    if (channels % groups !== 0) throw new DepthcastError('BAD_MODEL', `${prefix}: ${channels} channels do not split into ${groups} groups (norm_num_groups)`);
    const grouped = this.op('Reshape', [x, this.ints([0, groups, -1])]);
    const normed = this.op('InstanceNormalization', [grouped, this.floats([groups], new Array(groups).fill(1)), this.floats([groups], new Array(groups).fill(0))], {
      epsilon: attr.float(eps),
    });
    const back = this.op('Reshape', [normed, this.op('Shape', [x])]);
    const scale = await this.param(`${prefix}.weight`, [channels, 1, 1]);
    const shift = await this.param(`${prefix}.bias`, [channels, 1, 1]);
    return this.add(this.mul(back, scale), shift);
  }

  async layerNorm(x: string, prefix: string, eps: number): Promise<string> {
    return this.op('LayerNormalization', [x, await this.param(`${prefix}.weight`), await this.param(`${prefix}.bias`)], {
      axis: attr.int(-1),
      epsilon: attr.float(eps),
    });
  }

  /**
   * Multi-head attention of x [B,N,C] over context [B,M,Cc]: `q`, `k`, `v` and `out` are the
   * prefixes of the four projections. `causal` masks later positions (CLIP).
   */
  async attention(x: string, context: string, p: { q: string; k: string; v: string; out: string }, heads: number, causal?: string): Promise<string> {
    const dim = this.outChannels(p.q);
    if (dim % heads !== 0) throw new DepthcastError('BAD_MODEL', `${p.q}: width ${dim} does not split into ${heads} heads`);
    const d = dim / heads;
    const split = (t: string) => this.op('Transpose', [this.op('Reshape', [t, this.ints([0, -1, heads, d])])], { perm: attr.ints([0, 2, 1, 3]) });
    const q = split(await this.linear(x, p.q));
    const k = split(await this.linear(context, p.k));
    const v = split(await this.linear(context, p.v));
    let scores = this.mul(this.op('MatMul', [q, this.op('Transpose', [k], { perm: attr.ints([0, 1, 3, 2]) })]), this.constant(1 / Math.sqrt(d)));
    if (causal) scores = this.add(scores, causal);
    const attended = this.op('MatMul', [this.op('Softmax', [scores], { axis: attr.int(-1) }), v]);
    const merged = this.op('Reshape', [this.op('Transpose', [attended], { perm: attr.ints([0, 2, 1, 3]) }), this.ints([0, -1, dim])]);
    return this.linear(merged, p.out);
  }

  /** [B,C,H,W] → [B,HW,C] */
  toTokens(x: string, channels: number): string {
    return this.op('Transpose', [this.op('Reshape', [x, this.ints([0, channels, -1])])], { perm: attr.ints([0, 2, 1]) });
  }

  /** [B,HW,C] → the shape of `like` [B,C,H,W] */
  fromTokens(t: string, like: string): string {
    return this.op('Reshape', [this.op('Transpose', [t], { perm: attr.ints([0, 2, 1]) }), this.op('Shape', [like])]);
  }

  /** Nearest up-sampling of x [B,C,h,w] to the spatial size of `like` (PyTorch nearest: src = ⌊dst·in/out⌋). */
  resizeLike(x: string, like: string): string {
    const sizes = this.op('Concat', [this.op('Shape', [x], { start: attr.int(0), end: attr.int(2) }), this.op('Shape', [like], { start: attr.int(2), end: attr.int(4) })], {
      axis: attr.int(0),
    });
    return this.op('Resize', [x, '', '', sizes], {
      mode: attr.string('nearest'),
      coordinate_transformation_mode: attr.string('asymmetric'),
      nearest_mode: attr.string('floor'),
    });
  }

  /** Nearest ×2 up-sampling. */
  upsample2x(x: string): string {
    return this.op('Resize', [x, '', this.floats([4], [1, 1, 2, 2])], {
      mode: attr.string('nearest'),
      coordinate_transformation_mode: attr.string('asymmetric'),
      nearest_mode: attr.string('floor'),
    });
  }
}
