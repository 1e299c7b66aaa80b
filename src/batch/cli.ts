/**
 * `depthcast batch <manifest>`: loads and expands the manifest, picks the backend (a running
 * service with --server, else in-process), runs the batch and prints the summary.
 * Exit code: 0 all outputs done; 2 some outputs failed (listed in the summary and in
 * <out>/batch-report.json); 1 nothing ran (bad manifest, unreachable service, ...); 130 interrupted.
 */
import { resolve } from 'node:path';
import { DepthcastError } from '../errors.ts';
import type { Device } from '../runtime/ort.ts';
import { type Backend, InProcessBackend, ServiceBackend } from './backends.ts';
import { BatchInputs } from './inputs.ts';
import { expandManifest, loadManifest } from './manifest.ts';
import { createReporter } from './progress.ts';
import { formatSummary, runBatch } from './runner.ts';

export interface BatchCliOptions {
  server?: string;
  inProcess?: boolean;
  token?: string;
  out?: string;
  concurrency?: number;
  retry?: number;
  modelsDir?: string;
  device?: Device;
}

export const EXIT_SOME_FAILED = 2;
export const EXIT_INTERRUPTED = 130;

export async function batchCommand(manifestPath: string, opts: BatchCliOptions): Promise<void> {
  let concurrency = opts.concurrency ?? 1;
  const retry = opts.retry ?? 0;
  if (!(Number.isInteger(concurrency) && concurrency >= 1 && concurrency <= 64)) throw new DepthcastError('BAD_REQUEST', `--concurrency must be 1..64, got ${concurrency}`);
  if (!(Number.isInteger(retry) && retry >= 0 && retry <= 100)) throw new DepthcastError('BAD_REQUEST', `--retry must be 0..100, got ${retry}`);
  if (opts.server && opts.inProcess) throw new DepthcastError('BAD_REQUEST', 'give --server or --in-process, not both');
  if (!opts.server && opts.token) throw new DepthcastError('BAD_REQUEST', '--token is for --server');

  const loaded = await loadManifest(manifestPath);
  const outputs = expandManifest(loaded);
  const outDir = opts.out ? resolve(opts.out) : resolve(loaded.baseDir, loaded.manifest.out ?? 'out');

  const reporter = createReporter(process.stderr);
  const log = (line: string) => reporter.log(line);
  const backend: Backend = opts.server
    ? new ServiceBackend(opts.server, opts.token, log)
    : new InProcessBackend({ modelsDir: opts.modelsDir, device: opts.device ?? 'auto', log });

  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (abort.signal.aborted) process.exit(EXIT_INTERRUPTED); // second Ctrl-C: leave now
    log(`${sig}: stopping (outputs in flight are dropped; run the same command again to resume)`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await backend.start();
    const cap = backend.maxInFlight?.();
    if (cap !== undefined && concurrency > cap) {
      log(`--concurrency ${concurrency} is more than the service queues (${cap}); using ${cap}`);
      concurrency = cap;
    }
    const inputs = new BatchInputs(outDir, log, abort.signal);
    const summary = await runBatch({ outputs, outDir, backend, inputs, reporter, concurrency, retry, signal: abort.signal });
    process.stdout.write(`${formatSummary(summary)}\n`);
    if (summary.interrupted) process.exitCode = EXIT_INTERRUPTED;
    else if (summary.failed) process.exitCode = EXIT_SOME_FAILED;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await backend.close();
  }
}
