/**
 * `--device auto` on a machine without a usable GPU: it says in one line which provider it chose
 * and why, and the native WebGPU (Dawn) chatter about Vulkan and XDG_RUNTIME_DIR stays out of the
 * user's terminal, because WebGPU is probed in a child process first.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeNpy } from '../src/util/npy.ts';
import { REPO_ROOT, sceneDepth, tinyModelDir } from './support/tiny.ts';

describe('depthcast generate --device auto', () => {
  it('logs one line naming the chosen provider and the skipped ones, and nothing from Dawn', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'depthcast-auto-'));
    writeFileSync(join(dir, 'd.npy'), writeNpy(sceneDepth(), [64, 64]));
    const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin/depthcast.js'), 'generate', '--model', await tinyModelDir({ family: 'depth2img' }),
      '--depth', join(dir, 'd.npy'), '--prompt', 'x', '--steps', '2', '--out', join(dir, 'o.png'), '--device', 'auto'], { encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stderr.split('\n').filter((l) => l && !/^step \d/.test(l));
    expect(lines.filter((l) => /XDG_RUNTIME_DIR|Vulkan|dawn|BackendType/i.test(l))).toEqual([]);
    const loaded = lines.filter((l) => /^model \S+ loaded on /.test(l));
    expect(loaded).toHaveLength(1);
    if (/loaded on cpu/.test(loaded[0]!)) expect(loaded[0]).toMatch(/device auto chose cpu, skipping .*webgpu: /);
    expect(lines.filter((l) => /device auto/.test(l)).length).toBeLessThanOrEqual(1);
  });
});
