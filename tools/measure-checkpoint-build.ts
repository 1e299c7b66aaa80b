/**
 * Measures the checkpoint builder on a random-weight checkpoint with Stable Diffusion 1.5's real
 * sizes (UNet, CLIP ViT-L text encoder, VAE; float32 files, 4.3 GB) as a depth2img pipeline (one
 * more UNet input channel), or with SD 1.5's ControlNet (1.4 GB more) when `--controlnet` is given. Run under `/usr/bin/time -v` for the peak RSS:
 *
 *   nice -n 10 /usr/bin/time -v npx tsx tools/measure-checkpoint-build.ts <scratch dir> [--controlnet]
 *
 * It writes the checkpoint (not timed), builds it (timed), prints the figures, and deletes both.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { buildFromCheckpoint } from '../src/checkpoint/build.ts';
import { clipTextConfig, controlnetConfig, unetConfig, vaeConfig, writeSyntheticControlnet, writeSyntheticPipeline } from '../src/checkpoint/synthetic.ts';
import { tinyTokenizerFiles } from '../src/tiny/tokenizer-files.ts';

const [scratch, flag] = process.argv.slice(2);
if (!scratch) throw new Error('usage: measure-checkpoint-build.ts <scratch dir> [--controlnet]');
const src = join(scratch, 'checkpoint');
const cn = join(scratch, 'controlnet');
const out = join(scratch, 'built');
try {
  const t0 = performance.now();
  const withCn = flag === '--controlnet';
  const pipeline = withCn
    ? { className: 'StableDiffusionPipeline' as const, unet: unetConfig() }
    : { className: 'StableDiffusionDepth2ImgPipeline' as const, unet: unetConfig({ in_channels: 5 }) };
  let bytes = await writeSyntheticPipeline(src, { ...pipeline, text: clipTextConfig(), vae: vaeConfig(), tokenizer: tinyTokenizerFiles() }, { seed: 1 });
  if (withCn) bytes += await writeSyntheticControlnet(cn, controlnetConfig(), { seed: 2 });
  const t1 = performance.now();
  const rssBefore = process.memoryUsage().rss;
  let peakSampled = rssBefore;
  const timer = setInterval(() => (peakSampled = Math.max(peakSampled, process.memoryUsage().rss)), 50);
  await buildFromCheckpoint({ dir: src }, withCn ? { dir: cn } : undefined, out);
  clearInterval(timer);
  const t2 = performance.now();
  console.log(JSON.stringify({ weightBytes: bytes, writeSeconds: +((t1 - t0) / 1000).toFixed(1), buildSeconds: +((t2 - t1) / 1000).toFixed(1), peakRssSampledBytes: peakSampled }));
} finally {
  await rm(scratch, { recursive: true, force: true });
}
