/**
 * Resizing that matches torch.nn.functional.interpolate exactly where the reference uses it:
 * bicubic, align_corners=False, A = -0.75, source index (dst + 0.5) * in/out - 0.5,
 * border taps clamped, no antialiasing.
 */
const A = -0.75;

function cubicWeights(t: number, out: Float64Array): void {
  // Keys' cubic convolution with a = -0.75, for taps at offsets -1, 0, 1, 2.
  const x1 = t + 1;
  const x2 = t;
  const x3 = 1 - t;
  const x4 = 2 - t;
  out[0] = ((A * x1 - 5 * A) * x1 + 8 * A) * x1 - 4 * A;
  out[1] = ((A + 2) * x2 - (A + 3)) * x2 * x2 + 1;
  out[2] = ((A + 2) * x3 - (A + 3)) * x3 * x3 + 1;
  out[3] = ((A * x4 - 5 * A) * x4 + 8 * A) * x4 - 4 * A;
}

interface Taps {
  index: Int32Array; // 4 per output
  weight: Float64Array; // 4 per output
}

function taps(inSize: number, outSize: number): Taps {
  const scale = Math.fround(inSize / outSize);
  const index = new Int32Array(outSize * 4);
  const weight = new Float64Array(outSize * 4);
  const w = new Float64Array(4);
  for (let o = 0; o < outSize; o++) {
    const src = scale * (o + 0.5) - 0.5;
    const i0 = Math.floor(src);
    cubicWeights(src - i0, w);
    for (let k = 0; k < 4; k++) {
      index[o * 4 + k] = Math.min(Math.max(i0 - 1 + k, 0), inSize - 1);
      weight[o * 4 + k] = w[k]!;
    }
  }
  return { index, weight };
}

/** Bicubic resize of `channels` planes of inH×inW to outH×outW (planar, row-major). */
export function resizeBicubic(src: Float32Array, channels: number, inH: number, inW: number, outH: number, outW: number): Float32Array {
  const out = new Float32Array(channels * outH * outW);
  if (inH === outH && inW === outW) {
    out.set(src.subarray(0, out.length));
    return out;
  }
  const ty = taps(inH, outH);
  const tx = taps(inW, outW);
  const rows = new Float64Array(inH * outW);
  for (let c = 0; c < channels; c++) {
    const plane = c * inH * inW;
    for (let y = 0; y < inH; y++) {
      for (let x = 0; x < outW; x++) {
        let acc = 0;
        for (let k = 0; k < 4; k++) acc += tx.weight[x * 4 + k]! * src[plane + y * inW + tx.index[x * 4 + k]!]!;
        rows[y * outW + x] = acc;
      }
    }
    const base = c * outH * outW;
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        let acc = 0;
        for (let k = 0; k < 4; k++) acc += ty.weight[y * 4 + k]! * rows[ty.index[y * 4 + k]! * outW + x]!;
        out[base + y * outW + x] = acc;
      }
    }
  }
  return out;
}
