/**
 * Conformance-shaped cases for the paths the hidden case sets cover (README §7 of
 * ../shared/conformance): no reference image exists for these, so they check what the spec
 * states outright — each runs, the noise draws are exactly those of §4, and img2img runs the
 * strength share of the timesteps.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCase } from '../tools/conformance/run.ts';
import type { LoadedModel } from '../src/models/load.ts';
import { SeededNoise } from '../src/pipelines/noise.ts';
import { writeNpy } from '../src/util/npy.ts';
import { SHARED_CONFORMANCE } from './support/tiny.ts';

const have = existsSync(join(SHARED_CONFORMANCE, 'models'));
if (!have) console.warn(`skipping conformance-shaped path cases: ${SHARED_CONFORMANCE} not found`);

const models = new Map<string, LoadedModel>();
const root = mkdtempSync(join(tmpdir(), 'depthcast-paths-'));
const scheduler = (name: string, extra: Record<string, unknown> = {}) => ({
  ...JSON.parse(readFileSync(join(SHARED_CONFORMANCE, 'models/depth2img-tiny/scheduler/scheduler_config.json'), 'utf8')),
  _class_name: name,
  ...extra,
});
const noise = (seed: number, shape: number[]) => writeNpy(new SeededNoise(seed).next(shape.reduce((a, b) => a * b, 1)), shape);

interface PathCase {
  name: string;
  pipeline: 'depth2img' | 'controlnet' | 'controlnet-img2img';
  steps: number;
  strength: number | null;
  scheduler: Record<string, unknown>;
  stepNoise: number;
  runs: number;
  prompt?: string;
  depthSize?: [number, number];
}

function writeCase(c: PathCase): string {
  const dir = join(root, c.name);
  mkdirSync(dir, { recursive: true });
  const W = 64;
  const H = 48;
  const files: Record<string, string | null> = { depth_map: null, control_image: null, init_image: null, latent_noise: 'latent_noise.npy', step_noise: null };
  writeFileSync(join(dir, 'latent_noise.npy'), noise(1, [1, 4, H / 8, W / 8]));
  if (c.stepNoise) {
    writeFileSync(join(dir, 'step_noise.npy'), noise(2, [c.stepNoise, 1, 4, H / 8, W / 8]));
    files.step_noise = 'step_noise.npy';
  }
  if (c.pipeline === 'depth2img') {
    const [dh, dw] = c.depthSize ?? [H, W];
    writeFileSync(join(dir, 'depth.npy'), writeNpy(Float32Array.from({ length: dh * dw }, (_, i) => 1 + (i % dw) / dw + Math.floor(i / dw) / dh), [1, dh, dw]));
    files.depth_map = 'depth.npy';
  } else {
    writeFileSync(join(dir, 'control.npy'), writeNpy(Float32Array.from({ length: 3 * H * W }, (_, i) => (i % W) / W), [1, 3, H, W]));
    files.control_image = 'control.npy';
  }
  if (c.strength !== null) {
    writeFileSync(join(dir, 'init.npy'), writeNpy(Float32Array.from({ length: 3 * H * W }, (_, i) => ((i * 7) % 255) / 255), [1, 3, H, W]));
    files.init_image = 'init.npy';
  }
  const blank = new Float32Array(3 * H * W);
  writeFileSync(join(dir, 'expected.npy'), writeNpy(blank, [1, 3, H, W]));
  const spec = {
    name: c.name,
    model: join(SHARED_CONFORMANCE, 'models', c.pipeline === 'depth2img' ? 'depth2img-tiny' : 'controlnet-tiny'),
    pipeline: c.pipeline,
    prompt: c.prompt ?? 'a stone bridge over a river',
    negative_prompt: 'blurry',
    width: W,
    height: H,
    num_inference_steps: c.steps,
    strength: c.strength,
    guidance_scale: 5,
    controlnet_conditioning_scale: c.pipeline === 'depth2img' ? null : 0.7,
    scheduler: c.scheduler,
    inputs: files,
    expected: { image: 'expected.npy', timesteps: [] },
    tolerance: { image_max_abs: 2e-3 },
  };
  writeFileSync(join(dir, 'case.json'), JSON.stringify(spec));
  return dir;
}

const cases: PathCase[] = [
  // PNDM: 10 steps give 11 timesteps (the repeat); strength 0.6 keeps the last floor(6) → 7 run.
  { name: 'cn-img2img-pndm', pipeline: 'controlnet-img2img', steps: 10, strength: 0.6, scheduler: scheduler('PNDMScheduler', { skip_prk_steps: true }), stepNoise: 0, runs: 7 },
  // LCM img2img: 4 steps, strength 0.5 → 2 run; noise on every step but the last → 1 draw.
  { name: 'd2i-lcm-strength', pipeline: 'depth2img', steps: 4, strength: 0.5, scheduler: scheduler('LCMScheduler', { original_inference_steps: 50, timestep_scaling: 10 }), stepNoise: 1, runs: 2 },
  // Euler ancestral ControlNet txt2img: a draw every step.
  { name: 'cn-euler-a', pipeline: 'controlnet', steps: 5, strength: null, scheduler: scheduler('EulerAncestralDiscreteScheduler', { timestep_spacing: 'linspace' }), stepNoise: 5, runs: 5 },
  // DDIM with v-prediction, a depth map of another size than the image.
  { name: 'd2i-ddim-v', pipeline: 'depth2img', steps: 6, strength: 0.9, scheduler: scheduler('DDIMScheduler', { prediction_type: 'v_prediction', timestep_spacing: 'trailing' }), stepNoise: 0, runs: 5, depthSize: [37, 53] },
  // Euler with a prompt longer than 77 tokens.
  { name: 'd2i-euler-long', pipeline: 'depth2img', steps: 5, strength: 1, scheduler: scheduler('EulerDiscreteScheduler'), stepNoise: 0, runs: 5, prompt: Array.from({ length: 120 }, (_, i) => `word${i}`).join(' ') },
  // DPM++ 2M Karras img2img ControlNet.
  { name: 'cn-img2img-dpm', pipeline: 'controlnet-img2img', steps: 8, strength: 0.75, scheduler: scheduler('DPMSolverMultistepScheduler', { use_karras_sigmas: true }), stepNoise: 0, runs: 6 },
];

describe.skipIf(!have)('conformance-shaped paths of the hidden case sets', () => {
  for (const c of cases) {
    it(`${c.name}: runs ${c.runs} steps and uses exactly ${c.stepNoise} step-noise arrays`, async () => {
      const outcome = await runCase(writeCase(c), models);
      // No reference image here, so the runner's own diagnostics are what is checked.
      expect(outcome.note ?? '').not.toMatch(/unused/);
      expect(Number.isFinite(outcome.maxAbs)).toBe(true);
      expect(outcome.timestepsRun).toBe(c.runs);
    });
  }

  it('a case that needs more noise than it supplies fails instead of drawing random numbers', async () => {
    const dir = writeCase({ name: 'cn-euler-a-short', pipeline: 'controlnet', steps: 5, strength: null, scheduler: scheduler('EulerAncestralDiscreteScheduler'), stepNoise: 3, runs: 5 });
    await expect(runCase(dir, models)).rejects.toMatchObject({ code: 'OUT_OF_NOISE' });
  });
});
