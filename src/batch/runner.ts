/**
 * Runs a batch: skips outputs that are already done, runs the rest with a bounded number in
 * flight, retries, and records failures without stopping the others.
 *
 * On disk, per output `<out>/<id>.png` and its sidecar `<out>/<id>.json` (every parameter, the
 * seed, the model and its hash, depth statistics, timings, and the hash of the request). Both are
 * written to `<file>.partial` and renamed into place, PNG first and sidecar last, so an output is
 * done exactly when its sidecar exists, matches the request and names the PNG's hash; a run
 * killed at any moment leaves at most `.partial` files, which the next run deletes.
 * One run at a time per out folder (`.depthcast-batch.lock` holds the pid).
 */
import { mkdir, open, readFile, readdir, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DepthcastError, type ErrorCode, toDepthcastError } from '../errors.ts';
import { VERSION } from '../version.ts';
import type { Backend } from './backends.ts';
import { type BatchInputs, canonicalJson, type OutputRequest, sha256 } from './inputs.ts';
import { type BatchSequence, reportSequence, sequencesOf, type SequenceReport } from './sequences.ts';
import type { ConsistencyReport } from '../protocol/schemas.ts';
import { SEQUENCES_PER_OWNER } from '../motion/stream-memory.ts';
import type { BatchOutput } from './manifest.ts';
import type { BatchReporter } from './progress.ts';
import { pidAlive } from '../util/process.ts';

export const LOCK_FILE = '.depthcast-batch.lock';
export const REPORT_FILE = 'batch-report.json';
export const PARTIAL = '.partial';

/** Errors that a retry cannot fix: the input or the request is wrong. */
const PERMANENT: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'BAD_REQUEST', 'BAD_DEPTH', 'BAD_IMAGE', 'BAD_LAYOUT', 'BAD_FRAME', 'BAD_MANIFEST', 'UNSUPPORTED_SCHEDULER',
  'UNSUPPORTED_DEVICE', 'LIMIT_EXCEEDED', 'UNAUTHORIZED', 'FORBIDDEN_ORIGIN', 'MODEL_NOT_FOUND', 'BAD_MODEL', 'UNSAFE_PATH',
]);

export function isRetryable(err: DepthcastError): boolean {
  return !PERMANENT.has(err.code) && err.code !== 'CANCELLED' && err.code !== 'SHUTTING_DOWN';
}

export interface OutputFailure {
  id: string;
  scene: string;
  code: ErrorCode;
  message: string;
  attempts: number;
}

export interface BatchSummary {
  outDir: string;
  total: number;
  done: number;
  skipped: number;
  failed: number;
  /** Outputs not attempted because the run was interrupted. */
  notRun: number;
  interrupted: boolean;
  failures: OutputFailure[];
  /** Wall time of the whole run, and of the check for finished outputs. */
  elapsedMs: number;
  checkMs: number;
  /** Wall time per finished output (input preparation + inference + writing). */
  outputMs: number[];
  /** Frame sequences (params.consistency): each frame pair's warp score, the mean, the worst pair, the plot. */
  sequences?: SequenceReport[];
}

export interface RunBatchOptions {
  outputs: BatchOutput[];
  outDir: string;
  backend: Backend;
  inputs: BatchInputs;
  reporter: BatchReporter;
  concurrency?: number;
  retry?: number;
  signal?: AbortSignal;
}

export interface Sidecar {
  depthcast: string;
  kind: 'depthcast.batch.output';
  id: string;
  image: string;
  scene: string;
  view: string | null;
  variation: string | null;
  seed: number;
  requestHash: string;
  request: OutputRequest;
  png: { bytes: number; sha256: string; width: number; height: number };
  /** The size the model generated at; the PNG is this upscaled to png.width×png.height when they differ. */
  generated: { width: number; height: number };
  params: Record<string, unknown>;
  model: { name: string; hash: string };
  depth: Record<string, unknown>;
  timings: Record<string, number>;
  backend: Record<string, unknown>;
  /** A sequence's frame: the mode that ran, a fallback's reason, and its pair's warp score. */
  consistency?: ConsistencyReport;
  attempts: number;
  finishedAt: string;
}

export const pngPath = (outDir: string, id: string) => join(outDir, `${id}.png`);
export const sidecarPath = (outDir: string, id: string) => join(outDir, `${id}.json`);

/** Whether `<id>.png` + `<id>.json` exist, the sidecar is for this request and the PNG is the one it describes. */
export async function isDone(outDir: string, id: string, requestHash: string): Promise<boolean> {
  let sidecar: Sidecar;
  try {
    sidecar = JSON.parse(await readFile(sidecarPath(outDir, id), 'utf8')) as Sidecar;
  } catch {
    return false;
  }
  if (sidecar.requestHash !== requestHash || !sidecar.png) return false;
  try {
    const png = await readFile(pngPath(outDir, id));
    return png.byteLength === sidecar.png.bytes && sha256(png) === sidecar.png.sha256;
  } catch {
    return false;
  }
}

async function writeAtomic(file: string, data: Uint8Array | string, partials: Set<string>): Promise<void> {
  const tmp = `${file}${PARTIAL}`;
  partials.add(tmp);
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
  partials.delete(tmp);
}

/** Takes `<out>/.depthcast-batch.lock`; a lock whose process is gone (a killed run) is taken over. */
export async function acquireLock(outDir: string): Promise<() => Promise<void>> {
  const file = join(outDir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(file, 'wx');
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return async () => { await rm(file, { force: true }); };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw new DepthcastError('BUSY', `another batch (pid ${pid}) is writing to ${outDir}; wait for it, or remove ${file} if it is not running`);
      }
      await rm(file, { force: true });
    }
  }
  throw new DepthcastError('BUSY', `cannot take the lock ${file}`);
}

/** Deletes leftovers of killed runs: `*.partial` files and folders anywhere under the out folder. */
export async function removePartials(dir: string): Promise<number> {
  let removed = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.name.endsWith(PARTIAL)) {
      await rm(path, { recursive: true, force: true });
      removed++;
    } else if (e.isDirectory()) {
      removed += await removePartials(path);
    }
  }
  return removed;
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
  return results;
}

let jobCounter = 0;

export async function runBatch(options: RunBatchOptions): Promise<BatchSummary> {
  const { outputs, outDir, backend, inputs, reporter, signal } = options;
  const concurrency = Math.max(1, options.concurrency ?? 1);
  const retry = Math.max(0, options.retry ?? 0);
  const t0 = performance.now();
  await mkdir(outDir, { recursive: true });
  const release = await acquireLock(outDir);
  const partials = new Set<string>();
  const failures: OutputFailure[] = [];
  const outputMs: number[] = [];
  let done = 0;
  let skipped = 0;
  let notRun = 0;
  try {
    const stale = await removePartials(outDir);
    if (stale) reporter.log(`removed ${stale} unfinished file${stale === 1 ? '' : 's'} of an earlier run`);

    // 1. What is already done? (Needs only hashes of the inputs, no rendering or inference.)
    const models = new Map<string, Promise<string>>();
    const modelFor = (name: string | undefined) => {
      const key = name ?? '\0default';
      let p = models.get(key);
      if (!p) { p = backend.resolveModel(name); models.set(key, p); }
      return p;
    };
    const requested = await mapLimit(outputs, 8, async (o) => {
      try {
        const model = await modelFor(o.params.model);
        return { o, model, ...(await inputs.requestFor(o, model)) };
      } catch (err) {
        return { o, error: toDepthcastError(err) };
      }
    });
    // A consistent frame continues the one before: its request includes that one's hash, so
    // redoing a frame redoes the rest of its sequence.
    const { sequences, member } = sequencesOf(outputs);
    const byId = new Map(requested.map((r) => [r.o.id, r]));
    for (const s of sequences) {
      if (s.consistency !== 'consistent') continue;
      for (let i = 1; i < s.outputs.length; i++) {
        const r = byId.get(s.outputs[i]!.id);
        const before = byId.get(s.outputs[i - 1]!.id);
        if (!r || 'error' in r || !before || 'error' in before) continue;
        r.request.previous = before.hash;
        r.hash = sha256(canonicalJson(r.request));
      }
    }
    const checked = await mapLimit(requested, 8, async (r) => (r.error ? r : { ...r, done: await isDone(outDir, r.o.id, r.hash!) }));
    // A consistent sequence with a frame to do is redone whole: each frame continues the image
    // of the one before, which must come from this run's worker.
    const checkedById = new Map(checked.map((c) => [c.o.id, c]));
    for (const s of sequences) {
      if (s.consistency !== 'consistent') continue;
      const members = s.outputs.map((o) => checkedById.get(o.id)!);
      if (members.some((c) => !('done' in c) || !c.done)) for (const c of members) if ('done' in c) c.done = false;
    }
    const checkMs = performance.now() - t0;
    const todo: { o: BatchOutput; model: string; request: OutputRequest; hash: string }[] = [];
    const early: { o: BatchOutput; error: DepthcastError }[] = [];
    for (const c of checked) {
      if ('error' in c) early.push(c as { o: BatchOutput; error: DepthcastError });
      else if (c.done) skipped++;
      else todo.push(c);
    }
    reporter.start({ total: outputs.length, skipped, todo: todo.length + early.length, outDir });
    for (const { o, error } of early) {
      failures.push({ id: o.id, scene: o.scene, code: error.code, message: error.message, attempts: 1 });
      reporter.failed(o.id, error, 1);
    }

    // 2. Run the rest: a sequence's frames one after another (each continues the one before),
    // everything else `concurrency` at a time.
    const reported = new Map<string, ConsistencyReport | undefined>();
    const failedIds = new Set<string>();
    /** The job id each sequence frame last ran as in this batch. */
    const ranAs = new Map<string, string>();
    type Todo = (typeof todo)[number];
    const units: Todo[][] = [];
    const unitOf = new Map<BatchSequence, Todo[]>();
    for (const t of todo) {
      const seq = member.get(t.o.id)?.sequence;
      if (!seq) { units.push([t]); continue; }
      let unit = unitOf.get(seq);
      if (!unit) { unit = []; unitOf.set(seq, unit); units.push(unit); }
      unit.push(t);
    }
    for (const unit of unitOf.values()) unit.sort((a, b) => member.get(a.o.id)!.index - member.get(b.o.id)!.index);
    const runOne = async ({ o, model, request, hash }: Todo) => {
      if (signal?.aborted) { notRun++; return; }
      const started = performance.now();
      const place = member.get(o.id);
      for (let attempt = 1; ; attempt++) {
        try {
          const jobId = `batch-${process.pid}-${++jobCounter}`;
          const before = place && place.index > 0 ? place.sequence.outputs[place.index - 1]! : undefined;
          const sequence = place ? { stream: place.sequence.stream, previous: before ? { output: before, jobId: ranAs.get(before.id) } : undefined } : undefined;
          if (place) ranAs.set(o.id, jobId);
          const job = await inputs.prepare(o, outputs, model, jobId, sequence);
          const t1 = performance.now();
          const result = await backend.run({ jobId, header: job.header, depth: job.depth, init: job.init, layout: job.layout, motion: job.motion }, signal);
          const inferMs = performance.now() - t1;
          const png = pngPath(outDir, o.id);
          const side = sidecarPath(outDir, o.id);
          await mkdir(dirname(png), { recursive: true });
          const sidecar: Sidecar = {
            depthcast: VERSION,
            kind: 'depthcast.batch.output',
            id: o.id,
            image: png.slice(dirname(png).length + 1),
            scene: o.scene,
            view: o.view ?? null,
            variation: o.variation ?? null,
            seed: result.seed,
            requestHash: hash,
            request,
            png: { bytes: result.png.byteLength, sha256: sha256(result.png), width: result.width, height: result.height },
            generated: { ...result.generated },
            params: result.params,
            model: result.model,
            depth: { ...job.depthInfo },
            timings: { ...result.timings, prepare: job.prepareMs, run: inferMs, wall: 0 },
            backend: backend.describe(),
            ...(result.consistency ? { consistency: result.consistency } : {}),
            attempts: attempt,
            finishedAt: '',
          };
          // The old sidecar goes first: a PNG must never sit beside a sidecar that describes another image.
          await unlink(side).catch(() => {});
          await writeAtomic(png, result.png, partials);
          sidecar.timings.wall = performance.now() - started;
          sidecar.finishedAt = new Date().toISOString();
          await writeAtomic(side, `${JSON.stringify(sidecar, null, 2)}\n`, partials);
          done++;
          reported.set(o.id, result.consistency);
          outputMs.push(sidecar.timings.wall);
          reporter.done(o.id, sidecar.timings.wall);
          return;
        } catch (err) {
          const e = toDepthcastError(err);
          if (signal?.aborted) { notRun++; return; }
          if (attempt <= retry && isRetryable(e)) {
            reporter.retry(o.id, e, attempt, retry + 1);
            await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** (attempt - 1), 5000)));
            continue;
          }
          failures.push({ id: o.id, scene: o.scene, code: e.code, message: e.message, attempts: attempt });
          failedIds.add(o.id);
          reporter.failed(o.id, e, attempt);
          return;
        }
      }
    };
    // The engine remembers SEQUENCES_PER_OWNER sequences per owner (a batch is one): no more run at once.
    let sequencesRunning = 0;
    const sequenceSlot: (() => void)[] = [];
    await mapLimit(units, concurrency, async (unit) => {
      const isSequence = member.has(unit[0]!.o.id);
      if (isSequence) {
        while (sequencesRunning >= SEQUENCES_PER_OWNER) await new Promise<void>((r) => sequenceSlot.push(r));
        sequencesRunning++;
      }
      try {
        for (const t of unit) await runOne(t);
      } finally {
        if (isSequence) {
          sequencesRunning--;
          sequenceSlot.shift()?.();
        }
      }
    });
    reporter.stop();
    // 3. Each sequence's score: outputs done earlier contribute what their sidecars recorded.
    const sequenceReports: SequenceReport[] = [];
    for (const s of sequences) {
      for (const o of s.outputs) {
        if (reported.has(o.id) || failedIds.has(o.id)) continue;
        const side = await readFile(sidecarPath(outDir, o.id), 'utf8').then((t) => JSON.parse(t) as Sidecar, () => undefined);
        reported.set(o.id, side?.consistency);
      }
      sequenceReports.push(await reportSequence(s, outDir, reported, new Set([...failedIds, ...early.map((e) => e.o.id)])));
    }
    const summary: BatchSummary = {
      outDir, total: outputs.length, done, skipped, failed: failures.length, notRun, interrupted: !!signal?.aborted,
      failures, elapsedMs: performance.now() - t0, checkMs, outputMs, sequences: sequenceReports,
    };
    const { outputMs: _per, ...report } = summary;
    await writeAtomic(join(outDir, REPORT_FILE), `${JSON.stringify({ depthcast: VERSION, finishedAt: new Date().toISOString(), backend: backend.describe(), ...report }, null, 2)}\n`, partials);
    return summary;
  } finally {
    reporter.stop();
    for (const p of partials) await rm(p, { force: true }).catch(() => {});
    await release();
  }
}

/** The end-of-run summary, for humans. */
export function formatSummary(s: BatchSummary): string {
  const lines: string[] = [];
  const secs = s.elapsedMs / 1000;
  const rate = s.done && secs > 0 ? `, ${((s.done / secs) * 60).toFixed(1)} outputs/min` : '';
  lines.push(`batch ${s.interrupted ? 'interrupted' : 'finished'}: ${s.total} output${s.total === 1 ? '' : 's'}: ${s.done} done, ${s.skipped} skipped (already done), ${s.failed} failed${s.notRun ? `, ${s.notRun} not run` : ''} in ${secs.toFixed(1)} s${rate} → ${s.outDir}`);
  if (s.failures.length) {
    const byScene = new Map<string, OutputFailure[]>();
    for (const f of s.failures) byScene.set(f.scene, [...(byScene.get(f.scene) ?? []), f]);
    lines.push(`failed (${s.failures.length}, in ${byScene.size} scene${byScene.size === 1 ? '' : 's'}; details in ${join(s.outDir, REPORT_FILE)}):`);
    let shown = 0;
    for (const [scene, list] of byScene) {
      if (shown >= 20) break;
      const first = list[0]!;
      const same = list.every((f) => f.code === first.code && f.message === first.message);
      if (same) {
        lines.push(`  ${scene}: ${list.length} output${list.length === 1 ? '' : 's'}: ${first.code}: ${first.message}`);
        shown++;
      } else {
        for (const f of list) {
          if (shown++ >= 20) break;
          lines.push(`  ${f.id}: ${f.code}: ${f.message}${f.attempts > 1 ? ` (${f.attempts} attempts)` : ''}`);
        }
      }
    }
    if (shown >= 20 && s.failures.length > shown) lines.push(`  ... see ${REPORT_FILE} for the rest`);
  }
  for (const q of s.sequences ?? []) {
    const score = q.meanError === null
      ? 'no frame pair scored'
      : `warp error mean ${q.meanError.toFixed(4)}, worst ${q.worst!.error.toFixed(4)} (frame ${q.worst!.frame}), valid ${q.meanValidFraction!.toFixed(2)}; plot ${join(s.outDir, q.plot!)}`;
    lines.push(`sequence ${q.id} (${q.consistency}, ${q.frames.length} frames): ${score}`);
    for (const f of q.fallbacks) lines.push(`  frame ${f.frame} ran per frame: ${f.reason}`);
  }
  return lines.join('\n');
}
