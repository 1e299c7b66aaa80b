/**
 * Edge alignment between an image and the depth it was generated from: the Pearson correlation of
 * their Sobel gradient magnitudes (image luma vs inverse depth, so background is 0, not infinite).
 * The same measure scores both modes; copying a warped previous frame cannot raise it where the
 * current depth has edges the previous frame did not.
 */

function sobelMagnitude(data: Float32Array, width: number, height: number): Float32Array {
  const out = new Float32Array(width * height);
  const at = (x: number, y: number) => data[Math.min(Math.max(y, 0), height - 1) * width + Math.min(Math.max(x, 0), width - 1)]!;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const gx = at(x + 1, y - 1) + 2 * at(x + 1, y) + at(x + 1, y + 1) - at(x - 1, y - 1) - 2 * at(x - 1, y) - at(x - 1, y + 1);
      const gy = at(x - 1, y + 1) + 2 * at(x, y + 1) + at(x + 1, y + 1) - at(x - 1, y - 1) - 2 * at(x, y - 1) - at(x + 1, y - 1);
      out[y * width + x] = Math.hypot(gx, gy);
    }
  }
  return out;
}

/** image: [3,H,W] in [0,1]; depth: linear Z (H×W, +Infinity = background). Result in [−1, 1]. */
export function edgeAlignment(image: Float32Array, depth: Float32Array, width: number, height: number): number {
  const plane = width * height;
  const luma = new Float32Array(plane);
  for (let i = 0; i < plane; i++) luma[i] = 0.299 * image[i]! + 0.587 * image[plane + i]! + 0.114 * image[2 * plane + i]!;
  const inverse = new Float32Array(plane);
  for (let i = 0; i < plane; i++) inverse[i] = 1 / depth[i]!;
  const a = sobelMagnitude(luma, width, height);
  const b = sobelMagnitude(inverse, width, height);
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < plane; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= plane;
  mb /= plane;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < plane; i++) {
    const da = a[i]! - ma;
    const db = b[i]! - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : 0;
}
