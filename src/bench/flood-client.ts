/**
 * The live flood's client: frames at a fixed rate on one stream, newest wins, and the last
 * frame timed to its result. It runs in a child process of the bench (flood-entry.mjs), as a
 * real client such as Blender does: in the bench's own process its 60 MB/s of frame building
 * and masking ran on the service's event loop and in its heap, and its garbage counted as the
 * service's RSS growth.
 */
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
  reused: number;
  cancelled: number;
  /** From sending the last frame to receiving its result, in ms (NaN when it got none). */
  lastFrameLatency: number;
  lastFrameGotResult: boolean;
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
    const last = await client.waitFor(lastId);
    const results = [...client.results.values()];
    return {
      sent,
      computed: results.filter((r) => !r.header.reusedFrom).length,
      reused: results.filter((r) => r.header.reusedFrom).length,
      cancelled: client.cancelled.size,
      lastFrameLatency: last ? last.receivedAt - lastSentAt : NaN,
      lastFrameGotResult: !!last,
    };
  } finally {
    client.ws.close();
  }
}
