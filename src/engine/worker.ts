/**
 * The inference worker thread: owns the ONNX sessions and runs one job at a time, so
 * session.run (a blocking native call) never stalls the server's event loop.
 */
import { GCProfiler, getHeapSpaceStatistics } from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import { toDepthcastError } from '../errors.ts';
import { encodeJpeg, resizeRgb } from '../image/codec.ts';
import { type LoadedModel, loadModel } from '../models/load.ts';
import { DepthcastError } from '../errors.ts';
import { generate } from '../pipelines/index.ts';
import { createScheduler } from '../schedulers/index.ts';
import { encodePng } from '../image/png.ts';
import { Scratch } from '../util/scratch.ts';
import { prepareJob } from './prepare.ts';
import { type SequenceStep, StreamMemory } from '../motion/stream-memory.ts';
import type { FromWorker, ToWorker, WorkerInit } from './protocol.ts';

const init = workerData as WorkerInit;
const cancelled = new Int32Array(init.cancel);
const port = parentPort!;
let current: LoadedModel | undefined;
/** Full-resolution buffers reused from job to job; jobs run one at a time. */
const scratch = new Scratch();
/** Each stream's last frame, for the consistent mode. */
const sequences = new StreamMemory();

function post(message: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

async function modelFor(name: string, dir: string): Promise<LoadedModel> {
  if (current?.dir === dir) return current;
  // One model resident at a time: a GPU rarely holds two Stable Diffusion models comfortably.
  await current?.release();
  current = undefined;
  const fallbacks: string[] = [];
  const model = await loadModel(dir, { device: init.device, ...(init.controlnetGraph ? { controlnetGraph: init.controlnetGraph } : {}), onFallback: (d, reason) => fallbacks.push(`${d}: ${reason}`) });
  model.name = name;
  checkSchedulerConfig(model);
  current = model;
  post({ type: 'loaded', name, device: model.device, family: model.family, dtype: model.dtype, hash: model.hash, fallbacks });
  return model;
}

/**
 * The model's own scheduler config must build: if it does not, the model folder is broken
 * (BAD_MODEL), which is not the client's UNSUPPORTED_SCHEDULER choice.
 */
function checkSchedulerConfig(model: LoadedModel): void {
  try {
    createScheduler(model.schedulerConfig);
  } catch (err) {
    void model.release();
    throw new DepthcastError('BAD_MODEL', `model ${model.name}: scheduler/scheduler_config.json cannot be used: ${(err as Error).message}`);
  }
}

/** Garbage collection during a job: total pause cost and full (mark-compact) collections. */
function gcSummary(result: ReturnType<GCProfiler['stop']>): { ms: number; major: number } {
  let cost = 0;
  let major = 0;
  for (const event of result.statistics) {
    cost += event.cost;
    if (event.gcType === 'MarkSweepCompact') major++;
  }
  return { ms: cost / 1000, major };
}

async function run(msg: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  const { seq } = msg;
  // Reported with each result: GC pauses are part of what a frame costs beyond the model.
  const gc = new GCProfiler();
  gc.start();
  try {
    const model = await modelFor(msg.model.name, msg.model.dir);
    const prepareStart = performance.now();
    const prepared = await prepareJob(model, msg.header, { depth: msg.depth, init: msg.init, layout: msg.layout, depthForeground: msg.depthForeground }, scratch);
    const stream = msg.stream ?? `job:${msg.jobId}`;
    const sequence: SequenceStep | undefined = StreamMemory.wants(msg.header)
      ? sequences.begin(model, { stream, jobId: msg.jobId, header: msg.header, depth: msg.depth, motion: msg.motion }, prepared.input)
      : undefined;
    const prepareMs = performance.now() - prepareStart;
    // Read from the shared cancel word whenever the pipeline asks, so a superseded frame stops at
    // the next check (before a step, between ControlNet and UNet, before decoding), not only
    // after the step in flight.
    prepared.input.signal = { get aborted() { return Atomics.load(cancelled, 0) === seq; } };
    // JPEG previews are encoded off the step's critical path (sharp runs on the libuv pool while
    // the next step computes); raw RGB8 previews go as they are, with nothing to encode. The
    // chain keeps progress messages in order and ahead of the result.
    const previewFormat = msg.header.params.previewFormat ?? 'jpeg';
    let previews = Promise.resolve();
    const fault = init.faults?.find((f) => f.jobId === msg.jobId || f.jobId === '*');
    prepared.input.onStep = (event) => {
      if (fault && (event.step + 1 === fault.step || (fault.kind === 'stall' && event.step + 1 > fault.step))) injectFault(fault);
      const base = { type: 'progress' as const, seq, step: event.step + 1, total: event.total, timestep: event.timestep };
      const preview = event.preview;
      const encoded = preview && previewFormat === 'jpeg' ? encodeJpeg(preview.rgb, preview.width, preview.height) : preview?.rgb;
      previews = previews.then(async () => {
        const bytes = await encoded;
        const shape = preview ? { format: previewFormat, width: preview.width, height: preview.height } : {};
        post({ ...base, preview: bytes, ...shape }, bytes ? [bytes.buffer as ArrayBuffer] : []);
      });
    };
    const output = await generate(model, prepared.input);
    let consistency: ReturnType<SequenceStep['finish']>['report'] | undefined;
    if (sequence) {
      const finished = sequence.finish(output);
      output.rgb8 = finished.rgb8;
      consistency = finished.report;
    }
    const { output: size, resampled } = prepared.size;
    const tUp = performance.now();
    // resizeRgb reads the scratch-backed rows during the call and returns a buffer of its own.
    const upscaled = resampled ? await resizeRgb(output.rgb8!, output, size) : undefined;
    const upscaleMs = performance.now() - tUp;
    const t0 = performance.now();
    const rgb8 = upscaled ?? output.rgb8!;
    const format = msg.header.params.resultFormat ?? 'png';
    let image: Uint8Array;
    if (format === 'rgb8') {
      // Copied out of the scratch buffer the next generation writes into (an upscaled one is already ours).
      image = upscaled ?? rgb8.slice();
    } else {
      const text = { parameters: JSON.stringify(prepared.params), Software: 'depthcast' };
      // Live: a stored PNG written here while the last preview's JPEG encodes on the libuv pool.
      // Batch: sharp's adaptive filtering at level 6, where file size matters more than milliseconds.
      image = await encodePng(rgb8, size.width, size.height, text, msg.header.mode === 'live' ? 0 : 6);
    }
    const encodeMs = performance.now() - t0;
    await previews;
    const gcStats = gcSummary(gc.stop());
    const timings = { ...output.timings, prepare: prepareMs, ...(resampled ? { upscale: upscaleMs } : {}), [format === 'png' ? 'png' : 'resultCopy']: encodeMs, gc: gcStats.ms };
    post(
      {
        type: 'result', seq, image, format, width: size.width, height: size.height, generated: { width: output.width, height: output.height }, seed: output.seed,
        params: prepared.params, model: { name: model.name, hash: model.hash }, timings, depthStats: { ...prepared.depthStats },
        gcMajor: gcStats.major, ...(consistency ? { consistency } : {}),
      },
      [image.buffer as ArrayBuffer],
    );
  } catch (err) {
    gc.stop();
    const e = toDepthcastError(err, 'INFERENCE_FAILED');
    if (StreamMemory.wants(msg.header)) sequences.lose(msg.stream ?? `job:${msg.jobId}`, msg.jobId, e.code);
    post({ type: 'error', seq, code: e.code, message: e.message });
  }
}

/** Test-only (InferenceFault): fail the way a provider error or a crashed worker would. */
function injectFault(fault: NonNullable<WorkerInit['faults']>[number]): void {
  if (fault.kind === 'stall') {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, fault.ms ?? 50);
    return;
  }
  if (fault.kind === 'exit') process.exit(70);
  throw new Error(`injected inference fault at step ${fault.step} of job ${fault.jobId}`);
}

// Jobs are serialised here too, in case the host ever sends two.
let chain = Promise.resolve();
port.on('message', (msg: ToWorker) => {
  if (msg.type === 'run') chain = chain.then(() => run(msg));
  else if (msg.type === 'memory') {
    if (msg.collect) (globalThis as { gc?: () => void }).gc?.();
    const newSpace = getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size;
    post({ type: 'memory', usage: { ...process.memoryUsage(), ...(newSpace === undefined ? {} : { newSpace }) } });
  }
  else if (msg.type === 'unload') chain = chain.then(async () => { await current?.release(); current = undefined; });
});
