/**
 * Depth of `.blend` scenes: Blender renders linear Z headless (the add-on's batch script,
 * blender-addon/scripts/depthcast_batch.py --depth-files) into float32 .npy files under
 * <out>/.depth/<scene>/, which the batch then reads like any depth file. The folder keeps
 * request.json (what was asked: file hash, cameras, frames, size, engine) and render.json (what
 * came out); a later run reuses it when the request is the same.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DepthcastError } from '../errors.ts';

export const BATCH_SCRIPT = fileURLToPath(new URL('../../blender-addon/scripts/depthcast_batch.py', import.meta.url));

/** The Blender executable: $DEPTHCAST_BLENDER, else `blender` on PATH. */
export function blenderExecutable(env: NodeJS.ProcessEnv = process.env): string {
  return env.DEPTHCAST_BLENDER?.trim() || 'blender';
}

export interface BlendRenderRequest {
  blend: string;
  blendSha256: string;
  /** Empty = the scene's active camera. */
  cameras: string[];
  /** Empty = the file's current frame. */
  frames: number[];
  resolution?: [number, number];
  engine: 'auto' | 'cycles' | 'workbench';
  /** Also render the motion to the previous frame (Cycles' Vector pass), for sequences (docs/batch.md). */
  vector?: boolean;
}

export interface RenderedView {
  camera: string;
  frame: number;
  /** Absolute path of the float32 .npy (H×W, row 0 = top, background = +inf). */
  file: string;
  width: number;
  height: number;
  /** The camera's clip range. */
  near: number;
  far: number;
  /** Range of the geometry in view (null when nothing is). */
  min: number | null;
  max: number | null;
  background: number;
  /** The camera's matrix_world at this frame, row-major (src/motion/reproject.ts). */
  pose?: number[];
  /** Pinhole intrinsics in pixels of this view (perspective cameras without shift), else null. */
  intrinsics?: { fx: number; fy: number; cx: number; cy: number } | null;
  /** With `vector`: absolute path of the flow to frame − 1, float32 .npy of 2·H rows × W (x plane, then y). */
  flow?: string;
}

export interface BlendRender {
  dir: string;
  blender: string;
  engine: string;
  /** In request order: cameras × frames. */
  views: RenderedView[];
  /** Whether this call ran Blender (false: reused an earlier render). */
  rendered: boolean;
  seconds: number;
}

interface RenderJson {
  blender: string;
  engine: string;
  views: (Omit<RenderedView, 'file'> & { file: string })[];
}

function requestKey(r: BlendRenderRequest): string {
  return JSON.stringify({ blendSha256: r.blendSha256, cameras: r.cameras, frames: r.frames, resolution: r.resolution ?? null, engine: r.engine, ...(r.vector ? { vector: true } : {}) });
}

async function readCached(dir: string, key: string, count: number): Promise<RenderJson | undefined> {
  try {
    if ((await readFile(join(dir, 'request.json'), 'utf8')) !== key) return undefined;
    const info = JSON.parse(await readFile(join(dir, 'render.json'), 'utf8')) as RenderJson;
    if (info.views.length !== count || !info.views.every((v) => existsSync(join(dir, v.file)))) return undefined;
    return info;
  } catch {
    return undefined;
  }
}

function runBlender(args: string[], signal?: AbortSignal): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolvePromise, reject) => {
    const exe = blenderExecutable();
    const child = spawn(exe, args, { stdio: ['ignore', 'pipe', 'pipe'], signal });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout = (stdout + d.toString()).slice(-20_000); });
    child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-20_000); });
    child.on('error', (err: NodeJS.ErrnoException) => {
      if (err.name === 'AbortError') reject(new DepthcastError('CANCELLED', 'the Blender render was cancelled'));
      else if (err.code === 'ENOENT') reject(new DepthcastError('BAD_DEPTH', `Blender (${exe}) was not found: install Blender 3.x or newer, or point DEPTHCAST_BLENDER at it`));
      else reject(new DepthcastError('BAD_DEPTH', `cannot start Blender (${exe}): ${err.message}`));
    });
    child.on('close', (code) => resolvePromise({ code, stderr, stdout }));
  });
}

/**
 * Renders (or reuses) the depth of every camera × frame of one .blend into `dir`.
 * Failures are BAD_DEPTH errors carrying Blender's own one-line reason.
 */
export async function renderBlendDepth(request: BlendRenderRequest, dir: string, signal?: AbortSignal): Promise<BlendRender> {
  const key = requestKey(request);
  const count = Math.max(1, request.cameras.length) * Math.max(1, request.frames.length);
  const t0 = performance.now();
  let info = await readCached(dir, key, count);
  const rendered = !info;
  if (!info) {
    const staging = `${dir}.partial`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { recursive: true });
    const args = ['-b', '--factory-startup', request.blend, '--python-exit-code', '3', '--python', BATCH_SCRIPT, '--',
      '--depth-files', '--out', staging, '--engine', request.engine];
    for (const c of request.cameras) args.push('--camera', c);
    // One argument with '=': a negative first frame must not read as an option.
    if (request.frames.length > 0) args.push(`--frames=${request.frames.join(',')}`);
    if (request.resolution) args.push('--resolution', String(request.resolution[0]), String(request.resolution[1]));
    if (request.vector) args.push('--vector');
    const { code, stderr, stdout } = await runBlender(args, signal);
    const reason = /^depthcast batch: (.*)$/m.exec(stderr)?.[1]
      ?? /^Error: (?!Not freed memory).*$/m.exec(`${stderr}\n${stdout}`)?.[0];
    if (code !== 0 || !existsSync(join(staging, 'render.json'))) {
      await rm(staging, { recursive: true, force: true });
      throw new DepthcastError('BAD_DEPTH', `Blender could not render the depth of ${request.blend}: ${reason ?? `exit code ${code}`}`);
    }
    await writeFile(join(staging, 'request.json'), key);
    await rm(dir, { recursive: true, force: true });
    await rename(staging, dir);
    info = JSON.parse(await readFile(join(dir, 'render.json'), 'utf8')) as RenderJson;
    if (info.views.length !== count) throw new DepthcastError('BAD_DEPTH', `Blender rendered ${info.views.length} views of ${request.blend}, expected ${count}`);
  }
  return {
    dir, blender: info.blender, engine: info.engine, rendered, seconds: (performance.now() - t0) / 1000,
    views: info.views.map((v) => ({ ...v, file: join(dir, v.file), ...(v.flow ? { flow: join(dir, v.flow) } : {}) })),
  };
}
