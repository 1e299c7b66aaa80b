/**
 * The engine is the main-thread handle on the inference worker thread: the only place
 * sessions run, so the event loop of the server stays free. Server, CLI, batch and bench use it.
 */

export interface EngineProgress {
  jobId: string;
  step: number;
  total: number;
  timestep: number;
  /** JPEG bytes of the step preview, when one was made for this step. */
  previewJpeg?: Uint8Array;
  previewWidth?: number;
  previewHeight?: number;
}

export interface EngineResult {
  jobId: string;
  png: Uint8Array;
  width: number;
  height: number;
  seed: number;
  params: Record<string, unknown>;
  model: { name: string; hash: string };
  timings: Record<string, number>;
}
