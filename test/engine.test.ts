/**
 * The engine's hand-off of depth bytes to its worker: moved (transferred) when the caller gives
 * them up in a buffer of their own, copied otherwise, with the same image either way.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Engine } from '../src/engine/engine.ts';
import { FrameHeader } from '../src/protocol/schemas.ts';
import { frameHeader, sceneDepth, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let engine: Engine;

beforeAll(async () => {
  models = await tinyModelsDir();
  engine = new Engine('cpu');
});

afterAll(async () => {
  await engine.close();
  await models.cleanup();
});

function job(jobId: string, depth: Uint8Array, transferDepth?: boolean) {
  return { jobId, model: { name: 'tiny', dir: join(models.dir, 'tiny') }, header: FrameHeader.parse(frameHeader({ jobId, mode: 'batch' })), depth, transferDepth };
}

function ownBytes(): Uint8Array {
  return new Uint8Array(sceneDepth().buffer);
}

describe('engine depth hand-off', () => {
  it('moves a depth buffer the caller gives up, copies one it keeps, and generates the same image', async () => {
    const kept = ownBytes();
    const copied = await engine.run(job('kept', kept));
    expect(kept.byteLength).toBe(64 * 64 * 4);

    const given = ownBytes();
    const moved = await engine.run(job('given', given, true));
    // Detached: the worker owns those bytes now, and nothing was copied on the way.
    expect(given.byteLength).toBe(0);
    expect(given.buffer.byteLength).toBe(0);
    expect(Buffer.from(moved.image).equals(Buffer.from(copied.image))).toBe(true);
  });

  it('copies a view into a larger buffer even when told it may move it', async () => {
    const whole = new Uint8Array(8 + 64 * 64 * 4);
    whole.set(ownBytes(), 8);
    const view = whole.subarray(8);
    const result = await engine.run(job('view', view, true));
    expect(view.byteLength).toBe(64 * 64 * 4);
    expect(result.width).toBe(64);
  });
});

describe('scheduler round trip', () => {
  it('a result reports the model scheduler by class, and sending that back gives the same image', async () => {
    const header = (jobId: string, params: Record<string, unknown>) =>
      FrameHeader.parse(frameHeader({ jobId, mode: 'batch', params: { seed: 9, ...params } }));
    const model = { name: 'tiny', dir: join(models.dir, 'tiny') };
    const plainHeader = header('plain', {});
    delete (plainHeader.params as { scheduler?: string }).scheduler;
    const first = await engine.run({ jobId: 'plain', model, header: plainHeader, depth: ownBytes() });
    const reported = first.params.scheduler as string;
    expect(reported).toMatch(/^[A-Za-z]+Scheduler$/);
    const again = await engine.run({ jobId: 'again', model, header: header('again', { scheduler: reported }), depth: ownBytes() });
    expect(again.params.scheduler).toBe(reported);
    expect(Buffer.from(again.image).equals(Buffer.from(first.image))).toBe(true);
    const other = reported === 'LCMScheduler' ? 'DDIMScheduler' : 'LCMScheduler';
    await expect(engine.run({ jobId: 'other', model, header: header('other', { scheduler: other }), depth: ownBytes() }))
      .rejects.toMatchObject({ code: 'UNSUPPORTED_SCHEDULER', message: expect.stringContaining(`this model's is ${reported}`) });
  });

  it('the wire accepts exactly the scheduler classes depthcast builds', async () => {
    const { SUPPORTED_SCHEDULER_CLASSES } = await import('../src/schedulers/index.ts');
    const { SCHEDULER_CLASS_NAMES } = await import('../src/protocol/schemas.ts');
    expect([...SCHEDULER_CLASS_NAMES].sort()).toEqual([...SUPPORTED_SCHEDULER_CLASSES].sort());
  });
});
