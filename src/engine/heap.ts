/**
 * V8 heap sizing for the inference worker. Every denoising step allocates megabytes of
 * short-lived buffers (model outputs come from onnxruntime-node as new ArrayBuffers; in 1.30 a
 * preallocated output is copied into a new buffer too). With V8's default initial old-generation
 * limit the worker ran a full mark-compact about every other live frame at 512×512 (11-18 per
 * 30 frames, 1-2 ms of GC per frame; test/worker-heap.test.ts prints the figures). With a larger
 * initial old space the scavenger frees those buffers and full collections become rare (0-1
 * per 30 frames). The size is a trade: 256 MB also removed them, but the worker then held
 * more garbage and RSS grew 27-65 MB over the bench's 20 s flood (the goal is <= 50); at 64 MB
 * it grew 30-41 MB.
 *
 * V8 reads the flag when an isolate is created, so it is set just before a worker starts. It
 * is process-wide and stays set: isolates created later (a replacement worker) get it too,
 * while the main thread's heap, configured at startup, keeps its own sizing.
 */
import { setFlagsFromString } from 'node:v8';

export const INFERENCE_WORKER_INITIAL_OLD_SPACE_MB = 64;

export function configureInferenceWorkerHeap(): void {
  setFlagsFromString(`--initial-old-space-size=${INFERENCE_WORKER_INITIAL_OLD_SPACE_MB}`);
}
