import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { withDepthRange } from '../src/depth/read.ts';
import { readPngText } from '../src/image/codec.ts';
import { writeNpy } from '../src/util/npy.ts';
import { REPO_ROOT, SHARED_CONFORMANCE, sceneDepth, tinyModelDir } from './support/tiny.ts';

function depthcast(...args: string[]) {
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/depthcast.js'), ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const dir = mkdtempSync(join(tmpdir(), 'depthcast-cli-'));
const depthFile = join(dir, 'scene.npy');
writeFileSync(depthFile, writeNpy(sceneDepth(), [64, 64]));

describe('depthcast generate', () => {
  it('writes a PNG with its generation parameters, identical for the same seed', async () => {
    const model = await tinyModelDir({ family: 'controlnet' });
    const run = (out: string) => depthcast('generate', '--model', model, '--depth', depthFile, '--prompt', 'a barn at dusk', '--steps', '3', '--seed', '11', '--far', '50', '--out', out, '--device', 'cpu');
    const a = run(join(dir, 'a.png'));
    expect(a.stderr).toContain('wrote');
    expect(a.code).toBe(0);
    expect(run(join(dir, 'b.png')).code).toBe(0);
    const png = readFileSync(join(dir, 'a.png'));
    expect(png.equals(readFileSync(join(dir, 'b.png')))).toBe(true);
    const params = JSON.parse(readPngText(png).parameters!);
    expect(params).toMatchObject({ prompt: 'a barn at dusk', seed: 11, steps: 3, width: 64, height: 64 });
    expect(a.stderr).toMatch(/step 1\//);
  });

  it('fails with a typed error for a NaN depth file and writes nothing', async () => {
    const bad = join(dir, 'nan.npy');
    const z = sceneDepth();
    z[100] = NaN;
    writeFileSync(bad, writeNpy(z, [64, 64]));
    const r = depthcast('generate', '--model', await tinyModelDir({ family: 'depth2img' }), '--depth', bad, '--prompt', 'x', '--steps', '2', '--far', '50', '--out', join(dir, 'nan.png'), '--device', 'cpu');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/BAD_DEPTH.*NaN/);
    expect(existsSync(join(dir, 'nan.png'))).toBe(false);
  });

  it('names a missing model folder', () => {
    const r = depthcast('generate', '--model', join(dir, 'nope'), '--depth', depthFile, '--prompt', 'x', '--out', join(dir, 'x.png'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('MODEL_NOT_FOUND');
  });

  it('--model takes a name in the models folder, as serve does, and gives the same image as its path', async () => {
    const models = mkdtempSync(join(dir, 'models-'));
    cpSync(await tinyModelDir({ family: 'depth2img' }), join(models, 'tiny'), { recursive: true });
    const run = (model: string, out: string, ...more: string[]) =>
      depthcast('generate', '--model', model, ...more, '--depth', depthFile, '--prompt', 'x', '--steps', '2', '--seed', '3', '--out', join(dir, out), '--device', 'cpu');
    const byName = run('tiny', 'by-name.png', '--models-dir', models);
    expect(byName.stderr).toContain('wrote');
    expect(byName.code).toBe(0);
    expect(run(join(models, 'tiny'), 'by-path.png').code).toBe(0);
    expect(readFileSync(join(dir, 'by-name.png')).equals(readFileSync(join(dir, 'by-path.png')))).toBe(true);
    const missing = run('nope', 'nope.png', '--models-dir', models);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/MODEL_NOT_FOUND: model "nope" not found \(available: tiny\)/);
  });

  it('16-bit PNG depth: near/far from its depth-range chunk, else a typed refusal, never a guess', async () => {
    const model = await tinyModelDir({ family: 'depth2img' });
    const z = sceneDepth();
    let near = Infinity;
    let far = 0;
    for (const v of z) if (Number.isFinite(v)) { near = Math.min(near, v); far = Math.max(far, v); }
    const samples = Uint16Array.from(z, (v) => (Number.isFinite(v) ? Math.round(((v - near) / (far - near)) * 65534) : 65535));
    const plain = await sharp(samples, { raw: { width: 64, height: 64, channels: 1 } }).toColourspace('grey16').png().toBuffer();
    writeFileSync(join(dir, 'plain16.png'), plain);
    writeFileSync(join(dir, 'ranged16.png'), withDepthRange(plain, near, far));
    const run = (depth: string, out: string, ...more: string[]) =>
      depthcast('generate', '--model', model, '--depth', join(dir, depth), ...more, '--prompt', 'x', '--steps', '2', '--seed', '5', '--out', join(dir, out), '--device', 'cpu');
    const refused = run('plain16.png', 'plain16-out.png');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/BAD_DEPTH: .*plain16\.png: a 16-bit PNG holds 0\.\.65535, not camera Z.*--near\/--far/);
    expect(existsSync(join(dir, 'plain16-out.png'))).toBe(false);
    expect(run('ranged16.png', 'from-chunk.png').code).toBe(0);
    expect(run('plain16.png', 'from-flags.png', '--near', String(near), '--far', String(far)).code).toBe(0);
    expect(readFileSync(join(dir, 'from-chunk.png')).equals(readFileSync(join(dir, 'from-flags.png')))).toBe(true);
    // The flags win over the chunk.
    expect(run('ranged16.png', 'flags-win.png', '--near', String(near), '--far', String(far * 3)).code).toBe(0);
    expect(readFileSync(join(dir, 'flags-win.png')).equals(readFileSync(join(dir, 'from-chunk.png')))).toBe(false);
  });

  it('models create-tiny writes a loadable model and says its images are abstract', () => {
    const r = depthcast('models', 'create-tiny', join(dir, 'tiny'), '--family', 'controlnet', '--dtype', 'fp16');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/abstract/i);
    expect(existsSync(join(dir, 'tiny/controlnet/model.onnx'))).toBe(true);
  });
});

describe.skipIf(!existsSync(SHARED_CONFORMANCE))('depthcast conformance on ../shared/conformance', () => {
  it('passes every reference case and tokenizer vector', () => {
    const r = depthcast('conformance', SHARED_CONFORMANCE);
    // Shown for drift, prefixed so CI never mistakes it for the suite's own summary line.
    process.stdout.write(r.stdout.replace(/^/gm, '  conformance| '));
    const last = r.stdout.trim().split('\n').at(-1)!;
    expect(last).toMatch(/^\d+ passed, 0 failed$/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/PASS tokenizer/);
  });

  it('fails a case whose expectation does not hold, and exits non-zero', () => {
    const copy = mkdtempSync(join(tmpdir(), 'depthcast-conf-'));
    cpSync(join(SHARED_CONFORMANCE, 'models'), join(copy, 'models'), { recursive: true });
    cpSync(join(SHARED_CONFORMANCE, 'cases', 'd2i-ddim'), join(copy, 'cases', 'd2i-ddim'), { recursive: true });
    const caseFile = join(copy, 'cases', 'd2i-ddim', 'case.json');
    const spec = JSON.parse(readFileSync(caseFile, 'utf8'));
    spec.guidance_scale = 7.0; // the reference image was made with 7.5
    writeFileSync(caseFile, JSON.stringify(spec));
    const r = depthcast('conformance', copy);
    expect(r.stdout).toMatch(/FAIL d2i-ddim max_abs=/);
    expect(r.stdout.trim().split('\n').at(-1)).toBe('0 passed, 1 failed');
    expect(r.code).toBe(1);
  });
});
if (!existsSync(SHARED_CONFORMANCE)) console.warn(`skipping conformance tests: ${SHARED_CONFORMANCE} not found`);
