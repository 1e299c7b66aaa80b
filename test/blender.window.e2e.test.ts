/**
 * Live mode as a user sees it: Debian's Blender in a real window under Xvfb (software GL), the
 * add-on installed from the zip `npm run addon:zip` builds, and the real service (a tiny model)
 * that blender-addon/tests/e2e_live_window.py runs itself so it can kill and restart it. The
 * script orbits the 3D View from a timer with Live off and on, reads a screenshot back, and
 * checks: frames sent during the orbit, the overlay's pixels equal the result image over the
 * captured region (and, in camera view, over the camera frame), Live's main-thread work
 * against a plain redraw, and a result after the service restarts with no user action. Skips
 * (and says why) without Blender or Xvfb.
 * DEPTHCAST_DOC_IMG=<dir> also writes the screenshots docs/blender.md shows.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTinyModel } from '../src/tiny/build-tiny.ts';

const BLENDER = process.env.DEPTHCAST_BLENDER ?? 'blender';
const blender = spawnSync(BLENDER, ['--version'], { encoding: 'utf8', timeout: 60_000 });
const xvfb = spawnSync('Xvfb', ['-help'], { encoding: 'utf8', timeout: 10_000 });
const missing = blender.status !== 0 ? `no Blender at '${BLENDER}'` : xvfb.error ? 'no Xvfb (apt-get install xvfb)' : '';
if (missing) console.warn(`blender.window.e2e: SKIPPED: ${missing}`);

interface Report {
  checks: { name: string; ok: boolean; detail: string }[];
  figures: Record<string, unknown>;
  passed: number;
  failed: number;
}

describe.skipIf(Boolean(missing))('Blender add-on: Live in a real window (Xvfb, software GL)', () => {
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'depthcast-blender-window-'));
    await createTinyModel(join(dir, 'models', 'tiny'), { family: 'depth2img' });
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('shows live results in the 3D View, sends while orbiting and recovers from a service restart', async () => {
    const zip = join(dir, 'depthcast-addon.zip');
    const built = spawnSync(process.execPath, ['blender-addon/build_zip.mjs', '--out', zip], { encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    const out = join(dir, 'out');
    // A display number of our own; -nolisten tcp keeps it local.
    const display = `:${100 + (process.pid % 400)}`;
    const x = spawn('Xvfb', [display, '-screen', '0', '960x600x24', '-nolisten', 'tcp'], { stdio: 'ignore' });
    let output = '';
    let code: number | null = null;
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const args = ['--factory-startup', '--python-exit-code', '1', '--python', 'blender-addon/tests/e2e_live_window.py', '--',
        '--addon-zip', zip, '--service-command', `"${process.execPath}" "${join(process.cwd(), 'bin', 'depthcast.js')}"`,
        '--models-dir', join(dir, 'models'), '--model', 'tiny', '--out', out, '--timeout', '120'];
      code = await new Promise<number | null>((resolve) => {
        const child = spawn(BLENDER, args, {
          env: { ...process.env, DISPLAY: display, LIBGL_ALWAYS_SOFTWARE: '1', BLENDER_USER_SCRIPTS: join(dir, 'scripts') },
        });
        child.stdout.on('data', (d: Buffer) => { output += d.toString('utf8'); });
        child.stderr.on('data', (d: Buffer) => { output += d.toString('utf8'); });
        const timer = setTimeout(() => child.kill('SIGKILL'), 540_000);
        child.on('close', (c) => { clearTimeout(timer); resolve(c); });
      });
    } finally {
      x.kill('SIGTERM');
    }
    const reportPath = join(out, 'live-window-report.json');
    const report = existsSync(reportPath) ? (JSON.parse(readFileSync(reportPath, 'utf8')) as Report) : null;
    const failed = report?.checks.filter((c) => !c.ok) ?? [];
    if (code !== 0 || !report || failed.length) console.error(output.slice(-6000));
    for (const f of failed) console.error(`FAILED ${f.name}: ${f.detail}`);
    if (report) console.log(`blender window e2e: ${report.passed} passed, ${report.failed} failed; ${JSON.stringify(report.figures)}`);
    if (report && process.env.DEPTHCAST_DOC_IMG) {
      for (const name of ['live-3dview.png', 'live-3dview-split.png', 'live-camera-view.png']) {
        spawnSync('convert', [join(out, name), '-resize', '640x', '-colors', '128', '-strip', `PNG8:${join(process.env.DEPTHCAST_DOC_IMG, name)}`]);
      }
    }
    expect(report, 'live-window-report.json written').not.toBeNull();
    expect(failed.map((f) => f.name)).toEqual([]);
    expect(report!.passed).toBeGreaterThanOrEqual(19);
    expect(code).toBe(0);
  }, 600_000);
});
