/**
 * `depthcast bench --sd-unet sd15|sd2-depth`: the model's own time, per denoising step, for a
 * UNet of Stable Diffusion's real architecture and size (tools/bench/sd-unet.ts) on the requested
 * device, at the sizes a 512² image with CFG runs: sample [2,C,64,64], text [2,77,D]. The
 * regular bench's models have SD's I/O shapes but trivial compute; this is the other half.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Device, openSession } from '../../src/runtime/ort.ts';
import { buildSdUnet, SD15_UNET, SD2_DEPTH_UNET, type UnetArchitecture } from './sd-unet.ts';
import { median, round } from './stats.ts';

export const SD_UNET_ARCHITECTURES: Record<string, UnetArchitecture> = { sd15: SD15_UNET, 'sd2-depth': SD2_DEPTH_UNET };

/** Published figures to read ours against (other hardware and runtimes: a reference, not a goal). */
export const PUBLISHED_REFERENCES = [
  'SD-Turbo, 1 step at 512², about 37 ms end to end with the ORT CUDA EP on an RTX 4090',
  'SD 1.5, 50 steps at 512², about 0.57 s on an H100 (about 11 ms per step)',
];

export interface SdUnetFigures {
  architecture: string;
  dtype: 'fp32' | 'fp16';
  device: string;
  params: number;
  modelBytes: number;
  sample: number[];
  createMs: number;
  firstRunMs: number;
  /** Median of the timed runs: one denoising step of the UNet with the CFG batch of 2. */
  perStepMs: number;
  runsMs: number[];
  rssGiB: number;
  references: string[];
}

/** `latent` and `widthScale` make a small twin for tests; the bench runs the real size (64, 1). */
export async function benchSdUnet(architecture: string, dtype: 'fp32' | 'fp16', device: Device, runs: number, latent = 64, widthScale = 1): Promise<SdUnetFigures> {
  const arch = SD_UNET_ARCHITECTURES[architecture];
  if (!arch) throw new Error(`unknown UNet architecture "${architecture}"; choose ${Object.keys(SD_UNET_ARCHITECTURES).join(' or ')}`);
  const built = buildSdUnet(arch, dtype, widthScale);
  const dir = mkdtempSync(join(tmpdir(), 'depthcast-sd-unet-'));
  try {
    const path = join(dir, 'model.onnx');
    writeFileSync(path, built.bytes);
    let t = performance.now();
    const session = await openSession('unet', path, device);
    const createMs = performance.now() - t;
    const sample = [2, arch.inChannels, latent, latent];
    const feeds = {
      sample: { data: new Float32Array(sample.reduce((a, b) => a * b, 1)).fill(0.5), dims: sample },
      timestep: { data: 500, dims: [2] },
      encoder_hidden_states: { data: new Float32Array(2 * 77 * arch.crossAttentionDim).fill(0.1), dims: [2, 77, arch.crossAttentionDim] },
    };
    t = performance.now();
    await session.run(feeds);
    const firstRunMs = performance.now() - t;
    const runsMs: number[] = [];
    for (let i = 0; i < runs; i++) {
      t = performance.now();
      await session.run(feeds);
      runsMs.push(round(performance.now() - t));
    }
    const rssGiB = round(process.memoryUsage().rss / 2 ** 30, 2);
    await session.release();
    return {
      architecture: arch.name, dtype, device: session.device, params: built.params, modelBytes: built.bytes.length, sample,
      createMs: round(createMs), firstRunMs: round(firstRunMs), perStepMs: round(median(runsMs)), runsMs, rssGiB, references: PUBLISHED_REFERENCES,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
