/**
 * A ControlNet and UNet pair with Stable Diffusion 1.5's I/O at 512²: the ControlNet hands the
 * UNet its 13 residuals in their real shapes (320–1280 channels at 64², 32², 16², 8²; 6.7 M
 * values per batch entry), so the bench moves as many bytes across the onnxruntime boundary as
 * a real export would. The compute is trivial on purpose (1×1 convolutions from pooled inputs,
 * channel means back), so what the bench measures beside the model is the pipeline's and the
 * boundary's cost. Weights are `Expand(constant)`, folded by ORT at load, as in sd-unet.ts.
 */
import { attr, type ElemType, GraphBuilder } from '../../src/models/onnx-graph.ts';

/** SD 1.5's ControlNet residuals: [channels, downscale of the 64² latent]; the last is the mid block. */
export const SD15_RESIDUALS: readonly (readonly [number, number])[] = [
  [320, 1], [320, 1], [320, 1], [320, 2],
  [640, 2], [640, 2], [640, 4],
  [1280, 4], [1280, 4], [1280, 8],
  [1280, 8], [1280, 8],
  [1280, 8],
];

export const residualNames = (i: number) =>
  i === SD15_RESIDUALS.length - 1
    ? { controlnet: 'mid_block_res_sample', unet: 'mid_block_additional_residual' }
    : { controlnet: `down_block_res_sample_${i}`, unet: `down_block_additional_residual_${i}` };

/** Values per batch entry in all residuals at a latent of `latent`² (SD 1.5 at 512²: 6.7 M). */
export function residualValues(latent = 64): number {
  return SD15_RESIDUALS.reduce((sum, [c, s]) => sum + c * (latent / s) ** 2, 0);
}

class Builder {
  readonly g: GraphBuilder;
  private n = 0;
  constructor(name: string, readonly type: ElemType) {
    this.g = new GraphBuilder(name);
  }

  private cast(x: string): string {
    return this.type === 'float16' ? this.g.op('Cast', [x], { to: attr.int(10) }) : x;
  }

  /** A weight of `dims`, one value each (distinct per weight, so ORT does not merge them). */
  weight(dims: number[], value: number): string {
    const k = ++this.n;
    const scalar = this.cast(this.g.float(`w${k}.value`, [], [value * (1 + k * 1e-3)]));
    return this.g.op('Expand', [scalar, this.g.int64(`w${k}.shape`, [dims.length], dims)]);
  }

  constant(value: number): string {
    return this.cast(this.g.float(`c${++this.n}`, [], [value]));
  }

  ints(values: number[]): string {
    return this.g.int64(`i${++this.n}`, [values.length], values);
  }

  /** The inputs the ControlNet and the UNet share: sample [B,4,h,w], timestep float32 [B], encoder_hidden_states [B,77,768]. */
  sdInputs(): void {
    this.g.input('sample', this.type, ['batch', 4, 'height', 'width']);
    this.g.input('timestep', 'float32', ['batch']);
    this.g.input('encoder_hidden_states', this.type, ['batch', 77, 768]);
  }

  /** A per-batch-entry scalar [B,1,1,1]: the mean of the text states, so the model reads them. */
  textBias(): string {
    const mean = this.g.op('ReduceMean', ['encoder_hidden_states'], { axes: attr.ints([1, 2]), keepdims: attr.int(1) });
    return this.g.op('Unsqueeze', [mean, this.ints([3])]);
  }

  /** A per-batch-entry scalar [B,1,1,1] from the timestep (float32 [B]). */
  timeBias(): string {
    return this.cast(this.g.op('Reshape', [this.g.op('Mul', ['timestep', this.g.float(`t${++this.n}`, [], [1e-4])]), this.ints([-1, 1, 1, 1])]));
  }
}

/**
 * ControlNet: sample [B,4,h,w], timestep float32 [B], encoder_hidden_states [B,77,768],
 * controlnet_cond [B,3,8h,8w], conditioning_scale [] → the 13 residuals, scaled.
 */
export function buildSdControlnet(dtype: 'fp32' | 'fp16'): Uint8Array {
  const b = new Builder('sd15_controlnet_io', dtype === 'fp16' ? 'float16' : 'float32');
  const { g } = b;
  b.sdInputs();
  g.input('controlnet_cond', b.type, ['batch', 3, 'image_height', 'image_width']);
  g.input('conditioning_scale', b.type, []);
  const cond = g.op('AveragePool', ['controlnet_cond'], { kernel_shape: attr.ints([8, 8]), strides: attr.ints([8, 8]) });
  const bias = g.op('Add', [b.timeBias(), b.textBias()]);
  const base = g.op('Add', [g.op('Concat', [cond, 'sample'], { axis: attr.int(1) }), bias]);
  const pooled = new Map<number, string>([[1, base]]);
  SD15_RESIDUALS.forEach(([channels, scale], i) => {
    let x = pooled.get(scale);
    if (!x) {
      x = g.op('AveragePool', [base], { kernel_shape: attr.ints([scale, scale]), strides: attr.ints([scale, scale]) });
      pooled.set(scale, x);
    }
    const r = g.op('Conv', [x, b.weight([channels, 7, 1, 1], 0.3), b.weight([channels], 0.01)]);
    const name = residualNames(i).controlnet;
    g.op('Mul', [r, 'conditioning_scale'], {}, name);
    g.output(name, b.type, ['batch', channels, `height/${scale}`, `width/${scale}`]);
  });
  return g.toBytes({ producer: 'depthcast-bench', version: '1', doc: 'SD 1.5 ControlNet I/O (13 residuals), trivial compute (for timing the boundary only)' });
}

/**
 * UNet: sample [B,4,h,w], timestep float32 [B], encoder_hidden_states [B,77,768] and the 13
 * residuals → out_sample [B,4,h,w]. Every residual is read: its channel mean, upsampled, is added.
 */
export function buildSdControlledUnet(dtype: 'fp32' | 'fp16'): Uint8Array {
  const b = new Builder('sd15_unet_io', dtype === 'fp16' ? 'float16' : 'float32');
  const { g } = b;
  b.sdInputs();
  let acc = g.op('Add', [g.op('Mul', ['sample', b.constant(0.9)]), b.timeBias()]);
  acc = g.op('Add', [acc, b.textBias()]);
  SD15_RESIDUALS.forEach(([channels, scale], i) => {
    const name = residualNames(i).unet;
    g.input(name, b.type, ['batch', channels, `height/${scale}`, `width/${scale}`]);
    let m = g.op('ReduceMean', [name], { axes: attr.ints([1]), keepdims: attr.int(1) });
    if (scale > 1) m = g.op('Resize', [m, '', g.float(`up${i}`, [4], [1, 1, scale, scale])], { mode: attr.string('nearest') });
    acc = g.op('Add', [acc, g.op('Mul', [m, b.weight([1, 4, 1, 1], 0.05)])]);
  });
  g.op('Identity', [acc], {}, 'out_sample');
  g.output('out_sample', b.type, ['batch', 4, 'height', 'width']);
  return g.toBytes({ producer: 'depthcast-bench', version: '1', doc: 'SD 1.5 UNet I/O with ControlNet residual inputs, trivial compute (for timing the boundary only)' });
}
