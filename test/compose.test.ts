/**
 * The composed ControlNet + UNet graph against the two-session path, through the real ControlNet
 * pipeline: the reference conformance cases (diffusers' images) and tiny models in the variants
 * a composition has to handle (fp16 residuals, other residual names, a ControlNet that does not
 * scale, weights in external-data files).
 */
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import onnxProto from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { maxAbsDiff } from './support/arrays.ts';
import { runCase } from '../tools/conformance/run.ts';
import { composeControlnetUnet, CONTROL_INPUTS, NotComposable } from '../src/models/compose.ts';
import { type LoadedModel, loadModel } from '../src/models/load.ts';
import { controlLevels, runControlnet } from '../src/pipelines/controlnet.ts';
import { SeededNoise } from '../src/pipelines/noise.ts';
import type { GenerateInput } from '../src/pipelines/types.ts';
import { externalizeWeights } from './support/hub-server.ts';
import { nearnessOf, REPO_ROOT, sceneDepth, SHARED_CONFORMANCE, tinyModelDir } from './support/tiny.ts';
import { cachedBuild } from '../src/checkpoint/cache.ts';
import type { TinyModelOptions } from '../src/tiny/build-tiny.ts';

const { onnx } = onnxProto;

async function bothWays(dir: string): Promise<{ composed: LoadedModel; separate: LoadedModel }> {
  const composed = await loadModel(dir, { device: 'cpu' });
  const separate = await loadModel(dir, { device: 'cpu', controlnetGraph: 'separate' });
  // The composed path must really be taken, or the comparison below compares a path with itself.
  expect(composed.controlnetNotComposed).toBeUndefined();
  expect(composed.controlnetUnet).toBeDefined();
  expect(separate.controlnetUnet).toBeUndefined();
  return { composed, separate };
}

const cnCases = existsSync(join(SHARED_CONFORMANCE, 'cases'))
  ? readdirSync(join(SHARED_CONFORMANCE, 'cases')).filter((n) => JSON.parse(readFileSync(join(SHARED_CONFORMANCE, 'cases', n, 'case.json'), 'utf8')).pipeline !== 'depth2img')
  : [];

describe.skipIf(cnCases.length === 0)('composed ControlNet + UNet on the conformance ControlNet cases', () => {
  it.each(cnCases)('%s: same image as two sessions to 1e-5, and within the reference tolerance', async (name) => {
    const caseDir = join(SHARED_CONFORMANCE, 'cases', name);
    const modelDir = join(SHARED_CONFORMANCE, 'models', 'controlnet-tiny');
    const { composed, separate } = await bothWays(modelDir);
    try {
      const a = await runCase(caseDir, new Map([[modelDir, composed]]));
      const b = await runCase(caseDir, new Map([[modelDir, separate]]));
      expect(b.passed).toBe(true);
      expect(a.passed, `${a.name}: max_abs ${a.maxAbs}${a.note ? ` (${a.note})` : ''}`).toBe(true);
      expect(maxAbsDiff(a.image, b.image)).toBeLessThanOrEqual(1e-5);
    } finally {
      await Promise.all([composed.release(), separate.release()]);
    }
  });
});

/** The tiny scene's nearness, as is (a float source) or quantized to `levels` (an 8- or 16-bit source). */
function sceneControl(levels?: 255 | 65535): Float32Array {
  const nearness = nearnessOf(sceneDepth(64, 64));
  if (levels) for (let i = 0; i < nearness.length; i++) nearness[i] = Math.round(nearness[i]! * levels) / levels;
  return nearness;
}

const CHECKPOINT_CASES = join(REPO_ROOT, '..', 'shared', 'checkpoints', 'cases');
const ckCases = existsSync(CHECKPOINT_CASES)
  ? readdirSync(CHECKPOINT_CASES).filter((n) => JSON.parse(readFileSync(join(CHECKPOINT_CASES, n, 'case.json'), 'utf8')).pipeline !== 'depth2img')
  : [];

describe.skipIf(ckCases.length === 0)('composed ControlNet + UNet on models built from the public checkpoints', () => {
  // The builder streams each weight as its own graph fragment: composing must read them all.
  it.each(ckCases)('%s: same image as two sessions to 1e-5, and within the reference tolerance', async (name) => {
    const caseDir = join(CHECKPOINT_CASES, name);
    const spec = JSON.parse(readFileSync(join(caseDir, 'case.json'), 'utf8'));
    const { dir } = await cachedBuild({ dir: resolve(caseDir, spec.model) }, { dir: resolve(caseDir, spec.controlnet) });
    const { composed, separate } = await bothWays(dir);
    try {
      const a = await runCase(caseDir, new Map([[dir, composed]]));
      const b = await runCase(caseDir, new Map([[dir, separate]]));
      expect(b.passed).toBe(true);
      expect(a.passed, `${a.name}: max_abs ${a.maxAbs}${a.note ? ` (${a.note})` : ''}`).toBe(true);
      expect(maxAbsDiff(a.image, b.image)).toBeLessThanOrEqual(1e-5);
    } finally {
      await Promise.all([composed.release(), separate.release()]);
    }
  });
});

function tinyInput(scale: number, nearness = sceneControl()): GenerateInput {
  return {
    prompt: 'a red barn', negativePrompt: 'fog', width: 64, height: 64, steps: 4, guidanceScale: 6, seed: 7,
    controlnetScale: scale,
    schedulerConfig: { _class_name: 'EulerDiscreteScheduler', num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' },
    noise: new SeededNoise(7),
    controlImage: { data: nearness, width: 64, height: 64, channels: 1 },
  };
}

async function sameImage(dir: string, scale: number, nearness?: Float32Array): Promise<number> {
  const { composed, separate } = await bothWays(dir);
  try {
    const a = await runControlnet(composed, tinyInput(scale, nearness));
    const b = await runControlnet(separate, tinyInput(scale, nearness));
    expect(a.timings.controlnetUnet).toBeGreaterThan(0);
    expect(b.timings.controlnetUnet).toBeUndefined();
    // Only out_sample [2,4,8,8] leaves onnxruntime per step on the composed path; the residuals do not.
    const traffic = composed.controlnetUnet!.traffic;
    expect(traffic.bytesOut / traffic.runs).toBe(2 * 4 * 8 * 8 * (composed.dtype === 'fp16' ? 2 : 4));
    expect(separate.sessions.controlnet!.traffic.bytesOut).toBeGreaterThan(0);
    return maxAbsDiff(a.image!.data, b.image!.data);
  } finally {
    await Promise.all([composed.release(), separate.release()]);
  }
}

/** A copy of a tiny model folder whose ONNX files `edit` rewrites. */
async function variant(options: TinyModelOptions, edit: (dir: string) => void): Promise<string> {
  const dir = join(mkdtempSync(join(tmpdir(), 'depthcast-compose-')), 'model');
  cpSync(await tinyModelDir(options), dir, { recursive: true });
  edit(dir);
  return dir;
}

describe('composed ControlNet + UNet on tiny models', () => {
  it.each<[string, TinyModelOptions]>([
    ['fp32', { family: 'controlnet' }],
    ['fp16 (residuals go in as halves)', { family: 'controlnet', dtype: 'fp16' }],
    ['down_block_N residual names', { family: 'controlnet', controlnetNames: 'down_block' }],
  ])('%s: same image as two sessions to 1e-5', async (_, options) => {
    expect(await sameImage(await tinyModelDir(options), 0.7)).toBeLessThanOrEqual(1e-5);
  });

  it.each<[string, 255 | 65535, 1 | 2]>([
    ['8-bit', 255, 1],
    ['16-bit', 65535, 2],
  ])('an %s control image goes in as its levels: the same bits as floats, the same image as two sessions', async (_, levels, bytesPerLevel) => {
    const nearness = sceneControl(levels);
    const found = controlLevels(nearness)!;
    expect(found.input).toBe(levels === 255 ? CONTROL_INPUTS.levels8 : CONTROL_INPUTS.levels16);
    // A float source stays floats.
    expect(controlLevels(sceneControl())).toBeUndefined();
    for (const dtype of ['fp32', 'fp16'] as const) {
      const dir = await tinyModelDir({ family: 'controlnet', dtype });
      expect(await sameImage(dir, 0.7, nearness)).toBeLessThanOrEqual(1e-5);
      // On the composed session itself: levels and floats decode to the same bits.
      const model = await loadModel(dir, { device: 'cpu' });
      try {
        const session = model.controlnetUnet!;
        const D = session.input('encoder_hidden_states')!.shape[2] as number;
        const zero = { data: 0, dims: [1, 1, 1, 1] };
        const common = {
          sample: { data: new Float32Array(4 * 8 * 8).map((_, i) => Math.sin(i)), dims: [1, 4, 8, 8] },
          timestep: { data: 500, dims: [2] },
          encoder_hidden_states: { data: new Float32Array(2 * 77 * D).map((_, i) => Math.cos(i)), dims: [2, 77, D] },
          conditioning_scale: { data: 0.7, dims: [] },
        };
        const dims = [1, 1, 64, 64];
        const asFloats = await session.run({ ...common, control_image: { data: nearness, dims }, control_image_u8: zero, control_image_u16: zero });
        const before = session.traffic.bytesIn;
        const asLevels = await session.run({ ...common, control_image: zero, control_image_u8: zero, control_image_u16: zero, [found.input]: { data: found.data, dims } });
        expect(session.traffic.bytesIn - before).toBe(4 * 8 * 8 * (dtype === 'fp16' ? 2 : 4) + 2 * 4 + 2 * 77 * D * (dtype === 'fp16' ? 2 : 4) + 64 * 64 * bytesPerLevel + 2 * (dtype === 'fp16' ? 2 : 4) + 3 - bytesPerLevel);
        expect(asLevels.out_sample!.dims).toEqual([2, 4, 8, 8]);
        expect(Buffer.from(asLevels.out_sample!.data.buffer).equals(Buffer.from(asFloats.out_sample!.data.buffer))).toBe(true);
      } finally {
        await model.release();
      }
    }
  });

  it('a ControlNet without conditioning_scale: the composed graph scales its residuals as the pipeline does', async () => {
    // conditioning_scale turned into a constant 1: the ControlNet no longer scales.
    const dir = await variant({ family: 'controlnet' }, (d) => {
      const path = join(d, 'controlnet/model.onnx');
      const m = onnx.ModelProto.decode(readFileSync(path));
      m.graph!.input = m.graph!.input!.filter((i) => i.name !== 'conditioning_scale');
      m.graph!.initializer!.push({ name: 'conditioning_scale', dataType: onnx.TensorProto.DataType.FLOAT, dims: [], floatData: [1] });
      writeFileSync(path, onnx.ModelProto.encode(m).finish());
    });
    expect(await sameImage(dir, 0.6)).toBeLessThanOrEqual(1e-5);
  });

  it('weights in external-data files beside each graph are found from the composed graph', async () => {
    const dir = await variant({ family: 'controlnet' }, (d) => {
      for (const part of ['unet', 'controlnet']) {
        const { onnx: graph, data } = externalizeWeights(readFileSync(join(d, part, 'model.onnx')), 'weights.bin', 64);
        writeFileSync(join(d, part, 'model.onnx'), graph);
        writeFileSync(join(d, part, 'weights.bin'), data);
      }
    });
    expect(await sameImage(dir, 0.8)).toBeLessThanOrEqual(1e-5);
  });

  it('a pair whose shared input differs in type keeps two sessions, and says why', async () => {
    const dir = await tinyModelDir({ family: 'controlnet' });
    const cn = readFileSync(join(dir, 'controlnet/model.onnx'));
    const m = onnx.ModelProto.decode(readFileSync(join(dir, 'unet/model.onnx')));
    m.graph!.input!.find((i) => i.name === 'timestep')!.type!.tensorType!.elemType = onnx.TensorProto.DataType.INT64;
    const unet = onnx.ModelProto.encode(m).finish();
    const residualMap = [0, 1, 2, 3].map((i) => [`down_block_res_sample_${i}`, `down_block_additional_residual_${i}`] as const);
    expect(() => composeControlnetUnet({ controlnet: cn, unet, residualMap })).toThrow(NotComposable);
    expect(() => composeControlnetUnet({ controlnet: cn, unet, residualMap })).toThrow(/"timestep" is element type 1 in the ControlNet and 7 in the UNet/);
  });
});
