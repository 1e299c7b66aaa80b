/**
 * The add-on's batch script sends the Vector pass with each animation frame: real Blender renders
 * a camera pan over a static scene (Cycles, motion blur off), each frame goes to a real service on
 * a loopback port with its motion planes, and batch.json reports every pair's warp error, the mean
 * and the worst pair, per frame and consistent, with the plot beside it. Skips (and says why) without Blender.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { startServer } from '../server/index.ts';
import { plottedScore, renderScorePlot } from '../src/motion/plot.ts';
import { REPO_ROOT } from './support/tiny.ts';
import { tinyModelsDir } from './support/server-helpers.ts';

const BLENDER = process.env.DEPTHCAST_BLENDER ?? 'blender';
const hasBlender = spawnSync(BLENDER, ['--version'], { encoding: 'utf8', timeout: 60_000 }).status === 0;
if (!hasBlender) console.warn(`motion-addon: SKIPPED: no Blender at '${BLENDER}'`);

const dir = mkdtempSync(join(tmpdir(), 'depthcast-motion-addon-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MAKE = [
  'import bpy',
  'bpy.ops.wm.read_factory_settings(use_empty=True)',
  's = bpy.context.scene',
  's.render.resolution_x = 64; s.render.resolution_y = 48; s.render.resolution_percentage = 100',
  'def box(loc, size):',
  '    bpy.ops.mesh.primitive_cube_add(size=1, location=loc)',
  '    bpy.context.object.scale = size',
  'box((-0.5, 0, -0.2), (1.4, 1.6, 1.4))',
  'box((1.3, 0.5, -2), (1, 2.4, 1))',
  'box((-2.5, -0.6, -3), (1, 0.8, 1))',
  'bpy.ops.mesh.primitive_plane_add(size=40, location=(0, 0, -5))',
  'bpy.ops.object.camera_add(location=(-0.6, 0.5, 5), rotation=(0, 0, 0))',
  'cam = bpy.context.object; cam.name = "Cam"; s.camera = cam',
  'cam.data.lens = 35; cam.data.sensor_width = 36; cam.data.sensor_fit = "HORIZONTAL"',
  'for f in range(1, 6):',
  '    cam.location.x = -0.6 + 0.15 * (f - 1); cam.location.y = 0.5 + 0.1 * (f - 1)',
  '    cam.keyframe_insert("location", frame=f)',
  'for fc in cam.animation_data.action.fcurves:',
  '    for k in fc.keyframe_points: k.interpolation = "LINEAR"',
];

interface Warp { pairs: { frame: number; error: number; validFraction: number }[]; meanError: number; worst: { frame: number; error: number }; fallbacks: unknown[]; plot?: string }

describe.skipIf(!hasBlender)('the batch script sends the Vector pass with each frame (real Blender, real service)', () => {
  it('scores every frame pair, and the consistent mode halves the per-frame warp error', async () => {
    const blend = join(dir, 'pan.blend');
    const made = spawnSync(BLENDER, ['-b', '--factory-startup', '--python-exit-code', '3', '--python-expr', [...MAKE, `bpy.ops.wm.save_as_mainfile(filepath=${JSON.stringify(blend)})`].join('\n')], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const models = await tinyModelsDir();
    const server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', log: () => {} });
    const warp: Record<string, Warp> = {};
    try {
      for (const mode of ['per-frame', 'consistent']) {
        const out = join(dir, mode);
        const args = ['-b', blend, '--python', join(REPO_ROOT, 'blender-addon/scripts/depthcast_batch.py'), '--',
          '--server', `ws://127.0.0.1:${server.port}/v1/ws`, '--prompt', 'a wooden box', '--steps', '6', '--seed', '42',
          '--frames', '1-5', '--near-far', 'MANUAL', '--near', '2', '--far', '14', '--depth-range', 'fixed', '--no-layout',
          '--consistency', mode, '--out', out];
        // Asynchronous: the service runs in this process and must answer while Blender waits.
        const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const child = spawn(BLENDER, args, { stdio: ['ignore', 'ignore', 'pipe'] });
          let err = '';
          child.stderr.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-4000); });
          const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
          child.once('exit', (c) => { clearTimeout(timer); resolve({ code: c, stderr: err }); });
        });
        expect(code, stderr).toBe(0);
        const summary = JSON.parse(readFileSync(join(out, 'batch.json'), 'utf8'));
        expect(summary.consistency).toBe(mode);
        const w = summary.warp.Cam as Warp;
        expect(w.pairs.map((p) => p.frame)).toEqual([2, 3, 4, 5]);
        for (const p of w.pairs) expect(p.validFraction).toBeGreaterThan(0.5);
        expect(w.worst.error).toBe(Math.max(...w.pairs.map((p) => p.error)));
        expect(w.fallbacks).toEqual(mode === 'consistent' ? [{ frame: 1, reason: 'the frame carries no motion to its previous frame' }] : []);
        // The plot beside batch.json is the one batch reports carry (src/motion/plot.ts), drawn by the service.
        expect(w.plot).toBe('warp-Cam.png');
        const plot = readFileSync(join(out, w.plot!));
        expect(await sharp(plot).metadata()).toMatchObject({ format: 'png', width: 480, height: 220 });
        expect(plot.equals(await renderScorePlot([{ label: mode, score: plottedScore(w.pairs) }], 'Cam: warp error per frame pair'))).toBe(true);
        const sidecar = JSON.parse(readFileSync(join(out, 'Cam_0003.json'), 'utf8'));
        expect(sidecar.consistency).toMatchObject({ mode, score: { error: w.pairs[1]!.error } });
        warp[mode] = w;
      }
    } finally {
      await server.close();
      await models.cleanup();
    }
    console.log(`motion-addon: warp error per-frame ${warp['per-frame']!.meanError.toFixed(4)}, consistent ${warp.consistent!.meanError.toFixed(4)}`);
    expect(warp.consistent!.meanError).toBeLessThanOrEqual(0.5 * warp['per-frame']!.meanError);
  }, 600_000);
});
