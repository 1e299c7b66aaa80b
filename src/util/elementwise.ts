/**
 * The per-step elementwise passes of the schedulers and of classifier-free guidance. Each takes
 * float32 arrays, computes in double in a fixed order and rounds once into `out`. They run in
 * WebAssembly SIMD (elementwise.wat), which writes the same bits as the JavaScript loops below:
 * those stay the reference and the fallback (no SIMD, or arrays too large for the module's
 * fixed memory). On this project's 2-core VM a JavaScript pass over 16384 float32 values (one
 * 512×512 image's latents) took 45-65 µs; a scheduler step makes two to four of them.
 */
import { ELEMENTWISE_WASM_BASE64 } from './elementwise-wasm.ts';
import { lazyWasm } from './wasm.ts';

interface ElementwiseModule {
  memory: WebAssembly.Memory;
  lin2(x: number, m: number, out: number, n: number, cx: number, cm: number): void;
  scale(x: number, out: number, n: number, s: number): void;
  guide(u: number, c: number, out: number, n: number, g: number): void;
  euler(x: number, m: number, out: number, n: number, cx: number, cm: number, slope: number): void;
  ancestral(x: number, m: number, fresh: number, out: number, n: number, cx: number, cm: number, slope: number, up: number): void;
  secondOrder(x: number, m0: number, m1: number, out: number, n: number, keep: number, d0: number, d1: number): void;
  lcmNoisy(x0: number, x: number, fresh: number, out: number, n: number, cOut: number, cSkip: number, keep: number, add: number): void;
}

const elementwiseModule = lazyWasm<ElementwiseModule>(ELEMENTWISE_WASM_BASE64);
let heap: Float32Array | undefined;

/**
 * Copies `inputs` into consecutive slots of the module's memory and gives their byte offsets,
 * then the output slot's; undefined where the module is missing or they do not fit. A slot holds
 * n rounded up to a multiple of 4 values, so the kernels' spare odd value stays inside it.
 */
function slots(module: ElementwiseModule, n: number, inputs: Float32Array[]): number[] | undefined {
  const slotValues = (n + 3) & ~3;
  if ((inputs.length + 1) * slotValues * 4 > module.memory.buffer.byteLength) return undefined;
  heap ??= new Float32Array(module.memory.buffer);
  const offsets = [];
  for (let k = 0; k < inputs.length; k++) {
    heap.set(inputs[k]!.length === n ? inputs[k]! : inputs[k]!.subarray(0, n), k * slotValues);
    offsets.push(k * slotValues * 4);
  }
  offsets.push(inputs.length * slotValues * 4);
  return offsets;
}

/** Whether a pass over n values with `inputs` input arrays runs in WebAssembly here. */
export function elementwiseInWasm(n: number, inputs: number): boolean {
  const module = elementwiseModule();
  return module !== null && (inputs + 1) * ((n + 3) & ~3) * 4 <= module.memory.buffer.byteLength;
}

function readOut(out: Float32Array, offset: number): void {
  out.set(heap!.subarray(offset / 4, offset / 4 + out.length));
}

/** out = cx·x + cm·m */
export function lin2(out: Float32Array, x: Float32Array, cx: number, m: Float32Array, cm: number): void {
  const module = elementwiseModule();
  const at = module && slots(module, out.length, [x, m]);
  if (!at) return elementwiseJs.lin2(out, x, cx, m, cm);
  module.lin2(at[0]!, at[1]!, at[2]!, out.length, cx, cm);
  readOut(out, at[2]!);
}

/** out = x·s */
export function scale(out: Float32Array, x: Float32Array, s: number): void {
  const module = elementwiseModule();
  const at = module && slots(module, out.length, [x]);
  if (!at) return elementwiseJs.scale(out, x, s);
  module.scale(at[0]!, at[1]!, out.length, s);
  readOut(out, at[1]!);
}

/** Classifier-free guidance: out = u + g·(c − u) */
export function guide(out: Float32Array, u: Float32Array, c: Float32Array, g: number): void {
  const module = elementwiseModule();
  const at = module && slots(module, out.length, [u, c]);
  if (!at) return elementwiseJs.guide(out, u, c, g);
  module.guide(at[0]!, at[1]!, at[2]!, out.length, g);
  readOut(out, at[2]!);
}

/** Euler: out = x + (x − x0)·slope with x0 = cx·x + cm·m in double. */
export function euler(out: Float32Array, x: Float32Array, m: Float32Array, cx: number, cm: number, slope: number): void {
  const module = elementwiseModule();
  const at = module && slots(module, out.length, [x, m]);
  if (!at) return elementwiseJs.euler(out, x, m, cx, cm, slope);
  module.euler(at[0]!, at[1]!, at[2]!, out.length, cx, cm, slope);
  readOut(out, at[2]!);
}

/** Euler ancestral: out = x + (x − x0)·slope + fresh·up with x0 = cx·x + cm·m in double. */
export function ancestral(out: Float32Array, x: Float32Array, m: Float32Array, fresh: Float32Array, cx: number, cm: number, slope: number, up: number): void {
  const module = elementwiseModule();
  const at = module && slots(module, out.length, [x, m, fresh]);
  if (!at) return elementwiseJs.ancestral(out, x, m, fresh, cx, cm, slope, up);
  module.ancestral(at[0]!, at[1]!, at[2]!, at[3]!, out.length, cx, cm, slope, up);
  readOut(out, at[3]!);
}

/** DPM-Solver++ second order: out = keep·x + d0·m0 + d1·(m0 − m1) */
export function secondOrder(out: Float32Array, x: Float32Array, m0: Float32Array, m1: Float32Array, keep: number, d0: number, d1: number): void {
  const module = elementwiseModule();
  const at = module && slots(module, out.length, [x, m0, m1]);
  if (!at) return elementwiseJs.secondOrder(out, x, m0, m1, keep, d0, d1);
  module.secondOrder(at[0]!, at[1]!, at[2]!, at[3]!, out.length, keep, d0, d1);
  readOut(out, at[3]!);
}

/** LCM between steps: out = keep·d + add·fresh with d = cOut·x0 + cSkip·x in double. */
export function lcmNoisy(out: Float32Array, x0: Float32Array, x: Float32Array, fresh: Float32Array, cOut: number, cSkip: number, keep: number, add: number): void {
  const module = elementwiseModule();
  const at = module && slots(module, out.length, [x0, x, fresh]);
  if (!at) return elementwiseJs.lcmNoisy(out, x0, x, fresh, cOut, cSkip, keep, add);
  module.lcmNoisy(at[0]!, at[1]!, at[2]!, at[3]!, out.length, cOut, cSkip, keep, add);
  readOut(out, at[3]!);
}

/** The JavaScript reference of each pass: what the WebAssembly must reproduce bit for bit. */
export const elementwiseJs = {
  lin2(out: Float32Array, x: Float32Array, cx: number, m: Float32Array, cm: number): void {
    for (let i = 0; i < out.length; i++) out[i] = cx * x[i]! + cm * m[i]!;
  },
  scale(out: Float32Array, x: Float32Array, s: number): void {
    for (let i = 0; i < out.length; i++) out[i] = x[i]! * s;
  },
  guide(out: Float32Array, u: Float32Array, c: Float32Array, g: number): void {
    for (let i = 0; i < out.length; i++) {
      const ui = u[i]!;
      out[i] = ui + g * (c[i]! - ui);
    }
  },
  euler(out: Float32Array, x: Float32Array, m: Float32Array, cx: number, cm: number, slope: number): void {
    for (let i = 0; i < out.length; i++) {
      const xi = x[i]!;
      const x0 = cx * xi + cm * m[i]!;
      out[i] = xi + (xi - x0) * slope;
    }
  },
  ancestral(out: Float32Array, x: Float32Array, m: Float32Array, fresh: Float32Array, cx: number, cm: number, slope: number, up: number): void {
    for (let i = 0; i < out.length; i++) {
      const xi = x[i]!;
      const x0 = cx * xi + cm * m[i]!;
      out[i] = xi + (xi - x0) * slope + fresh[i]! * up;
    }
  },
  secondOrder(out: Float32Array, x: Float32Array, m0: Float32Array, m1: Float32Array, keep: number, d0: number, d1: number): void {
    for (let i = 0; i < out.length; i++) out[i] = keep * x[i]! + d0 * m0[i]! + d1 * (m0[i]! - m1[i]!);
  },
  lcmNoisy(out: Float32Array, x0: Float32Array, x: Float32Array, fresh: Float32Array, cOut: number, cSkip: number, keep: number, add: number): void {
    for (let i = 0; i < out.length; i++) {
      const denoised = cOut * x0[i]! + cSkip * x[i]!;
      out[i] = keep * denoised + add * fresh[i]!;
    }
  },
};
