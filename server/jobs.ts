/**
 * Job records for GET /v1/jobs/:id: a plain snapshot per job, kept for a bounded time and count
 * (active jobs are never evicted). The latest job with an id wins.
 */
import type { DepthcastError } from '../src/errors.ts';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobRecord {
  jobId: string;
  stream: string;
  mode: 'live' | 'batch';
  state: JobState;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  progress?: { step: number; total: number };
  result?: {
    finishReason: 'SUCCESS';
    seed: number;
    width: number;
    height: number;
    model: { name: string; hash: string };
    params: Record<string, unknown>;
    timings: Record<string, number>;
    reusedFrom?: string;
  };
  cancelReason?: string;
  error?: { code: string; message: string };
}

export class JobStore {
  private readonly records = new Map<string, { record: JobRecord; finishedAt?: number }>();

  constructor(private readonly maxRecords = 1000, private readonly ttlMs = 10 * 60_000) {}

  add(record: JobRecord): JobRecord {
    this.records.delete(record.jobId);
    this.records.set(record.jobId, { record });
    this.prune();
    return record;
  }

  /** Records held (active ones and finished ones not yet aged out). */
  get size(): number {
    return this.records.size;
  }

  get(jobId: string): JobRecord | undefined {
    this.prune();
    return this.records.get(jobId)?.record;
  }

  /** Marks a record finished so it ages out. */
  finish(record: JobRecord, state: Exclude<JobState, 'queued' | 'running'>, extra: { error?: DepthcastError; cancelReason?: string } = {}): void {
    record.state = state;
    record.finishedAt = new Date().toISOString();
    if (extra.error) record.error = { code: extra.error.code, message: extra.error.message };
    if (extra.cancelReason) record.cancelReason = extra.cancelReason;
    const entry = this.records.get(record.jobId);
    if (entry?.record === record) entry.finishedAt = Date.now();
  }

  private prune(): void {
    const now = Date.now();
    let excess = this.records.size - this.maxRecords;
    for (const [id, entry] of this.records) {
      if (entry.finishedAt === undefined) continue;
      if (excess > 0 || now - entry.finishedAt > this.ttlMs) {
        this.records.delete(id);
        excess--;
      } else break;
    }
  }
}
