/**
 * The live flood's client: frames at a fixed rate on one stream, newest wins, and the last
 * frame timed to its result. It runs in a child process of the bench (flood-entry.mjs), as a
 * real client such as Blender does: in the bench's own process its 60 MB/s of frame building
 * and masking ran on the service's event loop and in its heap, and its garbage counted as the
 * service's RSS growth.
 */
import { median } from './stats.ts';
import { BenchClient, frame, movingDepth } from './ws-client.ts';

export interface FloodRequest {
  url: string;
  seconds: number;
  fps: number;
  steps: number;
}

export interface FloodCounts {
  sent: number;
  computed: number;
  /** Computed results that arrived while frames were still being sent. */
  computedWhileSending: number;
  /** Median engine time (timings.total) of those results: a generation's length under the flood's load. */
  generationMsWhileSending: number;
  reused: number;
  cancelled: number;
  /** From sending the last frame to receiving its result, in ms (NaN when it got none). */
  lastFrameLatency: number;
  lastFrameGotResult: boolean;
  /** The service's own arrival → result time of the last frame (timings.endToEnd); the rest of lastFrameLatency is transport and the socket's backlog. */
  lastFrameServiceMs: number;
}

export async function runFlood({ url, seconds, fps, steps }: FloodRequest): Promise<FloodCounts> {
  const client = await BenchClient.connect(url);
  try {
    let sent = 0;
    let lastId = '';
    let lastSentAt = 0;
    const start = performance.now();
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (performance.now() - start >= seconds * 1000) {
          clearInterval(timer);
          resolve();
          return;
        }
        lastId = `flood-${sent}`;
        lastSentAt = client.send(frame(lastId, 'flood', 'live', movingDepth(sent + 1000), steps));
        sent++;
      }, 1000 / fps);
    });
    const sendingEnded = performance.now();
    const last = await client.waitFor(lastId);
    const results = [...client.results.values()];
    const whileSending = results.filter((r) => !r.header.reusedFrom && r.receivedAt <= sendingEnded);
    return {
      sent,
      computed: results.filter((r) => !r.header.reusedFrom).length,
      computedWhileSending: whileSending.length,
      generationMsWhileSending: median(whileSending.map((r) => r.header.timings.total ?? NaN)),
      reused: results.filter((r) => r.header.reusedFrom).length,
      cancelled: client.cancelled.size,
      lastFrameLatency: last ? last.receivedAt - lastSentAt : NaN,
      lastFrameGotResult: !!last,
      lastFrameServiceMs: last?.header.timings.endToEnd ?? NaN,
    };
  } finally {
    client.ws.close();
  }
}
