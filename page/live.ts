/**
 * When to capture and send the next live frame: at most one capture in flight, at most one start
 * per `minIntervalMs`, and only when something changed since the last capture. Newest wins: a
 * capture reads the scene as it is when it starts, so changes made while throttled are all in it.
 * Pure (the clock is passed in) so it is unit-tested in Node.
 */
export class LiveScheduler {
  /** Time from which the pending change may be sent; undefined = nothing pending. */
  private dueAt: number | undefined;
  private busy = false;
  private lastStart = -Infinity;

  constructor(public minIntervalMs = 250) {}

  /** Something changed. `delayMs` lets typing settle before a frame goes out. */
  markDirty(now: number, delayMs = 0): void {
    const due = now + delayMs;
    // A later keystroke pushes the deadline back; an immediate change never waits for an older delay.
    if (this.dueAt === undefined) this.dueAt = due;
    else this.dueAt = delayMs > 0 ? Math.max(this.dueAt, due) : Math.min(this.dueAt, due);
  }

  get pending(): boolean {
    return this.dueAt !== undefined;
  }

  get inFlight(): boolean {
    return this.busy;
  }

  /** True when a capture should start now; the caller must call `finish()` when it is done. */
  tryStart(now: number, enabled: boolean): boolean {
    if (!enabled || this.busy || this.dueAt === undefined || now < this.dueAt) return false;
    if (now - this.lastStart < this.minIntervalMs) return false;
    this.dueAt = undefined;
    this.busy = true;
    this.lastStart = now;
    return true;
  }

  /** Starts a capture regardless of throttling (the Generate button); false if one is in flight. */
  forceStart(now: number): boolean {
    if (this.busy) return false;
    this.dueAt = undefined;
    this.busy = true;
    this.lastStart = now;
    return true;
  }

  finish(): void {
    this.busy = false;
  }
}

/** Reconnect delay after `attempt` consecutive failures: 0.5 s doubling to 10 s, with ±20 % jitter. */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(10_000, 500 * 2 ** Math.max(0, attempt));
  return Math.round(base * (0.8 + 0.4 * random()));
}
