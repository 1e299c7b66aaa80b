/**
 * Copies of the tiny models with the I/O conventions of published ONNX exports, built with
 * onnx-proto, each run through `depthcast generate` end to end:
 *  - a ControlNet whose conditioning_scale is float64 [1] (TensorStack / Axodox exports),
 *  - a UNet (and ControlNet) with an LCM guidance-embedding input timestep_cond [B,256],
 *  - OnnxStack's residual names (down_block_N_additional_residual on both sides),
 *  - a folder without vae_decoder/config.json whose scaling factor comes from depthcast.json.
 * Each copy computes exactly what the original does, so its image must equal the original's
 * pixel for pixel (the timestep_cond copy: the original's without classifier-free guidance,
 * which is what diffusers runs for a UNet with time_cond_proj_dim).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeToPlanar, readPngText } from '../src/image/codec.ts';
import { guidanceScaleEmbedding } from '../src/pipelines/guidance.ts';
import { CONTROLNET_RESIDUALS } from '../src/tiny/build-tiny.ts';
import { writeNpy } from '../src/util/npy.ts';
import { addUnusedInput, copyModel, DTYPE, renameValue, retypeInput } from './support/onnx-edit.ts';
import { REPO_ROOT, sceneDepth, tinyModelDir } from './support/tiny.ts';

const dir = mkdtempSync(join(tmpdir(), 'depthcast-exports-'));
const depthFile = join(dir, 'scene.npy');
writeFileSync(depthFile, writeNpy(sceneDepth(), [64, 64]));

function generate(model: string, name: string, ...extra: string[]): { code: number | null; stderr: string; png: string } {
  const png = join(dir, `${name}.png`);
  const r = spawnSync(
    process.execPath,
    [join(REPO_ROOT, 'bin/depthcast.js'), 'generate', '--model', model, '--depth', depthFile, '--prompt', 'a barn at dusk', '--negative', 'fog', '--steps', '4', '--seed', '5', '--far', '50', '--scheduler', 'ddim', '--out', png, '--device', 'cpu', ...extra],
    { encoding: 'utf8', timeout: 120_000 },
  );
  return { code: r.status, stderr: r.stderr, png };
}

async function pixels(png: string): Promise<Float32Array> {
  return (await decodeToPlanar(new Uint8Array(readFileSync(png)), 64, 64)).data;
}

async function expectSameImage(a: string, b: string): Promise<void> {
  const [x, y] = [await pixels(a), await pixels(b)];
  expect(Buffer.from(x.buffer).equals(Buffer.from(y.buffer))).toBe(true);
}

describe('published export conventions through depthcast generate', () => {
  it('a ControlNet with a float64 [1] conditioning_scale gives the original image', async () => {
    const original = await tinyModelDir({ family: 'controlnet' });
    const copy = copyModel(original, join(dir, 'cn-f64'), {
      'controlnet/model.onnx': (g) => retypeInput(g, 'conditioning_scale', DTYPE.double, [1]),
    });
    const a = generate(original, 'f64-original', '--controlnet-scale', '0.6');
    const b = generate(copy, 'f64-copy', '--controlnet-scale', '0.6');
    expect(b.stderr).toContain('wrote');
    expect([a.code, b.code]).toEqual([0, 0]);
    await expectSameImage(a.png, b.png);
  });

  it.each(['fp32', 'fp16'] as const)('UNet and ControlNet with timestep_cond [B,256] (%s) run without CFG, as diffusers does', async (dtype) => {
    const original = await tinyModelDir({ family: 'controlnet', dtype });
    const io = dtype === 'fp16' ? DTYPE.float16 : DTYPE.float;
    const copy = copyModel(original, join(dir, `cn-tcond-${dtype}`), {
      'unet/model.onnx': (g) => addUnusedInput(g, 'timestep_cond', 256, io, 'out_sample'),
      'controlnet/model.onnx': (g) => addUnusedInput(g, 'timestep_cond', 256, io, CONTROLNET_RESIDUALS[0].diffusers),
    });
    const withEmbedding = generate(copy, `tcond-${dtype}`, '--guidance', '6');
    expect(withEmbedding.stderr).toContain('wrote');
    expect(withEmbedding.code).toBe(0);
    const noCfg = generate(original, `tcond-${dtype}-original`, '--guidance', '1');
    const cfg = generate(original, `tcond-${dtype}-original-cfg`, '--guidance', '6');
    await expectSameImage(withEmbedding.png, noCfg.png);
    const [x, y] = [await pixels(withEmbedding.png), await pixels(cfg.png)];
    expect(Buffer.from(x.buffer).equals(Buffer.from(y.buffer))).toBe(false);
  });

  it('a depth2img UNet with timestep_cond [B,256] runs without CFG too', async () => {
    const original = await tinyModelDir({ family: 'depth2img' });
    const copy = copyModel(original, join(dir, 'd2i-tcond'), {
      'unet/model.onnx': (g) => addUnusedInput(g, 'timestep_cond', 256, DTYPE.float, 'out_sample'),
    });
    const withEmbedding = generate(copy, 'd2i-tcond', '--guidance', '6');
    expect(withEmbedding.stderr).toContain('wrote');
    await expectSameImage(withEmbedding.png, generate(original, 'd2i-tcond-original', '--guidance', '1').png);
  });

  it("OnnxStack's residual names (down_block_N_additional_residual on both sides) give the original image", async () => {
    const original = await tinyModelDir({ family: 'controlnet' });
    const onnxStack = (i: number) => (i < 4 ? `down_block_${i}_additional_residual` : 'mid_block_additional_residual');
    const copy = copyModel(original, join(dir, 'cn-onnxstack'), {
      'unet/model.onnx': (g) => CONTROLNET_RESIDUALS.forEach((r, i) => renameValue(g, r.unet, onnxStack(i))),
      'controlnet/model.onnx': (g) => CONTROLNET_RESIDUALS.forEach((r, i) => renameValue(g, r.diffusers, onnxStack(i))),
    });
    const a = generate(original, 'onnxstack-original');
    const b = generate(copy, 'onnxstack-copy');
    expect(b.stderr).toContain('wrote');
    expect([a.code, b.code]).toEqual([0, 0]);
    await expectSameImage(a.png, b.png);
  });

  it('a folder without VAE configs runs with the scaling factor from depthcast.json, and is refused without it', async () => {
    const original = await tinyModelDir({ family: 'depth2img' });
    const copy = copyModel(original, join(dir, 'd2i-novae'), {});
    const scaling = JSON.parse(readFileSync(join(copy, 'vae_decoder/config.json'), 'utf8')).scaling_factor;
    rmSync(join(copy, 'vae_decoder/config.json'));
    rmSync(join(copy, 'vae_encoder/config.json'), { force: true });
    const refused = generate(copy, 'novae-refused');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/scaling_factor.*depthcast\.json/);
    writeFileSync(join(copy, 'depthcast.json'), JSON.stringify({ vae: { scaling_factor: scaling } }));
    const a = generate(original, 'novae-original');
    const b = generate(copy, 'novae-copy');
    expect(b.stderr).toContain('wrote');
    await expectSameImage(a.png, b.png);
  });
});

describe("diffusers' get_guidance_scale_embedding", () => {
  it('matches the formula worked by hand: dim 4, w = 1 gives sin/cos of 1000·[1, 1e-4]', () => {
    // half = 2, step = ln(10000)/(2 − 1), frequencies exp(−0·step) = 1 and exp(−step) = 1e-4.
    const e = guidanceScaleEmbedding(1, 4);
    const want = [Math.sin(1000), Math.sin(0.1), Math.cos(1000), Math.cos(0.1)];
    e.forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 3));
  });

  it('is what the UNet is fed as timestep_cond, per batch entry, for w = guidance − 1', async () => {
    const { loadModel } = await import('../src/models/load.ts');
    const { generate: run } = await import('../src/pipelines/index.ts');
    const copy = join(dir, 'd2i-tcond-fed');
    copyModel(await tinyModelDir({ family: 'depth2img' }), copy, {
      'unet/model.onnx': (g) => addUnusedInput(g, 'timestep_cond', 256, DTYPE.float, 'out_sample'),
    });
    const model = await loadModel(copy, { device: 'cpu' });
    const fed: { data: Float32Array; dims: readonly number[] }[] = [];
    const unet = model.sessions.unet;
    const real = unet.run.bind(unet);
    unet.run = (feeds, ...rest) => {
      const f = feeds.timestep_cond!;
      fed.push({ data: (f.data as Float32Array).slice(), dims: f.dims });
      return real(feeds, ...rest);
    };
    const depth = { data: Float32Array.from({ length: 64 * 64 }, (_, i) => (i % 64) / 64), width: 64, height: 64, channels: 1 };
    await run(model, { prompt: 'x', width: 64, height: 64, steps: 2, guidanceScale: 6, seed: 1, depth, schedulerConfig: { _class_name: 'DDIMScheduler' } });
    await model.release();
    expect(fed.length).toBe(2);
    expect(fed[0]!.dims).toEqual([1, 256]);
    // get_guidance_scale_embedding(w = 5, 256): sin/cos of 5000·exp(−i·ln(10000)/127), i < 128.
    const want = Array.from({ length: 256 }, (_, j) => {
      const arg = 5000 * Math.exp((-(j % 128) * Math.log(10000)) / 127);
      return j < 128 ? Math.sin(arg) : Math.cos(arg);
    });
    let max = 0;
    fed[0]!.data.forEach((v, j) => (max = Math.max(max, Math.abs(v - want[j]!))));
    expect(max).toBeLessThan(2e-3);
  });

  it('pads an odd width with a zero and gives sin 0 / cos 0 for w = 0 (guidance 1)', () => {
    const e = guidanceScaleEmbedding(0, 7);
    expect(Array.from(e)).toEqual([0, 0, 0, 1, 1, 1, 0]);
  });
});

describe('the registry supplies what an export leaves out', () => {
  it("the pipeline entry's defaults and the base's vae_scaling_factor go to depthcast.json beside the ControlNet's residual names", async () => {
    const { parseRegistry, resolveModel } = await import('../src/models/registry.ts');
    const source = { repo: 'someone/base' };
    const reg = parseRegistry({
      version: 1,
      models: [
        { name: 'pipe', kind: 'pipeline', title: 't', family: 'sd15', pipeline: 'controlnet', base: 'b', controlnet: 'c', dtype: 'fp16', defaults: { steps: 20, guidance: 7.5, scheduler: 'PNDMScheduler' }, verified: false, note: 'n' },
        { name: 'b', kind: 'base', title: 't', family: 'sd15', source, dtype: 'fp16', io: { vae_scaling_factor: 0.18215 }, verified: false, note: 'n' },
        { name: 'c', kind: 'controlnet', title: 't', family: 'sd15', source: { repo: 'someone/cn' }, dtype: 'fp16', io: { controlnet_outputs: { down_0: 'res_0' } }, verified: false, note: 'n' },
      ],
    });
    expect(resolveModel(reg, 'pipe').depthcastJson).toEqual({
      defaults: { steps: 20, guidance: 7.5, scheduler: 'PNDMScheduler' },
      vae: { scaling_factor: 0.18215 },
      controlnet: { outputs: { down_0: 'res_0' } },
    });
  });
});

describe('models verify says ok only about what generate runs', () => {
  it('accepts the tiny models after a dry run on the CPU', async () => {
    const { verifyModel } = await import('../src/hub/verify.ts');
    const report = await verifyModel(await tinyModelDir({ family: 'controlnet' }), { device: 'cpu' });
    expect(report.problems).toEqual([]);
    expect(report.io.ran).toBe(true);
  });

  it('names every contrib operator the CPU provider lacks, in every component', async () => {
    const { verifyModel } = await import('../src/hub/verify.ts');
    const { editModelOpsets, addContribNodes } = await import('./support/onnx-edit.ts');
    const original = await tinyModelDir({ family: 'depth2img' });
    const copy = copyModel(original, join(dir, 'd2i-fused'), {
      'unet/model.onnx': (g) => addContribNodes(g, ['GroupNorm', 'NhwcConv', 'BiasAdd'], 'sample', 'encoder_hidden_states', 32),
      'text_encoder/model.onnx': (g) => addContribNodes(g, ['BiasAdd'], 'unused', 'last_hidden_state', 32),
    });
    editModelOpsets(join(copy, 'unet/model.onnx'));
    editModelOpsets(join(copy, 'text_encoder/model.onnx'));
    const report = await verifyModel(copy, { device: 'cpu' });
    expect(report.ok).toBe(false);
    const messages = report.problems.map((p) => p.message).join('\n');
    expect(messages).toMatch(/unet: uses com\.microsoft BiasAdd, GroupNorm, NhwcConv, which the cpu provider has no kernels for/);
    expect(messages).toMatch(/text_encoder: uses com\.microsoft BiasAdd,/);
  });

  it('refuses a UNet input depthcast cannot feed, and a conditioning_scale that is not a scalar', async () => {
    const { verifyModel } = await import('../src/hub/verify.ts');
    const original = await tinyModelDir({ family: 'controlnet' });
    const copy = copyModel(original, join(dir, 'cn-unfeedable'), {
      'unet/model.onnx': (g) => addUnusedInput(g, 'text_embeds', 8, DTYPE.float, 'out_sample'),
      'controlnet/model.onnx': (g) => retypeInput(g, 'conditioning_scale', DTYPE.double, [2]),
    });
    const report = await verifyModel(copy, { device: 'cpu' });
    expect(report.ok).toBe(false);
    const messages = report.problems.map((p) => p.message).join('\n');
    expect(messages).toMatch(/unet: input "text_embeds" is not one depthcast knows how to feed/);
    expect(messages).toMatch(/controlnet: input "conditioning_scale" has shape \[2\], expected a scalar/);
    // And generate refuses the same model before any step, with the same reasons.
    const r = generate(copy, 'unfeedable');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/text_embeds/);
  });
});

describe('defaults that fit the model', () => {
  const paramsOf = (png: string) => JSON.parse(readPngText(new Uint8Array(readFileSync(png))).parameters!);
  const run = (model: string, name: string, ...extra: string[]) => {
    const png = join(dir, `${name}.png`);
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/depthcast.js'), 'generate', '--model', model, '--depth', depthFile, '--prompt', 'a barn', '--seed', '3', '--far', '50', '--out', png, '--device', 'cpu', ...extra], { encoding: 'utf8', timeout: 120_000 });
    expect(r.stderr).toContain('wrote');
    return paramsOf(png);
  };

  it('an LCM model with no registry entry runs 4 steps at guidance 1; a registry entry’s defaults win; the user’s values win over both', async () => {
    const original = await tinyModelDir({ family: 'controlnet' });
    const lcm = copyModel(original, join(dir, 'cn-lcm'), {});
    const schedPath = join(lcm, 'scheduler/scheduler_config.json');
    writeFileSync(schedPath, JSON.stringify({ ...JSON.parse(readFileSync(schedPath, 'utf8')), _class_name: 'LCMScheduler' }));
    expect(run(lcm, 'lcm-defaults')).toMatchObject({ steps: 4, guidance: 1, scheduler: 'LCMScheduler' });
    expect(run(lcm, 'lcm-user', '--steps', '2', '--guidance', '1.5')).toMatchObject({ steps: 2, guidance: 1.5 });
    // Naming another scheduler brings that scheduler's defaults, not LCM's.
    expect(run(lcm, 'lcm-ddim', '--scheduler', 'ddim')).toMatchObject({ steps: 20, guidance: 7.5, scheduler: 'ddim' });

    const registered = copyModel(original, join(dir, 'cn-registered'), {});
    writeFileSync(join(registered, 'depthcast.json'), JSON.stringify({ defaults: { steps: 3, guidance: 2.5, scheduler: 'DDIMScheduler' } }));
    expect(run(registered, 'registered-defaults')).toMatchObject({ steps: 3, guidance: 2.5, scheduler: 'ddim' });

    const { ModelCatalog } = await import('../src/engine/catalog.ts');
    const { ServiceModels } = await import('../server/models.ts');
    const listed = new ServiceModels(new ModelCatalog(dir), { loaded: undefined }).list();
    expect(listed.find((m) => m.name === 'cn-lcm')?.defaults).toEqual({ steps: 4, guidance: 1 });
    expect(listed.find((m) => m.name === 'cn-registered')?.defaults).toEqual({ steps: 3, guidance: 2.5, scheduler: 'ddim' });
  });
});

describe('sizes a fixed-scale export can run', () => {
  it('a UNet with constant ×2 Resize scales refuses 72×72 before any step, naming the sizes it runs; 80×80 runs', async () => {
    const original = await tinyModelDir({ family: 'controlnet' });
    const copy = copyModel(original, join(dir, 'cn-fixed-scales'), {
      'unet/model.onnx': (g) => {
        // What torch.onnx makes of F.interpolate(scale_factor=2) traced at one size: constant scales, no sizes.
        const resize = g.node!.find((n) => n.opType === 'Resize')!;
        resize.input = [resize.input![0]!, '', 'fixed_scales'];
        g.initializer!.push({ name: 'fixed_scales', dims: [4], dataType: DTYPE.float, floatData: [1, 1, 2, 2] });
      },
    });
    const refused = generate(copy, 'fixed-72', '--width', '72', '--height', '72');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/BAD_REQUEST/);
    expect(refused.stderr).toMatch(/multiples of 16 px; 72×72 is not \(nearest: 64×64, 64×80, 80×64, 80×80\)/);
    expect(refused.stderr).not.toMatch(/step 1\//);
    const runs = generate(copy, 'fixed-80', '--width', '80', '--height', '80');
    expect(runs.stderr).toContain('wrote');
    // The original follows the skip connection's size and runs 72×72.
    expect(generate(original, 'free-72', '--width', '72', '--height', '72').stderr).toContain('wrote');
  });
});
