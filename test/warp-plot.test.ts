/**
 * POST /v1/plots/warp: the warp-error plot batch reports carry, drawn for clients without an
 * image library (the Blender add-on's Render Animation and batch script). A real service on a
 * loopback port; bad requests are typed, the size is bounded, and the token applies.
 */
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DepthcastServer, startServer } from '../server/index.ts';
import { plottedScore, renderScorePlot } from '../src/motion/plot.ts';
import { WARP_PLOT_MAX_PAIRS } from '../src/protocol/schemas.ts';
import { jsonOf, tinyModelsDir } from './support/server-helpers.ts';

let models: Awaited<ReturnType<typeof tinyModelsDir>>;
let server: DepthcastServer;
let guarded: DepthcastServer;

beforeAll(async () => {
  models = await tinyModelsDir();
  server = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', log: () => {} });
  guarded = await startServer({ port: 0, modelsDir: models.dir, device: 'cpu', token: 'plot-token', log: () => {} });
});

afterAll(async () => {
  await server?.close();
  await guarded?.close();
  await models?.cleanup();
});

const PAIRS = [{ frame: 2, error: 0.031, validFraction: 0.97 }, { frame: 3, error: 0.012, validFraction: 0.95 }, { frame: 4, error: 0.02, validFraction: 0.96 }];

function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}/v1/plots/warp`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

describe('POST /v1/plots/warp', () => {
  it('answers with the PNG a batch report carries for the same pairs', async () => {
    const res = await post(server.url, { title: 'Cam: warp error per frame pair', series: [{ label: 'consistent', pairs: PAIRS }] });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^image\/png/);
    const png = Buffer.from(await res.arrayBuffer());
    expect(await sharp(png).metadata()).toMatchObject({ format: 'png', width: 480, height: 220 });
    const reference = await renderScorePlot([{ label: 'consistent', score: plottedScore(PAIRS) }], 'Cam: warp error per frame pair');
    expect(png.equals(reference)).toBe(true);
    // The worst pair and the mean are what the plot's legend states.
    expect(plottedScore(PAIRS)).toMatchObject({ meanError: (0.031 + 0.012 + 0.02) / 3, worst: { frame: 2, error: 0.031 } });
  });

  it('refuses bad requests with a typed error naming what is wrong', async () => {
    const cases: [unknown, RegExp][] = [
      [{ series: [{ label: 'a', pairs: PAIRS }] }, /title/],
      [{ title: 't', series: [] }, /series/],
      [{ title: 't', series: Array.from({ length: 5 }, () => ({ label: 'a', pairs: PAIRS })) }, /series/],
      [{ title: 't', series: [{ label: 'a', pairs: [{ frame: 2, error: -1 }] }] }, /error/],
      [{ title: 't', series: [{ label: 'a', pairs: [{ frame: 2.5, error: 0.1 }] }] }, /frame/],
      [{ title: 't', series: [{ label: 'a', pairs: Array.from({ length: WARP_PLOT_MAX_PAIRS + 1 }, (_, i) => ({ frame: i, error: 0.1 })) }] }, /pairs/],
      [{ title: 't', series: [{ label: 'a', pairs: PAIRS, colour: 'red' }] }, /colour/],
    ];
    for (const [body, field] of cases) {
      const res = await post(server.url, body);
      const json = await jsonOf(res);
      expect([res.status, json.error.code], JSON.stringify(json)).toEqual([400, 'BAD_REQUEST']);
      expect(json.error.message).toMatch(field);
    }
    const notJson = await post(server.url, 'title=t', { 'content-type': 'application/x-www-form-urlencoded' });
    expect([notJson.status, (await jsonOf(notJson)).error.code]).toEqual([400, 'BAD_REQUEST']);
  });

  it('bounds the body at 4 MiB', async () => {
    const res = await post(server.url, { title: 'x'.repeat(5 * 1024 * 1024), series: [{ label: 'a', pairs: PAIRS }] });
    expect([res.status, (await jsonOf(res)).error.code]).toEqual([413, 'LIMIT_EXCEEDED']);
  });

  it('needs the token where the service has one', async () => {
    const body = { title: 't', series: [{ label: 'a', pairs: PAIRS }] };
    const denied = await post(guarded.url, body);
    expect([denied.status, (await jsonOf(denied)).error.code]).toEqual([401, 'UNAUTHORIZED']);
    expect((await post(guarded.url, body, { authorization: 'Bearer plot-token' })).status).toBe(200);
  });
});
