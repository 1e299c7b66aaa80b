/**
 * What a new live frame does to its stream's running job (docs/protocol.md, "Live streams").
 * Cancelling it at once gives the freshest view soonest, but a stream whose frames keep coming
 * (a user orbiting) would then never get a result: 1 result for 1,101 frames in the bench's
 * flood. So the running job is cancelled only when all three hold:
 * - it is young (under FINISH_FROM_PROGRESS of its steps done);
 * - its frame came after a rest: the stream's frame before it was more than one generation
 *   older. A frame that arrived while the view kept moving is part of a motion, and a motion's
 *   jobs finish, so results keep coming at the generation rate;
 * - the stream has had a result or error since it last lost a running job this way, so even
 *   with misjudged timing at most every other start is cancelled.
 * Otherwise the job finishes and the new frame waits as the stream's one pending frame; the
 * last frame's result then comes within 2 generations of it being sent (the one running, then
 * its own).
 */

/** A running job this far along (completed steps / total) always finishes. */
export const FINISH_FROM_PROGRESS = 0.5;

/** Per stream, what the policy remembers. */
export interface LiveStreamState {
  /** Live jobs cancelled for a newer frame since the stream's last result or error. */
  supersededSinceOutcome: number;
  /** performance.now() when the stream's latest live frame arrived. */
  lastFrameAt?: number;
  /** Engine time of the stream's latest finished generation, in ms. */
  lastGenerationMs?: number;
}

/** Whether a frame arriving now (performance.now()) comes after a rest; call before noteFrame. */
export function afterRest(stream: LiveStreamState, now: number): boolean {
  if (stream.lastFrameAt === undefined || stream.lastGenerationMs === undefined) return true;
  return now - stream.lastFrameAt > stream.lastGenerationMs;
}

/** Call for every live frame the stream receives. */
export function noteFrame(stream: LiveStreamState, now: number): void {
  stream.lastFrameAt = now;
}

/** Whether a new live frame cancels its stream's running live job (else the job finishes first). */
export function supersedesRunning(running: { progress?: { step: number; total: number }; afterRest: boolean }, stream: LiveStreamState): boolean {
  if (!running.afterRest || stream.supersededSinceOutcome > 0) return false;
  const p = running.progress;
  const done = p && p.total > 0 ? p.step / p.total : 0;
  return done < FINISH_FROM_PROGRESS;
}

/** Call when a running live job is cancelled for a newer frame of its stream. */
export function noteSuperseded(stream: LiveStreamState): void {
  stream.supersededSinceOutcome++;
}

/** Call when a job of the stream ends with a result (with its engine time) or an error. */
export function noteOutcome(stream: LiveStreamState, generationMs?: number): void {
  stream.supersededSinceOutcome = 0;
  if (generationMs !== undefined) stream.lastGenerationMs = generationMs;
}
