/**
 * What the page's result panel says it shows, in real Chromium against the real service: the
 * onboarding state when the service has no model (and no frames sent), and the rule that the last
 * finished result stays on screen after a cancel, an error and a service stop, with previews in
 * a separate, labelled state. Screenshots of the panel go to docs/img/ (shown by docs/page.md).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type DepthcastServer } from '../server/index.ts';
import { createTinyModel } from '../src/tiny/build-tiny.ts';

const CHROMIUM = '/usr/bin/chromium';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PAGE_DIR = path.join(ROOT, 'dist', 'page');
// docs/img holds the committed screenshots docs/page.md shows; a plain run writes to test-artifacts/
// so it leaves the tree clean (the tiny model's images differ per seed). DEPTHCAST_UPDATE_SCREENSHOTS=1 refreshes docs/img.
const SHOTS = process.env.DEPTHCAST_UPDATE_SCREENSHOTS === '1' ? path.join(ROOT, 'docs', 'img') : path.join(ROOT, 'test-artifacts');
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`page-states test skipped: ${CHROMIUM} is missing (Debian: apt install chromium)`);
const LAUNCH_ARGS = ['--no-sandbox', '--disable-gpu', '--enable-unsafe-swiftshader', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--mute-audio'];

interface PanelState {
  state: string;
  caption: string;
  src: string;
  badge: string;
}

const panel = (page: Page): Promise<PanelState> => page.evaluate(() => ({
  state: document.getElementById('result-panel')!.dataset.state ?? '',
  caption: document.getElementById('result-meta')!.textContent ?? '',
  src: (document.getElementById('result-img') as HTMLImageElement).hidden ? '' : (document.getElementById('result-img') as HTMLImageElement).src,
  badge: document.getElementById('result-badge')!.textContent ?? '',
}));

async function waitState(page: Page, state: string, timeout = 60_000): Promise<PanelState> {
  try {
    await page.waitForFunction((s) => document.getElementById('result-panel')?.dataset.state === s, state, { timeout });
  } catch {
    throw new Error(`the result panel never reached "${state}": ${JSON.stringify(await panel(page))}`);
  }
  return panel(page);
}

/** The result panel, scaled to 360 px wide and palette-quantised: the random images of the tiny model compress badly. */
async function shot(page: Page, name: string): Promise<void> {
  const png = await page.locator('#result-panel').screenshot();
  await sharp(png).resize({ width: 360 }).png({ palette: true, colours: 48, compressionLevel: 9 }).toFile(path.join(SHOTS, name));
}

describe.skipIf(!haveChromium)('page result panel states in headless Chromium', () => {
  let dir: string;
  let browser: Browser;
  const servers: DepthcastServer[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    if (!existsSync(path.join(PAGE_DIR, 'index.html'))) execFileSync(process.execPath, [path.join(ROOT, 'page/build.mjs')], { stdio: 'inherit' });
    await mkdir(SHOTS, { recursive: true });
    dir = await mkdtemp(path.join(tmpdir(), 'depthcast-page-states-'));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS });
  });

  afterAll(async () => {
    await browser?.close();
    for (const s of servers) await s.close().catch(() => undefined);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function open(modelsDir: string, model?: string): Promise<{ page: Page; server: DepthcastServer }> {
    const server = await startServer({ host: '127.0.0.1', port: 0, modelsDir, ...(model ? { model } : {}), device: 'cpu', shutdownWaitMs: 2000, log: () => undefined,
      // From step 20 on, every step is held for 40 ms, so the 150-step "long frame" is still in flight
      // when the test cancels it, however fast the machine (the short frames never reach step 20).
      engine: { faults: [{ jobId: '*', step: 20, kind: 'stall', ms: 40 }] } });
    servers.push(server);
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(`http://127.0.0.1:${server.port}/`);
    await page.waitForFunction(() => window.__depthcast?.state === 'ready', null, { timeout: 30_000 });
    return { page, server };
  }

  it('with no model: an onboarding state naming the commands, no frames sent, and a button that makes the demo model', async () => {
    const empty = path.join(dir, 'no-models');
    await mkdir(empty);
    const { page } = await open(empty);
    const s = await waitState(page, 'onboarding');
    expect(s.src).toBe('');
    const text = await page.locator('#onboarding').innerText();
    expect(text).toContain('npx depthcast models create-tiny');
    expect(text).toContain('npx depthcast models pull');
    expect(await page.locator('#error').isHidden()).toBe(true);
    // Live is on and the page would send a frame at once; give it time to (wrongly) do so.
    await page.click('#generate');
    await page.waitForTimeout(1500);
    expect(await page.evaluate(() => window.__depthcast!.framesSent)).toBe(0);
    await page.locator('#make-demo').waitFor({ state: 'visible', timeout: 15_000 });
    await shot(page, 'page-onboarding.png');

    // The endpoint behind the button passes the service's checks: a foreign page cannot use it.
    const port = new URL(page.url()).port;
    const foreign = await fetch(`http://127.0.0.1:${port}/v1/models/demo`, { method: 'POST', headers: { Origin: 'http://evil.example' } });
    expect(foreign.status).toBe(403);
    expect(existsSync(path.join(empty, 'tiny'))).toBe(false);

    // The button writes the tiny model; the page reloads, leaves onboarding and makes an image.
    await page.click('#make-demo');
    await page.waitForFunction(() => window.__depthcast?.state === 'ready' && (window.__depthcast.hello as { models: unknown[] } | undefined)?.models.length === 1, null, { timeout: 60_000 });
    expect(existsSync(path.join(empty, 'tiny', 'model_index.json'))).toBe(true);
    await page.fill('#steps', '2');
    await page.selectOption('#size', '256');
    await page.click('#generate');
    await waitState(page, 'result', 90_000);
    const again = await fetch(`http://127.0.0.1:${port}/v1/models/demo`, { method: 'POST' });
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: { message: string } }).error.message).toMatch(/already installed/);
    await page.close();
  });

  it('keeps the last finished result after a cancel, an error and a service stop; previews are labelled', async () => {
    const modelsDir = path.join(dir, 'models');
    await createTinyModel(path.join(modelsDir, 'tiny'), { family: 'depth2img' });
    const { page, server } = await open(modelsDir, 'tiny');
    await page.uncheck('#live');
    await page.selectOption('#size', '256');
    await page.fill('#steps', '3');
    await page.click('#generate');
    const first = await waitState(page, 'result');
    expect(first.caption).toMatch(/^frame \d+ · .* · finished result$/);
    const frameOf = (caption: string) => /^frame (\d+)/.exec(caption)?.[1];
    const resultFrame = frameOf(first.caption)!;
    expect(first.badge).toBe('RESULT');
    await shot(page, 'page-result.png');

    // A long frame: its previews show as previews, over the last result.
    const long = async () => {
      await page.selectOption('#size', '1024');
      await page.fill('#steps', '150');
      await page.click('#generate');
      const preview = await waitState(page, 'preview');
      expect(preview.caption).toMatch(new RegExp(`^frame (\\d+) · step \\d+/\\d+ · .* · preview, unfinished · last finished: frame ${resultFrame}$`));
      expect(preview.badge).toMatch(/PREVIEW/);
      expect(preview.src).not.toBe(first.src);
      return frameOf(preview.caption)!;
    };

    const cancelled = await long();
    await shot(page, 'page-preview.png');
    await page.click('#cancel');
    const afterCancel = await waitState(page, 'result');
    expect(afterCancel.src).toBe(first.src);
    expect(afterCancel.caption).toBe(`${first.caption} · frame ${cancelled} cancelled`);
    await shot(page, 'page-after-cancel.png');

    // An error (a frame the service refuses) leaves the result, and the error bar floats over the page.
    const before = await page.locator('#result-panel').boundingBox();
    await page.fill('#steps', '151');
    await page.click('#generate');
    await page.locator('#error').waitFor({ state: 'visible', timeout: 30_000 });
    const afterError = await panel(page);
    expect(afterError).toMatchObject({ state: 'result', src: first.src });
    expect(frameOf(afterError.caption)).toBe(resultFrame);
    expect(await page.locator('#result-panel').boundingBox()).toEqual(before);
    await page.click('#error-close');

    // The service stops while a frame runs.
    const stopped = await long();
    await server.close();
    const afterStop = await waitState(page, 'result');
    expect(afterStop.src).toBe(first.src);
    // The service cancels the running frame as it stops, or the connection drops first.
    expect([`${first.caption} · frame ${stopped} cancelled: the service is stopping`, `${first.caption} · service disconnected`]).toContain(afterStop.caption);
    expect(stopped).not.toBe(resultFrame);
    await shot(page, 'page-after-stop.png');
    expect(pageErrors).toEqual([]);
    await page.close();
  });
});
