/**
 * The I/O check of `models verify`: load the model on the requested device and run one tiny
 * generation through every component (text encoder, VAE encoder via an init image, UNet and
 * ControlNet with classifier-free guidance, VAE decoder), so verify never says ok about a model
 * that generate then refuses. The size is the smallest the UNet declares it takes (64×64 pixels
 * when its sizes are free).
 */
import { DepthcastError } from '../errors.ts';
import { generate } from '../pipelines/index.ts';
import type { GenerateInput } from '../pipelines/types.ts';
import type { Device } from '../runtime/ort.ts';
import { loadModel, type LoadedModel } from './load.ts';

/** The pixel size a dry run uses: the UNet's fixed latent size if it declares one, else 8 latent pixels a side. */
function dryRunSize(model: LoadedModel): { width: number; height: number } {
  const shape = model.sessions.unet.input('sample')!.shape;
  const side = (d: number | string | undefined) => (typeof d === 'number' && d > 0 ? d : 8) * model.pixelsPerLatent;
  return { width: side(shape[3]), height: side(shape[2]) };
}

/** Whether the UNet's batch is fixed at 1 (no room for the unconditional half of CFG). */
function batchOfOne(model: LoadedModel): boolean {
  return model.sessions.unet.input('sample')!.shape[0] === 1;
}

export async function dryRunModel(dir: string, device: Device = 'cpu'): Promise<{ ok: boolean; problems: string[] }> {
  let model: LoadedModel | undefined;
  try {
    model = await loadModel(dir, { device });
    const { width, height } = dryRunSize(model);
    const plane = width * height;
    const input: GenerateInput = {
      prompt: 'a dry run',
      width,
      height,
      steps: 1,
      guidanceScale: batchOfOne(model) ? 1 : 2,
      seed: 1,
      initImage: { data: new Float32Array(3 * plane).fill(0.5), width, height, channels: 3 },
      strength: 1,
    };
    const ramp = Float32Array.from({ length: plane }, (_, i) => (i % width) / width);
    if (model.family === 'depth2img') input.depth = { data: ramp, width, height, channels: 1 };
    else input.controlImage = { data: ramp, width, height, channels: 1 };
    await generate(model, input);
    return { ok: true, problems: [] };
  } catch (err) {
    if (err instanceof DepthcastError && Array.isArray(err.details?.problems)) return { ok: false, problems: err.details.problems as string[] };
    const e = err as Error;
    return { ok: false, problems: [`dry run${model ? ` (${model.device})` : ''}: ${e instanceof DepthcastError ? `${e.code}: ` : ''}${e.message}`] };
  } finally {
    await model?.release();
  }
}
