/**
 * Runs a bench task where the service runs that work: in a worker thread whose heap is sized
 * as the engine sizes its inference worker (src/engine/heap.ts). Timed on the CLI's main
 * thread instead, the same generations paid for V8's default sizing, which the service does
 * not use: full collections every generation, ~0.05-0.25 ms more per step.
 */
import { parentPort, Worker, workerData } from 'node:worker_threads';
import { configureInferenceWorkerHeap } from '../engine/heap.ts';
import { benchCodecs, benchPipeline, benchRegions } from './pipeline-bench.ts';

const TASKS = { benchPipeline, benchRegions, benchCodecs };
type Tasks = typeof TASKS;
export type BenchTask = keyof Tasks;

export function inInferenceWorker<K extends BenchTask>(task: K, ...args: Parameters<Tasks[K]>): Promise<Awaited<ReturnType<Tasks[K]>>> {
  configureInferenceWorkerHeap();
  const worker = new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: { task, args } });
  return new Promise((resolve, reject) => {
    worker.once('message', (m: { ok?: Awaited<ReturnType<Tasks[K]>>; error?: string }) => {
      void worker.terminate();
      if (m.error !== undefined) reject(new Error(`bench task ${task} failed: ${m.error}`));
      else resolve(m.ok!);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`bench task ${task}: worker exited with code ${code}`)));
  });
}

/** The worker's side: runs the task named in workerData and posts its result or error. */
export async function runBenchTask(): Promise<void> {
  const { task, args } = workerData as { task: BenchTask; args: unknown[] };
  try {
    const fn = TASKS[task] as (...a: unknown[]) => Promise<unknown>;
    parentPort!.postMessage({ ok: await fn(...args) });
  } catch (err) {
    parentPort!.postMessage({ error: (err as Error).message ?? String(err) });
  }
}
