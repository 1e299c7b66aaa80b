/**
 * `models pull` and `models import` of diffusers checkpoints, against the loopback hub
 * (test/support/hub-server.ts) serving a checkpoint-shaped repo: float32 and fp16 weight variants,
 * files the build does not need, a separate ControlNet repo. The installed model must load and
 * verify; downloads resume and are hash-checked; a lowered limit puts weights in external data.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { clipTextConfig, controlnetConfig, unetConfig, vaeConfig, writeSyntheticControlnet, writeSyntheticPipeline } from '../src/checkpoint/synthetic.ts';
import { DepthcastError } from '../src/errors.ts';
import { PassThrough } from 'node:stream';
import { modelsImport, pullCommand } from '../src/hub/commands.ts';
import { walk } from '../src/hub/manifest.ts';
import { pullModel, type PullOptions } from '../src/hub/pull.ts';
import { verifyModel } from '../src/hub/verify.ts';
import { loadModel } from '../src/models/load.ts';
import { tinyTokenizerFiles } from '../src/tiny/tokenizer-files.ts';
import { writeNpy } from '../src/util/npy.ts';
import { FakeHub } from './support/hub-server.ts';
import { REPO_ROOT } from './support/tiny.ts';

const BASE = 'example/sd-tiny-diffusers';
const CN = 'example/controlnet-tiny-diffusers';
const shape = {
  in_channels: 4, block_out_channels: [8, 8, 16], down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'], layers_per_block: 1, attention_head_dim: 2, norm_num_groups: 4, cross_attention_dim: 6,
};
const TEXT = clipTextConfig({ hidden_size: 6, intermediate_size: 10, num_attention_heads: 2, num_hidden_layers: 2, vocab_size: 562 });
const VAE = vaeConfig({ block_out_channels: [4, 8, 8], layers_per_block: 1, norm_num_groups: 2, down_block_types: new Array(3).fill('DownEncoderBlock2D'), up_block_types: new Array(3).fill('UpDecoderBlock2D') });

let src: string;
const repoFiles = new Map<string, Map<string, Buffer>>();

async function filesOf(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await walk(dir)) if (e.kind === 'file') out.set(e.rel, await readFile(join(dir, e.rel)));
  return out;
}

beforeAll(async () => {
  src = await mkdtemp(join(tmpdir(), 'depthcast-ckpt-repos-'));
  await writeSyntheticPipeline(join(src, 'base'), { className: 'StableDiffusionPipeline', unet: unetConfig(shape), text: TEXT, vae: VAE, tokenizer: tinyTokenizerFiles() }, { seed: 21, dtype: 'both' });
  await writeSyntheticControlnet(join(src, 'cn'), controlnetConfig({ ...shape, conditioning_embedding_out_channels: [4, 4, 8] }), { seed: 22, dtype: 'F16' });
  const base = await filesOf(join(src, 'base'));
  // What the build never reads: must not be downloaded.
  base.set('README.md', Buffer.from('# tiny\n'));
  base.set('unet/diffusion_pytorch_model.bin', Buffer.alloc(4000, 1));
  base.set('v1-5-pruned-emaonly.safetensors', Buffer.alloc(6000, 2));
  base.set('safety_checker/config.json', Buffer.from('{}'));
  repoFiles.set(BASE, base);
  repoFiles.set(CN, await filesOf(join(src, 'cn')));
});
afterAll(() => rm(src, { recursive: true, force: true }));

let hub: FakeHub;
let home: string;
beforeEach(async () => {
  hub = await new FakeHub().start();
  home = await mkdtemp(join(tmpdir(), 'depthcast-ckpt-home-'));
  for (const [repo, files] of repoFiles) hub.setRepo(repo, files);
});
afterEach(async () => {
  await hub.close();
  await rm(home, { recursive: true, force: true });
});

const opts = (extra: Partial<PullOptions> = {}): PullOptions => ({
  name: 'ck', source: { repo: BASE }, controlnet: { repo: CN }, home, env: {}, hub: { hubUrl: hub.url }, retries: 0, retryDelayMs: 5, ...extra,
});
const fetched = (repo: string) => new Set(hub.requests.filter((r) => r.kind === 'resolve' && r.url.includes(repo) && r.range !== 'bytes=0-0' && r.status < 300).map((r) => r.path));
const installed = async () => (await readdir(join(home, 'models')).catch(() => [] as string[])).filter((n) => !n.startsWith('.'));

async function rejection(p: Promise<unknown>): Promise<DepthcastError> {
  const err = await p.then(() => null, (e) => e);
  expect(err).toBeInstanceOf(DepthcastError);
  return err as DepthcastError;
}

describe('models pull of diffusers repos', () => {
  it('fetches only what the build reads (fp16 variants when asked), builds, verifies, records its sources', async () => {
    const r = await pullModel(opts({ preferFp16: true }));
    const got = fetched(BASE);
    expect(got).toContain('unet/diffusion_pytorch_model.fp16.safetensors');
    for (const skipped of ['unet/diffusion_pytorch_model.safetensors', 'unet/diffusion_pytorch_model.bin', 'README.md', 'v1-5-pruned-emaonly.safetensors', 'safety_checker/config.json']) {
      expect(got.has(skipped)).toBe(false);
    }
    expect(fetched(CN)).toEqual(new Set(['config.json', 'diffusion_pytorch_model.fp16.safetensors']));
    expect((await verifyModel(r.dir, { home, hashes: true })).ok).toBe(true);
    const model = await loadModel(r.dir, { device: 'cpu' });
    expect(model.family).toBe('controlnet');
    expect(model.residualMap).toHaveLength(6 + 1);
    await model.release();
    const manifest = JSON.parse(await readFile(join(r.dir, 'depthcast-manifest.json'), 'utf8'));
    expect(manifest.sources.map((s: { repo: string; role: string }) => `${s.role}:${s.repo}`)).toEqual([`base:${BASE}`, `controlnet:${CN}`]);
    const record = JSON.parse(await readFile(join(r.dir, 'depthcast-build.json'), 'utf8'));
    expect(record.sources[0].repo).toBe(BASE);
    expect(Object.keys(record.sources[0].files)).toContain('unet/diffusion_pytorch_model.fp16.safetensors');
    expect(existsSync(join(home, 'downloads'))).toBe(true);
    expect(await readdir(join(home, 'downloads'))).toEqual([]); // download caches removed after install
  });

  it('takes the float32 files by default', async () => {
    await pullModel(opts());
    expect(fetched(BASE)).toContain('unet/diffusion_pytorch_model.safetensors');
    expect(fetched(BASE).has('unet/diffusion_pytorch_model.fp16.safetensors')).toBe(false);
  });

  it('keeps weights as external data over a (lowered) size limit, and the folder still verifies', async () => {
    const r = await pullModel(opts({ build: { inlineLimitBytes: 32 * 1024 } }));
    expect(existsSync(join(r.dir, 'unet', 'model.onnx_data'))).toBe(true);
    const report = await verifyModel(r.dir, { home, hashes: true });
    expect(report.problems).toEqual([]);
  });

  it('resumes a cut download with a Range request and installs', async () => {
    const path = 'unet/diffusion_pytorch_model.safetensors';
    hub.switches.cutOnce = { repo: BASE, path, afterBytes: 20_000 };
    const err = await rejection(pullModel(opts()));
    expect(err.code).toBe('DOWNLOAD_FAILED');
    expect(await installed()).toEqual([]);
    const r = await pullModel(opts());
    expect(r.resumed).toBe(true);
    expect(hub.transfers(path).at(-1)!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect((await verifyModel(r.dir, { home, hashes: true })).ok).toBe(true);
  });

  it('refuses weights whose sha256 does not match, and installs nothing', async () => {
    hub.switches.corrupt = new Set(['diffusion_pytorch_model.fp16.safetensors']);
    const err = await rejection(pullModel(opts()));
    expect(err.code).toBe('HASH_MISMATCH');
    expect(await installed()).toEqual([]);
  });
});

describe('registry entries of diffusers repos', () => {
  it('sd15-depth pulls its base and ControlNet checkpoints by their registry repos and builds them', async () => {
    hub.setRepo('stable-diffusion-v1-5/stable-diffusion-v1-5', repoFiles.get(BASE)!);
    hub.setRepo('lllyasviel/control_v11f1p_sd15_depth', repoFiles.get(CN)!);
    const out = new PassThrough();
    const r = await pullCommand({ id: 'sd15-depth', hub: hub.url, home, progress: 'none' }, out, { err: new PassThrough(), env: {} });
    expect(r.verify?.ok).toBe(true);
    const manifest = JSON.parse(await readFile(join(r.dir, 'depthcast-manifest.json'), 'utf8'));
    expect(manifest.registry).toBe('sd15-depth');
    expect(manifest.sources.map((s: { repo: string }) => s.repo)).toEqual(['stable-diffusion-v1-5/stable-diffusion-v1-5', 'lllyasviel/control_v11f1p_sd15_depth']);
  });
});

describe('models import', () => {
  it('builds a local checkpoint folder into an installed, verified model', async () => {
    const chunks: string[] = [];
    const out = { write: (s: string) => (chunks.push(s), true) } as unknown as NodeJS.WritableStream;
    const progress: string[] = [];
    const err = { write: (s: string) => (progress.push(s), true), isTTY: false } as unknown as NodeJS.WritableStream;
    const r = await modelsImport({ dir: join(src, 'base'), controlnet: join(src, 'cn'), name: 'local-ck', home, progress: 'lines' }, out, { err, env: {} });
    expect(r.verify?.ok).toBe(true);
    expect(chunks.join('')).toMatch(/built and installed local-ck/);
    expect(progress.join('')).toMatch(/building unet/);
    expect(relative(home, r.dir)).toBe(join('models', 'local-ck'));

    // The installed model works in `generate` like any other, at a size whose latents are odd.
    const depth = join(home, 'depth.npy');
    await writeFile(depth, writeNpy(Float32Array.from({ length: 56 * 72 }, (_, i) => 1 + (i % 72) / 10), [56, 72]));
    const png = join(home, 'out.png');
    const g = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/depthcast.js'), 'generate', '--model', r.dir, '--depth', depth, '--prompt', 'a vase', '--steps', '2', '--width', '72', '--height', '56', '--seed', '1', '--device', 'cpu', '--out', png], { encoding: 'utf8', timeout: 120_000 });
    expect(g.stderr + g.stdout).toMatch(/wrote .*72×56/);
    expect(g.status).toBe(0);
    expect(existsSync(png)).toBe(true);
  }, 120_000);

  it('refuses a folder that is not a diffusers checkpoint', async () => {
    const out = { write: () => true } as unknown as NodeJS.WritableStream;
    const err = await rejection(modelsImport({ dir: join(src, 'cn'), home, progress: 'none' }, out, { env: {} }));
    expect(err.code).toBe('BAD_MODEL');
  });
});
