/**
 * The timestep grids of the schedulers (timestep_spacing + steps_offset), built with numpy's float64
 * linspace / arange / round so they match the reference value for value.
 */
import { DepthcastError } from '../errors.ts';
import { f32 } from './precision.ts';

export const TIMESTEP_SPACINGS = ['linspace', 'leading', 'trailing'] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

/** numpy's round(): half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace in float64: i*step + start, the last element set to `stop` when endpoint. */
export function npLinspace(start: number, stop: number, num: number, endpoint = true): number[] {
  const div = endpoint ? num - 1 : num;
  const delta = stop - start;
  const out: number[] = new Array(num);
  if (div <= 0) {
    for (let i = 0; i < num; i++) out[i] = i * delta + start;
    return out;
  }
  const step = delta / div;
  for (let i = 0; i < num; i++) out[i] = (step === 0 ? (i / div) * delta : i * step) + start;
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/** np.arange(start, stop, step) with a float step: length ceil((stop-start)/step), element i = start + i*((start+step)-start). */
export function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const out: number[] = new Array(length);
  if (length === 0) return out;
  out[0] = start;
  if (length === 1) return out;
  out[1] = start + step;
  const delta = out[1] - start;
  for (let i = 2; i < length; i++) out[i] = start + i * delta;
  return out;
}

/**
 * The descending timestep grid of DDIM / PNDM / Euler-type schedulers, before their cast:
 * - linspace: np.linspace(0, T-1, n) (float64; DDIM and PNDM round it, Euler keeps float32 values)
 * - leading: arange(n) * (T // n) + steps_offset
 * - trailing: round(arange(T, 0, -T/n)) - 1
 */
export function spacedTimesteps(spacing: TimestepSpacing, numTrain: number, n: number, stepsOffset: number, integer: boolean): number[] {
  if (spacing === 'linspace') {
    return npLinspace(0, numTrain - 1, n)
      .map((v) => (integer ? roundHalfEven(v) : f32(v)))
      .reverse();
  }
  if (spacing === 'leading') {
    const ratio = Math.floor(numTrain / n);
    const out: number[] = [];
    for (let i = n - 1; i >= 0; i--) out.push(i * ratio + stepsOffset);
    return out;
  }
  return npArange(numTrain, 0, -numTrain / n).map((v) => roundHalfEven(v) - 1);
}

export function checkStepCount(className: string, n: number, max: number): void {
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new DepthcastError('BAD_REQUEST', `${className}: num_inference_steps must be an integer in [1, ${max}], got ${n}`);
  }
}
