/**
 * V8 heap sizing for the inference worker. Every denoising step allocates megabytes of
 * short-lived buffers (model outputs come from onnxruntime-node as new ArrayBuffers; in 1.30 a
 * preallocated output is copied into a new buffer too). With V8's default initial old-generation
 * limit the worker ran a full mark-compact about every other live frame at 512×512 (11-18 per
 * 30 frames, 1-2 ms of GC per frame; test/worker-heap.test.ts prints the figures). With a larger
 * initial old space most of them go: the size is a trade between full collections and the
 * garbage the worker holds. Measured per 30 frames and over the bench's 20 s flood (RSS goal
 * <= 50 MB): 32 MB changed nothing (10-13); 48 MB left 2-4 (11-16 ms of GC in all, against
 * 42-49), RSS growth 8-39 MB; 64 MB left 0-1 but RSS grew 14-67 MB; 256 MB left none, 27-65 MB.
 *
 * V8 reads the flag when an isolate is created, so it is set just before a worker starts. It
 * is process-wide and stays set: isolates created later (a replacement worker) get it too,
 * while the main thread's heap, configured at startup, keeps its own sizing.
 */
import { setFlagsFromString } from 'node:v8';
import type { ResourceLimits } from 'node:worker_threads';

export const INFERENCE_WORKER_INITIAL_OLD_SPACE_MB = 48;

/**
 * The young generation is capped (a Worker resource limit, for this isolate alone). By default
 * V8 grows each semi-space to 16 MB under a steady allocation rate; model outputs, previews and
 * frames then wait longer for a scavenge, those that get promoted die in old space, and their
 * backing stores (outside the V8 heap) are freed only by the full collection that external
 * memory growth eventually triggers. Capped at 8 MB: 3-4 full collections per 40 ControlNet
 * frames at 512×512 instead of 10-14 (printed by test/worker-heap.test.ts), a worker heap of 25 MB instead
 * of 50 MB, and the soak's RSS growth over 10,000 frames 69 MB instead of 87-108 MB
 * (docs/reliability.md). 4 MB measured the same.
 */
export const INFERENCE_WORKER_LIMITS: ResourceLimits = Object.freeze({ maxYoungGenerationSizeMb: 8 });

/**
 * `depthcast serve` starts node with --optimize-for-size (bin/depthcast.js): the main thread's
 * heap, sized at start-up, then holds the soak's growth under 50 MB. The inference worker runs
 * the per-step JavaScript, which that flag made slower (the bench's non-model latency per
 * frame 14-16 ms instead of 9-13), so its isolate is created without it.
 */
const WORKER_FLAGS = [`--initial-old-space-size=${INFERENCE_WORKER_INITIAL_OLD_SPACE_MB}`, '--no-optimize-for-size'];

export function configureInferenceWorkerHeap(): void {
  for (const flag of WORKER_FLAGS) setFlagsFromString(flag);
}
