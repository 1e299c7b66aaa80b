/**
 * Runs a conformance case set (../shared/conformance/README.md): every case under <dir>/cases/
 * through our pipelines with the case's injected noise, and the tokenizer vectors. Prints one
 * line per case with its max abs error and ends with `N passed, N failed`.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { cachedBuild } from '../../src/checkpoint/cache.ts';
import { isPipelineCheckpoint } from '../../src/checkpoint/build.ts';
import { type LoadedModel, loadModel } from '../../src/models/load.ts';
import { runControlnet } from '../../src/pipelines/controlnet.ts';
import { runDepth2Img } from '../../src/pipelines/depth2img.ts';
import { ArrayNoise } from '../../src/pipelines/noise.ts';
import type { GenerateInput, PlanarImage } from '../../src/pipelines/types.ts';
import type { SchedulerConfig } from '../../src/schedulers/types.ts';
import { ClipTokenizer } from '../../src/tokenizer/clip.ts';
import { readNpy } from '../../src/util/npy.ts';

interface CaseJson {
  name: string;
  model: string;
  /** Checkpoint case sets: the ControlNet checkpoint folder (ONNX case sets keep it inside `model`). */
  controlnet?: string | null;
  pipeline: 'depth2img' | 'controlnet' | 'controlnet-img2img';
  prompt: string;
  negative_prompt: string | null;
  width: number;
  height: number;
  num_inference_steps: number;
  strength: number | null;
  guidance_scale: number;
  controlnet_conditioning_scale: number | null;
  scheduler: SchedulerConfig;
  inputs: Record<'depth_map' | 'control_image' | 'init_image' | 'latent_noise' | 'step_noise', string | null>;
  expected: { image: string; timesteps: number[] };
  tolerance: { image_max_abs: number };
}

export interface CaseOutcome {
  name: string;
  passed: boolean;
  maxAbs: number;
  /** How many timesteps the denoising loop ran. */
  timestepsRun: number;
  note?: string;
  /** The image the pipeline made ([3,H,W] planar), for comparing two ways of running a case. */
  image: Float32Array;
}

async function npy(dir: string, file: string) {
  return readNpy(new Uint8Array(await readFile(join(dir, file))), file, 'BAD_REQUEST');
}

/** depth_map is [1,Hd,Wd]; images are [1,3,H,W]. */
function planar(data: Float32Array, shape: number[]): PlanarImage {
  const [h, w] = shape.slice(-2) as [number, number];
  const channels = shape.length === 4 ? shape[1]! : 1;
  return { data, channels, height: h, width: w };
}

export async function runCase(caseDir: string, models: Map<string, LoadedModel>): Promise<CaseOutcome> {
  const spec = JSON.parse(await readFile(join(caseDir, 'case.json'), 'utf8')) as CaseJson;
  const modelDir = await modelFolder(caseDir, spec);
  let model = models.get(modelDir);
  if (!model) {
    model = await loadModel(modelDir, { device: 'cpu' });
    models.set(modelDir, model);
  }
  const noiseArrays = [(await npy(caseDir, spec.inputs.latent_noise!)).data];
  if (spec.inputs.step_noise) {
    const steps = await npy(caseDir, spec.inputs.step_noise);
    const per = steps.data.length / steps.shape[0]!;
    for (let i = 0; i < steps.shape[0]!; i++) noiseArrays.push(steps.data.slice(i * per, (i + 1) * per));
  }
  const noise = new ArrayNoise(noiseArrays);
  const input: GenerateInput = {
    prompt: spec.prompt,
    negativePrompt: spec.negative_prompt ?? '',
    width: spec.width,
    height: spec.height,
    steps: spec.num_inference_steps,
    guidanceScale: spec.guidance_scale,
    strength: spec.strength ?? undefined,
    controlnetScale: spec.controlnet_conditioning_scale ?? undefined,
    schedulerConfig: spec.scheduler,
    noise,
    depthNormalization: 'minmax',
  };
  for (const key of ['depth_map', 'init_image', 'control_image'] as const) {
    const file = spec.inputs[key];
    if (!file) continue;
    const arr = await npy(caseDir, file);
    const image = planar(arr.data, arr.shape);
    if (key === 'depth_map') input.depth = image;
    else if (key === 'init_image') input.initImage = image;
    else input.controlImage = image;
  }
  const output = spec.pipeline === 'depth2img' ? await runDepth2Img(model, input) : await runControlnet(model, input);
  const image = output.image!;
  const expected = await npy(caseDir, spec.expected.image);
  let maxAbs = 0;
  const sameShape = expected.data.length === image.data.length;
  if (sameShape) {
    for (let i = 0; i < expected.data.length; i++) {
      const d = Math.abs(image.data[i]! - expected.data[i]!);
      if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d;
    }
  } else {
    maxAbs = Infinity;
  }
  const notes: string[] = [];
  if (!sameShape) notes.push(`shape ${image.height}x${image.width}, expected ${expected.shape.join('x')}`);
  const ts = output.timesteps;
  if (ts.length !== spec.expected.timesteps.length || ts.some((t, i) => Math.abs(t - spec.expected.timesteps[i]!) > 1e-3)) {
    notes.push(`timesteps [${ts.map((t) => +t.toFixed(3)).join(', ')}] differ from expected [${spec.expected.timesteps.join(', ')}]`);
  }
  if (noise.remaining > 0) notes.push(`${noise.remaining} noise arrays unused`);
  return { name: spec.name, passed: sameShape && maxAbs <= spec.tolerance.image_max_abs, maxAbs, timestepsRun: ts.length, note: notes.join('; ') || undefined, image: image.data };
}

/**
 * The ONNX model folder a case runs: `model` itself, or, when `model` is a diffusers checkpoint
 * (../shared/checkpoints/README.md), the folder built from it and its `controlnet` checkpoint.
 */
async function modelFolder(caseDir: string, spec: CaseJson): Promise<string> {
  const modelDir = resolve(caseDir, spec.model);
  if (!isPipelineCheckpoint(modelDir)) return modelDir;
  const controlnet = spec.controlnet ? { dir: resolve(caseDir, spec.controlnet) } : undefined;
  return (await cachedBuild({ dir: modelDir }, controlnet)).dir;
}

export async function runTokenizerVectors(dir: string, tokenizerDir: string): Promise<{ passed: number; total: number; failures: string[] }> {
  const vectors = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8')) as { text: string; ids: number[] }[];
  const tokenizer = await ClipTokenizer.fromFolder(tokenizerDir);
  const failures: string[] = [];
  for (const v of vectors) {
    const ids = [...tokenizer.encode(v.text)];
    if (ids.length !== v.ids.length || ids.some((id, i) => id !== v.ids[i])) failures.push(JSON.stringify(v.text).slice(0, 60));
  }
  return { passed: vectors.length - failures.length, total: vectors.length, failures };
}

export async function runConformance(dirInput: string, log: (line: string) => void = console.log): Promise<{ passed: number; failed: number }> {
  const dir = resolve(dirInput);
  let passed = 0;
  let failed = 0;
  const models = new Map<string, LoadedModel>();
  const casesDir = join(dir, 'cases');
  const names = existsSync(casesDir) ? (await readdir(casesDir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort() : [];
  let tokenizerDir: string | undefined;
  for (const name of names) {
    const caseDir = join(casesDir, name);
    if (!existsSync(join(caseDir, 'case.json'))) continue;
    try {
      const outcome = await runCase(caseDir, models);
      if (outcome.passed) passed++;
      else failed++;
      log(`${outcome.passed ? 'PASS' : 'FAIL'} ${outcome.name} max_abs=${outcome.maxAbs.toExponential(2)}${outcome.note ? `  (${outcome.note})` : ''}`);
    } catch (err) {
      failed++;
      log(`FAIL ${name} error: ${(err as Error).message}`);
    }
  }
  for (const m of models.values()) tokenizerDir ??= join(m.dir, 'tokenizer');
  await Promise.all([...models.values()].map((m) => m.release()));
  if (existsSync(join(dir, 'tokenizer.json'))) {
    tokenizerDir ??= (await findTokenizerDir(dir));
    try {
      if (!tokenizerDir) throw new Error('no model with a tokenizer/ folder found under models/');
      const t = await runTokenizerVectors(dir, tokenizerDir);
      const ok = t.failures.length === 0;
      if (ok) passed++;
      else failed++;
      log(`${ok ? 'PASS' : 'FAIL'} tokenizer ${t.passed}/${t.total}${ok ? '' : `  (mismatch: ${t.failures.join(', ')})`}`);
    } catch (err) {
      failed++;
      log(`FAIL tokenizer error: ${(err as Error).message}`);
    }
  }
  log(`${passed} passed, ${failed} failed`);
  return { passed, failed };
}

async function findTokenizerDir(dir: string): Promise<string | undefined> {
  const modelsDir = join(dir, 'models');
  if (!existsSync(modelsDir)) return undefined;
  for (const d of await readdir(modelsDir)) {
    if (existsSync(join(modelsDir, d, 'tokenizer', 'vocab.json'))) return join(modelsDir, d, 'tokenizer');
  }
  return undefined;
}
