/**
 * The inference worker's heap sizing (src/engine/heap.ts), through the real engine: live
 * frames at Stable Diffusion sizes (512×512, ControlNet, CFG), counting the full mark-compact
 * collections the worker reports per job (80 frames: the default sizing's count varies from run to run). V8's default sizing is run first as the control (it
 * must show collections, or this test could not fail), then the sized heap. The V8 flag is
 * process-wide and sticky, hence this order and a file of its own. The ControlNet runs as two
 * sessions, the path that still hands its 13 residuals through JavaScript every step (exports that
 * cannot be composed); the composed graph leaves too little garbage for the control to show.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Engine, type EngineOptions } from '../src/engine/engine.ts';
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

async function fullCollections(workerHeap: EngineOptions['workerHeap']): Promise<{ major: number; gcMs: number }> {
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
  } finally {
    await engine.close();
  }
  return { major, gcMs };
}

describe('inference worker heap', () => {
  let control: { major: number; gcMs: number };
  beforeAll(async () => {
    control = await fullCollections('v8-default');
  });

  it('leaves most short-lived model outputs to the scavenger: no full collection every other frame', async () => {
    const sized = await fullCollections('sized');
    console.log(`full collections over ${FRAMES} live 512×512 ControlNet frames: V8 default ${control.major} (${control.gcMs.toFixed(1)} ms of GC), sized heap ${sized.major} (${sized.gcMs.toFixed(1)} ms)`);
    expect(control.major).toBeGreaterThanOrEqual(5);
    expect(sized.major * 2).toBeLessThanOrEqual(control.major);
    expect(sized.major).toBeLessThanOrEqual(FRAMES / 6);
  });
});
