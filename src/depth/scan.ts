/**
 * Reading and validating depth: the wire dtypes decoded to floats, NaN / negative /
 * all-background depth refused (BAD_DEPTH), and the foreground totals that toNearness
 * (convert.ts) stretches by. The service's intake scans each payload here before queueing; the
 * CLI and local batches validate decoded files through foregroundOf, the same rule. For live
 * frames the intake's pass also records a small nearness grid (block means, at most
 * SIMILARITY_GRID² cells) that the similarity skip compares.
 *
 * The scan copies the payload once into a buffer of its own, aligned, reads it in place, and
 * the engine then moves (transfers) that buffer to the inference worker: cheaper than the
 * structured clone of a view of the received message (two copies) plus the worker's own
 * realignment copy, since a header of any length leaves f32 samples at any byte offset.
 */
import { DepthcastError } from '../errors.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';
import { lazyWasm } from '../util/wasm.ts';
import { DEPTH_WASM_BASE64 } from './depth-wasm.ts';

export interface DepthLayout {
  width: number;
  height: number;
  dtype: 'f32' | 'f16' | 'u16';
  kind: 'zdepth' | 'disparity' | 'normalized';
  near: number;
  far: number;
}

export const BYTES_PER_SAMPLE = { f32: 4, f16: 2, u16: 2 } as const;

/**
 * Foreground totals of a frame's decoded values (background: zdepth at or beyond far, other kinds
 * 0; +inf always). The intake computes them on its way through the frame; handing them to
 * toNearness spares the engine a second full-resolution pass.
 */
export interface ForegroundStats {
  min: number;
  max: number;
  sum: number;
  count: number;
}

/** Largest side of the nearness grid; frames up to this size are compared pixel by pixel. */
export const SIMILARITY_GRID = 256;

/** A depth payload that passed the scan. */
export interface ScannedDepth {
  part: DepthLayout;
  /** The payload bytes: the service's own aligned copy, filling its ArrayBuffer (the engine transfers it). */
  bytes: Uint8Array;
  /** Totals of the foreground values, for the engine's conversion (ForegroundStats in src/depth/convert.ts). */
  foreground: ForegroundStats;
  /** Block-mean nearness (near = 1, background = 0), row-major gridWidth × gridHeight; live frames only. */
  nearness?: Float32Array;
  gridWidth: number;
  gridHeight: number;
}

/**
 * Decodes 16-bit samples (`raw16`: a row of the intake's aligned copy, or a whole frame) into
 * `out` (as many values) as the floats the engine converts (docs/depth.md: u16 0..65535 spans
 * near..far for zdepth, 65535 = background; [0,1] otherwise). The intake's statistics and the
 * engine's values come from this one function, so they describe the same numbers.
 */
function decodeRow(raw16: Uint16Array, part: Omit<DepthLayout, 'width' | 'height'>, out: Float32Array): void {
  const width = out.length;
  if (part.dtype === 'f16') {
    float16ToFloat32(raw16, out);
  } else if (part.kind === 'zdepth') {
    const span = part.far - part.near;
    for (let i = 0; i < width; i++) {
      const h = raw16[i]!;
      out[i] = h === 65535 ? Infinity : part.near + (h / 65535) * span;
    }
  } else {
    for (let i = 0; i < width; i++) out[i] = raw16[i]! / 65535;
  }
}

/** Maps each of `size` pixels to one of `cells` blocks; also returns how many pixels each block holds. */
function blocks(size: number, cells: number): { index: Int32Array; count: Int32Array } {
  const index = new Int32Array(size);
  const count = new Int32Array(cells);
  for (let i = 0; i < size; i++) {
    const c = Math.floor((i * cells) / size);
    index[i] = c;
    count[c]!++;
  }
  return { index, count };
}

/** Running totals of a scan, kept in a typed array so the per-row loop can live in its own function. */
const NAN = 0;
const NEGATIVE = 1;
const FOREGROUND = 2;
const MIN = 3;
const MAX = 4;
const SUM = 5;

/**
 * One row: counts NaN / negative / foreground, and adds each foreground pixel's nearness to its
 * grid cell. A function of its own with plain parameters: V8 keeps its locals in registers
 * (captured or context variables in the per-pixel loop made the scan several times slower).
 */
function scanRow(
  row: Float32Array, zdepth: boolean, clampOne: boolean, near: number, far: number, invFar: number, invSpan: number,
  grid: Float32Array | undefined, gridBase: number, cellOf: Int32Array | undefined, totals: Float64Array,
): void {
  let nan = 0;
  let negative = 0;
  let foreground = 0;
  let min = totals[MIN]!;
  let max = totals[MAX]!;
  let sum = 0;
  for (let x = 0; x < row.length; x++) {
    const v = row[x]!;
    if (!(v >= 0)) {
      if (v !== v) nan++;
      else negative++;
      continue;
    }
    let n: number;
    if (zdepth) {
      if (!(v < far)) continue; // at or beyond far, or +inf: background
      n = (1 / (v < near ? near : v) - invFar) * invSpan;
    } else {
      if (v === 0 || v === Infinity) continue;
      n = clampOne && v > 1 ? 1 : v;
    }
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
    foreground++;
    if (grid) grid[gridBase + cellOf![x]!]! += n;
  }
  totals[NAN]! += nan;
  totals[NEGATIVE]! += negative;
  totals[FOREGROUND]! += foreground;
  totals[MIN] = min;
  totals[MAX] = max;
  totals[SUM]! += sum;
}

function emptyTotals(): Float64Array {
  return new Float64Array([0, 0, 0, Infinity, -Infinity, 0]);
}

/** The foreground of a finished scan; BAD_DEPTH for NaN, negative or all-background depth. */
function checkedForeground(totals: Float64Array, kind: DepthLayout['kind'], far: number): ForegroundStats {
  const nan = totals[NAN]!;
  const negative = totals[NEGATIVE]!;
  if (nan) throw new DepthcastError('BAD_DEPTH', `depth has ${nan} NaN values; write background as +inf or a value >= far`);
  if (negative) throw new DepthcastError('BAD_DEPTH', `depth has ${negative} negative values; ${kind} depth must be >= 0`);
  if (!totals[FOREGROUND]) {
    throw new DepthcastError('BAD_DEPTH', `depth has no foreground: every pixel is background (${kind === 'zdepth' ? `>= far = ${far} or infinite; move the camera or raise far` : 'zero or infinite'})`);
  }
  return { min: totals[MIN]!, max: totals[MAX]!, sum: totals[SUM]!, count: totals[FOREGROUND]! };
}

/**
 * Foreground totals of decoded depth values, refusing what the intake refuses (BAD_DEPTH): the
 * check for depth that did not pass the intake's scan (files read by the CLI and local batches).
 */
export function foregroundOf(values: Float32Array, kind: DepthLayout['kind'], near: number, far: number): ForegroundStats {
  const totals = emptyTotals();
  scanRow(values, kind === 'zdepth', kind === 'normalized', near, far, 1 / far, 1 / (1 / near - 1 / far), undefined, 0, undefined, totals);
  return checkedForeground(totals, kind, far);
}

/** Decodes raw little-endian depth pixels of a wire dtype to float32 values (decodeRow says how). */
export function decodeDepthPixels(bytes: Uint8Array, dtype: DepthLayout['dtype'], kind: DepthLayout['kind'], near: number, far: number, count: number): Float32Array {
  const bytesPer = BYTES_PER_SAMPLE[dtype];
  if (bytes.byteLength !== count * bytesPer) {
    throw new DepthcastError('BAD_FRAME', `depth payload has ${bytes.byteLength} bytes, expected ${count} pixels × ${bytesPer} bytes (${dtype}) = ${count * bytesPer}`);
  }
  const aligned = bytes.byteOffset % bytesPer === 0 ? bytes : bytes.slice();
  // f32 is read in place (a view of the caller's bytes); nothing downstream writes to it.
  if (dtype === 'f32') return new Float32Array(aligned.buffer, aligned.byteOffset, count);
  const out = new Float32Array(count);
  decodeRow(new Uint16Array(aligned.buffer, aligned.byteOffset, count), { dtype, kind, near, far }, out);
  return out;
}

/** depth.wat: the scan below and convert.ts's linear Z → nearness, in one module and one memory. */
export interface DepthKernels {
  memory: WebAssembly.Memory;
  scanZdepth(
    src: number, width: number, height: number, near: number, far: number, invFar: number, invSpan: number,
    withGrid: number, grid: number, gridWidth: number, rows: number, cols: number, totals: number,
  ): void;
  zdepthToNearness(src: number, dst: number, n: number, far: number, zNear: number, zFar: number, invFar: number, scale: number): void;
}

export const loadDepthKernels = lazyWasm<DepthKernels>(DEPTH_WASM_BASE64);

/** Whether linear-Z f32 frames are scanned in WebAssembly here (false: WebAssembly is unavailable). */
export function depthScanInWasm(): boolean {
  return loadDepthKernels() !== null;
}

/**
 * The linear-Z f32 scan in WebAssembly (depth.wat): the same arithmetic and order as
 * scanRow, so the same totals and grid bits, at about twice the speed. False when the module is
 * unavailable or the frame does not fit its fixed memory; the caller then scans in JavaScript.
 */
function scanZdepthInWasm(
  values: Uint8Array, part: DepthLayout, invFar: number, invSpan: number,
  grid: Float32Array | undefined, gridWidth: number, rowCell: Int32Array | undefined, colCell: Int32Array | undefined, totals: Float64Array,
): boolean {
  const module = loadDepthKernels();
  if (!module) return false;
  const { width, height } = part;
  const gridAt = values.byteLength;
  const rowsAt = gridAt + (grid ? grid.byteLength : 0);
  const colsAt = rowsAt + (grid ? height * 4 : 0);
  const totalsAt = Math.ceil((colsAt + (grid ? width * 4 : 0)) / 8) * 8;
  const { buffer } = module.memory;
  if (buffer.byteLength < totalsAt + 48) return false;
  new Uint8Array(buffer, 0, values.byteLength).set(values);
  if (grid) {
    new Float32Array(buffer, gridAt, grid.length).fill(0);
    new Int32Array(buffer, rowsAt, height).set(rowCell!);
    new Int32Array(buffer, colsAt, width).set(colCell!);
  }
  module.scanZdepth(0, width, height, part.near, part.far, invFar, invSpan, grid ? 1 : 0, gridAt, gridWidth, rowsAt, colsAt, totalsAt);
  totals.set(new Float64Array(buffer, totalsAt, 6));
  if (grid) grid.set(new Float32Array(buffer, gridAt, grid.length));
  return true;
}

/**
 * Throws BAD_DEPTH for NaN, negative or all-background depth (byte counts are checked before
 * this). Linear-Z f32 depth is scanned in WebAssembly unless `inJavaScript` (the reference the
 * tests compare it with); everything else in JavaScript.
 */
export function scanDepth(bytes: Uint8Array, part: DepthLayout, withNearness: boolean, inJavaScript = false): ScannedDepth {
  const { width, height, near, far } = part;
  const zdepth = part.kind === 'zdepth';
  const owned = new Uint8Array(bytes.byteLength);
  owned.set(bytes);
  // f32 is read in place; the 16-bit layouts are decoded one row at a time into scratch.
  const direct = part.dtype === 'f32' ? new Float32Array(owned.buffer, 0, width * height) : undefined;
  const row = new Float32Array(direct ? 0 : width);
  const gridWidth = Math.min(width, SIMILARITY_GRID);
  const gridHeight = Math.min(height, SIMILARITY_GRID);
  const grid = withNearness ? new Float32Array(gridWidth * gridHeight) : undefined;
  const cols = grid ? blocks(width, gridWidth) : undefined;
  const rows = grid ? blocks(height, gridHeight) : undefined;
  const invFar = 1 / far;
  const invSpan = 1 / (1 / near - invFar);
  const totals = emptyTotals();
  const inWasm = zdepth && direct !== undefined && !inJavaScript &&
    scanZdepthInWasm(owned, part, invFar, invSpan, grid, gridWidth, rows?.index, cols?.index, totals);
  for (let y = 0; y < height && !inWasm; y++) {
    let values: Float32Array;
    if (direct) {
      values = direct.subarray(y * width, (y + 1) * width);
    } else {
      decodeRow(new Uint16Array(owned.buffer, y * width * 2, width), part, row);
      values = row;
    }
    scanRow(values, zdepth, part.kind === 'normalized', near, far, invFar, invSpan, grid, rows ? rows.index[y]! * gridWidth : 0, cols?.index, totals);
  }
  const foreground = checkedForeground(totals, part.kind, far);
  const scanned: ScannedDepth = { part, bytes: owned, foreground, gridWidth, gridHeight };
  if (grid) {
    // Block means; disparity is scaled by its largest value so that it lands in [0, 1].
    const scale = part.kind === 'disparity' ? 1 / foreground.max : 1;
    for (let gy = 0; gy < gridHeight; gy++) {
      for (let gx = 0; gx < gridWidth; gx++) grid[gy * gridWidth + gx]! *= scale / (rows!.count[gy]! * cols!.count[gx]!);
    }
    scanned.nearness = grid;
  }
  return scanned;
}

/** Mean and largest absolute difference of two nearness grids of the same shape (Infinity when there is nothing to compare). */
export function nearnessDifference(a: Float32Array | undefined, b: Float32Array | undefined): { mean: number; max: number } {
  if (!a || !b || a.length !== b.length || a.length === 0) return { mean: Infinity, max: Infinity };
  let sum = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    sum += d;
    if (d > max) max = d;
  }
  return { mean: sum / a.length, max };
}

/**
 * nearnessDifference(a, b) gives mean < meanLimit and max < cellLimit, decided without reading
 * further once the answer is no: a moving camera changes some cell by the limit within the
 * first rows, so most live frames stop early (the full pass was ~0.5 ms a frame at 256²).
 */
export function nearnessWithin(a: Float32Array | undefined, b: Float32Array | undefined, meanLimit: number, cellLimit: number): boolean {
  if (!a || !b || a.length !== b.length || a.length === 0) return false;
  const sumLimit = meanLimit * a.length;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (d >= cellLimit) return false;
    sum += d;
    if (sum >= sumLimit) return false;
  }
  return sum / a.length < meanLimit;
}
