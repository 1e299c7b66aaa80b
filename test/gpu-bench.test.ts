/**
 * The GPU bench script's dry run, here on the CPU: pack node and the pruned production
 * node_modules, unpack them into a scratch folder with a copy of the tree, and run the ControlNet
 * bench with the unpacked node first on PATH. A faster xz level and no size check keep it short;
 * the size at the real level is checked by hand (docs/performance.md gives it).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT } from './support/tiny.ts';
import { SWIFTSHADER_ICD } from './support/webgpu.ts';

it('dry run: packs, unpacks, and benches both ControlNet paths with the unpacked node', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'depthcast-gpu-bench-'));
  try {
    const r = spawnSync('bash', [join(REPO_ROOT, 'tools/gpu-bench.sh'), 'dry-run', scratch], {
      cwd: REPO_ROOT,
      env: { ...process.env, XZ_OPT: '-1 -T0', GPU_BENCH_LIMIT_MIB: '0' },
      encoding: 'utf8',
      timeout: 900_000,
      maxBuffer: 64 << 20,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(r.status, out.slice(-3000)).toBe(0);
    expect(out).toContain(`from ${scratch}/bin/node`);
    // Found through /sbin/ldconfig, which the dry run's minimal PATH leaves out.
    expect(out).toMatch(existsSync('/usr/lib/x86_64-linux-gnu/libvulkan.so.1') ? /gpu-bench: WebGPU \(Vulkan\): loader libvulkan\.so\.1 yes/ : /gpu-bench: WebGPU \(Vulkan\): loader libvulkan\.so\.1 (yes|no)/);
    expect(out).toContain('gpu-bench: provider cpu: starts');
    // With chromium's SwiftShader installed, the unpacked WebGPU EP gets a real (CPU) adapter.
    if (existsSync(SWIFTSHADER_ICD)) expect(out).toContain('gpu-bench: provider webgpu: starts');
    else expect(out).toMatch(/gpu-bench: provider webgpu: (starts|does not start)/);
    const report = JSON.parse(out.split('\n').filter((l) => l.startsWith('{"version"')).at(-1)!);
    const pipelines = report.pipelines as { graph: string; dtype: string; controlSource: string; bytesPerStep: { in: number; out: number } }[];
    expect(pipelines.map((p) => `${p.graph} ${p.dtype} ${p.controlSource}`)).toEqual([
      'composed fp32 float', 'separate fp32 float', 'composed fp32 8-bit', 'composed fp32 16-bit', 'composed fp16 float', 'separate fp16 float',
    ]);
    const total = (p: (typeof pipelines)[number]) => p.bytesPerStep.in + p.bytesPerStep.out;
    // SD 1.5's 13 residuals, 2 × 6.7 M values, go out and back in on the two-session path only.
    expect(total(pipelines[1]!)).toBeGreaterThan(2 * 2 * 6.7e6 * 4);
    expect(total(pipelines[0]!)).toBeLessThan(2e6);
    expect(total(pipelines[2]!)).toBeLessThanOrEqual(1e6);
    expect(total(pipelines[4]!)).toBeLessThanOrEqual(1e6);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}, 900_000);
