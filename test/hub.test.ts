import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DepthcastError } from '../src/errors.ts';
import { modelsList, modelsRemove, modelsVerify, pullCommand, PullProgressView } from '../src/hub/commands.ts';
import { listInstalled } from '../src/hub/list.ts';
import { checkRelPath, downloadKey, safeJoin } from '../src/hub/paths.ts';
import { assembleControlnet, pullModel, type PullEvent, type PullOptions } from '../src/hub/pull.ts';
import { removeModel } from '../src/hub/remove.ts';
import { assertVerified, verifyModel } from '../src/hub/verify.ts';
import { loadRegistry, parseRegistry, resolveModel } from '../src/models/registry.ts';
import { tinyModelFiles } from '../src/tiny/build-tiny.ts';
import { externalizeWeights, FakeHub, onnxWithExternal, sha256 } from './support/hub-server.ts';

const REPO = 'depthcast-test/tiny-controlnet-onnx';

/** The tiny ControlNet model as a hub repo: weights of two components moved to external data, plus files pull must skip. */
function tinyRepoFiles(): Map<string, Uint8Array | string> {
  const files = tinyModelFiles({ family: 'controlnet' });
  const te = externalizeWeights(files.get('text_encoder/model.onnx') as Uint8Array, 'model.onnx_data');
  files.set('text_encoder/model.onnx', te.onnx);
  files.set('text_encoder/model.onnx_data', te.data);
  const unet = externalizeWeights(files.get('unet/model.onnx') as Uint8Array, 'weights.pb');
  files.set('unet/model.onnx', unet.onnx);
  files.set('unet/weights.pb', unet.data);
  // Not part of the layout: must not be downloaded.
  files.set('README.md', '# tiny\n');
  files.set('.gitattributes', '*.onnx filter=lfs\n');
  files.set('unet/diffusion_pytorch_model.safetensors', Buffer.alloc(5000, 7));
  files.set('unet/model_fp16.onnx', unet.onnx);
  files.set('unet/model_fp16.onnx_data', Buffer.alloc(9000, 3));
  return files;
}

const SKIPPED = ['README.md', '.gitattributes', 'unet/diffusion_pytorch_model.safetensors', 'unet/model_fp16.onnx', 'unet/model_fp16.onnx_data'];

let hub: FakeHub;
let home: string;

beforeEach(async () => {
  hub = await new FakeHub().start();
  home = await mkdtemp(join(tmpdir(), 'depthcast-hub-'));
});

afterEach(async () => {
  await hub.close();
  await rm(home, { recursive: true, force: true });
});

function opts(extra: Partial<PullOptions> = {}): PullOptions {
  return { name: 'tiny', source: { repo: REPO }, home, env: {}, hub: { hubUrl: hub.url }, retries: 0, retryDelayMs: 5, ...extra };
}

async function rejection(p: Promise<unknown>): Promise<DepthcastError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(DepthcastError);
    return err as DepthcastError;
  }
  throw new Error('expected a rejection');
}

async function modelsDirEntries(): Promise<string[]> {
  try {
    return await readdir(join(home, 'models'));
  } catch {
    return [];
  }
}

describe('pull', () => {
  it('installs only the layout files (incl. referenced external data), atomically, with a manifest', async () => {
    const files = tinyRepoFiles();
    hub.setRepo(REPO, files);
    const target = join(home, 'models', 'tiny');
    const seenDuring: boolean[] = [];
    const events: PullEvent[] = [];
    const r = await pullModel(
      opts({
        onProgress: (e) => {
          events.push(e);
          if (e.type !== 'done') seenDuring.push(existsSync(target));
        },
      }),
    );
    expect(seenDuring.length).toBeGreaterThan(5);
    expect(seenDuring.every((x) => !x)).toBe(true); // no model folder until complete
    expect(r.installed).toBe(true);
    expect(r.dir).toBe(target);

    for (const [p, content] of files) {
      const installed = join(target, ...p.split('/'));
      if (SKIPPED.includes(p)) expect(existsSync(installed), p).toBe(false);
      else expect(sha256(await readFile(installed)), p).toBe(sha256(Buffer.from(content)));
    }
    for (const p of SKIPPED) expect(hub.transfers(p), p).toHaveLength(0);

    const manifest = JSON.parse(await readFile(join(target, 'depthcast-manifest.json'), 'utf8'));
    expect(manifest.sources[0]).toMatchObject({ repo: REPO, revision: 'main' });
    expect(manifest.sources[0].commit).toMatch(/^[0-9a-f]{40}$/);
    expect(manifest.files['unet/weights.pb'].sha256).toBe(sha256(files.get('unet/weights.pb') as Buffer));
    expect(manifest.files['text_encoder/model.onnx_data']).toBeDefined();
    // downloads are cleaned up, no staging folder is left behind
    expect(existsSync(join(home, 'downloads', downloadKey(REPO, 'main')))).toBe(false);
    expect(await modelsDirEntries()).toEqual(['tiny']);
    // files were fetched at the pinned commit, not at the moving branch
    expect(hub.requests.filter((q) => q.kind === 'resolve').every((q) => q.url.includes(manifest.sources[0].commit))).toBe(true);

    const report = await verifyModel('tiny', { home, io: false });
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.hashed).toBe(Object.keys(manifest.files).length);
    expect(events.some((e) => e.type === 'plan')).toBe(true);

    // a second pull is a no-op
    const again = await pullModel(opts());
    expect(again.installed).toBe(false);
  });

  it('follows paginated listings and LFS redirects to a CDN', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    hub.switches = { pageSize: 4, lfsRedirect: true };
    await pullModel(opts());
    expect(hub.requests.filter((q) => q.kind === 'tree').length).toBeGreaterThan(3);
    expect(hub.requests.some((q) => q.kind === 'cdn' && q.path === 'unet/weights.pb')).toBe(true);
    expect((await verifyModel('tiny', { home, io: false })).ok).toBe(true);
  });

  it('resumes after a cut connection with a Range request for the rest', async () => {
    const files = tinyRepoFiles();
    hub.setRepo(REPO, files);
    const path = 'text_encoder/model.onnx_data';
    const size = (files.get(path) as Buffer).length;
    hub.switches.cutOnce = { path, afterBytes: 20_000 };

    const err = await rejection(pullModel(opts()));
    expect(err.code).toBe('DOWNLOAD_FAILED');
    expect(err.message).toContain(path);
    expect(err.message).toMatch(/again to resume/);
    expect(await modelsDirEntries()).toEqual([]); // nothing installed, no staging left
    const partial = join(home, 'downloads', downloadKey(REPO, 'main'), 'partial', 'text_encoder', 'model.onnx_data.part');
    const kept = (await lstat(partial)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(20_000);

    const before = hub.requests.length;
    const r = await pullModel(opts());
    expect(r.resumed).toBe(true);
    const second = hub.requests.slice(before).filter((q) => q.path === path && q.range !== 'bytes=0-0' && q.kind === 'resolve');
    expect(second).toHaveLength(1);
    expect(second[0]!.range).toBe(`bytes=${kept}-`);
    expect(second[0]!.ifRange).toMatch(/^"[0-9a-f]{64}"$/);
    expect(second[0]!.status).toBe(206);
    expect(second[0]!.bytes).toBe(size - kept);
    // files verified before the cut were not fetched again
    expect(hub.requests.slice(before).filter((q) => q.path === 'model_index.json' && q.kind === 'resolve')).toHaveLength(0);
    expect(sha256(await readFile(join(home, 'models', 'tiny', 'text_encoder', 'model.onnx_data')))).toBe(sha256(files.get(path) as Buffer));
  });

  it('retries by itself, resuming, when allowed to', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    hub.switches.cutOnce = { path: 'unet/weights.pb', afterBytes: 5000 };
    const events: PullEvent[] = [];
    const r = await pullModel(opts({ retries: 2, onProgress: (e) => events.push(e) }));
    expect(r.resumed).toBe(true);
    expect(events.filter((e) => e.type === 'retry')).toHaveLength(1);
    expect(hub.transfers('unet/weights.pb').at(-1)!.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect((await verifyModel('tiny', { home, io: false })).ok).toBe(true);
  });

  it('starts over when the server ignores the Range header', async () => {
    const files = tinyRepoFiles();
    hub.setRepo(REPO, files);
    const path = 'text_encoder/model.onnx_data';
    hub.switches.cutOnce = { path, afterBytes: 20_000 };
    await rejection(pullModel(opts()));
    hub.switches.ignoreRange = true;
    await pullModel(opts());
    expect(hub.transfers(path).at(-1)!.status).toBe(200);
    expect(sha256(await readFile(join(home, 'models', 'tiny', ...path.split('/'))))).toBe(sha256(files.get(path) as Buffer));
  });

  it('refuses a file whose sha256 does not match the LFS hash, and installs nothing', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    hub.switches.corrupt = new Set(['unet/weights.pb']);
    const err = await rejection(pullModel(opts({ retries: 2 })));
    expect(err.code).toBe('HASH_MISMATCH');
    expect(err.message).toContain('unet/weights.pb');
    expect(hub.transfers('unet/weights.pb')).toHaveLength(1); // not retried: a hash mismatch is not a network hiccup
    expect(await modelsDirEntries()).toEqual([]);
    const root = join(home, 'downloads', downloadKey(REPO, 'main'));
    expect(existsSync(join(root, 'partial', 'unet', 'weights.pb.part'))).toBe(false);
    expect(existsSync(join(root, 'files', 'unet', 'weights.pb'))).toBe(false);
  });

  it('checks small non-LFS files against their git blob id', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    hub.switches.corrupt = new Set(['scheduler/scheduler_config.json']);
    const err = await rejection(pullModel(opts()));
    expect(err.code).toBe('HASH_MISMATCH');
    expect(err.message).toContain('scheduler/scheduler_config.json');
    expect(await modelsDirEntries()).toEqual([]);
  });

  it('fails fast offline, without touching the network, unless everything is cached', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    for (const env of [{ DEPTHCAST_OFFLINE: '1' }, { HF_HUB_OFFLINE: '1' }]) {
      const err = await rejection(pullModel(opts({ env })));
      expect(err.code).toBe('OFFLINE');
      expect(err.message).toMatch(/not in the cache/);
    }
    expect(hub.requests).toHaveLength(0);
    expect(existsSync(join(home, 'downloads'))).toBe(false);

    // a complete cache (kept downloads) installs offline
    await pullModel(opts({ keepDownloads: true }));
    await removeModel('tiny', { home });
    const n = hub.requests.length;
    const r = await pullModel(opts({ env: { DEPTHCAST_OFFLINE: 'true' } }));
    expect(r.installed).toBe(true);
    expect(hub.requests.length).toBe(n);
    expect((await verifyModel('tiny', { home, io: false })).ok).toBe(true);
    // an installed model is simply there
    expect((await pullModel(opts({ env: { DEPTHCAST_OFFLINE: '1' } }))).installed).toBe(false);
  });

  it('names a listed file the hub cannot serve', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    hub.switches.drop = new Set(['vae_decoder/model.onnx']);
    const err = await rejection(pullModel(opts()));
    expect(['NOT_FOUND', 'DOWNLOAD_FAILED']).toContain(err.code);
    expect(err.message).toContain('vae_decoder/model.onnx');
    expect(await modelsDirEntries()).toEqual([]);
  });

  it('names the layout files a repo lacks, and external data the repo does not have', async () => {
    const files = tinyRepoFiles();
    files.delete('unet/model.onnx');
    hub.setRepo(REPO, files);
    let err = await rejection(pullModel(opts()));
    expect(err.code).toBe('BAD_MODEL');
    expect(err.message).toContain('unet/model.onnx');

    const files2 = tinyRepoFiles();
    files2.delete('unet/weights.pb');
    hub.setRepo(REPO, files2);
    err = await rejection(pullModel(opts()));
    expect(err.code).toBe('BAD_MODEL');
    expect(err.message).toContain('unet/weights.pb');
    expect(await modelsDirEntries()).toEqual([]);
  });

  it.each([['../evil'], ['unet/../../evil.onnx_data'], ['/etc/passwd'], ['unet\\..\\x.onnx'], ['a/\u0000/b']])('refuses a listing with %j', async (bad) => {
    hub.setRepo(REPO, tinyRepoFiles());
    hub.switches.listingExtra = [{ path: bad }];
    const err = await rejection(pullModel(opts()));
    expect(err.code).toBe('UNSAFE_PATH');
    expect(hub.requests.filter((q) => q.kind === 'resolve')).toHaveLength(0);
    expect(await modelsDirEntries()).toEqual([]);
  });

  it('refuses a repo whose ONNX external data points outside the model', async () => {
    const files = tinyRepoFiles();
    files.set('unet/model.onnx', onnxWithExternal('../../etc/passwd'));
    hub.setRepo(REPO, files);
    const err = await rejection(pullModel(opts()));
    expect(err.code).toBe('UNSAFE_PATH');
    expect(err.message).toContain('../../etc/passwd');
    expect(await modelsDirEntries()).toEqual([]);
    expect(existsSync(join(home, 'etc'))).toBe(false);
  });

  it('sends HF_TOKEN, and says what to do without it', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    hub.switches.requireToken = 'hf_secret';
    const err = await rejection(pullModel(opts()));
    expect(err.code).toBe('DOWNLOAD_FAILED');
    expect(err.message).toMatch(/HF_TOKEN/);
    await pullModel(opts({ env: { HF_TOKEN: 'hf_secret' } }));
    expect(hub.requests.filter((q) => q.kind === 'resolve').every((q) => q.auth === 'Bearer hf_secret')).toBe(true);
  });

  it('says what is wrong when the hub is unreachable or the repo unknown', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    let err = await rejection(pullModel(opts({ source: { repo: 'depthcast-test/nope' } })));
    expect(err.code).toBe('MODEL_NOT_FOUND');
    expect(err.message).toContain('depthcast-test/nope');
    const url = hub.url;
    await hub.close();
    err = await rejection(pullModel(opts({ hub: { hubUrl: url } })));
    expect(err.code).toBe('DOWNLOAD_FAILED');
    expect(err.message).toMatch(/ECONNREFUSED|fetch failed/);
    expect(err.message).toMatch(/DEPTHCAST_OFFLINE/);
  });

  it('lets one pull of a repo run at a time, and --force replaces an installed model', async () => {
    const files = tinyRepoFiles();
    hub.setRepo(REPO, files);
    const results = await Promise.allSettled([pullModel(opts()), pullModel(opts())]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(failed.reason).toMatchObject({ code: 'BUSY' });

    files.set('scheduler/scheduler_config.json', '{"_class_name": "DDIMScheduler"}');
    hub.setRepo(REPO, files);
    expect((await pullModel(opts())).installed).toBe(false);
    const r = await pullModel(opts({ force: true }));
    expect(r.installed).toBe(true);
    expect(await readFile(join(home, 'models', 'tiny', 'scheduler', 'scheduler_config.json'), 'utf8')).toBe('{"_class_name": "DDIMScheduler"}');
    expect(await modelsDirEntries()).toEqual(['tiny']);
    expect((await verifyModel('tiny', { home, io: false })).ok).toBe(true);
  });

  it('refuses a planted link in the download cache', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    const outside = await mkdtemp(join(tmpdir(), 'depthcast-outside-'));
    try {
      const root = join(home, 'downloads', downloadKey(REPO, 'main'));
      await mkdir(join(root, 'files'), { recursive: true });
      await symlink(outside, join(root, 'files', 'unet'));
      const err = await rejection(pullModel(opts()));
      expect(err.code).toBe('UNSAFE_PATH');
      expect(await readdir(outside)).toEqual([]);
    } finally {
      await rm(outside, { recursive: true, force: true });
    }
  });
});

describe('ControlNet assembly', () => {
  const BASE = 'depthcast-test/sd15-base-onnx';
  const CN = 'depthcast-test/controlnet-depth-onnx';

  function baseAndControlnet(): { base: Map<string, Uint8Array | string>; cn: Map<string, Uint8Array | string> } {
    const all = tinyRepoFiles();
    const base = new Map([...all].filter(([p]) => !p.startsWith('controlnet/')));
    base.set('model_index.json', JSON.stringify({ _class_name: 'OnnxStableDiffusionPipeline', unet: ['diffusers', 'OnnxRuntimeModel'] }));
    const cn = new Map<string, Uint8Array | string>([
      ['SD/Depth/model.onnx', all.get('controlnet/model.onnx')!],
      ['SD/Depth/config.json', all.get('controlnet/config.json')!],
      ['SD/Canny/model.onnx', Buffer.alloc(3000, 1)],
      ['SD/Depth/Sample.png', Buffer.alloc(100, 2)],
    ]);
    return { base, cn };
  }

  it('assembles base + ControlNet repo into one model with controlnet/ and a residual mapping', async () => {
    const { base, cn } = baseAndControlnet();
    hub.setRepo(BASE, base);
    hub.setRepo(CN, cn);
    const mapping = { controlnet: { outputs: { down_block_res_sample_0: 'down_block_additional_residual_0' } } };
    const r = await pullModel(opts({ name: 'cn', source: { repo: BASE }, controlnet: { repo: CN, subfolder: 'SD/Depth' }, depthcastJson: mapping }));
    expect(r.sources.map((s) => s.role)).toEqual(['base', 'controlnet']);
    const dir = join(home, 'models', 'cn');
    expect(sha256(await readFile(join(dir, 'controlnet', 'model.onnx')))).toBe(sha256(cn.get('SD/Depth/model.onnx')!));
    expect(existsSync(join(dir, 'controlnet', 'config.json'))).toBe(true);
    const index = JSON.parse(await readFile(join(dir, 'model_index.json'), 'utf8'));
    expect(index._class_name).toBe('StableDiffusionControlNetPipeline');
    expect(index.controlnet).toEqual(['diffusers', 'OnnxRuntimeModel']);
    expect(JSON.parse(await readFile(join(dir, 'depthcast.json'), 'utf8'))).toEqual(mapping);
    expect(hub.transfers('SD/Canny/model.onnx')).toHaveLength(0);
    expect(hub.transfers('SD/Depth/Sample.png')).toHaveLength(0);
    expect((await verifyModel('cn', { home, io: false })).problems).toEqual([]);
  });

  it('maps repo files onto the layout (a ControlNet-ready unet kept in controlnet/)', async () => {
    const all = tinyRepoFiles();
    const base = new Map([...all].filter(([p]) => !p.startsWith('controlnet/')));
    const residualUnet = all.get('unet/model.onnx')!;
    const residualWeights = all.get('unet/weights.pb')!;
    base.set('unet/model.onnx', Buffer.from('plain unet without residual inputs'));
    base.set('unet/weights.pb', Buffer.alloc(7000, 9));
    base.set('controlnet/model.onnx', residualUnet);
    base.set('controlnet/weights.pb', residualWeights);
    base.set('controlnet/config.json', '{"in_channels": 4}');
    hub.setRepo(BASE, base);
    hub.setRepo(CN, baseAndControlnet().cn);
    await pullModel(
      opts({
        name: 'mapped',
        source: { repo: BASE, map: { 'unet/model.onnx': 'controlnet/model.onnx', 'unet/config.json': 'controlnet/config.json' } },
        controlnet: { repo: CN, subfolder: 'SD/Depth', file: 'model.onnx' },
      }),
    );
    const dir = join(home, 'models', 'mapped');
    expect(sha256(await readFile(join(dir, 'unet', 'model.onnx')))).toBe(sha256(residualUnet));
    expect(await readFile(join(dir, 'unet', 'config.json'), 'utf8')).toBe('{"in_channels": 4}');
    // its external data (controlnet/weights.pb in the repo) lands beside it, as unet/weights.pb
    expect(sha256(await readFile(join(dir, 'unet', 'weights.pb')))).toBe(sha256(residualWeights));
    expect(hub.transfers('unet/model.onnx')).toHaveLength(0);
    expect(hub.transfers('unet/weights.pb')).toHaveLength(0);
    expect((await verifyModel('mapped', { home, io: false })).problems).toEqual([]);
  });

  it('puts a ControlNet repo onto an installed base model', async () => {
    const { base, cn } = baseAndControlnet();
    hub.setRepo(BASE, base);
    hub.setRepo(CN, cn);
    await pullModel(opts({ name: 'sd15', source: { repo: BASE } }));
    const r = await assembleControlnet({ name: 'sd15-depth', base: 'sd15', controlnet: { repo: CN, subfolder: 'SD/Depth' }, home, env: {}, hub: { hubUrl: hub.url }, retries: 0 });
    expect(r.installed).toBe(true);
    const dir = join(home, 'models', 'sd15-depth');
    expect(JSON.parse(await readFile(join(dir, 'model_index.json'), 'utf8'))._class_name).toBe('StableDiffusionControlNetPipeline');
    // the base's own model_index.json is untouched (the copy is a hard link or a copy, never written through)
    expect(JSON.parse(await readFile(join(home, 'models', 'sd15', 'model_index.json'), 'utf8'))._class_name).toBe('OnnxStableDiffusionPipeline');
    expect((await verifyModel('sd15-depth', { home, io: false })).problems).toEqual([]);
    expect((await verifyModel('sd15', { home, io: false })).problems).toEqual([]);
    const err = await rejection(assembleControlnet({ name: 'x', base: 'nope', controlnet: { repo: CN }, home, env: {}, hub: { hubUrl: hub.url } }));
    expect(err.code).toBe('MODEL_NOT_FOUND');
  });
});

describe('verify', () => {
  async function installTiny(): Promise<string> {
    hub.setRepo(REPO, tinyRepoFiles());
    return (await pullModel(opts())).dir;
  }

  it.each([['../../etc/passwd'], ['/etc/passwd'], ['..\\..\\x']])('fails with UNSAFE_PATH for external data at %j', async (location) => {
    const dir = await installTiny();
    await rm(join(dir, 'vae_decoder', 'model.onnx'));
    await writeFile(join(dir, 'vae_decoder', 'model.onnx'), onnxWithExternal(location));
    const report = await verifyModel(dir, { home, io: false });
    expect(report.ok).toBe(false);
    expect(report.problems.some((p) => p.code === 'UNSAFE_PATH' && p.path === 'vae_decoder/model.onnx')).toBe(true);
    const err = await rejection(modelsVerify({ name: 'tiny', home, noIo: true }, new PassThrough()));
    expect(err.code).toBe('UNSAFE_PATH');
  });

  it('refuses a symbolic link in a model folder', async () => {
    const dir = await installTiny();
    await rm(join(dir, 'unet', 'weights.pb'));
    await symlink('/etc/hostname', join(dir, 'unet', 'weights.pb'));
    const report = await verifyModel('tiny', { home, io: false });
    expect(report.problems.some((p) => p.code === 'UNSAFE_PATH' && p.path === 'unet/weights.pb')).toBe(true);
    expect(() => assertVerified(report)).toThrowError(/symbolic link/);
  });

  it('reports changed and missing files', async () => {
    const dir = await installTiny();
    const f = join(dir, 'text_encoder', 'model.onnx_data');
    const bytes = await readFile(f);
    bytes[100] ^= 1;
    await rm(f);
    await writeFile(f, bytes);
    await rm(join(dir, 'tokenizer', 'merges.txt'));
    const report = await verifyModel('tiny', { home, io: false });
    expect(report.problems.find((p) => p.path === 'text_encoder/model.onnx_data')?.code).toBe('HASH_MISMATCH');
    expect(report.problems.find((p) => p.path === 'tokenizer/merges.txt')?.code).toBe('BAD_MODEL');
    const err = await rejection(modelsVerify({ name: 'tiny', home, noIo: true }, new PassThrough()));
    expect(err.code).toBe('HASH_MISMATCH');
  });

  it('reports truncated external data and runs (or explains) the ONNX I/O check', async () => {
    const dir = await installTiny();
    const f = join(dir, 'unet', 'weights.pb');
    const bytes = await readFile(f);
    await rm(f);
    await writeFile(f, bytes.subarray(0, 100));
    const report = await verifyModel('tiny', { home });
    expect(report.problems.some((p) => p.code === 'BAD_MODEL' && /weights\.pb has 100 bytes/.test(p.message))).toBe(true);
    // A fresh install (the truncated one removed first): the I/O check runs on it and passes.
    await rm(dir, { recursive: true });
    const clean = await installTiny().then(() => verifyModel(join(home, 'models', 'tiny'), { home, hashes: false }));
    expect(clean.problems).toEqual([]);
    expect(clean.io).toEqual({ ran: true, ok: true, problems: [] });
  });
});

describe('paths', () => {
  it.each([['..'], ['a/../b'], ['/abs'], ['a\\b'], ['a\u0000b'], ['C:x'], [''], ['a//b'], ['./a']])('refuses %j', (p) => {
    expect(() => checkRelPath(p)).toThrowError(DepthcastError);
    try {
      checkRelPath(p);
    } catch (err) {
      expect((err as DepthcastError).code).toBe('UNSAFE_PATH');
    }
  });

  it('safeJoin refuses a path through a symbolic link', async () => {
    await mkdir(join(home, 'root'));
    await symlink(tmpdir(), join(home, 'root', 'link'));
    await expect(safeJoin(join(home, 'root'), 'link/x')).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
    expect(await safeJoin(join(home, 'root'), 'a/b')).toBe(join(home, 'root', 'a', 'b'));
  });
});

describe('list and remove', () => {
  it('lists installed models, ignores staging folders, removes atomically', async () => {
    hub.setRepo(REPO, tinyRepoFiles());
    await pullModel(opts());
    await mkdir(join(home, 'models', '.tmp-half-abc'), { recursive: true });
    const list = await listInstalled(home);
    expect(list.map((m) => m.name)).toEqual(['tiny']);
    expect(list[0]).toMatchObject({ pipeline: 'controlnet', registry: null });
    expect(list[0]!.sources[0]!.repo).toBe(REPO);

    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    await modelsList({ home }, out);
    expect(text).toContain('tiny');
    expect(text).toContain(REPO);
    expect(text).toContain('sd15-controlnet-depth');
    expect(text).toContain('unverified');

    await modelsRemove({ name: 'tiny', home }, new PassThrough());
    expect(existsSync(join(home, 'models', 'tiny'))).toBe(false);
    expect((await readdir(join(home, 'models'))).filter((n) => n.startsWith('.rm-'))).toEqual([]);
    const err = await rejection(removeModel('tiny', { home }));
    expect(err.code).toBe('MODEL_NOT_FOUND');
    await expect(removeModel('../x', { home })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });
});

describe('registry', () => {
  it('loads, validates and resolves entries; every entry is marked unverified', async () => {
    const reg = await loadRegistry();
    expect(reg.models.length).toBeGreaterThan(5);
    expect(reg.models.every((m) => m.verified === false)).toBe(true);
    const r = resolveModel(reg, 'sd15-controlnet-depth');
    expect(r.source?.repo).toBeTruthy();
    expect(r.controlnet?.repo).toBeTruthy();
    expect(r.depthcastJson).toMatchObject({ controlnet: { outputs: expect.any(Object) } });
    expect(resolveModel(reg, 'sd15-controlnet-depth', 'abc').source?.revision).toBe('abc');
    expect(resolveModel(reg, 'sd2-depth-export').export).toMatch(/export_onnx\.py sd2-depth/);
    expect(() => resolveModel(reg, 'nope')).toThrowError(/not in the model registry/);
    expect(() => resolveModel(reg, 'tensorstack-controlnet-depth')).toThrowError(/ControlNet alone/);
  });

  it('rejects broken registries', () => {
    const good = { name: 'a', kind: 'pipeline', title: 't', family: 'sd15', pipeline: 'controlnet', dtype: 'fp32', verified: false, note: 'n', defaults: { steps: 1, guidance: 1, scheduler: 'S' } };
    expect(() => parseRegistry({ version: 1, models: [{ ...good, base: 'missing', controlnet: 'missing2' }] })).toThrowError(/not a base entry/);
    expect(() => parseRegistry({ version: 1, models: [{ ...good, source: { repo: 'o/r', map: { '../x': 'y' } } }] })).toThrowError(/invalid/);
    expect(() => parseRegistry({ version: 1, models: [{ ...good }] })).toThrowError(/exactly one/);
  });

  it('pulls a registry pipeline end to end (base + ControlNet + mapping) from a hub serving those repo names', async () => {
    const reg = await loadRegistry();
    const r = resolveModel(reg, 'sd15-controlnet-depth');
    const all = tinyRepoFiles();
    const base = new Map([...all].filter(([p]) => !p.startsWith('controlnet/')));
    base.set('controlnet/model.onnx', all.get('unet/model.onnx')!); // TensorStack keeps the residual unet here
    base.set('controlnet/weights.pb', all.get('unet/weights.pb')!);
    base.set('controlnet/config.json', all.get('unet/config.json')!);
    hub.setRepo(r.source!.repo, base);
    const sub = r.controlnet!.subfolder ? `${r.controlnet!.subfolder}/` : '';
    hub.setRepo(r.controlnet!.repo, new Map([[`${sub}${r.controlnet!.file ?? 'model.onnx'}`, all.get('controlnet/model.onnx')!]]));
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const err = new PassThrough();
    let progress = '';
    err.on('data', (d) => (progress += d));
    const res = await pullCommand({ id: 'sd15-controlnet-depth', hub: hub.url, home, progress: 'lines' }, out, { err, env: {} });
    expect(res.installed).toBe(true);
    expect(text).toMatch(/installed sd15-controlnet-depth/);
    expect(progress).toMatch(/not been verified/);
    expect(progress).toMatch(/controlnet\/weights\.pb .*sha256/);
    const dj = JSON.parse(await readFile(join(home, 'models', 'sd15-controlnet-depth', 'depthcast.json'), 'utf8'));
    expect(Object.keys(dj.controlnet.outputs)).toHaveLength(13);
    const manifest = JSON.parse(await readFile(join(home, 'models', 'sd15-controlnet-depth', 'depthcast-manifest.json'), 'utf8'));
    expect(manifest.registry).toBe('sd15-controlnet-depth');
    await expect(pullCommand({ id: 'sd2-depth-export', home }, new PassThrough(), { err: new PassThrough(), env: {} })).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });
  });
});

describe('progress view', () => {
  it('writes plain lines when not a TTY, and bars when asked', () => {
    for (const tty of [false, true]) {
      const s = new PassThrough();
      let text = '';
      s.on('data', (d) => (text += d));
      const v = new PullProgressView(s, tty);
      v.handle({ type: 'resolve', repo: 'o/r', revision: 'main', commit: 'a'.repeat(40), offline: false });
      v.handle({ type: 'plan', repo: 'o/r', files: [{ path: 'f', size: 2048, cached: false }], totalBytes: 2048, cachedBytes: 0 });
      v.handle({ type: 'file-start', repo: 'o/r', path: 'f', size: 2048 });
      v.handle({ type: 'bytes', repo: 'o/r', path: 'f', have: 1024, size: 2048 });
      v.handle({ type: 'file-done', repo: 'o/r', path: 'f', size: 2048, cached: false, resumedFrom: 1024, transferred: 1024 });
      v.stop();
      expect(text).toContain('o/r@main');
      expect(text).toMatch(/f 2\.0 KB \(resumed at 1\.0 KB\)/);
    }
  });
});

describe('tools/export_onnx.py', () => {
  it('is valid Python', () => {
    let python = 'python3';
    try {
      execFileSync(python, ['--version'], { stdio: 'ignore' });
    } catch {
      python = '';
    }
    if (!python) return; // no interpreter here: nothing to compile with
    // py_compile, with the .pyc written to the test's temp folder rather than tools/__pycache__/
    const script = join(import.meta.dirname, '..', 'tools', 'export_onnx.py');
    const code = 'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)';
    execFileSync(python, ['-c', code, script, join(home, 'export_onnx.pyc')], { stdio: 'pipe' });
    // --help works without torch/diffusers installed
    expect(execFileSync(python, [script, '--help'], { encoding: 'utf8' })).toMatch(/sd2-depth/);
  });
});
