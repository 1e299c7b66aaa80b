/**
 * The one Blender batch script (blender-addon/scripts/depthcast_batch.py) in real Blender, on its
 * depth-files output as `depthcast batch` drives it (src/batch/blender.ts): exact camera names
 * that hold a comma, negative frames, and options of the other output refused by name.
 * test/batch.test.ts runs the whole batch on a .blend; the e2e add-on test runs the --server output.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BATCH_SCRIPT, blenderExecutable, renderBlendDepth } from '../src/batch/blender.ts';

const blender = blenderExecutable();
const hasBlender = spawnSync(blender, ['--version'], { encoding: 'utf8', timeout: 60_000 }).status === 0;
if (!hasBlender) console.warn(`blender-batch-script: SKIPPED: no Blender at '${blender}' (set DEPTHCAST_BLENDER)`);

const tmp = mkdtempSync(join(tmpdir(), 'depthcast-batch-script-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(!hasBlender)('the Blender batch script, depth-files output', () => {
  it('renders exact camera names with commas at negative frames, as depthcast batch asks', async () => {
    const blend = join(tmp, 'comma.blend');
    const make = [
      'import bpy',
      'cam = bpy.data.objects["Camera"]; cam.name = "Cam, A"; cam.data.clip_start = 0.5',
      `bpy.ops.wm.save_as_mainfile(filepath=${JSON.stringify(blend)})`,
    ].join('\n');
    const made = spawnSync(blender, ['-b', '--factory-startup', '--python-exit-code', '3', '--python-expr', make], { encoding: 'utf8', timeout: 120_000 });
    expect(made.status, made.stderr).toBe(0);
    const out = join(tmp, 'views');
    const render = await renderBlendDepth(
      { blend, blendSha256: 'test', cameras: ['Cam, A'], frames: [-1, 2], resolution: [16, 12], engine: 'workbench' }, out);
    expect(render.views.map((v) => [v.camera, v.frame, v.width, v.height, v.near])).toEqual([
      ['Cam, A', -1, 16, 12, 0.5], ['Cam, A', 2, 16, 12, 0.5],
    ]);
    const npy = readFileSync(render.views[0]!.file);
    expect(npy.length).toBe(128 + 16 * 12 * 4); // the .npy header pads to 128 bytes here
  }, 240_000);

  it('refuses an option of the service output by name, exit code 2', () => {
    const run = spawnSync(blender, ['-b', '--factory-startup', '--python', BATCH_SCRIPT, '--',
      '--depth-files', '--out', join(tmp, 'refused'), '--prompt', 'a cube'], { encoding: 'utf8', timeout: 120_000 });
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/--prompt needs --server/);
  }, 240_000);
});
