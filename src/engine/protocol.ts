/** Messages between the engine (main thread) and its inference worker thread. */
import type { ForegroundStats } from '../depth/scan.ts';
import type { ConsistencyReport, FrameHeader, PreviewFormat, ResultFormat } from '../protocol/schemas.ts';
import type { Device } from '../runtime/ort.ts';

/**
 * Test-only: make the worker fail job `jobId` at step `step` (1-based, as progress counts), by
 * throwing (as a failing provider or an out-of-memory would) or by exiting (a crash). Set through
 * the Engine's constructor options; nothing on the wire can reach it.
 */
export interface InferenceFault {
  /** The job it hits; '*' hits every job. */
  jobId: string;
  /** The first step it hits (1-based); a stall holds every step from there on. */
  step: number;
  /** throw / exit: fail as a provider error or a crashed worker would; stall: hold each step for `ms`, so a job stays in flight. */
  kind: 'throw' | 'exit' | 'stall';
  ms?: number;
}

export interface WorkerInit {
  device: Device;
  faults?: InferenceFault[];
  controlnetGraph?: 'composed' | 'separate';
  /** Shared Int32Array(1): the sequence number of the job to cancel, checked at every step boundary. */
  cancel: SharedArrayBuffer;
}

export type ToWorker =
  | { type: 'run'; seq: number; jobId: string; model: { name: string; dir: string }; header: FrameHeader; depth: Uint8Array; init?: Uint8Array; layout?: Uint8Array; motion?: Uint8Array; stream?: string; depthForeground?: ForegroundStats }
  | { type: 'unload' }
  /** Diagnostics: answer with process.memoryUsage(); `collect` runs a full GC first where the process has --expose-gc. */
  | { type: 'memory'; collect: boolean };

export type FromWorker =
  | { type: 'loaded'; name: string; device: string; family: string; dtype: string; hash: string; fallbacks: string[] }
  | { type: 'progress'; seq: number; step: number; total: number; timestep: number; preview?: Uint8Array; format?: PreviewFormat; width?: number; height?: number }
  | { type: 'result'; seq: number; image: Uint8Array; format: ResultFormat; width: number; height: number; generated: { width: number; height: number }; seed: number; params: Record<string, unknown>; model: { name: string; hash: string }; timings: Record<string, number>; depthStats: Record<string, number>; gcMajor: number; consistency?: ConsistencyReport }
  | { type: 'error'; seq: number; code: string; message: string }
  | { type: 'memory'; usage: MemorySample };

/** process.memoryUsage() of one thread: rss is the process's; the heap figures are that thread's isolate. */
export interface MemorySample {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** The inference worker's young generation (V8's new space) as committed now: what its cap bounds (src/engine/heap.ts). */
  newSpace?: number;
}
