/**
 * The engine is the main-thread handle on the inference worker thread: the only place
 * sessions run, so the event loop of the server stays free. Server, CLI, batch and bench use it.
 */
import type { ConsistencyReport, PreviewFormat, ResultFormat } from '../protocol/schemas.ts';

export interface EngineProgress {
  jobId: string;
  step: number;
  total: number;
  timestep: number;
  /** The step preview's bytes (JPEG, or raw RGB8 rows top to bottom), when one was made for this step. */
  preview?: Uint8Array;
  previewFormat?: PreviewFormat;
  previewWidth?: number;
  previewHeight?: number;
}

export interface EngineResult {
  jobId: string;
  /** The image in `format`: PNG bytes, or raw interleaved RGB8. */
  image: Uint8Array;
  format: ResultFormat;
  /** The output size (what the caller asked for). */
  width: number;
  height: number;
  /** The size the model generated at; smaller than width×height when the image was upscaled to it. */
  generated: { width: number; height: number };
  seed: number;
  params: Record<string, unknown>;
  model: { name: string; hash: string };
  timings: Record<string, number>;
  /** Frames of a sequence (motion or params.consistency): the mode that ran and the pair's score. */
  consistency?: ConsistencyReport;
}
