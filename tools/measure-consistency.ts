/**
 * Consistent vs per-frame mode on the three analytic scenes with a tiny model: mean warp error,
 * worst pair, fidelity (edge alignment), and side-by-side frames. Writes a JSON summary and PNGs
 * into the output folder. Usage:
 *   node --import tsx tools/measure-consistency.ts <tiny-model-dir> <out-dir> [frames] [steps] [strength] [scheduler] [image|latents] [fusion weight] [feather]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadModel } from '../src/models/load.ts';
import { movingObjectScene, orbitScene, panScene } from '../src/motion/scenes.ts';
import { runSequence, scoreSequence } from '../src/motion/sequence.ts';
import { renderScorePlot } from '../src/motion/plot.ts';
import { schedulerConfigFor } from '../src/schedulers/index.ts';
import { DEFAULT_PIXEL_FUSION, planConsistentFrame } from '../src/motion/consistent.ts';
import { warpError } from '../src/motion/flow.ts';
import { decodeLatents, StageTimer } from '../src/pipelines/steps.ts';

const [modelDir, outDir, framesArg = '6', stepsArg = '12', strengthArg = '0.6', schedulerArg = '', sourceArg = 'latents', fusionArg, featherArg] = process.argv.slice(2);
if (!modelDir || !outDir) throw new Error('usage: measure-consistency <tiny-model-dir> <out-dir> [frames] [steps] [strength] [scheduler]');
const count = Number(framesArg);
const fusion = { weight: fusionArg ? Number(fusionArg) : DEFAULT_PIXEL_FUSION.weight, feather: featherArg ? Number(featherArg) : DEFAULT_PIXEL_FUSION.feather };
const size = 64;
const model = await loadModel(modelDir, { device: 'cpu' });
await mkdir(outDir, { recursive: true });

function rgb(image: Float32Array, w: number, h: number): Buffer {
  const out = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(Math.min(1, Math.max(0, image[c * w * h + i]!)) * 255);
  return out;
}

const summary: Record<string, unknown>[] = [];
for (const scene of [panScene(count, size, size), movingObjectScene(count, size, size), orbitScene(count, size, size)]) {
  const base = {
    prompt: 'a wooden box on a floor', width: size, height: size, steps: Number(stepsArg), guidanceScale: 7.5, seed: 42,
    ...(schedulerArg ? { schedulerConfig: schedulerConfigFor(schedulerArg, model.schedulerConfig) } : {}),
  };
  const row: Record<string, unknown> = { scene: scene.name };
  const strips: Buffer[] = [];
  const series: { label: string; score: ReturnType<typeof scoreSequence> }[] = [];
  const shown = Math.min(count, 5);
  for (const mode of ['per-frame', 'consistent'] as const) {
    const run = await runSequence(model, scene.frames, { base, mode, strength: Number(strengthArg), near: scene.near, far: scene.far, source: sourceArg as 'image' | 'latents', fusion });
    const score = scoreSequence(run.images, scene.frames, size, size);
    row[mode] = { meanError: score.meanError, worst: score.worst, meanFidelity: score.meanFidelity, pairs: score.pairs, fallbacks: run.fallbacks };
    series.push({ label: mode, score });
    if (mode === 'consistent') {
      // The floor of any latent-space method: the previous latents moved perfectly and decoded,
      // against the previous image moved in pixels. The VAE decoder sets it, not the generation.
      let floor = 0;
      for (const p of score.pairs) {
        const frame = scene.frames[p.frame]!;
        const prev = { image: run.images[p.frame - 1]!, depth: scene.frames[p.frame - 1]!.depth, width: size, height: size, draws: [], latents: run.latents[p.frame - 1]! };
        const plan = planConsistentFrame(prev, frame.motion!.flow, frame.motion!.expectedPrevious ?? frame.depth, model.pixelsPerLatent, 'latents');
        const decoded = await decodeLatents(model, plan.latentBlend.initLatents!, size / 8, size / 8, new StageTimer(), 'planar');
        floor += warpError(decoded.image!.data, plan.initImage.data, 3, plan.valid).error;
      }
      row.latentFloor = floor / score.pairs.length;
      console.log(`${scene.name}: floor of a perfect latent warp ${(row.latentFloor as number).toFixed(4)}`);
    }
    // One row of the first frames per mode, at their own size (the docs keep small PNGs).
    strips.push(await sharp({ create: { width: size * shown, height: size, channels: 3, background: '#000' } })
      .composite(run.images.slice(0, shown).map((img, i) => ({ input: rgb(img, size, size), raw: { width: size, height: size, channels: 3 as const }, left: i * size, top: 0 })))
      .raw().toBuffer());
  }
  await writeFile(join(outDir, `${scene.name}-score.png`), await renderScorePlot(series, `${scene.name}: warp error per frame pair`));
  await sharp({ create: { width: size * shown, height: size * 2 + 2, channels: 3, background: '#fff' } })
    .composite(strips.map((s, i) => ({ input: s, raw: { width: size * shown, height: size, channels: 3 as const }, left: 0, top: i * (size + 2) })))
    .png({ compressionLevel: 9, palette: true }).toFile(join(outDir, `${scene.name}-frames.png`));
  const pf = row['per-frame'] as { meanError: number; meanFidelity: number };
  const cs = row.consistent as { meanError: number; meanFidelity: number };
  row.errorRatio = cs.meanError / pf.meanError;
  row.fidelityRatio = cs.meanFidelity / pf.meanFidelity;
  summary.push(row);
  const disoccluded = (m: string) => {
    const pairs = (row[m] as { pairs: { disoccludedDifference: number }[] }).pairs;
    return pairs.reduce((t, p) => t + p.disoccludedDifference, 0) / pairs.length;
  };
  row.disoccludedDifference = { 'per-frame': disoccluded('per-frame'), consistent: disoccluded('consistent') };
  console.log(`${scene.name}: disoccluded |I - warp| per-frame ${disoccluded('per-frame').toFixed(4)} consistent ${disoccluded('consistent').toFixed(4)}`);
  console.log(`${scene.name}: warp error per-frame ${pf.meanError.toFixed(4)} consistent ${cs.meanError.toFixed(4)} (ratio ${(row.errorRatio as number).toFixed(3)}); fidelity ${pf.meanFidelity.toFixed(3)} vs ${cs.meanFidelity.toFixed(3)} (ratio ${(row.fidelityRatio as number).toFixed(3)})`);
}
await writeFile(join(outDir, 'summary.json'), JSON.stringify(summary, null, 2));
