/**
 * What a new live frame does to its stream's running job (docs/protocol.md, "Live streams").
 * Cancelling it at once gives the freshest view soonest, but a stream whose frames keep coming
 * (a user orbiting) would then never get a result: 1 result for 1,101 frames in the bench's
 * flood. So the running job is cancelled only when it is young AND its stream has had a result
 * (or error) since its last cancellation; otherwise it finishes and the newest frame waits as
 * the stream's one pending frame. In a continuous stream every other start at most is
 * cancelled, each right after it began, so results keep the quiet generation rate, and the last
 * frame's result comes within 2 generations of it being sent (the one running, then its own).
 */

/** A running job this far along (completed steps / total) always finishes. */
export const FINISH_FROM_PROGRESS = 0.5;

/** Per stream: live jobs cancelled for a newer frame since the stream's last terminal outcome. */
export interface LiveStreamState {
  supersededSinceOutcome: number;
}

/** Whether a new live frame cancels its stream's running live job (else the job finishes first). */
export function supersedesRunning(progress: { step: number; total: number } | undefined, stream: LiveStreamState): boolean {
  if (stream.supersededSinceOutcome > 0) return false;
  const done = progress && progress.total > 0 ? progress.step / progress.total : 0;
  return done < FINISH_FROM_PROGRESS;
}

/** Call when a running live job is cancelled for a newer frame of its stream. */
export function noteSuperseded(stream: LiveStreamState): void {
  stream.supersededSinceOutcome++;
}

/** Call when a job of the stream ends with a result or an error. */
export function noteOutcome(stream: LiveStreamState): void {
  stream.supersededSinceOutcome = 0;
}
