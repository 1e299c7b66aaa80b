/**
 * Sequences through `depthcast batch` with real Blender: `.blend` files whose camera pans over a
 * static scene, whose box crosses a static camera's view, and whose camera orbits and uncovers
 * the wall, rendered headless with the Vector pass (Cycles), run per frame and consistent,
 * in process and through a real service on a loopback port. The batch report carries each
 * frame pair's warp error and valid fraction, the mean, the worst pair and the plot PNG. The
 * Vector pass the render script wrote agrees with reprojecting the depth with the two camera
 * poses it recorded. Skips (and says why) without Blender.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeToPlanar } from '../src/image/codec.ts';
import { edgeAlignment } from '../src/motion/fidelity.ts';
import { reprojectFlow } from '../src/motion/reproject.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';
import { readNpy } from '../src/util/npy.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin', 'depthcast.js');
const blender = process.env.DEPTHCAST_BLENDER || 'blender';
const hasBlender = spawnSync(blender, ['--version'], { encoding: 'utf8', timeout: 60_000 }).status === 0;
if (!hasBlender) console.log(`motion-batch: SKIPPED: ${blender} --version did not run (install Blender or set DEPTHCAST_BLENDER)`);

let work: string;
let modelsDir: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'depthcast-motion-batch-'));
  modelsDir = path.join(work, 'models');
  await createTinyModel(path.join(modelsDir, 'tiny'), { family: 'depth2img' });
});
afterAll(async () => { await rm(work, { recursive: true, force: true }); });

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: work, env: { ...process.env, FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Pair { output: string; frame: number; previousFrame: number; error: number; validFraction: number; disoccludedDifference: number }
interface SequenceReport { id: string; consistency: string; frames: number[]; pairs: Pair[]; meanError: number; worst: Pair; fallbacks: unknown[]; plot: string }

async function sequencesIn(out: string): Promise<Map<string, SequenceReport>> {
  const report = JSON.parse(await readFile(path.join(out, 'batch-report.json'), 'utf8')) as { sequences: SequenceReport[] };
  return new Map(report.sequences.map((s) => [s.id, s]));
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * Saves a .blend of three boxes in front of a wall and a 35 mm camera `cam` at (-0.6, 0.5, 5)
 * looking down -Z, then runs `animate` (Python lines; `box(loc, size)` returns the new object,
 * `linear(obj)` makes its keyframes linear).
 */
function makeBlend(file: string, animate: string[]): void {
  const make = [
    'import bpy',
    'bpy.ops.wm.read_factory_settings(use_empty=True)',
    's = bpy.context.scene',
    'def box(loc, size):',
    '    bpy.ops.mesh.primitive_cube_add(size=1, location=loc)',
    '    bpy.context.object.scale = size',
    '    return bpy.context.object',
    'def linear(obj):',
    '    for fc in obj.animation_data.action.fcurves:',
    '        for k in fc.keyframe_points: k.interpolation = "LINEAR"',
    'box((-0.5, 0, -0.2), (1.4, 1.6, 1.4))',
    'box((1.3, 0.5, -2), (1, 2.4, 1))',
    'box((-2.5, -0.6, -3), (1, 0.8, 1))',
    'bpy.ops.mesh.primitive_plane_add(size=40, location=(0, 0, -5))',
    'bpy.ops.object.camera_add(location=(-0.6, 0.5, 5), rotation=(0, 0, 0))',
    'cam = bpy.context.object; s.camera = cam',
    'cam.data.lens = 35; cam.data.sensor_width = 36; cam.data.sensor_fit = "HORIZONTAL"',
    ...animate,
    `bpy.ops.wm.save_as_mainfile(filepath=${JSON.stringify(file)})`,
  ].join('\n');
  const made = spawnSync(blender, ['-b', '--factory-startup', '--python-exit-code', '3', '--python-expr', make], { encoding: 'utf8' });
  expect(made.status, made.stderr).toBe(0);
}

/** One manifest scene of a .blend's frames 1-5 at 64×48, per frame and consistent, seed 42. */
function sceneEntry(name: string): string[] {
  return [
    `  - name: ${name}`,
    `    depth: {blend: ${name}.blend, frames: {start: 1, end: 5, step: 1}, resolution: [64, 48], near: 2, far: 14}`,
    '    prompt: a wooden box',
    '    seeds: [42]',
    '    variations: [{name: perframe, params: {consistency: per-frame}}, {name: consistent, params: {consistency: consistent}}]',
  ];
}

const MANIFEST_DEFAULTS = 'defaults: {params: {steps: 6, guidance: 7.5, sizing: exact, width: 64, height: 48, depthRange: fixed}}';

/** Mean edge alignment (src/motion/fidelity.ts) of a sequence's images with the depth they came from. */
async function meanFidelity(out: string, scene: string, variation: string): Promise<number> {
  const render = JSON.parse(await readFile(path.join(out, '.depth', scene, 'render.json'), 'utf8')) as { views: { frame: number; file: string }[] };
  let total = 0;
  for (const view of render.views) {
    const depth = readNpy(new Uint8Array(await readFile(path.join(out, '.depth', scene, view.file)))).data;
    const image = await decodeToPlanar(await readFile(path.join(out, scene, `f${view.frame}_${variation}_s42.png`)), 64, 48);
    total += edgeAlignment(image.data, depth, image.width, image.height);
  }
  return total / render.views.length;
}

describe.skipIf(!hasBlender)('sequences in batches (real Blender, Vector pass)', () => {
  it('runs a pan consistently, reports every pair with the mean, worst and plot, in process and through the service', async () => {
    const blend = path.join(work, 'pan.blend');
    makeBlend(blend, [
      'for f in range(1, 6):',
      '    cam.location.x = -0.6 + 0.15 * (f - 1); cam.location.y = 0.5 + 0.1 * (f - 1)',
      '    cam.keyframe_insert("location", frame=f)',
      'linear(cam)',
    ]);
    const manifest = path.join(work, 'pan.yaml');
    await writeFile(manifest, [MANIFEST_DEFAULTS, 'scenes:', ...sceneEntry('pan'), ''].join('\n'));
    const out = path.join(work, 'out');
    const args = ['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu', '--concurrency', '2'];
    const r = await runCli(args);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/sequence pan\/consistent_s42 \(consistent, 5 frames\): warp error mean \d\.\d{4}, worst/);
    const seqs = await sequencesIn(out);
    const perFrame = seqs.get('pan/perframe_s42')!;
    const consistent = seqs.get('pan/consistent_s42')!;
    for (const s of [perFrame, consistent]) {
      expect(s.frames).toEqual([1, 2, 3, 4, 5]);
      expect(s.pairs.map((p) => [p.frame, p.previousFrame])).toEqual([[2, 1], [3, 2], [4, 3], [5, 4]]);
      for (const p of s.pairs) {
        expect(p.validFraction).toBeGreaterThan(0.5);
        expect(p.validFraction).toBeLessThan(1);
      }
      expect(s.meanError).toBeCloseTo(s.pairs.reduce((t, p) => t + p.error, 0) / 4, 10);
      expect(s.worst.error).toBe(Math.max(...s.pairs.map((p) => p.error)));
      expect(s.fallbacks).toEqual([]);
      const plot = await sharp(path.join(out, s.plot)).metadata();
      expect([plot.format, plot.width, plot.height]).toEqual(['png', 480, 220]);
    }
    console.log(`motion-batch: pan warp error per-frame ${perFrame.meanError.toFixed(4)}, consistent ${consistent.meanError.toFixed(4)}`);
    expect(consistent.meanError).toBeLessThanOrEqual(0.5 * perFrame.meanError);
    const side = JSON.parse(await readFile(path.join(out, 'pan/f3_consistent_s42.json'), 'utf8'));
    expect(side.consistency).toMatchObject({ mode: 'consistent', score: { error: consistent.pairs[1]!.error } });

    // The Vector pass the render wrote agrees with depth + the two recorded camera poses.
    const render = JSON.parse(await readFile(path.join(out, '.depth', 'pan', 'render.json'), 'utf8'));
    const [v2, v3] = [render.views[1], render.views[2]];
    const read = async (file: string) => readNpy(new Uint8Array(await readFile(path.join(out, '.depth', 'pan', file)))).data;
    const depth = await read(v3.file);
    const vector = await read(v3.flow);
    const pose = reprojectFlow(depth, 64, 48, v3.intrinsics, v3.pose, v2.pose).flow.data;
    const P = 64 * 48;
    const diffs = Array.from({ length: P }, (_, i) => Math.hypot(vector[i]! - pose[i]!, vector[P + i]! - pose[P + i]!));
    console.log(`motion-batch: median |vector − reprojection| ${median(diffs).toFixed(4)} px; mean dx ${(pose.slice(0, P).reduce((t, v) => t + v, 0) / P).toFixed(2)}, dy ${(pose.slice(P).reduce((t, v) => t + v, 0) / P).toFixed(2)} px`);
    expect(median(diffs)).toBeLessThanOrEqual(0.25);

    // Resumed: nothing to do, and the report still carries the scores, from the sidecars.
    const again = await runCli(args);
    expect(again.stdout).toMatch(/0 done, 10 skipped/);
    expect((await sequencesIn(out)).get('pan/consistent_s42')!.meanError).toBe(consistent.meanError);

    // Through a real service on a loopback port: the same frames, the same scores.
    const { startServer } = await import('../server/index.ts');
    const server = await startServer({ host: '127.0.0.1', port: 0, modelsDir, device: 'cpu', log: () => {} });
    try {
      const viaService = path.join(work, 'out-service');
      const s = await runCli(['batch', manifest, '--out', viaService, '--server', server.url, '--concurrency', '2']);
      expect(s.code, s.stderr + s.stdout).toBe(0);
      const remote = await sequencesIn(viaService);
      for (const id of ['pan/perframe_s42', 'pan/consistent_s42']) {
        expect(remote.get(id)!.pairs.map((p) => p.error)).toEqual(seqs.get(id)!.pairs.map((p) => p.error));
      }
    } finally {
      await server.close();
    }
  });

  it('keeps a moving object and an orbit with disocclusion consistent: warp error at most half of per frame, fidelity within 10 %', async () => {
    // A box crosses the static camera's view, 0.3 units (about 4 px) a frame.
    makeBlend(path.join(work, 'moving.blend'), [
      'mover = box((-1.2, -0.4, 0.8), (0.8, 0.8, 0.8))',
      'for f in range(1, 6):',
      '    mover.location.x = -1.2 + 0.3 * (f - 1)',
      '    mover.keyframe_insert("location", frame=f)',
      'linear(mover)',
    ]);
    // The camera circles the origin, 2 degrees a frame, uncovering the wall behind the boxes.
    makeBlend(path.join(work, 'orbit.blend'), [
      'import math',
      'for f in range(1, 6):',
      '    a = math.radians(2 * (f - 1))',
      '    cam.location = (5 * math.sin(a), 0.5, 5 * math.cos(a)); cam.rotation_euler = (0, a, 0)',
      '    cam.keyframe_insert("location", frame=f); cam.keyframe_insert("rotation_euler", frame=f)',
      'linear(cam)',
    ]);
    const manifest = path.join(work, 'moving-orbit.yaml');
    await writeFile(manifest, [MANIFEST_DEFAULTS, 'scenes:', ...sceneEntry('moving'), ...sceneEntry('orbit'), ''].join('\n'));
    const out = path.join(work, 'out-moving-orbit');
    const r = await runCli(['batch', manifest, '--out', out, '--models-dir', modelsDir, '--device', 'cpu', '--concurrency', '2']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const seqs = await sequencesIn(out);
    for (const scene of ['moving', 'orbit']) {
      const perFrame = seqs.get(`${scene}/perframe_s42`)!;
      const consistent = seqs.get(`${scene}/consistent_s42`)!;
      expect(consistent.fallbacks).toEqual([]);
      // The orbit uncovers part of the wall in every pair; the moving box uncovers what it leaves.
      for (const p of consistent.pairs) expect(p.validFraction).toBeLessThan(1);
      const fidelity = { perFrame: await meanFidelity(out, scene, 'perframe'), consistent: await meanFidelity(out, scene, 'consistent') };
      console.log(`motion-batch: ${scene} warp error per-frame ${perFrame.meanError.toFixed(4)}, consistent ${consistent.meanError.toFixed(4)} (ratio ${(consistent.meanError / perFrame.meanError).toFixed(2)}); fidelity ${fidelity.perFrame.toFixed(3)} vs ${fidelity.consistent.toFixed(3)} (ratio ${(fidelity.consistent / fidelity.perFrame).toFixed(2)}); valid fraction ${Math.min(...consistent.pairs.map((p) => p.validFraction)).toFixed(3)}-${Math.max(...consistent.pairs.map((p) => p.validFraction)).toFixed(3)}; where surfaces are new the output differs from the warp by ${(consistent.pairs.reduce((t, p) => t + p.disoccludedDifference, 0) / consistent.pairs.length).toFixed(3)} consistent, ${(perFrame.pairs.reduce((t, p) => t + p.disoccludedDifference, 0) / perFrame.pairs.length).toFixed(3)} per frame`);
      expect(consistent.meanError).toBeLessThanOrEqual(0.5 * perFrame.meanError);
      // Within 10 % of the per-frame mode, or better; written so a correlation near or below zero
      // (the tiny model's 64×48 images follow the depth only faintly) keeps its meaning.
      expect(fidelity.consistent).toBeGreaterThanOrEqual(fidelity.perFrame - 0.1 * Math.abs(fidelity.perFrame));
    }
  });
});
