/**
 * One sizing rule for every path (src/pipelines/sizing.ts): the requested size is the output;
 * the model generates at its native pixel count with that aspect and the result is upscaled
 * through sharp. Checked on the plan itself, through the real server with a real ws client, and
 * through `depthcast generate` and through Blender's headless batch script on the
 * factory-startup scene (skipped without Blender); the upscaled image is compared with sharp's resize of the same
 * frame generated exactly at the generation size.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPngText } from '../src/image/codec.ts';
import { lanczos3Resize } from '../src/image/lanczos.ts';
import { checkRequestedSize, planSize } from '../src/pipelines/sizing.ts';
import { DEFAULT_LIMITS } from '../src/protocol/limits.ts';
import { ResultHeader } from '../src/protocol/schemas.ts';
import { writeNpy } from '../src/util/npy.ts';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { frameBytes, sceneDepth, TestClient, tinyModelsDir } from './support/server-helpers.ts';
import { REPO_ROOT } from './support/tiny.ts';

const SD15 = { nativePixels: 512 * 512, step: 8 };
const SD2 = { nativePixels: 768 * 768, step: 8 };

describe('the size plan', () => {
  it('generates a 1920×1080 request at the native pixel count with its aspect, multiples of 8', () => {
    expect(planSize({ width: 1920, height: 1080 }, 'native', SD15)).toEqual({ output: { width: 1920, height: 1080 }, generation: { width: 680, height: 384 }, resampled: true });
    expect(planSize({ width: 1920, height: 1080 }, 'native', SD2).generation).toEqual({ width: 1024, height: 576 });
    expect(planSize({ width: 1080, height: 1920 }, 'native', SD15).generation).toEqual({ width: 384, height: 680 });
    for (const out of [{ width: 1366, height: 768 }, { width: 4096, height: 4096 }, { width: 8, height: 4000 }, { width: 3001, height: 17 }]) {
      const { generation } = planSize(out, 'native', SD15);
      expect(generation.width % 8 + generation.height % 8, JSON.stringify(out)).toBe(0);
      expect(generation.width * generation.height).toBeLessThanOrEqual(512 * 512);
      expect(Math.min(generation.width, generation.height)).toBeGreaterThanOrEqual(8);
    }
  });

  it('keeps sizes within the native count as they are, rounded down to the VAE grid', () => {
    expect(planSize({ width: 512, height: 512 }, 'native', SD15)).toMatchObject({ generation: { width: 512, height: 512 }, resampled: false });
    expect(planSize({ width: 500, height: 300 }, 'native', SD15)).toMatchObject({ generation: { width: 496, height: 296 }, resampled: true });
  });

  it('"exact" generates at the requested size, within the generation limit and in multiples of 8', () => {
    expect(planSize({ width: 1024, height: 576 }, 'exact', SD15)).toMatchObject({ generation: { width: 1024, height: 576 }, resampled: false });
    const depth = { width: 64, height: 64 };
    expect(() => checkRequestedSize({ width: 1920, height: 1080, sizing: 'exact' }, depth, DEFAULT_LIMITS)).toThrow(/generated pixels; this service allows at most 1048576/);
    expect(() => checkRequestedSize({ width: 1001, height: 512, sizing: 'exact' }, depth, DEFAULT_LIMITS)).toThrow(/multiple of 8/);
    expect(checkRequestedSize({ width: 1920, height: 1080 }, depth, DEFAULT_LIMITS)).toEqual({ width: 1920, height: 1080 });
    expect(() => checkRequestedSize({ width: 8192, height: 4096 }, depth, DEFAULT_LIMITS)).toThrow(/output size 8192×4096 is 33554432 pixels/);
    // One side alone keeps the depth's aspect.
    expect(checkRequestedSize({ width: 1920 }, { width: 64, height: 36 }, DEFAULT_LIMITS)).toEqual({ width: 1920, height: 1080 });
  });
});

describe('a 1920×1080 request through the service', () => {
  let models: Awaited<ReturnType<typeof tinyModelsDir>>;
  let server: DepthcastServer;
  beforeAll(async () => {
    models = await tinyModelsDir();
    server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', log: () => {} });
  });
  afterAll(async () => {
    await server?.close();
    await models?.cleanup();
  });

  it('gets a 1920×1080 image that is the native-size generation upscaled, and names both sizes', async () => {
    const client = await TestClient.connect(server.url);
    // The tiny model's unet sample_size is 64 with a VAE factor of 8: native 512², like SD 1.5.
    const depth = sceneDepth({ width: 1920, height: 1080, boxX: 800 });
    const params = { steps: 2, seed: 5, resultFormat: 'rgb8' as const, previewEvery: 0 };
    client.send(frameBytes({ jobId: 'hd', mode: 'batch', depth, width: 1920, height: 1080, params }));
    const hd = await client.terminal('hd');
    expect(hd.type, JSON.stringify(hd.msg)).toBe('result');
    const header = ResultHeader.parse(hd.msg);
    expect(header).toMatchObject({ width: 1920, height: 1080, generated: { width: 680, height: 384 } });
    expect(header.params).toMatchObject({ width: 1920, height: 1080, sizing: 'native', generatedWidth: 680, generatedHeight: 384, upscaler: 'lanczos3' });
    expect(hd.payload!.byteLength).toBe(1920 * 1080 * 3);

    // The reference: the same frame generated exactly at 680×384, upscaled with Lanczos-3 (test/lanczos.test.ts
    // checks that resampler against ImageMagick).
    client.send(frameBytes({ jobId: 'gen', mode: 'batch', depth, width: 1920, height: 1080, params: { ...params, width: 680, height: 384, sizing: 'exact' } }));
    const gen = await client.terminal('gen');
    expect(ResultHeader.parse(gen.msg)).toMatchObject({ width: 680, height: 384, generated: { width: 680, height: 384 } });
    const reference = lanczos3Resize(gen.payload!, 680, 384, 3, 1920, 1080);
    expect(Buffer.from(hd.payload!).equals(reference)).toBe(true);
    // A control: the generation has structure, so another resampling (nearest) would not match.
    const nearest = await sharp(gen.payload!, { raw: { width: 680, height: 384, channels: 3 } }).resize(1920, 1080, { kernel: 'nearest', fit: 'fill' }).raw().toBuffer();
    expect(Buffer.from(hd.payload!).equals(nearest)).toBe(false);
    await client.close();
  });

  it('refuses outputs over maxOutputPixels and exact generations over maxGenerationPixels, by name', async () => {
    const client = await TestClient.connect(server.url);
    client.send(frameBytes({ jobId: 'huge', params: { width: 8192, height: 4096 } }));
    expect((await client.terminal('huge')).msg).toMatchObject({ type: 'error', code: 'LIMIT_EXCEEDED', message: expect.stringMatching(/output size 8192×4096/) });
    client.send(frameBytes({ jobId: 'exact', params: { width: 1920, height: 1080, sizing: 'exact' } }));
    expect((await client.terminal('exact')).msg).toMatchObject({ type: 'error', code: 'LIMIT_EXCEEDED', message: expect.stringMatching(/sizing "exact" at 1920×1080/) });
    await client.close();
  });
});

describe('a 1920×1080 request through depthcast generate', () => {
  it('writes a 1920×1080 PNG whose parameters name the generated size', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'depthcast-sizing-'));
    const models = await tinyModelsDir();
    try {
      const depthFile = join(dir, 'hd.npy');
      writeFileSync(depthFile, writeNpy(sceneDepth({ width: 1920, height: 1080, boxX: 800 }), [1080, 1920]));
      const out = join(dir, 'hd.png');
      const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/depthcast.js'), 'generate', '--model', join(models.dir, 'tiny'), '--depth', depthFile,
        '--prompt', 'a barn', '--steps', '2', '--seed', '3', '--far', '50', '--device', 'cpu', '--out', out], { encoding: 'utf8', timeout: 120_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toContain('1920×1080, generated at 680×384 and upscaled');
      const png = readFileSync(out);
      const meta = await sharp(png).metadata();
      expect([meta.width, meta.height]).toEqual([1920, 1080]);
      expect(JSON.parse(readPngText(png).parameters!)).toMatchObject({ width: 1920, height: 1080, generatedWidth: 680, generatedHeight: 384, sizing: 'native' });
    } finally {
      await models.cleanup();
    }
  });
});

const BLENDER = process.env.DEPTHCAST_BLENDER ?? 'blender';
const hasBlender = spawnSync(BLENDER, ['--version'], { encoding: 'utf8', timeout: 60_000 }).status === 0;
if (!hasBlender) console.warn(`sizing: the Blender batch check is SKIPPED: no Blender at '${BLENDER}'`);

describe.skipIf(!hasBlender)('the factory-startup scene through the Blender batch script and the service', () => {
  it('writes a 1920×1080 image and a sidecar naming the generated size', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'depthcast-sizing-blender-'));
    const models = await tinyModelsDir();
    const server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', log: () => {} });
    try {
      const out = join(dir, 'out');
      const args = ['-b', '--factory-startup', '--python', join(REPO_ROOT, 'blender-addon/scripts/depthcast_batch.py'), '--',
        '--server', `ws://127.0.0.1:${server.port}/v1/ws`, '--prompt', 'a cube', '--steps', '2', '--out', out];
      // Asynchronous: the service runs in this process and must answer while Blender waits.
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn(BLENDER, args, { stdio: ['ignore', 'ignore', 'pipe'] });
        const timer = setTimeout(() => child.kill('SIGKILL'), 280_000);
        child.once('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      expect(code).toBe(0);
      const meta = await sharp(readFileSync(join(out, 'Camera_0001.png'))).metadata();
      expect([meta.width, meta.height]).toEqual([1920, 1080]);
      const sidecar = JSON.parse(readFileSync(join(out, 'Camera_0001.json'), 'utf8'));
      expect(sidecar.params).toMatchObject({ width: 1920, height: 1080, sizing: 'native', generatedWidth: 680, generatedHeight: 384 });
    } finally {
      await server.close();
      await models.cleanup();
    }
  }, 300_000);
});
