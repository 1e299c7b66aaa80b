/**
 * The WebGPU execution provider, for real, on SwiftShader (test/support/webgpu.ts): the reference
 * conformance cases through both pipelines, the checkpoint cases (models built from diffusers
 * safetensors), and the stable feeds kept on the GPU between steps
 * (ModelSession.residentFeeds). Resident and re-fed runs use the same kernels on the same data,
 * so their images must be bit-identical; the traffic counters must show the embeddings and the
 * control image crossing once per image instead of once per step. And the service itself on
 * WebGPU, through a real ws client.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { maxAbsDiff } from './support/arrays.ts';
import { runCase } from '../tools/conformance/run.ts';
import { cachedBuild } from '../src/checkpoint/cache.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';
import { buildSdControlnet } from '../tools/bench/sd-controlnet.ts';
import { type LoadedModel, loadModel } from '../src/models/load.ts';
import { runControlnet } from '../src/pipelines/controlnet.ts';
import { runDepth2Img } from '../src/pipelines/depth2img.ts';
import { SeededNoise } from '../src/pipelines/noise.ts';
import type { GenerateInput, GenerateOutput } from '../src/pipelines/types.ts';
import { openSession, residentFeedCount } from '../src/runtime/ort.ts';
import { Scratch } from '../src/util/scratch.ts';
import { nearnessOf, sceneDepth, SHARED_CONFORMANCE, tinyModelDir } from './support/tiny.ts';
import { useSoftwareWebgpu } from './support/webgpu.ts';
import { frameBytes, jsonOf, sceneDepth as serviceDepth, TestClient, tinyModelsDir } from './support/server-helpers.ts';
import { startServer } from '../server/index.ts';

const haveWebgpu = useSoftwareWebgpu();

async function webgpuModel(dir: string, resident: boolean, controlnetGraph?: 'composed' | 'separate'): Promise<LoadedModel> {
  const model = await loadModel(dir, { device: 'webgpu', controlnetGraph });
  for (const s of [...Object.values(model.sessions), model.controlnetUnet]) {
    if (!s) continue;
    expect(s.device).toBe('webgpu');
    s.residentFeeds = resident;
  }
  return model;
}

const cases = existsSync(join(SHARED_CONFORMANCE, 'cases')) ? readdirSync(join(SHARED_CONFORMANCE, 'cases')).sort() : [];

describe.skipIf(!haveWebgpu || cases.length === 0)('WebGPU EP (SwiftShader) on the conformance cases', () => {
  it.each(cases)('%s: within the reference tolerance, and bit-identical with the stable feeds kept on the GPU', async (name) => {
    const caseDir = join(SHARED_CONFORMANCE, 'cases', name);
    const spec = JSON.parse(readFileSync(join(caseDir, 'case.json'), 'utf8')) as { model: string; width: number; height: number };
    const modelDir = join(caseDir, spec.model);
    const resident = await webgpuModel(modelDir, true);
    const refed = await webgpuModel(modelDir, false);
    try {
      const a = await runCase(caseDir, new Map([[modelDir, resident]]));
      const b = await runCase(caseDir, new Map([[modelDir, refed]]));
      expect(a.passed, `${name}: max_abs ${a.maxAbs}${a.note ? ` (${a.note})` : ''}`).toBe(true);
      expect(maxAbsDiff(a.image, b.image)).toBe(0);
      // The denoising graph: the composed ControlNet + UNet, or depth2img's UNet.
      const ta = (resident.controlnetUnet ?? resident.sessions.unet).traffic;
      const tb = (refed.controlnetUnet ?? refed.sessions.unet).traffic;
      expect(ta.runs).toBe(tb.runs);
      expect(tb.bytesUploaded).toBe(0);
      // What stays on the GPU went up once (one generation), and no longer crosses per step.
      expect(ta.bytesUploaded).toBeGreaterThan(0);
      // Every step fed the same stable feeds, which the re-fed model sent each time.
      expect(tb.bytesIn - ta.bytesIn).toBe(ta.bytesUploaded * ta.runs);
      // Left per step: the latents (one batch entry into the composed graph; depth2img's CFG
      // batch of latents and depth) and a few scalars. The embeddings and the control image stay.
      const latent = (spec.width / resident.pixelsPerLatent) * (spec.height / resident.pixelsPerLatent) * 4;
      const latentsIn = resident.controlnetUnet ? resident.latentChannels * latent : 2 * (resident.latentChannels + 1) * latent;
      expect(ta.bytesIn / ta.runs).toBeGreaterThanOrEqual(latentsIn);
      expect(ta.bytesIn / ta.runs).toBeLessThanOrEqual(latentsIn + 64);
    } finally {
      await Promise.all([resident.release(), refed.release()]);
    }
  });
});

const CHECKPOINT_CASES = join(SHARED_CONFORMANCE, '..', 'checkpoints', 'cases');
const checkpointCases = existsSync(CHECKPOINT_CASES) ? readdirSync(CHECKPOINT_CASES).sort() : [];

describe.skipIf(!haveWebgpu || checkpointCases.length === 0)('WebGPU EP (SwiftShader) on models built from the public checkpoints', () => {
  it.each(checkpointCases)('%s: within the reference tolerance', async (name) => {
    const caseDir = join(CHECKPOINT_CASES, name);
    const spec = JSON.parse(readFileSync(join(caseDir, 'case.json'), 'utf8')) as { model: string; controlnet?: string };
    const { dir } = await cachedBuild({ dir: resolve(caseDir, spec.model) }, spec.controlnet ? { dir: resolve(caseDir, spec.controlnet) } : undefined);
    const model = await webgpuModel(dir, true);
    try {
      const outcome = await runCase(caseDir, new Map([[dir, model]]));
      expect(outcome.passed, `${name}: max_abs ${outcome.maxAbs}${outcome.note ? ` (${outcome.note})` : ''}`).toBe(true);
      expect((model.controlnetUnet ?? model.sessions.unet).traffic.bytesUploaded).toBeGreaterThan(0);
    } finally {
      await model.release();
    }
  });
});

function cnInput(prompt: string, control: Float32Array, scratch: Scratch): GenerateInput {
  return {
    prompt, negativePrompt: 'fog', width: 64, height: 64, steps: 3, guidanceScale: 6, seed: 11,
    schedulerConfig: { _class_name: 'EulerDiscreteScheduler', num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' },
    noise: new SeededNoise(11),
    controlImage: { data: control, width: 64, height: 64, channels: 1 },
    scratch,
  };
}

/**
 * Two frames of a stream: the caller refills one control buffer (it is borrowed), as the engine's
 * scratch does. `quantize`: an 8- or 16-bit depth source (the composed graph takes its levels).
 */
async function twoFrames(model: LoadedModel, quantize: 0 | 255 | 65535): Promise<GenerateOutput[]> {
  const scratch = new Scratch();
  const control = new Float32Array(64 * 64);
  const frames: GenerateOutput[] = [];
  for (const [prompt, near] of [['a red barn', 1], ['a glass tower at night', 2.5]] as const) {
    control.set(nearnessOf(sceneDepth(), near));
    if (quantize) for (let i = 0; i < control.length; i++) control[i] = Math.round(control[i]! * quantize) / quantize;
    frames.push(await runControlnet(model, cnInput(prompt, control, scratch)));
  }
  return frames;
}

describe.skipIf(!haveWebgpu)('stable feeds kept on the GPU (WebGPU EP, SwiftShader)', () => {
  it.each([
    ['composed graph, float control image', 'composed', 0],
    ['composed graph, 8-bit levels (a reused scratch buffer)', 'composed', 255],
    // uint16 cannot be held in a GPU buffer by onnxruntime-common: those levels are fed each step.
    ['composed graph, 16-bit levels', 'composed', 65535],
    ['two sessions', 'separate', 0],
  ] as const)('%s: a second frame with new contents in the same buffers gives the re-fed image', async (_label, graph, quantize) => {
    const dir = await tinyModelDir({ family: 'controlnet' });
    const resident = await webgpuModel(dir, true, graph);
    const refed = await webgpuModel(dir, false, graph);
    try {
      const a = await twoFrames(resident, quantize);
      const b = await twoFrames(refed, quantize);
      // The frames differ, so a stale GPU copy of the first frame's feeds would show.
      expect(maxAbsDiff(b[0]!.image!.data, b[1]!.image!.data)).toBeGreaterThan(1e-3);
      expect(maxAbsDiff(a[0]!.image!.data, b[0]!.image!.data)).toBe(0);
      expect(maxAbsDiff(a[1]!.image!.data, b[1]!.image!.data)).toBe(0);
      const sessions = (m: LoadedModel) => [m.controlnetUnet, m.sessions.controlnet, m.sessions.unet].filter((s) => s && !s.released);
      const bytes = (m: LoadedModel, k: 'bytesIn' | 'bytesUploaded') => sessions(m).reduce((n, s) => n + s!.traffic[k], 0);
      expect(bytes(resident, 'bytesUploaded')).toBeGreaterThan(0);
      expect(bytes(resident, 'bytesIn') + bytes(resident, 'bytesUploaded')).toBeLessThan(bytes(refed, 'bytesIn'));
      expect(residentFeedCount()).toBeLessThanOrEqual(8);
    } finally {
      await Promise.all([resident.release(), refed.release()]);
    }
  });

  it('many generations keep at most 8 feeds on the GPU', async () => {
    const dir = await tinyModelDir({ family: 'depth2img' });
    const model = await webgpuModel(dir, true);
    try {
      const depth = nearnessOf(sceneDepth());
      for (let i = 0; i < 12; i++) {
        await runDepth2Img(model, {
          prompt: `frame ${i}`, negativePrompt: '', width: 64, height: 64, steps: 1, guidanceScale: 5, seed: i,
          schedulerConfig: { _class_name: 'DDIMScheduler', num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' },
          noise: new SeededNoise(i),
          depth: { data: depth, width: 64, height: 64, channels: 1 },
        });
      }
      expect(model.sessions.unet.traffic.bytesUploaded).toBeGreaterThan(0);
      expect(residentFeedCount()).toBe(8);
    } finally {
      await model.release();
    }
  });
});

describe.skipIf(!haveWebgpu)('--device auto with a WebGPU adapter', () => {
  it('the child-process probe finds the adapter, so auto opens the session on WebGPU', async () => {
    const skipped: string[] = [];
    const dir = await tinyModelDir({ family: 'depth2img' });
    const session = await openSession('unet', join(dir, 'unet', 'model.onnx'), 'auto', (device, why) => skipped.push(`${device}: ${why}`));
    try {
      expect(session.device, skipped.join('; ')).toBe('webgpu');
    } finally {
      await session.release();
    }
  });
});

describe.skipIf(!haveWebgpu)('fp16 models on an adapter without shader-f16 (SwiftShader has none)', () => {
  const why = /on webgpu: this adapter has no 16-bit float shaders \(shader-f16\), which an fp16 model needs\. Use the float32 model, or --device cpu/;
  it('an fp16 ControlNet whose kernels Dawn builds at load fails to load, saying why', async () => {
    // The bench's fp16 ControlNet has fp16 inputs: Dawn builds its first Transpose at session creation.
    const dir = join(mkdtempSync(join(tmpdir(), 'depthcast-f16-')), 'cn');
    await createTinyModel(dir, { family: 'controlnet', dtype: 'fp16' });
    writeFileSync(join(dir, 'controlnet/model.onnx'), buildSdControlnet('fp16'));
    try {
      await expect(loadModel(dir, { device: 'webgpu', controlnetGraph: 'separate' })).rejects.toMatchObject({ code: 'UNSUPPORTED_DEVICE', message: expect.stringMatching(why) });
    } finally {
      rmSync(dirname(dir), { recursive: true, force: true });
    }
  });

  it('the first run fails with a typed UNSUPPORTED_DEVICE error that says why and what to use', async () => {
    const model = await webgpuModel(await tinyModelDir({ family: 'controlnet', dtype: 'fp16' }), true);
    try {
      await expect(runControlnet(model, cnInput('a red barn', nearnessOf(sceneDepth()), new Scratch()))).rejects.toMatchObject({
        code: 'UNSUPPORTED_DEVICE',
        message: expect.stringMatching(why),
      });
    } finally {
      await model.release();
    }
  });
});

describe.skipIf(!haveWebgpu)('the service on WebGPU (real server, real ws client, SwiftShader)', () => {
  it('a live stream of two frames gets two different results, and closing the service with WebGPU sessions in its worker is clean', async () => {
    const models = await tinyModelsDir({ controlnet: true });
    const server = await startServer({ port: 0, modelsDir: models.dir, device: 'webgpu', log: () => {} });
    try {
      const client = await TestClient.connect(server.url);
      const results: Uint8Array[] = [];
      for (const [jobId, boxZ] of [['near', 3], ['far', 7]] as const) {
        client.send(frameBytes({ jobId, depth: serviceDepth({ boxZ }), params: { model: 'tiny-cn', steps: 3, seed: 5 } }));
        const result = await client.terminal(jobId);
        expect(result.type, JSON.stringify(result.msg)).toBe('result');
        expect(result.msg.model.name).toBe('tiny-cn');
        results.push(result.payload!);
      }
      expect(Buffer.compare(Buffer.from(results[0]!), Buffer.from(results[1]!))).not.toBe(0);
      const health = await jsonOf(await fetch(`${server.url}/v1/health`));
      expect(health).toMatchObject({ status: 'ok', device: 'webgpu' });
      client.ws.close();
    } finally {
      // A process.exit or a thread teardown with live WebGPU sessions can segfault in Dawn: this
      // test's process would die here rather than fail.
      await server.close();
      await models.cleanup();
    }
  });
});
