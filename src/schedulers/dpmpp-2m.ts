/**
 * DPM-Solver++ multistep (Lu et al. 2022), after diffusers 0.27.2's DPMSolverMultistepScheduler.
 *
 * The solver works on data predictions x0 in λ = ln(α/σ) time. Every step converts the model
 * output to x0, then takes a first-order step for the first step run, for the final step when
 * final_sigmas_type is "zero" or euler_at_final is set or (lower_order_final and fewer than 15
 * steps), and otherwise a second-order step (midpoint or heun) from the last two x0 — or, with
 * solver_order 3, a third-order step once three are stored (second order on the next-to-last step
 * of short runs with lower_order_final).
 *
 * Timesteps: integer grid (linspace/leading/trailing over [0, last) where lambda_min_clipped can
 * cut `last`), σ looked up at those; with use_karras_sigmas (or use_lu_lambdas) σ follows the
 * Karras ρ = 7 (or uniform-λ) ramp between the table ends and each timestep is rounded (half to
 * even) from log-σ interpolation. The last σ is 0 (final_sigmas_type "zero") or σ_0 ("sigma_min").
 *
 * Honours: beta options, rescale_betas_zero_snr, solver_order 1/2/3, solver_type midpoint/heun
 * (logrho/bh1/bh2 map to midpoint and algorithm_type deis to dpmsolver++, as in the reference),
 * prediction_type epsilon/sample/v_prediction, thresholding, lower_order_final, euler_at_final,
 * final_sigmas_type, lambda_min_clipped, sigma_min/sigma_max when present in the config.
 * Refuses: algorithm_type dpmsolver / sde-dpmsolver / sde-dpmsolver++ (deprecated or noise-drawing
 * variants) and variance_type learned / learned_range. Never draws noise.
 */
import { secondOrder } from '../util/elementwise.ts';
import { refuse, type SchedulerSettings } from './config.ts';
import { f32 } from './precision.ts';
import { DDPM_SCHEDULE_DEFAULTS, trainingSchedule } from './training-schedule.ts';
import { checkStepCount, npArange, npLinspace, roundHalfEven, TIMESTEP_SPACINGS, type TimestepSpacing } from './timesteps.ts';
import { interpTable, karrasSigmas, logTable, sigmaTable, sigmaToTimestep } from './sigmas.ts';
import { combine, PREDICTION_TYPES, predictionCoefficients, type PredictionType, thresholdInPlace } from './prediction.ts';
import { sameLength } from './step-inputs.ts';
import { IndexedScheduler } from './indexed.ts';

export const DPM_SOLVER_DEFAULTS = {
  ...DDPM_SCHEDULE_DEFAULTS,
  solver_order: 2,
  prediction_type: 'epsilon',
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  algorithm_type: 'dpmsolver++',
  solver_type: 'midpoint',
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_lu_lambdas: false,
  final_sigmas_type: 'zero',
  lambda_min_clipped: -Infinity,
  variance_type: null,
  timestep_spacing: 'linspace',
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} as const;

/** α_t = 1/√(σ²+1), σ_t = σ·α_t and λ = ln α_t − ln σ_t for a σ-space noise level. */
function levels(sigma: number): { alpha: number; sigma: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const s = sigma * alpha;
  return { alpha, sigma: s, lambda: Math.log(alpha) - Math.log(s) };
}

export class DPMSolverMultistepScheduler extends IndexedScheduler {
  readonly className = 'DPMSolverMultistepScheduler';
  readonly initNoiseSigma = 1;
  private readonly numTrain: number;
  private readonly table: Float32Array;
  private readonly alphasCumprod: Float32Array;
  private readonly solverOrder: number;
  private readonly prediction: PredictionType;
  private readonly heun: boolean;
  private readonly lowerOrderFinal: boolean;
  private readonly eulerAtFinal: boolean;
  private readonly karras: boolean;
  private readonly luLambdas: boolean;
  private readonly finalSigmaZero: boolean;
  private readonly lambdaMinClipped: number;
  private readonly spacing: TimestepSpacing;
  private readonly stepsOffset: number;
  private readonly thresholding: { ratio: number; maxValue: number } | null;
  private readonly sigmaMin: number | null;
  private readonly sigmaMax: number | null;
  private sigmas: Float32Array;
  /** The last `solverOrder` x0 predictions, oldest first (null until filled). */
  private x0History: (Float32Array | null)[];
  private lowerOrderNums = 0;

  constructor(settings: SchedulerSettings) {
    super();
    const schedule = trainingSchedule(settings, { rescaleKey: true, sigmaSpace: true });
    this.numTrain = schedule.numTrainTimesteps;
    this.alphasCumprod = schedule.alphasCumprod;
    this.table = sigmaTable(schedule.alphasCumprod);
    // The reference stores algorithm_type deis as dpmsolver++ and solver types logrho/bh1/bh2 as midpoint.
    settings.choice('algorithm_type', ['dpmsolver++', 'deis'] as const);
    const solverType = settings.choice('solver_type', ['midpoint', 'heun', 'logrho', 'bh1', 'bh2'] as const);
    this.heun = solverType === 'heun';
    this.solverOrder = settings.finite('solver_order', (v) => v === 1 || v === 2 || v === 3, '1, 2 or 3');
    this.prediction = settings.choice('prediction_type', PREDICTION_TYPES);
    this.thresholding = settings.flag('thresholding')
      ? {
          ratio: settings.finite('dynamic_thresholding_ratio', (v) => v >= 0 && v <= 1, 'a number in [0, 1]'),
          maxValue: settings.number('sample_max_value'),
        }
      : null;
    this.lowerOrderFinal = settings.flag('lower_order_final');
    this.eulerAtFinal = settings.flag('euler_at_final');
    this.karras = settings.flag('use_karras_sigmas');
    this.luLambdas = settings.flag('use_lu_lambdas');
    this.finalSigmaZero = settings.choice('final_sigmas_type', ['zero', 'sigma_min'] as const) === 'zero';
    this.lambdaMinClipped = settings.number('lambda_min_clipped');
    if (Number.isNaN(this.lambdaMinClipped)) refuse(this.className, 'lambda_min_clipped must be a number or -Infinity');
    const varianceType = settings.optionalString('variance_type');
    if (varianceType === 'learned' || varianceType === 'learned_range') {
      refuse(this.className, `variance_type "${varianceType}" (a model that also predicts variance channels) is not supported; supported: null`);
    }
    this.spacing = settings.choice('timestep_spacing', TIMESTEP_SPACINGS);
    this.stepsOffset = settings.integer('steps_offset', 0);
    this.sigmaMin = settings.hiddenNumber('sigma_min');
    this.sigmaMax = settings.hiddenNumber('sigma_max');
    this.sigmas = this.table.slice();
    this.x0History = new Array<Float32Array | null>(this.solverOrder).fill(null);
    this.stepTimesteps = npLinspace(0, this.numTrain - 1, this.numTrain)
      .map((v) => f32(v))
      .reverse();
  }

  /** One past the largest usable timestep: timesteps whose λ falls below lambda_min_clipped are cut from the top. */
  private lastTimestep(): number {
    let clipped = 0;
    for (let t = this.numTrain - 1; t >= 0; t--) {
      const a = this.alphasCumprod[t]!;
      const lambda = f32(f32(Math.log(f32(Math.sqrt(a)))) - f32(Math.log(f32(Math.sqrt(f32(1 - a))))));
      if (lambda < this.lambdaMinClipped) clipped++;
      else break;
    }
    return this.numTrain - clipped;
  }

  private grid(n: number): number[] {
    const last = this.lastTimestep();
    if (this.spacing === 'linspace') {
      return npLinspace(0, last - 1, n + 1)
        .map(roundHalfEven)
        .reverse()
        .slice(0, n);
    }
    if (this.spacing === 'leading') {
      const ratio = Math.floor(last / (n + 1));
      const out: number[] = [];
      for (let i = n; i >= 1; i--) out.push(i * ratio + this.stepsOffset);
      return out;
    }
    return npArange(last, 0, -this.numTrain / n).map((v) => roundHalfEven(v) - 1);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkStepCount(this.className, numInferenceSteps, this.numTrain);
    let timesteps = this.grid(numInferenceSteps);
    let sigmas: number[];
    const logs = logTable(this.table);
    if (this.karras) {
      const sigmaMin = this.sigmaMin ?? this.table[0]!;
      const sigmaMax = this.sigmaMax ?? this.table[this.table.length - 1]!;
      sigmas = karrasSigmas(sigmaMin, sigmaMax, numInferenceSteps);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToTimestep(s, logs)));
    } else if (this.luLambdas) {
      const top = logs[logs.length - 1]!;
      const bottom = logs[0]!;
      sigmas = npLinspace(0, 1, numInferenceSteps).map((r) => Math.exp(top + r * (bottom - top)));
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToTimestep(s, logs)));
    } else {
      sigmas = timesteps.map((t) => interpTable(t, this.table));
    }
    const lastSigma = this.finalSigmaZero ? 0 : Math.sqrt(f32(f32(1 - this.alphasCumprod[0]!) / this.alphasCumprod[0]!));
    this.sigmas = Float32Array.from([...sigmas, lastSigma]);
    this.x0History = new Array<Float32Array | null>(this.solverOrder).fill(null);
    this.lowerOrderNums = 0;
    this.resetIndices(timesteps);
  }

  /** The reference falls back to the last index when a timestep is not in the schedule. */
  protected override missingTimestep(): number {
    return this.stepTimesteps.length - 1;
  }

  scaleModelInput(sample: Float32Array): Float32Array {
    return sample;
  }

  step(modelOutput: Float32Array, t: number, sample: Float32Array): Float32Array {
    sameLength(this.className, modelOutput, sample, 'model output and sample');
    const index = this.currentIndex(t);
    const count = this.stepTimesteps.length;
    const shortRun = this.lowerOrderFinal && count < 15;
    const finalFirstOrder = index === count - 1 && (this.eulerAtFinal || shortRun || this.finalSigmaZero);
    const penultimateSecondOrder = index === count - 2 && shortRun;

    // Data prediction x0 at this step's σ.
    const here = levels(this.sigmas[index]!);
    const [cx, cm] = predictionCoefficients(this.prediction, 'x0', here.alpha, here.sigma);
    const x0 = new Float32Array(sample.length);
    combine(x0, sample, cx, modelOutput, cm);
    if (this.thresholding) thresholdInPlace(x0, this.thresholding.ratio, this.thresholding.maxValue);
    this.x0History.shift();
    this.x0History.push(x0);

    let out: Float32Array;
    if (this.solverOrder === 1 || this.lowerOrderNums < 1 || finalFirstOrder) {
      out = this.firstOrder(index, sample, x0);
    } else if (this.solverOrder === 2 || this.lowerOrderNums < 2 || penultimateSecondOrder) {
      out = this.secondOrder(index, sample);
    } else {
      out = this.thirdOrder(index, sample);
    }
    if (this.lowerOrderNums < this.solverOrder) this.lowerOrderNums++;
    this.advance();
    return out;
  }

  /** x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x0 */
  private firstOrder(index: number, sample: Float32Array, x0: Float32Array): Float32Array {
    const to = levels(this.sigmas[index + 1]!);
    const from = levels(this.sigmas[index]!);
    const h = to.lambda - from.lambda;
    const keep = to.sigma / from.sigma;
    const gain = -to.alpha * (Math.exp(-h) - 1);
    const out = new Float32Array(sample.length);
    combine(out, sample, keep, x0, gain);
    return out;
  }

  private secondOrder(index: number, sample: Float32Array): Float32Array {
    const to = levels(this.sigmas[index + 1]!);
    const s0 = levels(this.sigmas[index]!);
    const s1 = levels(this.sigmas[index - 1]!);
    const m0 = this.x0History[this.solverOrder - 1]!;
    const m1 = this.x0History[this.solverOrder - 2]!;
    const h = to.lambda - s0.lambda;
    const r0 = (s0.lambda - s1.lambda) / h;
    const keep = to.sigma / s0.sigma;
    const expm1 = Math.exp(-h) - 1;
    const d0Gain = -to.alpha * expm1;
    // D1 = (m0 − m1)/r0; midpoint weighs it by −½α_t(e^{−h}−1), heun by α_t((e^{−h}−1)/h + 1).
    const d1Gain = (this.heun ? to.alpha * (expm1 / h + 1) : -0.5 * to.alpha * expm1) / r0;
    const out = new Float32Array(sample.length);
    secondOrder(out, sample, m0, m1, keep, d0Gain, d1Gain);
    return out;
  }

  private thirdOrder(index: number, sample: Float32Array): Float32Array {
    const to = levels(this.sigmas[index + 1]!);
    const s0 = levels(this.sigmas[index]!);
    const s1 = levels(this.sigmas[index - 1]!);
    const s2 = levels(this.sigmas[index - 2]!);
    const m0 = this.x0History[2]!;
    const m1 = this.x0History[1]!;
    const m2 = this.x0History[0]!;
    const h = to.lambda - s0.lambda;
    const r0 = (s0.lambda - s1.lambda) / h;
    const r1 = (s1.lambda - s2.lambda) / h;
    const keep = to.sigma / s0.sigma;
    const expm1 = Math.exp(-h) - 1;
    const g0 = -to.alpha * expm1;
    const g1 = to.alpha * (expm1 / h + 1);
    const g2 = -to.alpha * ((expm1 + h) / (h * h) - 0.5);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const d10 = (m0[i]! - m1[i]!) / r0;
      const d11 = (m1[i]! - m2[i]!) / r1;
      const d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11);
      const d2 = (d10 - d11) / (r0 + r1);
      out[i] = keep * sample[i]! + g0 * m0[i]! + g1 * d1 + g2 * d2;
    }
    return out;
  }

  /** α·x0 + σ·n with α = 1/√(σ²+1), at the noise level add_noise picks (see IndexedScheduler). */
  addNoise(original: Float32Array, noise: Float32Array, t: number): Float32Array {
    sameLength(this.className, original, noise, 'sample and noise');
    const { alpha, sigma } = levels(this.sigmas[this.noiseIndex(t)]!);
    const out = new Float32Array(original.length);
    for (let i = 0; i < out.length; i++) out[i] = alpha * original[i]! + sigma * noise[i]!;
    return out;
  }
}
