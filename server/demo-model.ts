/**
 * `GET /v1/models/demo` and `POST /v1/models/demo`: the page's "make the demo model" button. The
 * POST writes `models create-tiny` into the service's models folder, so a newcomer can see the
 * pipeline run without a terminal. It passes the app's Host, Origin and token checks like every
 * /v1 route; it is offered only when the models folder is writable and has no model named tiny.
 */
import { accessSync, constants, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import express from 'express';
import { DepthcastError } from '../src/errors.ts';
import { createTinyModel, TINY_MODEL_NOTE } from '../src/tiny/build-tiny.ts';

export const DEMO_MODEL_NAME = 'tiny';

/** Whether the folder (or the nearest existing folder above it) can be written. */
function writable(dir: string): boolean {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  try {
    accessSync(d, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

export function demoModelRouter(modelsDir: string | undefined, onCreated: () => void): express.Router {
  const router = express.Router({ caseSensitive: true, strict: true });
  const state = () => {
    const dir = modelsDir ? join(modelsDir, DEMO_MODEL_NAME) : undefined;
    return { dir, exists: !!dir && existsSync(dir), writable: !!modelsDir && writable(modelsDir) };
  };
  let making = false;
  router.get('/v1/models/demo', (_req, res) => {
    const s = state();
    res.json({ name: DEMO_MODEL_NAME, available: s.writable && !s.exists && !making, exists: s.exists, modelsDir: modelsDir ?? null });
  });
  router.post('/v1/models/demo', async (_req, res) => {
    const s = state();
    if (!modelsDir || !s.dir) throw new DepthcastError('BAD_REQUEST', 'the service has no models folder to write the demo model into');
    if (s.exists) throw new DepthcastError('BAD_REQUEST', `a model named ${DEMO_MODEL_NAME} is already installed in ${modelsDir}`);
    if (!s.writable) throw new DepthcastError('BAD_REQUEST', `the models folder ${modelsDir} is not writable by the service`);
    if (making) throw new DepthcastError('BUSY', 'the demo model is being written already');
    making = true;
    // Written beside its final name and renamed: a model folder is complete or absent.
    const staging = join(modelsDir, `.tmp-${DEMO_MODEL_NAME}-${process.pid}-${Date.now()}`);
    try {
      mkdirSync(modelsDir, { recursive: true });
      await createTinyModel(staging, { family: 'depth2img', dtype: 'fp32', tinyDecoder: true });
      renameSync(staging, s.dir);
    } finally {
      rmSync(staging, { recursive: true, force: true });
      making = false;
    }
    onCreated();
    res.json({ name: DEMO_MODEL_NAME, dir: s.dir, note: TINY_MODEL_NOTE });
  });
  return router;
}
