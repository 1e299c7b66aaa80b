/**
 * `depthcast batch` end to end through the real CLI (node bin/depthcast.js) on a tiny model:
 * SIGKILL half-way and resume, byte-identical outputs for identical seeds, bad manifests,
 * per-scene failures, .blend scenes through Blender, and service vs in-process.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTinyModel } from '../src/tiny/build-tiny.ts';
import { writeNpy } from '../src/util/npy.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin', 'depthcast.js');

let work: string;
let modelsDir: string;

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function startCli(args: string[], env: Record<string, string> = {}): { child: ChildProcess; result: Promise<CliResult>; stderrLines: (fn: (line: string) => void) => void } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: work, env: { ...process.env, FORCE_COLOR: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners: ((line: string) => void)[] = [];
  let pendingLine = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    pendingLine += d.toString();
    const lines = pendingLine.split('\n');
    pendingLine = lines.pop()!;
    for (const line of lines) for (const fn of listeners) fn(line);
  });
  const result = new Promise<CliResult>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, result, stderrLines: (fn) => listeners.push(fn) };
}

function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return startCli(args, env).result;
}

/** Every file below `dir`, relative, sorted. */
async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  if (!existsSync(path.join(dir, prefix))) return [];
  const out: string[] = [];
  for (const e of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else out.push(rel);
  }
  return out.sort();
}

/** A depth map: a slope with a box in front, its position depending on `variant`. */
function depthMap(width: number, height: number, variant: number): Float32Array {
  const d = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const inBox = x >= 8 + variant * 6 && x < 30 + variant * 6 && y >= 12 && y < 44;
      d[y * width + x] = inBox ? 1.5 : 2 + (3 * x) / width;
    }
  }
  return d;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(bytes: Buffer): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A greyscale PNG (8 or 16 bits per sample), written by hand so the reader under test is not also the writer. */
function greyPng(samples: ArrayLike<number>, width: number, height: number, bits: 8 | 16): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = bits;
  const bpp = bits / 8;
  const raw = Buffer.alloc(height * (1 + width * bpp));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = y * (1 + width * bpp) + 1 + x * bpp;
      if (bits === 16) raw.writeUInt16BE(samples[y * width + x]!, at);
      else raw[at] = samples[y * width + x]!;
    }
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

function endsWithIend(png: Buffer): boolean {
  return png.length > 12 && png.subarray(png.length - 8, png.length - 4).toString('latin1') === 'IEND';
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'depthcast-batch-'));
  modelsDir = path.join(work, 'models');
  await createTinyModel(path.join(modelsDir, 'tiny'), { family: 'depth2img' });
  for (let v = 0; v < 4; v++) await writeFile(path.join(work, `depth${v}.npy`), writeNpy(depthMap(64, 64, v), [64, 64]));
  await writeFile(path.join(work, 'broken.npy'), 'this is not a numpy file');
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/** Six outputs; scenes "same-a" and "same-b" share depth, prompt and seed. */
function sixScenes(params: Record<string, unknown>): string {
  const p = JSON.stringify(params);
  return [
    `defaults:`,
    `  params: ${p}`,
    `scenes:`,
    `  - {name: same-a, depth: depth0.npy, prompt: "a red cube on a table", seeds: [1234]}`,
    `  - {name: same-b, depth: depth0.npy, prompt: "a red cube on a table", seeds: [1234]}`,
    `  - {name: slope, depth: {file: depth1.npy, near: 1, far: 6}, prompt: "a ramp", seedCount: 2}`,
    `  - name: swept`,
    `    depth: depth2.npy`,
    `    prompt: "a room"`,
    `    seeds: [5]`,
    `    sweep: {guidance: [3, 7.5]}`,
    '',
  ].join('\n');
}

describe('batch: kill and resume', () => {
  it('SIGKILL half-way, re-run: exactly 6 outputs, no partial file, identical bytes for identical seeds, third run skips all', async () => {
    const manifest = path.join(work, 'six.yaml');
    // Big enough (256², 60 steps) that one output takes a noticeable time on the tiny model, so the kill lands mid-run.
    await writeFile(manifest, sixScenes({ steps: 60, width: 256, height: 256, scheduler: 'ddim' }));
    const out = path.join(work, 'six-out');
    const args = ['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu'];

    // Run 1: killed with SIGKILL as soon as two outputs are finished.
    const first = startCli(args);
    // Killed when two sidecars are on disk: seen by polling the folder, or sooner by the "done" lines
    // (each printed after its sidecar was renamed into place).
    let killedAt = -1;
    const kill = () => {
      if (killedAt >= 0 || first.child.exitCode !== null) return;
      killedAt = Date.now();
      first.child.kill('SIGKILL');
    };
    const poll = setInterval(() => {
      void listFiles(out).then((files) => {
        if (files.filter((f) => f.endsWith('.json') && f !== 'batch-report.json').length >= 2) kill();
      }, () => {});
    }, 5);
    let doneLines = 0;
    first.stderrLines((line) => {
      if (/^\[\s*\d+\/\d+\] done /.test(line) && ++doneLines >= 2) kill();
    });
    const r1 = await first.result;
    clearInterval(poll);
    expect(r1.signal, `run 1 should have been killed, it exited ${r1.code}\n${r1.stderr}`).toBe('SIGKILL');
    const afterKill = await listFiles(out);
    const pngsAfterKill = afterKill.filter((f) => f.endsWith('.png'));
    expect(pngsAfterKill.length, `killed half-way: ${afterKill.join(', ')}`).toBeGreaterThanOrEqual(2);
    expect(pngsAfterKill.length).toBeLessThan(6);
    // Whatever the kill interrupted, no final-named PNG is partial.
    for (const f of pngsAfterKill) expect(endsWithIend(await readFile(path.join(out, f))), f).toBe(true);
    expect(afterKill).toContain('.depthcast-batch.lock'); // left by the killed run; the next run takes it over

    // Run 2: completes the rest.
    const r2 = await runCli(args);
    expect(r2.code, r2.stderr).toBe(0);
    const files = await listFiles(out);
    const pngs = files.filter((f) => f.endsWith('.png'));
    expect(pngs).toHaveLength(6);
    expect(files.filter((f) => f.endsWith('.json') && f !== 'batch-report.json')).toHaveLength(6);
    expect(files.filter((f) => f.includes('.partial'))).toEqual([]);
    expect(files).not.toContain('.depthcast-batch.lock');
    expect(pngs).toEqual([
      'same-a/s1234.png', 'same-b/s1234.png',
      ...pngs.filter((f) => f.startsWith('slope/')),
      'swept/guidance3_s5.png', 'swept/guidance7.5_s5.png',
    ].sort());
    const skippedInRun2 = Number(/(\d+) skipped/.exec(r2.stdout)?.[1]);
    expect(skippedInRun2).toBeGreaterThanOrEqual(2);
    expect(r2.stdout).toMatch(new RegExp(`${6 - skippedInRun2} done`));

    // Identical seeds → identical bytes.
    const a = await readFile(path.join(out, 'same-a/s1234.png'));
    const b = await readFile(path.join(out, 'same-b/s1234.png'));
    expect(Buffer.compare(a, b)).toBe(0);
    expect(Buffer.compare(await readFile(path.join(out, 'swept/guidance3_s5.png')), await readFile(path.join(out, 'swept/guidance7.5_s5.png')))).not.toBe(0);

    // The sidecar has every parameter, the seed, the model hash, depth statistics and timings.
    const side = JSON.parse(await readFile(path.join(out, 'same-a/s1234.json'), 'utf8'));
    expect(side.seed).toBe(1234);
    expect(side.params).toMatchObject({ prompt: 'a red cube on a table', seed: 1234, steps: 60, width: 256, height: 256, scheduler: 'ddim', guidance: 7.5 });
    expect(side.model.name).toBe('tiny');
    expect(side.model.hash).toMatch(/^[0-9a-f]{8,}$/);
    expect(side.depth.stats).toMatchObject({ min: 1.5, background: 0 });
    expect(side.timings.total).toBeGreaterThan(0);
    expect(side.timings.wall).toBeGreaterThan(0);
    expect(side.png.sha256).toMatch(/^[0-9a-f]{64}$/);

    // Run 3: everything is done; nothing is rewritten.
    const before = await Promise.all(pngs.map(async (f) => (await stat(path.join(out, f))).mtimeMs));
    const r3 = await runCli(args);
    expect(r3.code, r3.stderr).toBe(0);
    expect(r3.stdout).toMatch(/0 done, 6 skipped/);
    const after = await Promise.all(pngs.map(async (f) => (await stat(path.join(out, f))).mtimeMs));
    expect(after).toEqual(before);

    // An uninterrupted run elsewhere makes the same bytes for every output.
    const clean = path.join(work, 'six-clean');
    const r4 = await runCli(['batch', manifest, '--out', clean, '--models-dir', modelsDir, '--device', 'cpu']);
    expect(r4.code, r4.stderr).toBe(0);
    for (const f of pngs) expect(Buffer.compare(await readFile(path.join(out, f)), await readFile(path.join(clean, f))), f).toBe(0);
  });

  it('redoes an output whose sidecar is gone or whose parameters changed, and keeps the rest', async () => {
    const manifest = path.join(work, 'redo.yaml');
    const out = path.join(work, 'redo-out');
    const write = (prompt: string) => writeFile(manifest, [
      'defaults: {params: {steps: 2}}',
      'scenes:',
      '  - {name: one, depth: depth0.npy, prompt: "first", seeds: [1]}',
      `  - {name: two, depth: depth1.npy, prompt: "${prompt}", seeds: [2]}`,
      '',
    ].join('\n'));
    await write('second');
    const args = ['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu'];
    expect((await runCli(args)).code).toBe(0);
    await rm(path.join(out, 'one/s1.json'));
    await write('second, changed');
    const r = await runCli(args);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/2 done, 0 skipped/);
    const side = JSON.parse(await readFile(path.join(out, 'two/s2.json'), 'utf8'));
    expect(side.params.prompt).toBe('second, changed');
    // A PNG that does not match its sidecar is redone too.
    await writeFile(path.join(out, 'one/s1.png'), 'garbage');
    const r2 = await runCli(args);
    expect(r2.stdout).toMatch(/1 done, 1 skipped/);
    expect(endsWithIend(await readFile(path.join(out, 'one/s1.png')))).toBe(true);
  });
});

describe('batch: inputs', () => {
  it('runs init images, layouts (.npy and 8-bit PNG), 16-bit PNG depth and a ControlNet model', async () => {
    await createTinyModel(path.join(modelsDir, 'tiny-cn'), { family: 'controlnet' });
    const ids = new Float32Array(64 * 64);
    for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) ids[y * 64 + x] = x >= 8 && x < 30 && y >= 12 && y < 44 ? 1 : x > 48 ? 2 : 0;
    await writeFile(path.join(work, 'ids.npy'), writeNpy(ids, [64, 64]));
    await writeFile(path.join(work, 'ids8.png'), greyPng(ids, 64, 64, 8));
    await writeFile(path.join(work, 'ids-small.npy'), writeNpy(new Float32Array(32 * 32), [32, 32]));
    const z = depthMap(64, 64, 0);
    await writeFile(path.join(work, 'depth16.png'), greyPng(Array.from(z, (v) => Math.round(((v - 1) / 5) * 65535)), 64, 64, 16));
    const rgb = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < 64 * 64; i++) rgb.set([(i * 7) % 256, (i >> 6) * 4, 128], i * 3);
    await writeFile(path.join(work, 'init.png'), await sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer());
    const objects = '[{id: 1, label: crate, prompt: "a wooden crate"}, {id: 2, label: wall, prompt: "a brick wall", weight: 1.5}]';
    const manifest = path.join(work, 'inputs.yaml');
    await writeFile(manifest, [
      'defaults: {params: {steps: 3}, seeds: [21]}',
      'scenes:',
      '  - {name: img2img, depth: depth0.npy, init: init.png, prompt: "a crate", params: {strength: 0.6}}',
      `  - {name: layout-npy, depth: depth0.npy, prompt: "a room", layout: {file: ids.npy, objects: ${objects}}}`,
      `  - {name: layout-png, depth: depth0.npy, prompt: "a room", layout: {file: ids8.png, objects: ${objects}}}`,
      `  - {name: layout-small, depth: depth0.npy, prompt: "a room", layout: {file: ids-small.npy, objects: ${objects}}}`,
      '  - {name: png16, depth: {file: depth16.png, near: 1, far: 6}, prompt: "a crate"}',
      '  - {name: controlnet, depth: depth0.npy, prompt: "a crate", params: {model: tiny-cn, controlnetScale: 0.8}}',
      '',
    ].join('\n'));
    const out = path.join(work, 'inputs-out');
    const r = await runCli(['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toMatch(/6 outputs: 5 done, 0 skipped \(already done\), 1 failed/);
    expect(r.stdout).toMatch(/layout-small: 1 output: BAD_LAYOUT: layout .*ids-small\.npy is 32×32 but the depth is 64×64/);
    const side = async (id: string) => JSON.parse(await readFile(path.join(out, `${id}.json`), 'utf8'));
    expect((await side('img2img/s21')).params).toMatchObject({ strength: 0.6 });
    expect((await side('img2img/s21')).request.init.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect((await side('layout-npy/s21')).params).toMatchObject({ regions: 2 });
    // The same ids from a PNG and from a .npy make the same image.
    expect(Buffer.compare(await readFile(path.join(out, 'layout-npy/s21.png')), await readFile(path.join(out, 'layout-png/s21.png')))).toBe(0);
    expect(Buffer.compare(await readFile(path.join(out, 'layout-npy/s21.png')), await readFile(path.join(out, 'img2img/s21.png')))).not.toBe(0);
    expect((await side('png16/s21')).depth).toMatchObject({ dtype: 'u16', kind: 'zdepth', near: 1, far: 6, width: 64, height: 64 });
    const cn = await side('controlnet/s21');
    expect(cn.model.name).toBe('tiny-cn');
    expect(cn.params).toMatchObject({ controlnetScale: 0.8, model: 'tiny-cn' });
  });
});

describe('batch: examples', () => {
  it('examples/tiny.yaml runs offline on the tiny model', async () => {
    const out = path.join(work, 'example-out');
    const r = await runCli(['batch', path.join(ROOT, 'examples', 'tiny.yaml'), '--out', out, '--models-dir', modelsDir, '--device', 'cpu']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/8 outputs: 8 done/);
    expect((await listFiles(out)).filter((f) => f.endsWith('.png'))).toHaveLength(8);
  });
});

describe('batch: errors', () => {
  const cases: [string, string, RegExp][] = [
    ['missing prompt', 'scenes:\n  - {name: a, depth: depth0.npy, prompt: x}\n  - {name: b, depth: depth0.npy}\n', /scenes\[1\]\.prompt \(line 3\): required/],
    ['wrong type', 'scenes:\n  - name: a\n    depth: {file: depth0.npy, near: "close"}\n    prompt: x\n', /scenes\[0\]\.depth\.near \(line 3\): Invalid input: expected number, received string/],
    ['unknown key', 'scenes:\n  - name: a\n    depth: depth0.npy\n    prompt: x\n    params: {steps: 2, guidence: 5}\n', /scenes\[0\]\.params\.guidence \(line 5\): unknown field/],
    ['bad seed list', 'defaults: {seeds: []}\nscenes:\n  - {name: a, depth: depth0.npy, prompt: x}\n', /defaults\.seeds \(line 1\): Too small/],
    ['no scenes', 'scenes: []\n', /scenes \(line 1\): list at least one scene/],
    ['duplicate scene', 'scenes:\n  - {name: a, depth: depth0.npy, prompt: x}\n  - {name: a, depth: depth1.npy, prompt: y}\n', /scenes\[1\]\.name \(line 3\): duplicate scene name "a"/],
    ['yaml syntax', 'scenes:\n  - {name: a, depth: depth0.npy\n', /YAML syntax error at line \d/],
  ];
  for (const [what, text, expected] of cases) {
    it(`a bad manifest (${what}) exits 1 with the field path`, async () => {
      const file = path.join(work, `bad-${what.replace(/\W+/g, '-')}.yaml`);
      await writeFile(file, text);
      const r = await runCli(['batch', file, '--out', path.join(work, 'bad-out'), '--models-dir', modelsDir, '--device', 'cpu']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^depthcast: error BAD_MANIFEST: /m);
      expect(r.stderr).toMatch(expected);
      expect(existsSync(path.join(work, 'bad-out'))).toBe(false);
    });
  }

  it('a JSON manifest error names the field too', async () => {
    const file = path.join(work, 'bad.json');
    await writeFile(file, JSON.stringify({ scenes: [{ name: 'a', depth: 'depth0.npy', prompt: 'x', seedCount: 'two' }] }, null, 2));
    const r = await runCli(['batch', file, '--models-dir', modelsDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/BAD_MANIFEST: .*bad\.json: scenes\[0\]\.seedCount \(line \d+\): Invalid input: expected number, received string/);
  });

  it('a scene with a broken depth file fails and is summarised; the others complete; exit code 2', async () => {
    const manifest = path.join(work, 'partly.yaml');
    await writeFile(manifest, [
      'defaults: {params: {steps: 2}}',
      'scenes:',
      '  - {name: good, depth: depth0.npy, prompt: "fine", seedCount: 2}',
      '  - {name: broken, depth: broken.npy, prompt: "never", seedCount: 2}',
      '  - {name: missing, depth: no-such-file.npy, prompt: "never"}',
      '  - {name: also-good, depth: depth3.npy, prompt: "fine too"}',
      '',
    ].join('\n'));
    const out = path.join(work, 'partly-out');
    const r = await runCli(['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu', '--retry', '2']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stdout).toMatch(/6 outputs: 3 done, 0 skipped \(already done\), 3 failed/);
    expect(r.stdout).toMatch(/broken: 2 outputs: BAD_DEPTH: .*broken\.npy: not a \.npy file/);
    expect(r.stdout).toMatch(/missing: 1 output: BAD_DEPTH: cannot read depth file .*no-such-file\.npy: no such file/);
    expect(r.stderr).not.toMatch(/retry/); // a bad input is not retried
    const report = JSON.parse(await readFile(path.join(out, 'batch-report.json'), 'utf8'));
    expect(report).toMatchObject({ total: 6, done: 3, failed: 3, skipped: 0 });
    expect(report.failures.map((f: { scene: string }) => f.scene).sort()).toEqual(['broken', 'broken', 'missing']);
    const pngs = (await listFiles(out)).filter((f) => f.endsWith('.png'));
    expect(pngs).toHaveLength(3);
    expect(pngs.every((f) => f.startsWith('good/') || f.startsWith('also-good/'))).toBe(true);
  });

  it('a model the models folder does not have fails every output with MODEL_NOT_FOUND', async () => {
    const manifest = path.join(work, 'nomodel.yaml');
    await writeFile(manifest, 'scenes:\n  - {name: a, depth: depth0.npy, prompt: x, params: {model: sd-nope}}\n');
    const r = await runCli(['batch', manifest, '--out', path.join(work, 'nomodel-out'), '--models-dir', modelsDir, '--device', 'cpu']);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/MODEL_NOT_FOUND: model "sd-nope" not found \(available: tiny[,)]/);
  });

  it('refuses a second run on the same out folder while the first holds it', async () => {
    const out = path.join(work, 'locked-out');
    await mkdir(out, { recursive: true });
    await writeFile(path.join(out, '.depthcast-batch.lock'), `${process.pid}\n`);
    const manifest = path.join(work, 'locked.yaml');
    await writeFile(manifest, 'scenes:\n  - {name: a, depth: depth0.npy, prompt: x}\n');
    const r = await runCli(['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`BUSY: another batch \\(pid ${process.pid}\\) is writing to`));
    await rm(out, { recursive: true });
  });
});

const blender = process.env.DEPTHCAST_BLENDER || 'blender';
const hasBlender = spawnSync(blender, ['--version'], { encoding: 'utf8', timeout: 60_000 }).status === 0;
if (!hasBlender) console.log(`batch .blend test skipped: ${blender} --version did not run (install Blender or set DEPTHCAST_BLENDER)`);

describe.skipIf(!hasBlender)('batch: .blend scenes through Blender', () => {
  it('renders depth per camera and frame headless, runs them, and reuses the render on re-run', async () => {
    const blend = path.join(work, 'scene.blend');
    const make = [
      'import bpy',
      'bpy.ops.wm.read_factory_settings(use_empty=True)',
      's = bpy.context.scene',
      'bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, 0))',
      'bpy.ops.mesh.primitive_cube_add(size=2, location=(0, 0, 1))',
      'cube = bpy.context.object',
      'cube.keyframe_insert("location", frame=1)',
      'cube.location = (3, 0, 1)',
      'cube.keyframe_insert("location", frame=3)',
      'bpy.ops.object.camera_add(location=(0, 0, 10), rotation=(0, 0, 0))',
      'top = bpy.context.object; top.name = "Top"; top.data.clip_start = 1; top.data.clip_end = 50',
      'bpy.ops.object.camera_add(location=(0, -8, 6), rotation=(0.9, 0, 0))',
      'bpy.context.object.name = "Side Cam"',
      's.camera = top',
      's.render.resolution_x = 320; s.render.resolution_y = 240',
      `bpy.ops.wm.save_as_mainfile(filepath=${JSON.stringify(blend)})`,
    ].join('\n');
    const made = spawnSync(blender, ['-b', '--factory-startup', '--python-exit-code', '3', '--python-expr', make], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const manifest = path.join(work, 'blend.yaml');
    await writeFile(manifest, [
      'defaults: {params: {steps: 2}}',
      'scenes:',
      '  - name: cube',
      '    depth: {blend: scene.blend, cameras: [Top, Side Cam], frames: [1, 3], resolution: [64, 48], range: scene}',
      '    prompt: "a cube on a floor"',
      '    seeds: [3]',
      '  - name: missing-camera',
      '    depth: {blend: scene.blend, camera: Nope, resolution: [64, 48]}',
      '    prompt: "never"',
      '    seedCount: 3',
      '',
    ].join('\n'));
    // Count Blender runs through a wrapper.
    const calls = path.join(work, 'blender-calls.txt');
    const wrapper = path.join(work, 'blender-wrapper.sh');
    await writeFile(wrapper, `#!/bin/sh\necho run >> ${JSON.stringify(calls)}\nexec ${JSON.stringify(blender)} "$@"\n`, { mode: 0o755 });
    const countCalls = async () => (existsSync(calls) ? (await readFile(calls, 'utf8')).trim().split('\n').length : 0);
    const out = path.join(work, 'blend-out');
    const args = ['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu', '--concurrency', '2'];
    const r = await runCli(args, { DEPTHCAST_BLENDER: wrapper });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/rendered depth of cube \(4 views/);
    expect(r.stdout).toMatch(/missing-camera: 3 outputs: BAD_DEPTH: Blender could not render the depth of .*scene\.blend: camera 'Nope' is not in scene/);
    expect(await countCalls()).toBe(2); // one per scene: all views of a scene in one run, a failure not repeated per output
    const pngs = (await listFiles(out)).filter((f) => f.endsWith('.png'));
    expect(pngs).toEqual(['cube/Side-Cam-f1_s3.png', 'cube/Side-Cam-f3_s3.png', 'cube/Top-f1_s3.png', 'cube/Top-f3_s3.png']);
    const side = JSON.parse(await readFile(path.join(out, 'cube/Top-f1_s3.json'), 'utf8'));
    expect(side.depth).toMatchObject({ camera: 'Top', frame: 1, width: 64, height: 48, near: 8 });
    expect(side.depth.far).toBeCloseTo(10, 4); // planar Z: the floor is 10 away everywhere, the cube top 8
    expect(side.params).toMatchObject({ width: 64, height: 48 });
    // The cube moves between frames 1 and 3, so the images differ.
    expect(Buffer.compare(await readFile(path.join(out, 'cube/Top-f1_s3.png')), await readFile(path.join(out, 'cube/Top-f3_s3.png')))).not.toBe(0);
    const again = await runCli(args, { DEPTHCAST_BLENDER: wrapper });
    expect(again.stdout).toMatch(/0 done, 4 skipped/);
    expect(again.stderr).not.toMatch(/rendered depth of cube/);
    expect(await countCalls()).toBe(3); // only the failing scene was tried again
    // Outputs whose render is cached but whose parameters changed run without Blender.
    await writeFile(manifest, (await readFile(manifest, 'utf8')).replace('seeds: [3]', 'seeds: [3, 4]'));
    const more = await runCli(args, { DEPTHCAST_BLENDER: wrapper });
    expect(more.stdout).toMatch(/4 done, 4 skipped/);
    expect(await countCalls()).toBe(4);
  });
});

const hasServer = existsSync(path.join(ROOT, 'server', 'index.ts'));
if (!hasServer) console.log('batch service test skipped: server/index.ts (startServer) is not there yet');

describe.skipIf(!hasServer)('batch: through the service', () => {
  it('gives the same bytes as in-process for the same seeds', async () => {
    const { startServer } = (await import(path.join(ROOT, 'server', 'index.ts'))) as {
      startServer: (o: { host: string; port: number; modelsDir: string; device?: string; token?: string }) => Promise<{ url: string; port: number; close: () => Promise<void> }>;
    };
    const server = await startServer({ host: '127.0.0.1', port: 0, modelsDir, device: 'cpu', token: 'sekrit' });
    try {
      const manifest = path.join(work, 'svc.yaml');
      await writeFile(manifest, [
        'defaults: {params: {steps: 3}}',
        'scenes:',
        '  - {name: a, depth: depth0.npy, prompt: "a red cube", seeds: [11, 12]}',
        '  - {name: b, depth: {file: depth2.npy, near: 1, far: 8}, prompt: "a room", seeds: [13], params: {scheduler: euler}}',
        '',
      ].join('\n'));
      const viaService = path.join(work, 'svc-out');
      const inProcess = path.join(work, 'svc-local');
      const r1 = await runCli(['batch', manifest, '--out', viaService, '--server', `ws://127.0.0.1:${server.port}`, '--token', 'sekrit', '--concurrency', '2']);
      expect(r1.code, r1.stderr).toBe(0);
      const r2 = await runCli(['batch', manifest, '--out', inProcess, '--models-dir', modelsDir, '--device', 'cpu']);
      expect(r2.code, r2.stderr).toBe(0);
      const pngs = (await listFiles(viaService)).filter((f) => f.endsWith('.png'));
      expect(pngs).toHaveLength(3);
      for (const f of pngs) expect(Buffer.compare(await readFile(path.join(viaService, f)), await readFile(path.join(inProcess, f))), f).toBe(0);
      const side = JSON.parse(await readFile(path.join(viaService, 'a/s11.json'), 'utf8'));
      expect(side.backend.kind).toBe('service');
      expect(side.backend.url).not.toMatch(/sekrit/);
      // A wrong token is one clear error, not a failure per output.
      const r3 = await runCli(['batch', manifest, '--out', path.join(work, 'svc-bad'), '--server', `ws://127.0.0.1:${server.port}`, '--token', 'wrong']);
      expect(r3.code).toBe(1);
      expect(r3.stderr).toMatch(/UNAUTHORIZED/);
    } finally {
      await server.close();
    }
  });
});
