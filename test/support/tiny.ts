/** Tiny models built once per test process into a temp folder (they're deterministic). */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTinyModel, type TinyModelOptions } from '../../src/tiny/build-tiny.ts';

const root = mkdtempSync(join(tmpdir(), 'depthcast-tiny-'));
const built = new Map<string, Promise<string>>();

export function tinyModelDir(options: TinyModelOptions): Promise<string> {
  const key = JSON.stringify(options);
  let dir = built.get(key);
  if (!dir) {
    const path = join(root, `${options.family}-${options.dtype ?? 'fp32'}-${built.size}`);
    dir = createTinyModel(path, options).then(() => path);
    built.set(key, dir);
  }
  return dir;
}

export const REPO_ROOT = new URL('../../', import.meta.url).pathname;
export const SHARED_CONFORMANCE = join(REPO_ROOT, '..', 'shared', 'conformance');

/** A 64×64 linear-Z frame: ground plane receding to the horizon, sky (inf) on top, a box in front. */
export function sceneDepth(width = 64, height = 64): Float32Array {
  const z = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const horizon = height * 0.35;
      z[y * width + x] = y < horizon ? Infinity : 2 + (20 * (height - y)) / (height - horizon);
      if (x > width * 0.35 && x < width * 0.65 && y > height * 0.4 && y < height * 0.8) z[y * width + x] = 3;
    }
  }
  return z;
}

export function nearnessOf(z: Float32Array, near = 1, far = 50): Float32Array {
  const out = new Float32Array(z.length);
  for (let i = 0; i < z.length; i++) out[i] = Number.isFinite(z[i]!) && z[i]! < far ? (1 / Math.max(z[i]!, near) - 1 / far) / (1 / near - 1 / far) : 0;
  return out;
}
