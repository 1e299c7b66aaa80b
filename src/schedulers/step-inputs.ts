/** Checks and draws on the inputs of one scheduler step. */
import { DepthcastError } from '../errors.ts';
import type { NoiseSource } from './types.ts';

/** Draws one step's noise; into `scratch` when the source can fill, so a step allocates nothing for it. */
export function drawNoise(noise: NoiseSource | undefined, length: number, who: string, scratch?: Float32Array): Float32Array {
  if (!noise) throw new DepthcastError('OUT_OF_NOISE', `${who} draws noise on this step but no noise source was given`);
  if (scratch && scratch.length === length && noise.fill) {
    noise.fill(scratch);
    return scratch;
  }
  const drawn = noise.next(length);
  if (drawn.length !== length) {
    throw new DepthcastError('OUT_OF_NOISE', `${who} asked the noise source for ${length} values and got ${drawn.length}`);
  }
  return drawn;
}

export function sameLength(className: string, a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new DepthcastError('INTERNAL', `${className}: ${what} lengths differ (${a.length} vs ${b.length})`);
}
