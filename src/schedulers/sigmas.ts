/**
 * σ tables of the sigma-space schedulers (Euler family, DPM-Solver): σ per train timestep, its
 * interpolation, Karras sigmas and the σ -> fractional timestep lookup.
 */
import { f32 } from './precision.ts';
import { npLinspace } from './timesteps.ts';

/** σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) for every train timestep, ascending in t, each op rounded to float32 as torch does. */
export function sigmaTable(alphasCumprod: Float32Array): Float32Array {
  const out = new Float32Array(alphasCumprod.length);
  for (let i = 0; i < out.length; i++) {
    const a = alphasCumprod[i]!;
    out[i] = Math.sqrt(f32(f32(1 - a) / a));
  }
  return out;
}

/** np.interp(x, arange(len(table)), table) for one x. */
export function interpTable(x: number, table: ArrayLike<number>): number {
  const last = table.length - 1;
  if (Number.isNaN(x)) return NaN;
  if (x <= 0) return table[0]!;
  if (x >= last) return table[last]!;
  const j = Math.floor(x);
  if (j === x) return table[j]!;
  const slope = table[j + 1]! - table[j]!;
  return slope * (x - j) + table[j]!;
}

/** Karras et al. (2022) sigmas, ρ = 7, from σ_max down to σ_min in n points (float64). */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/** Natural log of each float32 sigma, kept in float32 (numpy's log of a float32 array). */
export function logTable(sigmas: Float32Array): Float32Array {
  return sigmas.map((s) => Math.log(s));
}

/**
 * Fractional train timestep whose log-sigma matches `sigma`, by linear interpolation in log-sigma
 * between neighbouring table entries (diffusers' _sigma_to_t): the lower neighbour is the last
 * entry not above log σ (index 0 if none), capped so a higher neighbour exists; the weight is clipped to [0, 1].
 * The log-σ table is float32 (numpy's log of a float32 array); σ itself is float64.
 */
export function sigmaToTimestep(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  let low = 0;
  for (let i = 0; i < n; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, n - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  // numpy subtracts the two float32 table entries in float32; the numerator is float64.
  const w = Math.min(Math.max((lo - logSigma) / f32(lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}
