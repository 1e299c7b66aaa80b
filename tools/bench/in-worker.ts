/**
 * Runs bench tasks where the service runs that work: in one long-lived worker thread whose heap
 * is sized as the engine sizes its inference worker (src/engine/heap.ts), tasks one after
 * another, so later tasks find the JIT as warm as a service that has been generating for a
 * while. (A fresh worker per task measured the first generations' colder code instead.)
 */
import { parentPort, Worker, workerData } from 'node:worker_threads';
import { configureInferenceWorkerHeap } from '../../src/engine/heap.ts';
import { benchCodecs, benchPipeline, benchRegions } from './pipeline-bench.ts';

const TASKS = { benchPipeline, benchRegions, benchCodecs };
type Tasks = typeof TASKS;
export type BenchTask = keyof Tasks;

interface Reply {
  id: number;
  ok?: unknown;
  error?: string;
  /** The DepthcastError code of a failed task, when it had one. */
  code?: string;
}

export class BenchWorker {
  private readonly worker: Worker;
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; task: string }>();

  constructor() {
    configureInferenceWorkerHeap();
    this.worker = new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: { bench: true } });
    this.worker.on('message', (m: Reply) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.error !== undefined) w.reject(Object.assign(new Error(`bench task ${w.task} failed: ${m.error}`), { code: m.code }));
      else w.resolve(m.ok);
    });
    const failAll = (err: Error) => {
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    this.worker.on('error', failAll);
    this.worker.on('exit', (code) => failAll(new Error(`the bench worker exited with code ${code}`)));
  }

  run<K extends BenchTask>(task: K, ...args: Parameters<Tasks[K]>): Promise<Awaited<ReturnType<Tasks[K]>>> {
    const id = ++this.next;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, task });
      this.worker.postMessage({ id, task, args });
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** The worker's side: runs each task it is sent, in order, and replies with its result or error. */
export function serveBenchTasks(): void {
  if (!(workerData as { bench?: boolean })?.bench) return;
  let chain = Promise.resolve();
  parentPort!.on('message', (m: { id: number; task: BenchTask; args: unknown[] }) => {
    chain = chain.then(async () => {
      try {
        const fn = TASKS[m.task] as (...a: unknown[]) => Promise<unknown>;
        parentPort!.postMessage({ id: m.id, ok: await fn(...m.args) });
      } catch (err) {
        parentPort!.postMessage({ id: m.id, error: (err as Error).message ?? String(err), code: (err as { code?: string }).code });
      }
    });
  });
}
