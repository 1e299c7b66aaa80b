/**
 * The Blender add-on end to end, in Debian's real Blender (headless) against the real service:
 * a tiny depth2img model, the service on an ephemeral loopback port, the add-on installed from
 * the zip `npm run addon:zip` builds (into a throw-away BLENDER_USER_SCRIPTS), then
 * blender-addon/tests/e2e_blender.py: register, build a scene (plane, cube at known distances,
 * two cameras), capture and check distances/flip/layout, generate and check the result
 * datablock, save next to the .blend, render a resumable 2-frame animation, live mode, the GPU
 * depth pass, the batch script on both cameras, unregister. Skips (and says why) without Blender.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';

const BLENDER = process.env.DEPTHCAST_BLENDER ?? 'blender';
const probe = spawnSync(BLENDER, ['--version'], { encoding: 'utf8', timeout: 60_000 });
const blenderVersion = probe.status === 0 ? (/Blender (\d+\.\d+\.\d+)/.exec(probe.stdout)?.[1] ?? '?') : null;
if (!blenderVersion) {
  console.warn(`blender.e2e: SKIPPED: no Blender at '${BLENDER}' (${probe.error?.message ?? `exit ${probe.status}`}); ` +
    'install Debian\'s blender (apt-get install blender) or set DEPTHCAST_BLENDER to run the add-on end to end');
}

interface Report {
  checks: { name: string; ok: boolean; detail: string }[];
  timings: Record<string, unknown>;
  skipped: string[];
  passed: number;
  failed: number;
}

describe.skipIf(!blenderVersion)(`Blender add-on in Blender ${blenderVersion ?? ''} (headless) against the service`, () => {
  let server: DepthcastServer;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'depthcast-blender-e2e-'));
    await createTinyModel(join(dir, 'models', 'tiny'), { family: 'depth2img' });
    server = await startServer({ port: 0, modelsDir: join(dir, 'models'), model: 'tiny', device: 'cpu', log: () => {} });
  });

  afterAll(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('installs, captures, generates, renders, batches and unregisters', async () => {
    const zip = join(dir, 'depthcast-addon.zip');
    const built = spawnSync(process.execPath, ['blender-addon/build_zip.mjs', '--out', zip], { encoding: 'utf8' });
    expect(built.status, built.stderr).toBe(0);
    const out = join(dir, 'out');
    const args = ['-b', '--factory-startup', '--python-exit-code', '1', '--python', 'blender-addon/tests/e2e_blender.py', '--',
      '--server', `ws://127.0.0.1:${server.port}/v1/ws`, '--model', 'tiny', '--addon-zip', zip, '--out', out, '--timeout', '120',
      // "start a local service": the add-on spawns this CLI's `serve` on a port of its own
      '--service-command', `"${process.execPath}" "${join(process.cwd(), 'bin', 'depthcast.js')}"`,
      '--service-models-dir', join(dir, 'models')];
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn(BLENDER, args, { env: { ...process.env, BLENDER_USER_SCRIPTS: join(dir, 'scripts') } });
      let text = '';
      child.stdout.on('data', (d: Buffer) => { text += d.toString('utf8'); });
      child.stderr.on('data', (d: Buffer) => { text += d.toString('utf8'); });
      const timer = setTimeout(() => child.kill('SIGKILL'), 540_000);
      child.on('close', (c) => { clearTimeout(timer); resolve({ code: c, output: text }); });
    });
    let report: Report | null = null;
    try {
      report = JSON.parse(readFileSync(join(out, 'e2e-report.json'), 'utf8')) as Report;
    } catch {
      // no report: Blender died early; the output below says why
    }
    const failed = report?.checks.filter((c) => !c.ok) ?? [];
    if (code !== 0 || !report) console.error(output.slice(-8000));
    for (const f of failed) console.error(`FAILED ${f.name}: ${f.detail}`);
    if (report) {
      console.log(`blender e2e: ${report.passed} checks passed, ${report.failed} failed; timings ${JSON.stringify(report.timings)}`);
      for (const s of report.skipped) console.log(`blender e2e: skipped part: ${s}`);
    }
    expect(report, 'e2e-report.json written').not.toBeNull();
    expect(failed.map((f) => f.name)).toEqual([]);
    expect(report!.passed).toBeGreaterThanOrEqual(50);
    expect(code).toBe(0);
  }, 600_000);
});
