/**
 * Batch progress on stderr: a cli-progress bar with counts and ETA on a terminal, plain
 * one-line-per-event output otherwise (logs, CI, pipes).
 */
import cliProgress from 'cli-progress';
import type { DepthcastError } from '../errors.ts';

export interface BatchReporter {
  /** `todo` outputs will run; `skipped` were already done. */
  start(info: { total: number; skipped: number; todo: number; outDir: string }): void;
  done(id: string, ms: number): void;
  retry(id: string, err: DepthcastError, attempt: number, of: number): void;
  failed(id: string, err: DepthcastError, attempts: number): void;
  log(line: string): void;
  stop(): void;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** Plain lines: "[3/6] done scene/s1.png 812 ms, ETA 4s". */
export class LineReporter implements BatchReporter {
  private todo = 0;
  private finished = 0;
  private t0 = 0;

  constructor(private readonly out: NodeJS.WritableStream = process.stderr) {}

  private write(line: string): void {
    this.out.write(`${line}\n`);
  }

  private counter(): string {
    const w = String(this.todo).length;
    return `[${String(this.finished).padStart(w)}/${this.todo}]`;
  }

  private eta(): string {
    const left = this.todo - this.finished;
    if (!left || !this.finished) return '';
    return `, ETA ${formatDuration(((performance.now() - this.t0) / this.finished) * left)}`;
  }

  start(info: { total: number; skipped: number; todo: number; outDir: string }): void {
    this.todo = info.todo;
    this.t0 = performance.now();
    this.write(`batch: ${info.total} output${info.total === 1 ? '' : 's'}, ${info.skipped} already done, ${info.todo} to run → ${info.outDir}`);
  }

  done(id: string, ms: number): void {
    this.finished++;
    this.write(`${this.counter()} done ${id}.png ${Math.round(ms)} ms${this.eta()}`);
  }

  retry(id: string, err: DepthcastError, attempt: number, of: number): void {
    this.write(`retry ${id} (attempt ${attempt + 1} of ${of}) after ${err.code}: ${err.message}`);
  }

  failed(id: string, err: DepthcastError, attempts: number): void {
    this.finished++;
    this.write(`${this.counter()} FAILED ${id}: ${err.code}: ${err.message}${attempts > 1 ? ` (${attempts} attempts)` : ''}${this.eta()}`);
  }

  log(line: string): void {
    this.write(line);
  }

  stop(): void {}
}

/** A progress bar for terminals; failures and logs print above it. */
export class BarReporter implements BatchReporter {
  private multi?: cliProgress.MultiBar;
  private bar?: cliProgress.SingleBar;
  private doneCount = 0;
  private failedCount = 0;

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  start(info: { total: number; skipped: number; todo: number; outDir: string }): void {
    this.out.write(`batch: ${info.total} output${info.total === 1 ? '' : 's'}, ${info.skipped} already done, ${info.todo} to run → ${info.outDir}\n`);
    this.multi = new cliProgress.MultiBar({
      stream: this.out,
      format: ' {bar} {value}/{total} | {ok} done, {failed} failed | {duration_formatted} elapsed, ETA {eta_formatted} | {last}',
      barsize: 24,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 20,
      fps: 5,
    }, cliProgress.Presets.shades_classic);
    this.bar = this.multi.create(info.todo, 0, { ok: 0, failed: 0, last: '' });
  }

  done(id: string, _ms: number): void {
    this.doneCount++;
    this.bar?.increment(1, { ok: this.doneCount, failed: this.failedCount, last: id });
  }

  retry(id: string, err: DepthcastError, attempt: number, of: number): void {
    this.log(`retry ${id} (attempt ${attempt + 1} of ${of}) after ${err.code}: ${err.message}`);
  }

  failed(id: string, err: DepthcastError, attempts: number): void {
    this.failedCount++;
    this.log(`FAILED ${id}: ${err.code}: ${err.message}${attempts > 1 ? ` (${attempts} attempts)` : ''}`);
    this.bar?.increment(1, { ok: this.doneCount, failed: this.failedCount, last: id });
  }

  log(line: string): void {
    if (this.multi) this.multi.log(`${line}\n`);
    else this.out.write(`${line}\n`);
  }

  stop(): void {
    this.multi?.stop();
    this.multi = undefined;
  }
}

export function createReporter(stream: NodeJS.WriteStream = process.stderr): BatchReporter {
  return stream.isTTY ? new BarReporter(stream) : new LineReporter(stream);
}
