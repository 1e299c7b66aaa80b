/** Batch manifest parsing, expansion and naming, and the runner's on-disk rules, without inference. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DepthcastError } from '../src/errors.ts';
import { serviceUrl } from '../src/batch/backends.ts';
import { canonicalJson } from '../src/batch/inputs.ts';
import { deriveSeed, expandManifest, type LoadedManifest, parseManifestText } from '../src/batch/manifest.ts';
import { acquireLock, formatSummary, isDone, isRetryable, removePartials } from '../src/batch/runner.ts';

const EXAMPLE = path.resolve(import.meta.dirname, '..', 'examples', 'batch.yaml');

function load(text: string, file = '/work/scenes/m.yaml'): LoadedManifest {
  return { file, baseDir: path.dirname(file), manifest: parseManifestText(text, file) };
}

function errorOf(text: string, file = 'm.yaml'): string {
  try {
    parseManifestText(text, file);
  } catch (err) {
    expect(err).toBeInstanceOf(DepthcastError);
    expect((err as DepthcastError).code).toBe('BAD_MANIFEST');
    return (err as Error).message;
  }
  throw new Error('expected a BAD_MANIFEST error');
}

describe('manifest expansion', () => {
  it('expands scene × view × variation × sweep × seed with stable names and merged parameters', () => {
    const outputs = expandManifest(load([
      'defaults:',
      '  negative: blurry',
      '  params: {steps: 20, guidance: 7, scheduler: ddim}',
      'scenes:',
      '  - name: room',
      '    depth: depth/room.npy',
      '    init: init/room.png',
      '    prompt: a cosy room',
      '    seeds: [1, 2]',
      '    params: {guidance: 6}',
      '    variations:',
      '      - {name: warm, prompt: "{prompt}, warm light", params: {steps: 30}}',
      '      - {name: cold, negative: "warm"}',
      '    sweep: {guidance: [4, 8.5]}',
    ].join('\n')));
    expect(outputs.map((o) => o.id)).toEqual([
      'room/warm_guidance4_s1', 'room/warm_guidance4_s2', 'room/warm_guidance8.5_s1', 'room/warm_guidance8.5_s2',
      'room/cold_guidance4_s1', 'room/cold_guidance4_s2', 'room/cold_guidance8.5_s1', 'room/cold_guidance8.5_s2',
    ]);
    const warm = outputs[0]!;
    expect(warm.prompt).toBe('a cosy room, warm light');
    expect(warm.negativePrompt).toBe('blurry');
    expect(warm.params).toEqual({ steps: 30, guidance: 4, scheduler: 'ddim' });
    expect(warm.depth).toEqual({ source: 'file', file: '/work/scenes/depth/room.npy', kind: 'zdepth', near: undefined, far: undefined });
    expect(warm.init).toBe('/work/scenes/init/room.png');
    const cold = outputs[4]!;
    expect(cold.prompt).toBe('a cosy room');
    expect(cold.negativePrompt).toBe('warm');
    expect(cold.params).toEqual({ steps: 20, guidance: 4, scheduler: 'ddim' });
  });

  it('derives seeds from the scene name, the same on every run', () => {
    const text = 'defaults: {seedCount: 2}\nscenes:\n  - {name: a, depth: a.npy, prompt: x}\n  - {name: b, depth: b.npy, prompt: x, seedCount: 3}\n';
    const first = expandManifest(load(text)).map((o) => o.seed);
    expect(expandManifest(load(text)).map((o) => o.seed)).toEqual(first);
    expect(first).toHaveLength(5);
    expect(first.slice(0, 2)).toEqual([deriveSeed('a', 0), deriveSeed('a', 1)]);
    expect(new Set(first).size).toBe(5);
    for (const s of first) expect(s >= 0 && s <= 0xffffffff && Number.isInteger(s)).toBe(true);
  });

  it('names blend views by camera and frame; frames may be a range', () => {
    const outputs = expandManifest(load('scenes:\n  - name: shot\n    depth: {blend: s.blend, cameras: [Main Cam, B], frames: {start: 1, end: 5, step: 2}}\n    prompt: x\n    seeds: [9]\n'));
    expect(outputs.map((o) => o.id)).toEqual([
      'shot/Main-Cam-f1_s9', 'shot/Main-Cam-f3_s9', 'shot/Main-Cam-f5_s9', 'shot/B-f1_s9', 'shot/B-f3_s9', 'shot/B-f5_s9',
    ]);
    expect(outputs[0]!.depth).toMatchObject({ source: 'blend', blend: '/work/scenes/s.blend', camera: 'Main Cam', frame: 1, range: 'camera', engine: 'auto' });
    const single = expandManifest(load('scenes:\n  - {name: one, depth: {blend: s.blend}, prompt: x, seeds: [1]}\n'));
    expect(single.map((o) => o.id)).toEqual(['one/s1']);
    expect(single[0]!.depth).toMatchObject({ camera: undefined, frame: undefined });
  });

  it('refuses two outputs with the same file name', () => {
    expect(() => expandManifest(load('scenes:\n  - {name: a, depth: {blend: s.blend, cameras: ["C 1", "C-1"]}, prompt: x, seeds: [1]}\n')))
      .toThrowError(/two outputs would both be written to a\/C-1_s1\.png/);
  });

  it('parses JSON manifests and the example in examples/', async () => {
    const outputs = expandManifest(load(JSON.stringify({ scenes: [{ name: 'a', depth: { file: 'a.png', kind: 'normalized' }, prompt: 'p' }] }), '/x/m.json'));
    expect(outputs[0]!.depth).toMatchObject({ file: '/x/a.png', kind: 'normalized' });
    const example = parseManifestText(await readFile(EXAMPLE, 'utf8'), EXAMPLE);
    expect(example.scenes.length).toBeGreaterThan(0);
  });
});

describe('manifest errors name the field', () => {
  it('reports every problem with its path and line', () => {
    const message = errorOf([
      'scenes:',
      '  - name: ok',
      '    depth: a.npy',
      '    prompt: x',
      '  - name: bad one',
      '    depth: {file: b.npy, near: 5, far: 2}',
      '    promt: y',
    ].join('\n'));
    expect(message).toMatch(/^m\.yaml: /);
    expect(message).toContain('scenes[1].name (line 5): use 1-64 characters');
    expect(message).toContain('scenes[1].depth.far (line 6): far must be greater than near');
    expect(message).toContain('scenes[1].prompt (line 5): required (expected string)');
    expect(message).toContain('scenes[1].promt (line 7): unknown field');
  });

  it('checks a .blend depth against the blend schema and frames against the closer alternative', () => {
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: {blend: s.blend, camera: A, cameras: [B]}}\n')).toContain('scenes[0].depth.cameras (line 2): give camera or cameras, not both');
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: {blend: s.blend, frames: [1, 2.5]}}\n')).toContain('scenes[0].depth.frames[1] (line 2): Invalid input: expected int');
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: {blend: s.blend, file: a.npy}}\n')).toContain('scenes[0].depth.file (line 2): unknown field');
    expect(errorOf('scenes:\n  - {name: a, prompt: x}\n')).toContain('scenes[0].depth (line 2): missing: give a depth file');
  });

  it('checks params, sweeps, variations and seeds', () => {
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: a.npy, params: {scheduler: fast}}\n')).toMatch(/scenes\[0\]\.params\.scheduler \(line 2\): Invalid option: expected one of "ddim"/);
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: a.npy, sweep: {steps: [10, "20"]}}\n')).toContain('scenes[0].sweep.steps[1] (line 2): Invalid input: expected number, received string');
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: a.npy, sweep: {}}\n')).toContain('scenes[0].sweep (line 2): a sweep needs at least one parameter list');
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: a.npy, variations: [{name: v}, {name: v}]}\n')).toContain('scenes[0].variations[1].name (line 2): duplicate variation name "v"');
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: a.npy, seeds: [1], seedCount: 2}\n')).toContain('scenes[0].seedCount (line 2): give seeds or seedCount, not both');
    expect(errorOf('scenes:\n  - {name: a, prompt: x, depth: a.npy, seeds: [-1]}\n')).toContain('scenes[0].seeds[0] (line 2): Too small');
  });

  it('reports syntax errors and empty files', () => {
    expect(errorOf('{"scenes": [}', 'm.json')).toMatch(/^m\.json: not valid JSON/);
    expect(errorOf('')).toMatch(/the manifest is empty/);
    expect(errorOf('scenes: "all"\n')).toContain('scenes (line 1): Invalid input: expected array, received string');
  });
});

describe('runner rules', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'depthcast-batch-unit-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('counts an output as done only when PNG and sidecar agree with the request', async () => {
    const { createHash } = await import('node:crypto');
    const png = Buffer.from('\x89PNG fake image bytes');
    await mkdir(path.join(dir, 'done', 's'), { recursive: true });
    await writeFile(path.join(dir, 'done', 's', 'x.png'), png);
    const side = { requestHash: 'abc', png: { bytes: png.length, sha256: createHash('sha256').update(png).digest('hex') } };
    await writeFile(path.join(dir, 'done', 's', 'x.json'), JSON.stringify(side));
    const out = path.join(dir, 'done');
    expect(await isDone(out, 's/x', 'abc')).toBe(true);
    expect(await isDone(out, 's/x', 'other request')).toBe(false);
    await writeFile(path.join(dir, 'done', 's', 'x.png'), Buffer.from('\x89PNG fake image byteZ'));
    expect(await isDone(out, 's/x', 'abc')).toBe(false);
    await rm(path.join(dir, 'done', 's', 'x.json'));
    expect(await isDone(out, 's/x', 'abc')).toBe(false);
  });

  it('removes .partial files and folders anywhere below the out folder', async () => {
    const out = path.join(dir, 'partials');
    await mkdir(path.join(out, 'a', '.depth', 'scene.partial'), { recursive: true });
    await writeFile(path.join(out, 'a', 'x.png.partial'), 'half');
    await writeFile(path.join(out, 'a', 'x.png'), 'whole');
    expect(await removePartials(out)).toBe(2);
    expect(existsSync(path.join(out, 'a', 'x.png'))).toBe(true);
    expect(existsSync(path.join(out, 'a', 'x.png.partial'))).toBe(false);
    expect(existsSync(path.join(out, 'a', '.depth', 'scene.partial'))).toBe(false);
  });

  it('takes over the lock of a dead run, refuses a live one', async () => {
    const out = path.join(dir, 'lock');
    await mkdir(out, { recursive: true });
    const child = spawn(process.execPath, ['-e', '']);
    const deadPid = child.pid!;
    await new Promise((r) => child.on('close', r));
    await writeFile(path.join(out, '.depthcast-batch.lock'), `${deadPid}\n`);
    const release = await acquireLock(out);
    expect((await readFile(path.join(out, '.depthcast-batch.lock'), 'utf8')).trim()).toBe(String(process.pid));
    await release();
    expect(existsSync(path.join(out, '.depthcast-batch.lock'))).toBe(false);
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)']);
    try {
      await writeFile(path.join(out, '.depthcast-batch.lock'), `${sleeper.pid}\n`);
      await expect(acquireLock(out)).rejects.toThrowError(/another batch \(pid \d+\) is writing to/);
    } finally {
      sleeper.kill();
    }
  });

  it('retries only what a retry can fix', () => {
    expect(isRetryable(new DepthcastError('INFERENCE_FAILED', 'x'))).toBe(true);
    expect(isRetryable(new DepthcastError('OFFLINE', 'x'))).toBe(true);
    expect(isRetryable(new DepthcastError('BUSY', 'x'))).toBe(true);
    expect(isRetryable(new DepthcastError('BAD_DEPTH', 'x'))).toBe(false);
    expect(isRetryable(new DepthcastError('MODEL_NOT_FOUND', 'x'))).toBe(false);
  });

  it('summarises failures per scene', () => {
    const text = formatSummary({
      outDir: '/o', total: 5, done: 2, skipped: 1, failed: 2, notRun: 0, interrupted: false, elapsedMs: 2000, checkMs: 1, outputMs: [],
      failures: [
        { id: 'bad/s1', scene: 'bad', code: 'BAD_DEPTH', message: 'nope', attempts: 1 },
        { id: 'bad/s2', scene: 'bad', code: 'BAD_DEPTH', message: 'nope', attempts: 1 },
      ],
    });
    expect(text).toContain('5 outputs: 2 done, 1 skipped (already done), 2 failed in 2.0 s, 60.0 outputs/min');
    expect(text).toContain('  bad: 2 outputs: BAD_DEPTH: nope');
  });

  it('hashes requests independently of key order', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: null } })).toBe(canonicalJson({ a: { c: null, d: [1, { y: 2, z: 1 }] }, b: 1 }));
  });

  it('normalises service URLs', () => {
    expect(serviceUrl('127.0.0.1:7788')).toBe('ws://127.0.0.1:7788/v1/ws');
    expect(serviceUrl('http://localhost:7788/', 'a b')).toBe('ws://localhost:7788/v1/ws?token=a+b');
    expect(serviceUrl('https://gpu.example:443')).toBe('wss://gpu.example/v1/ws');
    expect(serviceUrl('ws://h:1/v1/ws')).toBe('ws://h:1/v1/ws');
    expect(() => serviceUrl('ftp://h')).toThrowError(/use ws:/);
  });
});
