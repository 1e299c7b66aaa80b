/**
 * The per-step elementwise passes of the schedulers and of classifier-free guidance. Each takes
 * float32 arrays, computes in double in a fixed order and rounds once into `out`. They run in
 * WebAssembly SIMD (elementwise.wat), which writes the same bits as the JavaScript loops below:
 * those stay the reference and the fallback (no SIMD, or arrays too large for the module's
 * fixed memory). On this project's 2-core VM a JavaScript pass over 16384 float32 values (one
 * 512×512 image's latents) takes 23-49 µs and the WebAssembly one 6-16 µs; a step makes two to
 * four of them, which is 10-20 % of a step's time outside the model (docs/performance.md).
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

/** Values a slot holds for n: rounded up to a multiple of 4, so the kernels' spare odd value stays inside it. */
const slotValues = (n: number) => (n + 3) & ~3;

function fits(module: ElementwiseModule, n: number, inputs: number): boolean {
  return (inputs + 1) * slotValues(n) * 4 <= module.memory.buffer.byteLength;
}

/** Whether a pass over n values with `inputs` input arrays runs in WebAssembly here. */
export function elementwiseInWasm(n: number, inputs: number): boolean {
  const module = elementwiseModule();
  return module !== null && fits(module, n, inputs);
}

/**
 * One pass: `inputs` copied into consecutive slots of the module's memory, `kernel` called with
 * the module and the slots' byte offsets (the inputs', then the output's), and the output slot
 * copied into `out`; `inJavaScript` instead where the module is missing or they do not fit.
 */
function pass(out: Float32Array, inputs: Float32Array[], kernel: (module: ElementwiseModule, at: number[]) => void, inJavaScript: () => void): void {
  const module = elementwiseModule();
  const n = out.length;
  if (!module || !fits(module, n, inputs.length)) return inJavaScript();
  heap ??= new Float32Array(module.memory.buffer);
  const slot = slotValues(n);
  const at = inputs.map((input, k) => {
    heap!.set(input.length === n ? input : input.subarray(0, n), k * slot);
    return k * slot * 4;
  });
  const output = inputs.length * slot;
  at.push(output * 4);
  kernel(module, at);
  out.set(heap.subarray(output, output + n));
}

/** out = cx·x + cm·m */
export function lin2(out: Float32Array, x: Float32Array, cx: number, m: Float32Array, cm: number): void {
  pass(out, [x, m], (w, [px, pm, po]) => w.lin2(px!, pm!, po!, out.length, cx, cm), () => elementwiseJs.lin2(out, x, cx, m, cm));
}

/** out = x·s */
export function scale(out: Float32Array, x: Float32Array, s: number): void {
  pass(out, [x], (w, [px, po]) => w.scale(px!, po!, out.length, s), () => elementwiseJs.scale(out, x, s));
}

/** Classifier-free guidance: out = u + g·(c − u) */
export function guide(out: Float32Array, u: Float32Array, c: Float32Array, g: number): void {
  pass(out, [u, c], (w, [pu, pc, po]) => w.guide(pu!, pc!, po!, out.length, g), () => elementwiseJs.guide(out, u, c, g));
}

/** Euler: out = x + (x − x0)·slope with x0 = cx·x + cm·m in double. */
export function euler(out: Float32Array, x: Float32Array, m: Float32Array, cx: number, cm: number, slope: number): void {
  pass(out, [x, m], (w, [px, pm, po]) => w.euler(px!, pm!, po!, out.length, cx, cm, slope), () => elementwiseJs.euler(out, x, m, cx, cm, slope));
}

/** Euler ancestral: out = x + (x − x0)·slope + fresh·up with x0 = cx·x + cm·m in double. */
export function ancestral(out: Float32Array, x: Float32Array, m: Float32Array, fresh: Float32Array, cx: number, cm: number, slope: number, up: number): void {
  pass(
    out, [x, m, fresh],
    (w, [px, pm, pf, po]) => w.ancestral(px!, pm!, pf!, po!, out.length, cx, cm, slope, up),
    () => elementwiseJs.ancestral(out, x, m, fresh, cx, cm, slope, up),
  );
}

/** DPM-Solver++ second order: out = keep·x + d0·m0 + d1·(m0 − m1) */
export function secondOrder(out: Float32Array, x: Float32Array, m0: Float32Array, m1: Float32Array, keep: number, d0: number, d1: number): void {
  pass(
    out, [x, m0, m1],
    (w, [px, p0, p1, po]) => w.secondOrder(px!, p0!, p1!, po!, out.length, keep, d0, d1),
    () => elementwiseJs.secondOrder(out, x, m0, m1, keep, d0, d1),
  );
}

/** LCM between steps: out = keep·d + add·fresh with d = cOut·x0 + cSkip·x in double. */
export function lcmNoisy(out: Float32Array, x0: Float32Array, x: Float32Array, fresh: Float32Array, cOut: number, cSkip: number, keep: number, add: number): void {
  pass(
    out, [x0, x, fresh],
    (w, [p0, px, pf, po]) => w.lcmNoisy(p0!, px!, pf!, po!, out.length, cOut, cSkip, keep, add),
    () => elementwiseJs.lcmNoisy(out, x0, x, fresh, cOut, cSkip, keep, add),
  );
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
