/**
 * The preview page end to end: the real service (startServer) with a tiny depth2img model, and
 * Debian's Chromium driven headless by playwright-core (WebGL on SwiftShader, no GPU). Checks
 * that the page's depth frame is plausible (geometry, not just "some numbers"), that previews
 * and the result arrive and are displayed, that layout prompts go out, that a server error and
 * a lost connection are shown, and that ?token= reaches the WebSocket. Screenshots go to
 * test-artifacts/ (gitignored).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type DepthcastServer } from '../server/index.ts';
import { reprojectFlow } from '../src/motion/reproject.ts';
import { FrameHeader } from '../src/protocol/schemas.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const PAGE_DIR = path.join(ROOT, 'dist', 'page');
const MODEL = 'tiny-depth2img';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`page test skipped: ${CHROMIUM} is missing (Debian: apt install chromium)`);

const LAUNCH_ARGS = [
  '--no-sandbox', '--disable-gpu', '--enable-unsafe-swiftshader',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
  '--disable-default-apps', '--mute-audio',
];

interface FrameDump {
  jobId: string;
  header: unknown;
  width: number;
  height: number;
  depth: number[];
  ids: number[];
  objects: { id: number; label: string; prompt?: string }[];
  encoding: string;
  readback: string;
  camera: { type: string; near: number; far: number; matrixWorld: number[]; projectionMatrixInverse: number[] };
}

async function dumpFrame(page: Page): Promise<FrameDump> {
  return page.evaluate(() => {
    const f = window.__depthcast!.lastFrame!;
    return {
      jobId: f.header.jobId, header: JSON.parse(JSON.stringify(f.header)), width: f.stats.width, height: f.stats.height,
      depth: Array.from(f.depth), ids: Array.from(f.ids), objects: f.objects, encoding: f.encoding, readback: f.readback, camera: f.camera,
    };
  });
}

/** Column-major 4×4 times (x, y, z, w). */
function mul(m: number[], v: [number, number, number, number]): [number, number, number, number] {
  const r: [number, number, number, number] = [0, 0, 0, 0];
  for (let i = 0; i < 4; i++) r[i] = m[i]! * v[0] + m[4 + i]! * v[1] + m[8 + i]! * v[2] + m[12 + i]! * v[3];
  return r;
}

/** Linear view Z where the ray through pixel centre (x, y) (row 0 = top) meets the world plane y = 0. */
function groundZ(f: FrameDump, x: number, y: number): number {
  const ndcX = ((x + 0.5) / f.width) * 2 - 1;
  const ndcY = 1 - ((y + 0.5) / f.height) * 2;
  const unproject = (z: number) => {
    const p = mul(f.camera.projectionMatrixInverse, [ndcX, ndcY, z, 1]);
    return [p[0] / p[3], p[1] / p[3], p[2] / p[3]] as const;
  };
  const p0 = unproject(-1);
  const p1 = unproject(1);
  const d = [p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]] as const;
  const w0 = mul(f.camera.matrixWorld, [p0[0], p0[1], p0[2], 1]);
  const wd = mul(f.camera.matrixWorld, [d[0], d[1], d[2], 0]);
  const t = -w0[1] / wd[1];
  return -(p0[2] + t * d[2]);
}

/** Waits until `selector`'s text contains `text` (or matches it), then returns the text. */
async function waitText(page: Page, selector: string, text: string | RegExp, timeout = 15_000): Promise<string> {
  const pattern = typeof text === 'string' ? { s: text } : { r: text.source, f: text.flags };
  try {
    await page.waitForFunction(([sel, pat]) => {
      const t = document.querySelector(sel)?.textContent ?? '';
      return 's' in pat ? t.includes(pat.s!) : new RegExp(pat.r!, pat.f).test(t);
    }, [selector, pattern] as const, { timeout });
  } catch (err) {
    const actual = await page.locator(selector).textContent().catch(() => null);
    throw new Error(`${selector} never showed ${String(text)}; it shows ${JSON.stringify(actual)}: ${(err as Error).message.split('\n')[0]}`);
  }
  return (await page.locator(selector).textContent()) ?? '';
}

/** Waits until `selector`'s attribute matches. */
async function waitAttr(page: Page, selector: string, name: string, value: RegExp, timeout = 15_000): Promise<void> {
  try {
    await page.waitForFunction(([sel, n, r]) => new RegExp(r).test(document.querySelector(sel)?.getAttribute(n) ?? ''), [selector, name, value.source] as const, { timeout });
  } catch (err) {
    const actual = await page.locator(selector).getAttribute(name).catch(() => null);
    throw new Error(`${selector}[${name}] never matched ${String(value)}; it is ${JSON.stringify(actual)}`);
  }
}

const visible = (page: Page, selector: string, timeout = 15_000) => page.locator(selector).waitFor({ state: 'visible', timeout });
const hidden = (page: Page, selector: string, timeout = 15_000) => page.locator(selector).waitFor({ state: 'hidden', timeout });

/**
 * A hand-made glTF (embedded buffer): two square panels facing +Z, "panel" at z = 0 and a smaller
 * "nearpanel" at z = 2 (with a prompt in its extras), and a perspective camera "frontcam" at
 * z = 5 looking down -Z. Seen from that camera, linear depth is exactly 5 on "panel" and 3 on "nearpanel".
 */
function panelsGltf(): string {
  const quad = (s: number, x: number, y: number, z: number) => [x - s, y - s, z, x + s, y - s, z, x + s, y + s, z, x - s, y + s, z];
  const positions = new Float32Array([...quad(1.5, 0, 0, 0), ...quad(0.4, 0.6, 0.3, 2)]);
  const indices = new Uint16Array([0, 1, 2, 0, 2, 3]);
  const bin = Buffer.concat([Buffer.from(positions.buffer), Buffer.from(indices.buffer)]);
  const accessor = (offset: number, min: number[], max: number[]) => ({ bufferView: 0, byteOffset: offset, componentType: 5126, count: 4, type: 'VEC3', min, max });
  return JSON.stringify({
    asset: { version: '2.0' },
    scene: 0,
    scenes: [{ nodes: [0, 1, 2] }],
    nodes: [
      { name: 'panel', mesh: 0 },
      { name: 'nearpanel', mesh: 1, extras: { depthcastPrompt: 'a small window' } },
      { name: 'frontcam', camera: 0, translation: [0, 0, 5] },
    ],
    cameras: [{ type: 'perspective', perspective: { yfov: 0.9, znear: 0.5, zfar: 50 } }],
    meshes: [
      { name: 'panel', primitives: [{ attributes: { POSITION: 0 }, indices: 2 }] },
      { name: 'nearpanel', primitives: [{ attributes: { POSITION: 1 }, indices: 2 }] },
    ],
    accessors: [
      accessor(0, [-1.5, -1.5, 0], [1.5, 1.5, 0]),
      accessor(48, [0.2, -0.1, 2], [1, 0.7, 2]),
      { bufferView: 1, componentType: 5123, count: 6, type: 'SCALAR' },
    ],
    bufferViews: [
      { buffer: 0, byteOffset: 0, byteLength: 96, target: 34962 },
      { buffer: 0, byteOffset: 96, byteLength: 12, target: 34963 },
    ],
    buffers: [{ byteLength: bin.byteLength, uri: `data:application/octet-stream;base64,${bin.toString('base64')}` }],
  });
}

describe.skipIf(!haveChromium)('preview page in headless Chromium', () => {
  let dir: string;
  let server: DepthcastServer;
  let browser: Browser;
  let page: Page;
  const serverLog: string[] = [];
  const pageErrors: string[] = [];
  const requests: string[] = [];

  beforeAll(async () => {
    // `npm test` builds the page first; a bare `vitest run` may not have.
    if (!existsSync(path.join(PAGE_DIR, 'index.html'))) execFileSync(process.execPath, [path.join(ROOT, 'page/build.mjs')], { stdio: 'inherit' });
    await mkdir(ARTIFACTS, { recursive: true });
    dir = await mkdtemp(path.join(tmpdir(), 'depthcast-page-'));
    await createTinyModel(path.join(dir, MODEL), { family: 'depth2img' });
    server = await startServer({ host: '127.0.0.1', port: 0, modelsDir: dir, model: MODEL, device: 'cpu', shutdownWaitMs: 2000, log: (l) => serverLog.push(l) });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
    page = await browser.newPage({ viewport: { width: 1440, height: 860 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('request', (r) => requests.push(r.url()));
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
    if (serverLog.length) console.log(`service log:\n  ${serverLog.slice(-20).join('\n  ')}`);
  });

  it('sends a plausible depth frame and shows the result', async () => {
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => window.__depthcast?.state === 'ready', null, { timeout: 30_000 });
    await waitText(page, '#model-info', MODEL);
    await waitText(page, '#model-info', 'images are abstract');
    // A small frame keeps the tiny model quick on two cores; this change itself sends a frame.
    await page.selectOption('#size', '256');
    await page.fill('#steps', '8');
    const h = await page.waitForFunction(() => {
      const d = window.__depthcast!;
      const f = d.lastFrame;
      return f && f.header.depth.height === 256 && f.header.params.steps === 8 && d.lastResult?.jobId === f.header.jobId ? f.header.jobId : undefined;
    }, null, { timeout: 90_000 });
    const jobId = await h.jsonValue();

    const f = await dumpFrame(page);
    expect(f.jobId).toBe(jobId);
    // The header is exactly what every client sends: the shared schema accepts it.
    const header = FrameHeader.parse(f.header);
    expect(header.depth).toMatchObject({ dtype: 'f32', kind: 'zdepth', width: f.width, height: f.height, byteLength: f.width * f.height * 4 });
    expect(header.mode).toBe('live');
    expect(f.width % 8).toBe(0);
    expect(f.height).toBe(256);
    expect(f.depth).toHaveLength(f.width * f.height);
    console.log(`page depth pass under SwiftShader: ${f.width}×${f.height}, ${f.encoding} target, ${f.readback} readback, near ${header.depth.near} far ${header.depth.far}`);

    const idOf = (label: string) => f.objects.find((o) => o.label === label)!.id;
    const ground = idOf('ground');
    const box = idOf('box');
    const at = (x: number, y: number) => f.depth[y * f.width + x]!;
    const idAt = (x: number, y: number) => f.ids[y * f.width + x]!;

    // Background (sky above the ground plane, top row) is +Infinity; geometry is finite, within near..far.
    expect(at(0, 0)).toBe(Infinity);
    expect(idAt(0, 0)).toBe(0);
    const finite = f.depth.filter((z) => Number.isFinite(z));
    expect(finite.length).toBeGreaterThan(f.depth.length / 2);
    expect(Math.min(...finite)).toBeGreaterThan(header.depth.near);
    expect(Math.max(...finite)).toBeLessThan(header.depth.far);

    // Linear Z in scene units and rows top-down: ground pixels match a ray/plane intersection.
    let groundChecked = 0;
    for (let y = 0; y < f.height; y += 7) {
      for (let x = 3; x < f.width; x += 23) {
        if (idAt(x, y) !== ground) continue;
        const expected = groundZ(f, x, y);
        expect(Math.abs(at(x, y) - expected) / expected, `ground Z at (${x}, ${y})`).toBeLessThan(0.005);
        groundChecked++;
      }
    }
    expect(groundChecked).toBeGreaterThan(40);

    // The box is nearer than the ground right behind it: along each box column, the ground
    // pixel just above the box's top silhouette is farther than the box's edge pixel.
    let behind = 0;
    let boxPixels = 0;
    for (let x = 0; x < f.width; x++) {
      let top = -1;
      for (let y = 0; y < f.height; y++) if (idAt(x, y) === box) { top = y; break; }
      if (top < 4) continue;
      boxPixels++;
      if (idAt(x, top - 3) !== ground) continue;
      expect(at(x, top), `box edge vs ground behind it, column ${x}`).toBeLessThan(at(x, top - 3));
      behind++;
    }
    expect(boxPixels).toBeGreaterThan(10);
    expect(behind).toBeGreaterThan(10);
    // And the box as a whole is nearer than the ground over the same columns just above it.
    const boxZ = f.depth.filter((_, i) => f.ids[i] === box);
    const boxMean = boxZ.reduce((a, b) => a + b, 0) / boxZ.length;
    expect(Math.min(...boxZ)).toBeGreaterThan(header.depth.near);
    expect(boxMean).toBeLessThan(groundZ(f, Math.floor(f.width * 0.2), 0.4 * f.height));

    // The result arrived and is displayed at its size; the download link points at it.
    const result = await page.evaluate(() => window.__depthcast!.lastResult!);
    expect(result.width).toBe(Math.floor(f.width / 8) * 8);
    expect(result.height).toBe(256);
    const img = page.locator('#result-img');
    await visible(page, '#result-img');
    await page.waitForFunction(() => {
      const i = document.querySelector<HTMLImageElement>('#result-img')!;
      return i.complete && i.naturalWidth > 0 && i.dataset.kind === 'result';
    });
    const natural = await img.evaluate((i: HTMLImageElement) => [i.naturalWidth, i.naturalHeight]);
    expect(natural).toEqual([result.width, result.height]);
    expect(await page.locator('#download').getAttribute('href')).toMatch(/^blob:/);
    expect(await page.locator('#download').getAttribute('class')).not.toMatch(/disabled/);
    await waitText(page, '#result-meta', `seed ${result.seed}`);
    expect(await page.locator('#conn').getAttribute('data-state')).toBe('ready');
    expect(await page.evaluate(() => window.__depthcast!.lastPreview?.jobId)).toBeTruthy();
    expect(pageErrors).toEqual([]);
    // Offline by construction: everything the page loaded came from the service itself.
    expect(requests.length).toBeGreaterThan(2);
    expect(requests.filter((u) => !u.startsWith(`${server.url}/`) && !/^(blob|data):/.test(u))).toEqual([]);
  });

  it('clicking an object sets its prompt, and the next frame carries the layout', async () => {
    const f = await dumpFrame(page);
    const box = f.objects.find((o) => o.label === 'box')!.id;
    // A box pixel near the middle of the box's pixels, mapped from frame to canvas coordinates.
    let sx = 0, sy = 0, n = 0;
    for (let i = 0; i < f.ids.length; i++) if (f.ids[i] === box) { sx += i % f.width; sy += Math.floor(i / f.width); n++; }
    const cx = Math.round(sx / n), cy = Math.round(sy / n);
    expect(f.ids[cy * f.width + cx]).toBe(box);
    const rect = (await page.locator('canvas.view-canvas').boundingBox())!;
    const ndcX = ((cx + 0.5) / f.width) * 2 - 1;
    const scaleX = f.width / f.height / (rect.width / rect.height); // frame and canvas share fov, not aspect
    await page.mouse.click(rect.x + ((ndcX * scaleX + 1) / 2) * rect.width, rect.y + ((cy + 0.5) / f.height) * rect.height);
    await visible(page, '#obj-editor');
    expect(await page.locator('#obj-label').textContent()).toBe('box');

    await page.fill('#obj-prompt', 'a wooden crate');
    await waitText(page, '#objects', 'a wooden crate');
    expect(await page.locator('#objects li').count()).toBe(1);
    expect(await page.locator('#objects li .name').textContent()).toBe('box');
    const h = await page.waitForFunction(() => {
      const d = window.__depthcast!;
      const fr = d.lastFrame;
      return fr?.header.layout && d.lastResult?.jobId === fr.header.jobId ? fr.header.jobId : undefined;
    }, null, { timeout: 90_000 });
    const jobId = await h.jsonValue();
    const g = await dumpFrame(page);
    expect(g.jobId).toBe(jobId);
    const header = FrameHeader.parse(g.header);
    expect(header.layout).toMatchObject({ width: g.width, height: g.height, byteLength: g.width * g.height * 2 });
    expect(header.layout!.objects).toHaveLength(1);
    expect(header.layout!.objects[0]).toMatchObject({ id: 1, label: 'box', prompt: 'a wooden crate', weight: 1 });
    expect(await page.evaluate(() => window.__depthcast!.lastError)).toBeUndefined();
    await page.click('#obj-done');
    await page.locator('aside.controls').evaluate((e) => e.scrollTo(0, 0));
    await page.screenshot({ path: path.join(ARTIFACTS, 'page.png') });
  });

  it('shows the result over the 3D view with a split slider', async () => {
    await page.selectOption('#display', 'overlay');
    await visible(page, '#overlay-img');
    await hidden(page, '#result-panel');
    await page.locator('#split').fill('35');
    expect(await page.locator('#overlay-img').evaluate((i) => (i as HTMLElement).style.clipPath)).toBe('inset(0px 0px 0px 35%)');
    await page.screenshot({ path: path.join(ARTIFACTS, 'page-overlay.png') });
    await page.selectOption('#display', 'beside');
    await visible(page, '#result-panel');
  });

  it('shows an error from the service, and clears it after a good frame', async () => {
    const maxSteps = await page.evaluate(() => (window.__depthcast!.hello as { limits: { maxSteps: number } }).limits.maxSteps);
    await page.fill('#steps', String(maxSteps + 1)); // valid for the schema, over the service's limit
    await visible(page, '#error', 30_000);
    await waitText(page, '#error', 'LIMIT_EXCEEDED');
    await waitText(page, '#error', 'params.steps');
    const err = await page.evaluate(() => window.__depthcast!.lastError!);
    expect(err.code).toBe('LIMIT_EXCEEDED');
    expect(err.jobId).toMatch(/^page-/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'page-error.png') });

    await page.fill('#steps', '6');
    await page.waitForFunction(() => {
      const d = window.__depthcast!;
      return d.lastFrame?.header.params.steps === 6 && d.lastResult?.jobId === d.lastFrame.header.jobId;
    }, null, { timeout: 90_000 });
    await hidden(page, '#error');
  });

  it('sends the 3D view as an img2img init image when asked', async () => {
    await page.check('#use-init');
    expect(await page.locator('#strength').isDisabled()).toBe(false);
    await page.fill('#strength', '0.6');
    const h = await page.waitForFunction(() => {
      const d = window.__depthcast!;
      const f = d.lastFrame;
      return f?.header.init && f.header.params.strength === 0.6 && d.lastResult?.jobId === f.header.jobId ? f.header.jobId : undefined;
    }, null, { timeout: 90_000 });
    const f = await dumpFrame(page);
    expect(f.jobId).toBe(await h.jsonValue());
    expect(FrameHeader.parse(f.header).init).toEqual({ format: 'rgba8', width: f.width, height: f.height, byteLength: f.width * f.height * 4 });
    // The rendered view, not a blank canvas: the demo's lit ground and objects are well above black.
    const initMean = await page.evaluate(() => window.__depthcast!.lastFrame!.initMean!);
    expect(initMean).toBeGreaterThan(40);
    expect(initMean).toBeLessThan(230);
    expect(await page.evaluate(() => window.__depthcast!.errors.filter((e) => e.code !== 'LIMIT_EXCEEDED'))).toEqual([]);
    await page.uncheck('#use-init');
  });

  it('with Consistent frames, sends the camera poses and the service continues its last result', async () => {
    await page.uncheck('#live');
    await page.check('#consistent');
    const sendAndWait = async () => {
      const jobId = await page.evaluate(() => window.__depthcast!.sendNow());
      expect(jobId).toBeTruthy();
      await page.waitForFunction((id) => window.__depthcast!.lastResult?.jobId === id, jobId, { timeout: 90_000 });
      return { frame: await dumpFrame(page), result: await page.evaluate(() => window.__depthcast!.lastResult!) };
    };
    const first = await sendAndWait();
    expect(first.frame.header.params.consistency).toBe('consistent');
    // Orbit a little with the mouse (no frame goes out: Live is off), then send the next frame.
    const box = (await page.locator('canvas.view-canvas').boundingBox())!;
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 + 30, box.y + box.height / 2 + 6, { steps: 4 });
    await page.mouse.up();
    await new Promise((r) => setTimeout(r, 500)); // orbit damping settles
    const second = await sendAndWait();
    const motion = FrameHeader.parse(second.frame.header).motion!;
    expect(motion.kind).toBe('pose');
    if (motion.kind !== 'pose') return;
    // The pass camera's matrixWorld (column-major in three.js) as row-major; the previous pose is the first frame's.
    const rowMajor = (m: number[]) => Array.from({ length: 16 }, (_, i) => m[(i % 4) * 4 + Math.floor(i / 4)]!);
    expect(motion.pose).toEqual(rowMajor(second.frame.camera.matrixWorld));
    expect(motion.previousPose).toEqual(rowMajor(first.frame.camera.matrixWorld));
    expect(motion.previousPose).not.toEqual(motion.pose);
    expect(motion.previousJobId).toBe(first.frame.jobId);
    // fy from the projection: projectionMatrixInverse[5] is tan(fov / 2).
    const { width, height } = second.frame;
    expect(motion.intrinsics.cx).toBe(width / 2);
    expect(motion.intrinsics.cy).toBe(height / 2);
    expect(motion.intrinsics.fy).toBeCloseTo(height / 2 / second.frame.camera.projectionMatrixInverse[5]!, 3);
    expect(motion.intrinsics.fx).toBe(motion.intrinsics.fy);
    // Against the service's own reprojection: the second frame's depth, moved with these poses,
    // lands where the first frame saw the same surface at the same Z (a wrong transpose, sign or
    // focal length does not).
    const { flow, expectedPrevious } = reprojectFlow(new Float32Array(second.frame.depth), width, height, motion.intrinsics, motion.pose, motion.previousPose);
    const errors: number[] = [];
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = y * width + x;
        if (!Number.isFinite(second.frame.depth[i]!)) continue;
        const px = Math.floor(x + 0.5 + flow.data[i]!);
        const py = Math.floor(y + 0.5 + flow.data[width * height + i]!);
        if (px < 0 || py < 0 || px >= width || py >= height) continue;
        const seen = first.frame.depth[py * width + px]!;
        if (Number.isFinite(seen)) errors.push(Math.abs(seen - expectedPrevious[i]!) / seen);
      }
    }
    errors.sort((a, b) => a - b);
    expect(errors.length).toBeGreaterThan(0.5 * width * height);
    expect(errors[Math.floor(errors.length / 2)]!).toBeLessThan(0.01);
    // The service continued the first result: the consistent mode ran, with a warp score for the pair.
    expect(second.result.consistency).toMatchObject({ mode: 'consistent' });
    expect(second.result.consistency!.score!.validFraction).toBeGreaterThan(0.3);
    await page.uncheck('#consistent');
    await page.check('#live');
  });

  it('loads a dropped glTF and renders depth from the camera it carries', async () => {
    const gltf = panelsGltf();
    await page.evaluate((text) => {
      const dt = new DataTransfer();
      dt.items.add(new File([text], 'panels.gltf', { type: 'model/gltf+json' }));
      document.querySelector('#view')!.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, gltf);
    await waitText(page, '#scene-name', 'panels.gltf');
    expect(await page.locator('#camera option').allTextContents()).toEqual(['Orbit camera', 'frontcam']);
    expect(await page.locator('#camera').inputValue()).toBe('1');
    await page.waitForFunction(() => {
      const d = window.__depthcast!;
      const f = d.lastFrame;
      return f && f.objects.some((o) => o.label === 'nearpanel') && d.lastResult?.jobId === f.header.jobId;
    }, null, { timeout: 90_000 });
    const f = await dumpFrame(page);
    const header = FrameHeader.parse(f.header);
    expect(header.depth.near).toBeCloseTo(0.5, 6);
    expect(header.depth.far).toBeCloseTo(50, 6);
    const panel = f.objects.find((o) => o.label === 'panel')!.id;
    const near = f.objects.find((o) => o.label === 'nearpanel')!.id;
    const zs = (id: number) => f.depth.filter((_, i) => f.ids[i] === id);
    const panelZ = zs(panel), nearZ = zs(near);
    expect(panelZ.length).toBeGreaterThan(500);
    expect(nearZ.length).toBeGreaterThan(100);
    // Planes facing the camera: one linear Z over the whole plane, in scene units.
    for (const z of panelZ) expect(Math.abs(z - 5)).toBeLessThan(1e-3);
    for (const z of nearZ) expect(Math.abs(z - 3)).toBeLessThan(1e-3);
    // The prompt stored in the glTF node's extras arrives as a layout object.
    expect(header.layout?.objects).toEqual([expect.objectContaining({ id: 1, label: 'nearpanel', prompt: 'a small window' })]);
    expect(await page.locator('#objects li .name').allTextContents()).toEqual(['nearpanel']);
    // Everything else is background.
    expect(f.depth.filter((z) => Number.isFinite(z)).length).toBe(panelZ.length + nearZ.length);
    // "nearpanel" sits up and to the right of centre: rows top-down, columns left to right.
    let sx = 0, sy = 0;
    f.ids.forEach((id, i) => { if (id === near) { sx += i % f.width; sy += Math.floor(i / f.width); } });
    expect(sx / nearZ.length).toBeGreaterThan(f.width / 2);
    expect(sy / nearZ.length).toBeLessThan(f.height / 2);

    await page.screenshot({ path: path.join(ARTIFACTS, 'page-gltf.png') });

    // Back to the orbit camera: a new frame from another viewpoint.
    const before = f.camera.matrixWorld.join(',');
    await page.selectOption('#camera', '0');
    await page.waitForFunction((m) => window.__depthcast!.lastFrame!.camera.matrixWorld.join(',') !== m, before, { timeout: 30_000 });
    expect(pageErrors).toEqual([]);
  });

  it('shows the lost connection, keeps retrying, and reconnects', async () => {
    await server.close();
    await waitAttr(page, '#conn', 'data-state', /^(waiting|connecting)$/);
    await waitText(page, '#conn', /disconnected|reconnecting/);
    await page.click('#generate');
    await waitText(page, '#error', 'OFFLINE');

    // The service comes back on the same port: the page reconnects by itself and sends a frame.
    const sent = await page.evaluate(() => window.__depthcast!.framesSent);
    server = await startServer({ host: '127.0.0.1', port: server.port, modelsDir: dir, model: MODEL, device: 'cpu', shutdownWaitMs: 2000, log: (l) => serverLog.push(l) });
    await waitAttr(page, '#conn', 'data-state', /^ready$/, 30_000);
    await page.waitForFunction((n) => {
      const d = window.__depthcast!;
      return d.framesSent > n && d.lastResult?.jobId === d.lastFrame?.header.jobId;
    }, sent, { timeout: 90_000 });
    expect(pageErrors).toEqual([]);
  });

  it('passes ?token= from the page address to the WebSocket', async () => {
    const secured = await startServer({ host: '127.0.0.1', port: 0, modelsDir: dir, model: MODEL, device: 'cpu', token: 'page-secret', shutdownWaitMs: 1000, log: (l) => serverLog.push(l) });
    try {
      const p = await browser.newPage();
      await p.goto(`${secured.url}/?token=page-secret`);
      await p.waitForFunction(() => window.__depthcast?.state === 'ready', null, { timeout: 30_000 });
      await p.goto(`${secured.url}/`);
      await waitAttr(p, '#conn', 'data-state', /^waiting$/);
      await waitText(p, '#conn', 'token');
      await p.close();
    } finally {
      await secured.close();
    }
  });
});
