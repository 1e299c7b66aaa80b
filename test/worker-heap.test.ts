/**
 * The inference worker's heap sizing (src/engine/heap.ts), through the real engine: live frames
 * at Stable Diffusion sizes (512×512, ControlNet, CFG). V8's default sizing runs first as the
 * control, then the sized heap (the V8 flag is process-wide and sticky, hence this order and a
 * file of its own). Asserted: the sized worker's young generation stays within its cap. Printed: the full mark-compact collections each reports over 80 frames,
 * which is why the cap exists, but which vary with the machine. The ControlNet runs as two
 * sessions, the path that still hands its 13 residuals through JavaScript every step (exports
 * that cannot be composed); the composed graph leaves too little garbage for the control to show.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine, type EngineOptions } from '../src/engine/engine.ts';
import { INFERENCE_WORKER_LIMITS } from '../src/engine/heap.ts';
import { FrameHeader, PROTOCOL_VERSION } from '../src/protocol/schemas.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';
import { benchDepth } from '../tools/bench/pipeline-bench.ts';

const FRAMES = 80;
const WARM_UP = 3;
let dir: string;

beforeAll(async () => {
  dir = join(mkdtempSync(join(tmpdir(), 'depthcast-heap-')), 'sd-controlnet');
  await createTinyModel(dir, { family: 'controlnet', hiddenSize: 768 });
});

function header(jobId: string) {
  return FrameHeader.parse({
    type: 'frame', protocol: PROTOCOL_VERSION, jobId, stream: 'heap', mode: 'live',
    depth: { width: 512, height: 512, dtype: 'f32', kind: 'zdepth', near: 1, far: 100, byteLength: 512 * 512 * 4 },
    params: { prompt: 'a timber house in a pine forest', steps: 4, guidance: 7.5, scheduler: 'euler-a', seed: 1, previewEvery: 1 },
  });
}

async function fullCollections(workerHeap: EngineOptions['workerHeap']): Promise<{ major: number; gcMs: number; newSpace: number }> {
  const engine = new Engine('cpu', () => {}, { workerHeap, controlnetGraph: 'separate' });
  const depth = new Uint8Array(benchDepth().buffer);
  let major = 0;
  let gcMs = 0;
  try {
    for (let i = 0; i < WARM_UP + FRAMES; i++) {
      const result = await engine.run({ jobId: `f${i}`, model: { name: 'sd-controlnet', dir }, header: header(`f${i}`), depth });
      if (i < WARM_UP) continue;
      major += result.gcMajor;
      gcMs += result.timings.gc ?? 0;
    }
    const newSpace = (await engine.workerMemory())?.newSpace;
    if (newSpace === undefined) throw new Error('the worker did not report its new space');
    return { major, gcMs, newSpace };
  } finally {
    await engine.close();
  }
}

describe('inference worker heap', () => {
  let control: { major: number; gcMs: number; newSpace: number };
  beforeAll(async () => {
    control = await fullCollections('v8-default');
  });

  it('keeps the young generation within its cap under live 512×512 ControlNet frames', async () => {
    const sized = await fullCollections('sized');
    const mb = (b: number) => (b / 1048576).toFixed(1);
    // The full-collection counts are figures, not assertions: they depend on the machine (a CI
    // runner measured 10 sized against 13 default where this VM gives 2-7 against 14-37).
    console.log(`over ${FRAMES} live 512×512 ControlNet frames: V8 default ${control.major} full collections (${control.gcMs.toFixed(1)} ms of GC), new space ${mb(control.newSpace)} MB; sized heap ${sized.major} (${sized.gcMs.toFixed(1)} ms), new space ${mb(sized.newSpace)} MB`);
    // The cap holds. (V8's default grew the same worker's new space to 32 MB on this VM; whether
    // it grows that far depends on the machine, so the control is printed, not asserted.)
    expect(sized.newSpace).toBeLessThanOrEqual(INFERENCE_WORKER_LIMITS.maxYoungGenerationSizeMb! * 1048576);
  });
});
