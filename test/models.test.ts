import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkModelFolder, loadModel } from '../src/models/load.ts';
import { mapControlnetResiduals } from '../src/models/controlnet-map.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';
import { externalizeWeights, onnxWithExternal } from './support/hub-server.ts';
import { tinyModelDir } from './support/tiny.ts';

async function copyOf(family: 'depth2img' | 'controlnet'): Promise<string> {
  const dir = join(mkdtempSync(join(tmpdir(), 'depthcast-bad-')), 'model');
  cpSync(await tinyModelDir({ family }), dir, { recursive: true });
  return dir;
}

describe('model folder checks', () => {
  it('lists every problem of a broken folder in one error', async () => {
    const dir = await copyOf('controlnet');
    rmSync(join(dir, 'unet/model.onnx'));
    rmSync(join(dir, 'tokenizer/merges.txt'));
    writeFileSync(join(dir, 'vae_decoder/config.json'), '{"block_out_channels": [1,2,3,4]}');
    rmSync(join(dir, 'vae_encoder/config.json'));
    const err = await loadModel(dir, { device: 'cpu' }).catch((e) => e);
    expect(err.code).toBe('BAD_MODEL');
    expect(err.message).toContain('missing file unet/model.onnx');
    expect(err.message).toContain('missing file tokenizer/merges.txt');
    expect(err.message).toContain('scaling_factor');
    const report = await checkModelFolder(dir);
    expect(report.ok).toBe(false);
    expect(report.problems.length).toBeGreaterThanOrEqual(3);
  });

  it('refuses a model that is not a depth model', async () => {
    const dir = await copyOf('controlnet');
    rmSync(join(dir, 'controlnet'), { recursive: true });
    writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'OnnxStableDiffusionPipeline' }));
    const err = await loadModel(dir, { device: 'cpu' }).catch((e) => e);
    expect(err.code).toBe('BAD_MODEL');
    expect(err.message).toMatch(/not a depth model/);
  });

  it('refuses a UNet with the wrong channel count for its family', async () => {
    const dir = await copyOf('depth2img');
    cpSync(join(await tinyModelDir({ family: 'controlnet' }), 'unet'), join(dir, 'unet'), { recursive: true });
    const err = await loadModel(dir, { device: 'cpu' }).catch((e) => e);
    expect(err.code).toBe('BAD_MODEL');
    expect(err.message).toMatch(/channels|encoder_hidden_states|cross/);
  });

  it('reports an unreadable ONNX file as a problem of that file', async () => {
    const dir = await copyOf('depth2img');
    writeFileSync(join(dir, 'vae_decoder/model.onnx'), 'not onnx');
    const err = await loadModel(dir, { device: 'cpu' }).catch((e) => e);
    expect(err.code).toBe('BAD_MODEL');
    expect(err.message).toContain('vae_decoder');
  });

  it('refuses ONNX external data that points outside the model folder', async () => {
    const dir = await copyOf('depth2img');
    writeFileSync(join(dir, 'unet/model.onnx'), onnxWithExternal('../../etc/passwd'));
    const err = await loadModel(dir, { device: 'cpu' }).catch((e) => e);
    expect(err.code).toBe('BAD_MODEL');
    expect(err.message).toMatch(/outside the model folder/);
  });

  it('loads a model whose weights live in an external data file beside it', async () => {
    const dir = await copyOf('depth2img');
    const { onnx, data } = externalizeWeights(readFileSync(join(dir, 'unet/model.onnx')), 'model.onnx_data');
    writeFileSync(join(dir, 'unet/model.onnx'), onnx);
    writeFileSync(join(dir, 'unet/model.onnx_data'), data);
    const model = await loadModel(dir, { device: 'cpu' });
    expect(model.family).toBe('depth2img');
    await model.release();
  });

  it('a healthy tiny model passes the check', async () => {
    expect(await checkModelFolder(await tinyModelDir({ family: 'controlnet' }))).toEqual({ ok: true, problems: [] });
  });

  it('names an unavailable device and how to get it', async () => {
    const err = await loadModel(await tinyModelDir({ family: 'depth2img' }), { device: 'cuda' }).catch((e) => e);
    expect(err.code).toBe('UNSUPPORTED_DEVICE');
    expect(err.message).toMatch(/onnxruntime-node-install=cuda12|--device cpu/);
  });

  it('auto falls back to the CPU and says which devices it skipped', async () => {
    const skipped: string[] = [];
    const model = await loadModel(await tinyModelDir({ family: 'depth2img' }), { device: 'auto', onFallback: (d) => skipped.push(d) });
    expect(model.device).toBe('cpu');
    expect(skipped).toContain('cuda');
    await model.release();
  });
});

describe('ControlNet residual names', () => {
  it('maps published down_block_N / mid_block names by role, not position', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'depthcast-cn-')), 'm');
    await createTinyModel(dir, { family: 'controlnet', controlnetNames: 'down_block' });
    const model = await loadModel(dir, { device: 'cpu' });
    expect(model.residualMap).toContainEqual(['down_block_2', 'down_block_additional_residual_2']);
    expect(model.residualMap).toContainEqual(['mid_block', 'mid_block_additional_residual']);
    await model.release();
  });

  it('matches shuffled names by index', () => {
    const pairs = mapControlnetResiduals(
      ['mid_block_res_sample', 'down_block_res_sample_1', 'down_block_res_sample_0'],
      ['sample', 'down_block_additional_residual_0', 'down_block_additional_residual_1', 'mid_block_additional_residual'],
    );
    expect(pairs).toEqual([
      ['down_block_res_sample_0', 'down_block_additional_residual_0'],
      ['down_block_res_sample_1', 'down_block_additional_residual_1'],
      ['mid_block_res_sample', 'mid_block_additional_residual'],
    ]);
  });

  it('uses depthcast.json when names cannot be matched, and checks it', async () => {
    const outs = ['r_a', 'r_b', 'r_mid'];
    const ins = ['down_block_additional_residual_0', 'down_block_additional_residual_1', 'mid_block_additional_residual'];
    expect(() => mapControlnetResiduals(outs, ins)).toThrow(/depthcast.json/);
    const explicit = { r_a: ins[0]!, r_b: ins[1]!, r_mid: ins[2]! };
    expect(mapControlnetResiduals(outs, ins, explicit)).toHaveLength(3);
    expect(() => mapControlnetResiduals(outs, ins, { r_a: ins[0]!, nope: ins[1]! })).toThrow(/no output "nope".*not mapped/);
  });
});
