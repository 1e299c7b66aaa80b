/**
 * Precision policy of the schedulers: the reference (diffusers 0.27.2) builds betas and
 * alphas_cumprod as torch float32 tensors and derives sigma tables from them in float32; timestep
 * grids come from numpy in float64 (cast to float32 for the Euler family). We reproduce the float32
 * values where they decide a discrete outcome (timestep values, their rounding and truncation, table
 * lookups) and use float64 for per-step arithmetic, which stays far inside the conformance tolerance.
 */

/** Rounds to the nearest float32, as a torch float32 tensor stores a value. */
export const f32 = Math.fround;
