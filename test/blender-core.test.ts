/**
 * The Blender add-on's bpy-free core, checked without Blender: its plain-python unittest suite
 * (WebSocket client against a socketserver echo server, framing, depth, layout, messages,
 * session, local service), frames it builds parsed by the service's own zod schemas, and the
 * installable zip.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeBinaryMessage } from '../src/protocol/frame.ts';
import { CancelMessage, ClientHelloMessage, FrameHeader } from '../src/protocol/schemas.ts';

const python = spawnSync('python3', ['--version'], { encoding: 'utf8' });
const hasPython = python.status === 0;
if (!hasPython) console.warn(`blender-core: skipped: python3 not found (${python.error?.message ?? python.stderr})`);

const tmp = mkdtempSync(join(tmpdir(), 'depthcast-addon-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(!hasPython)('Blender add-on core (plain python3)', () => {
  it('passes its python unittest suite', () => {
    const run = spawnSync('python3', ['-m', 'unittest', 'discover', '-s', 'blender-addon/tests', '-p', 'test_*.py'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    const out = `${run.stdout}\n${run.stderr}`;
    const ran = /Ran (\d+) tests?/.exec(out);
    console.log(`blender-addon python tests: ${ran ? ran[1] : '?'} ran, exit ${run.status}`);
    if (run.status !== 0) console.error(out.slice(-6000));
    expect(run.status).toBe(0);
    expect(Number(ran?.[1] ?? 0)).toBeGreaterThanOrEqual(50);
  });

  it('builds frames the service schema accepts, payload in depth/init/layout order', () => {
    const run = spawnSync('python3', ['blender-addon/tests/emit_frame.py'], { encoding: 'utf8', timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const frames = lines.filter((l) => typeof l.frame === 'string').map((l) => Buffer.from(l.frame as string, 'base64'));
    expect(frames).toHaveLength(2);

    const { header, payload } = decodeBinaryMessage(new Uint8Array(frames[0]!));
    const parsed = FrameHeader.parse(header);
    expect(parsed.mode).toBe('batch');
    expect(parsed.depth).toMatchObject({ width: 16, height: 8, dtype: 'f32', kind: 'zdepth', near: 0.5, far: 20 });
    expect(parsed.params).toMatchObject({ prompt: 'a test', steps: 2, seed: 9, strength: 0.6, model: 'tiny' });
    expect(parsed.layout?.objects).toEqual([
      { id: 1, label: 'Box', prompt: 'a red box', weight: 1.5, bbox: [0, 0, 8, 4] },
      { id: 2, label: 'Ground', weight: 1, bbox: [0, 6, 16, 8] },
    ]);
    const depthBytes = parsed.depth.byteLength;
    const initBytes = parsed.init!.byteLength;
    expect(payload.byteLength).toBe(depthBytes + initBytes + parsed.layout!.byteLength);
    const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    // row 0 = top: pixel (0,0) was background -> far; pixel (1,0) = 5 + 1
    expect(dv.getFloat32(0, true)).toBe(20);
    expect(dv.getFloat32(4, true)).toBe(6);
    expect([...payload.subarray(depthBytes, depthBytes + 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const layoutOffset = depthBytes + initBytes;
    expect(dv.getUint16(layoutOffset, true)).toBe(1); // (0,0) is Box
    expect(dv.getUint16(layoutOffset + 2 * (16 * 7), true)).toBe(2); // row 7 is Ground

    const live = FrameHeader.parse(decodeBinaryMessage(new Uint8Array(frames[1]!)).header);
    expect(live).toMatchObject({ mode: 'live', stream: 'blender-live' });
    expect(live.init).toBeUndefined();
    expect(live.layout).toBeUndefined();

    const extra = lines.find((l) => 'cancel' in l)!;
    expect(CancelMessage.safeParse(extra.cancel).success).toBe(true);
    expect(CancelMessage.safeParse(extra.cancelStream).success).toBe(true);
    expect(ClientHelloMessage.safeParse(extra.hello).success).toBe(true);
  });
});

/** Lists a zip's entries (name + inflated data) from its central directory. */
function readZip(buf: Buffer): Map<string, Buffer> {
  const end = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = buf.readUInt16LE(end + 10);
  let p = buf.readUInt32LE(end + 16);
  const out = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    const method = buf.readUInt16LE(p + 10);
    const size = buf.readUInt32LE(p + 20);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    const dataStart = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(dataStart, dataStart + size);
    out.set(name, method === 8 ? inflateRawSync(raw) : Buffer.from(raw));
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

describe('Blender add-on zip (npm run addon:zip)', () => {
  it('holds the package with bl_info and a 4.2+ manifest declaring network access', () => {
    const out = join(tmp, 'addon.zip');
    const run = spawnSync(process.execPath, ['blender-addon/build_zip.mjs', '--out', out], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const entries = readZip(readFileSync(out));
    const names = [...entries.keys()];
    expect(names).toContain('depthcast/__init__.py');
    expect(names).toContain('depthcast/blender_manifest.toml');
    expect(names).toContain('depthcast/core/websocket.py');
    expect(names.every((n) => n.startsWith('depthcast/') && !n.includes('__pycache__') && !n.endsWith('.pyc'))).toBe(true);
    expect(names.some((n) => n.includes('/tests/'))).toBe(false);
    const init = entries.get('depthcast/__init__.py')!.toString('utf8');
    const manifest = entries.get('depthcast/blender_manifest.toml')!.toString('utf8');
    const blVersion = /"version":\s*\((\d+),\s*(\d+),\s*(\d+)\)/.exec(init);
    expect(blVersion).not.toBeNull();
    expect(/"blender":\s*\(3,\s*4,\s*0\)/.test(init)).toBe(true);
    expect(manifest).toMatch(new RegExp(`^version = "${blVersion![1]}\\.${blVersion![2]}\\.${blVersion![3]}"$`, 'm'));
    expect(manifest).toMatch(/^id = "depthcast"$/m);
    expect(manifest).toMatch(/^\[permissions\]\nnetwork = "[^"]{1,64}"$/m);
    // Same input, same bytes.
    const again = join(tmp, 'again.zip');
    spawnSync(process.execPath, ['blender-addon/build_zip.mjs', '--out', again]);
    expect(readFileSync(again).equals(readFileSync(out))).toBe(true);
  });
});
