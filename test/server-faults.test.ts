/**
 * Inference failures: the worker is made to throw (a provider error, out of memory) or to exit
 * (a crash) at a chosen step of a chosen job, through the Engine's test-only fault option. The
 * job gets INFERENCE_FAILED, a crashed worker is replaced, the next job succeeds, and another
 * client's stream is not affected.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { frameBytes, TestClient, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;

beforeAll(async () => {
  models = await tinyModelsDir();
  server = await startServer({
    port: 0, modelsDir: models.dir, device: 'cpu', log: () => {},
    engine: { faults: [{ jobId: 'throws', step: 2, kind: 'throw' }, { jobId: 'crashes', step: 2, kind: 'exit' }] },
  });
});

afterAll(async () => {
  await server?.close();
  await models?.cleanup();
});

describe.each(['throws', 'crashes'] as const)('a worker that %s mid-job', (jobId) => {
  it('fails that job with INFERENCE_FAILED; the next job and the other client are served', async () => {
    const victim = await TestClient.connect(server.url);
    const other = await TestClient.connect(server.url);
    const workers = server.engine.workersStarted;
    const params = { steps: 4 };
    // The other client has batch work queued on its own stream around the failure.
    for (let i = 0; i < 3; i++) other.send(frameBytes({ jobId: `${jobId}-o${i}`, stream: 'other', mode: 'batch', params }));
    victim.send(frameBytes({ jobId, mode: 'batch', params }));
    const failed = await victim.terminal(jobId);
    expect(failed.type).toBe('error');
    expect(failed.msg.code).toBe('INFERENCE_FAILED');
    // Nothing from the fault's step on (step 1's progress may or may not beat the failure: it is posted after its preview).
    const steps = victim.of(jobId).filter((m) => m.type === 'progress').map((m) => m.msg.step as number);
    expect(steps.filter((s) => s >= 2)).toEqual([]);
    victim.send(frameBytes({ jobId: `${jobId}-next`, mode: 'batch', params }));
    expect((await victim.terminal(`${jobId}-next`)).type).toBe('result');
    for (let i = 0; i < 3; i++) {
      const t = await other.terminal(`${jobId}-o${i}`);
      expect([t.type, t.msg.code]).toEqual(['result', undefined]);
    }
    expect(other.received.filter((r) => r.type === 'error')).toHaveLength(0);
    // A thrown error leaves the worker running; a crash replaces it.
    expect(server.engine.workersStarted - workers).toBe(jobId === 'crashes' ? 1 : workers === 0 ? 1 : 0);
    expect(victim.closed).toBeUndefined();
    await victim.close();
    await other.close();
  });
});
