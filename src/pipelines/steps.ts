/**
 * The steps every depth pipeline shares, each a small function named after its place in the
 * reference pipelines: encode prompt, prepare timesteps, encode image, denoise, decode, preview.
 */
import { DepthcastError } from '../errors.ts';
import type { LoadedModel } from '../models/load.ts';
import type { Scheduler } from '../schedulers/types.ts';
import type { PlanarImage } from './types.ts';
import { float16ToFloat32 } from '../runtime/float16.ts';
import type { Scratch } from '../util/scratch.ts';
import { planarToRgb8Simd, rgb8Staging } from '../image/rgb8.ts';

/** Most prompts of a live session repeat; keep this many embeddings per model. */
const TEXT_CACHE_ENTRIES = 64;

/** One per generation: its stage times, and the key of that generation's stable fp16 feeds (ort.ts). */
export class StageTimer {
  readonly timings: Record<string, number> = {};
  /** Time spent inside session.run, to tell model time from pipeline overhead. */
  sessionMs = 0;

  async time<T>(stage: string, fn: () => Promise<T>, isSession = true): Promise<T> {
    const start = performance.now();
    try {
      return await fn();
    } finally {
      const ms = performance.now() - start;
      this.timings[stage] = (this.timings[stage] ?? 0) + ms;
      if (isSession) this.sessionMs += ms;
    }
  }

  add(stage: string, ms: number): void {
    this.timings[stage] = (this.timings[stage] ?? 0) + ms;
  }
}

/** 1. Encode prompt: tokens → last_hidden_state [77·D], cached per prompt. */
export async function encodePrompt(model: LoadedModel, text: string, timer: StageTimer): Promise<Float32Array> {
  const cached = model.textCache.get(text);
  if (cached) {
    // Refresh recency: Map keeps insertion order.
    model.textCache.delete(text);
    model.textCache.set(text, cached);
    return cached;
  }
  const t0 = performance.now();
  const ids = model.tokenizer.encode(text);
  timer.add('tokenize', performance.now() - t0);
  const out = await timer.time('textEncoder', () =>
    model.sessions.textEncoder.run({ input_ids: { data: ids, dims: [1, ids.length] } }, ['last_hidden_state']),
  );
  const embeds = out.last_hidden_state!.data;
  model.textCache.set(text, embeds);
  if (model.textCache.size > TEXT_CACHE_ENTRIES) model.textCache.delete(model.textCache.keys().next().value!);
  return embeds;
}

/**
 * 2. Prepare timesteps. Img2img keeps the last `floor(steps·strength)` of the schedule, as the
 * reference's get_timesteps does, and tells the scheduler where it starts.
 */
export function prepareTimesteps(scheduler: Scheduler, steps: number, strength?: number): number[] {
  scheduler.setTimesteps(steps);
  const all = [...scheduler.timesteps];
  if (strength === undefined) return all;
  const init = Math.min(Math.floor(steps * strength), steps);
  const tStart = Math.max(steps - init, 0);
  const run = all.slice(tStart * scheduler.order);
  if (run.length === 0) {
    throw new DepthcastError('BAD_REQUEST', `strength ${strength} with ${steps} steps leaves no denoising step; raise strength or steps`);
  }
  scheduler.setBeginIndex(tStart * scheduler.order);
  return run;
}

/** Joined batches kept per first embedding (the negative prompt's, under CFG), newest last. */
const joinedBatches = new WeakMap<Float32Array, { parts: Float32Array[]; joined: Float32Array }[]>();
const JOINED_PER_FIRST = 8;

/**
 * The UNet batch's encoder_hidden_states: the plan's embeddings end to end. Embeddings come from
 * the text cache and are never written, so the joined array is kept for as long as its parts
 * live and reused by every generation with the same prompts (a live stream: each frame). Being
 * immutable, it is also its own `stableFor` key: an fp16 model converts it once, not per frame.
 */
export function concatEmbeddings(list: Float32Array[]): Float32Array {
  const first = list[0]!;
  let kept = joinedBatches.get(first);
  const hit = kept?.find((k) => k.parts.length === list.length && k.parts.every((p, i) => p === list[i]));
  if (hit) return hit.joined;
  const joined = new Float32Array(list.reduce((n, e) => n + e.length, 0));
  let offset = 0;
  for (const e of list) {
    joined.set(e, offset);
    offset += e.length;
  }
  if (!kept) joinedBatches.set(first, (kept = []));
  kept.push({ parts: [...list], joined });
  if (kept.length > JOINED_PER_FIRST) kept.shift();
  return joined;
}

/** Img2img: sf · vae_encoder(2x − 1). */
export async function encodeImage(model: LoadedModel, image: PlanarImage, timer: StageTimer): Promise<Float32Array> {
  const x = new Float32Array(image.data.length);
  for (let i = 0; i < x.length; i++) x[i] = image.data[i]! * 2 - 1;
  const out = await timer.time('vaeEncode', () =>
    model.sessions.vaeEncoder.run({ sample: { data: x, dims: [1, 3, image.height, image.width] } }, ['latent_sample']),
  );
  const latents = out.latent_sample!.data;
  const sf = Math.fround(model.latentScalingFactor);
  const scaled = new Float32Array(latents.length);
  for (let i = 0; i < latents.length; i++) scaled[i] = sf * latents[i]!;
  return scaled;
}

/**
 * 6. Decode: clamp(vae_decoder(latents / sf) / 2 + 0.5, 0, 1) as planar floats, or, for
 * `rgb8`, straight to interleaved bytes (what PNG and the viewport need) without the float image.
 */
export async function decodeLatents(
  model: LoadedModel,
  latents: Float32Array,
  h: number,
  w: number,
  timer: StageTimer,
  output: 'planar' | 'rgb8' = 'planar',
  scratch?: Scratch,
): Promise<{ width: number; height: number; image?: PlanarImage; rgb8?: Uint8Array }> {
  const sf = Math.fround(model.latentScalingFactor);
  const input = new Float32Array(latents.length);
  for (let i = 0; i < latents.length; i++) input[i] = latents[i]! / sf;
  // For bytes from an fp32 decoder, the decoder writes its planes straight into the RGB8
  // converter's memory (see rgb8Staging), saving a 3 MB copy at 512×512.
  const f = model.pixelsPerLatent;
  const staging = output === 'rgb8' && model.sessions.vaeDecoder.output('sample')?.type === 'float32' ? rgb8Staging(h * f * w * f) : undefined;
  const into = staging ? { sample: { data: staging, dims: [1, 3, h * f, w * f] } } : undefined;
  const out = await timer.time('vaeDecode', () =>
    model.sessions.vaeDecoder.run({ latent_sample: { data: input, dims: [1, model.latentChannels, h, w] } }, ['sample'], into),
  );
  const sample = out.sample!;
  const { dims } = sample;
  const width = dims[3]!;
  const height = dims[2]!;
  const t0 = performance.now();
  if (output === 'rgb8') {
    const target = scratch?.rgb8.view(3 * width * height) ?? new Uint8Array(3 * width * height);
    // An fp16 decoder's halves go straight to bytes: no float32 image in between.
    const rgb8 = sample.half ? halfDecoderOutputToRgb8(sample.half, width * height, target) : floatDecoderOutputToRgb8(sample.data, width * height, target);
    timer.add('decodeToRgb8', performance.now() - t0);
    return { width, height, rgb8 };
  }
  const data = sample.data;
  // In place: the output buffer is ours, and a 512×512 copy costs more than the loop.
  for (let i = 0; i < data.length; i++) {
    const v = data[i]! / 2 + 0.5;
    data[i] = v < 0 ? 0 : v > 1 ? 1 : v;
  }
  timer.add('decodeClamp', performance.now() - t0);
  return { width, height, image: { data, width, height, channels: 3 } };
}

/**
 * Decoder output x (planar, about [-1,1]) → interleaved RGB8, byte for byte what the reference
 * pipelines give: numpy's `(clamp(x/2 + 0.5, 0, 1) * 255).round().astype(uint8)`, in float32.
 * A Uint8ClampedArray store clamps to [0, 255] and rounds half to even (numpy's round), and
 * NaN lands on 0; each Math.fround is one float32 operation of the reference. This is also the
 * fastest form measured: no comparisons that mispredict on saturated pixels.
 */
export function decoderOutputToRgb8(data: Float32Array, plane: number, rgb8: Uint8Array = new Uint8Array(plane * 3)): Uint8Array {
  const out = new Uint8ClampedArray(rgb8.buffer, rgb8.byteOffset, rgb8.length);
  const g = plane;
  const b = 2 * plane;
  for (let i = 0, o = 0; i < plane; i++, o += 3) {
    out[o] = Math.fround(Math.fround(data[i]! * 0.5 + 0.5) * 255);
    out[o + 1] = Math.fround(Math.fround(data[g + i]! * 0.5 + 0.5) * 255);
    out[o + 2] = Math.fround(Math.fround(data[b + i]! * 0.5 + 0.5) * 255);
  }
  return rgb8;
}

/**
 * decoderOutputToRgb8, the same bytes: WebAssembly SIMD for all but the last `plane % 16`
 * pixels (src/image/rgb8.ts), this JavaScript for those, or for all where SIMD is missing.
 */
export function floatDecoderOutputToRgb8(data: Float32Array, plane: number, rgb8: Uint8Array = new Uint8Array(plane * 3)): Uint8Array {
  const done = planarToRgb8Simd(data, plane, rgb8);
  if (done === plane) return rgb8;
  // No SIMD here, or an image too large for its memory: read the planes in place, not through a tail copy.
  if (done === 0) return decoderOutputToRgb8(data, plane, rgb8);
  const rest = plane - done;
  const tail = new Float32Array(3 * rest);
  for (let c = 0; c < 3; c++) tail.set(data.subarray(c * plane + done, (c + 1) * plane), c * rest);
  decoderOutputToRgb8(tail, rest, rgb8.subarray(3 * done));
  return rgb8;
}

/** The byte decoderOutputToRgb8 gives for each of the 65536 half values, built on first use. */
let halfToByte: Uint8Array | undefined;

function halfByteTable(): Uint8Array {
  if (!halfToByte) {
    const all = new Uint16Array(65536);
    for (let h = 0; h < 65536; h++) all[h] = h;
    // Pixel h's red value is half h (green and blue stay 0): its red byte is the entry for h.
    const planes = new Float32Array(3 * 65536);
    float16ToFloat32(all, planes.subarray(0, 65536));
    const rgb = decoderOutputToRgb8(planes, 65536);
    halfToByte = new Uint8Array(65536);
    for (let h = 0; h < 65536; h++) halfToByte[h] = rgb[h * 3]!;
  }
  return halfToByte;
}

/** decoderOutputToRgb8 for an fp16 decoder's output: the same bytes, by table, from the halves. */
export function halfDecoderOutputToRgb8(half: Uint16Array, plane: number, rgb8: Uint8Array = new Uint8Array(plane * 3)): Uint8Array {
  const table = halfByteTable();
  const g = plane;
  const b = 2 * plane;
  for (let i = 0, o = 0; i < plane; i++, o += 3) {
    rgb8[o] = table[half[i]!]!;
    rgb8[o + 1] = table[half[g + i]!]!;
    rgb8[o + 2] = table[half[b + i]!]!;
  }
  return rgb8;
}

/**
 * Linear latent→RGB approximation for step previews: per-channel weights fitted to the
 * Stable Diffusion 1.x/2.x VAE's latent space (the same 4-channel space for both).
 */
const LATENT_RGB = [
  [0.3512, 0.2297, 0.3227],
  [0.325, 0.4974, 0.235],
  [-0.2829, 0.1762, 0.2721],
  [-0.212, -0.2616, -0.7177],
];

/** Interleaved RGB8 at latent resolution; costs one pass over the latents. */
export function latentPreview(latents: Float32Array, h: number, w: number): { rgb: Uint8Array; width: number; height: number } {
  const plane = h * w;
  const rgb = new Uint8Array(plane * 3);
  const [c0, c1, c2, c3] = LATENT_RGB as [number[], number[], number[], number[]];
  // Straight-line per channel (the nested-array version took ~0.4 ms per 64×64 preview).
  for (let k = 0; k < 3; k++) {
    const w0 = c0[k]!;
    const w1 = c1[k]!;
    const w2 = c2[k]!;
    const w3 = c3[k]!;
    for (let i = 0, o = k; i < plane; i++, o += 3) {
      const v = latents[i]! * w0 + latents[plane + i]! * w1 + latents[2 * plane + i]! * w2 + latents[3 * plane + i]! * w3;
      // (v + 1) / 2 · 255, rounded half up (as Math.round) and clamped; NaN lands on 0.
      const t = Math.floor((v + 1) * 127.5 + 0.5);
      rgb[o] = t >= 255 ? 255 : t > 0 ? t : 0;
    }
  }
  return { rgb, width: w, height: h };
}

/** Preview through the model's tiny decoder (vae_decoder_tiny/), when the folder has one. */
export async function tinyDecoderPreview(model: LoadedModel, latents: Float32Array, h: number, w: number, timer: StageTimer) {
  const sf = Math.fround(model.latentScalingFactor);
  const input = new Float32Array(latents.length);
  for (let i = 0; i < latents.length; i++) input[i] = latents[i]! / sf;
  const out = await timer.time('preview', () =>
    model.sessions.tinyDecoder!.run({ latent_sample: { data: input, dims: [1, model.latentChannels, h, w] } }, ['sample']),
  );
  const { data, dims } = out.sample!;
  const H = dims[2]!;
  const W = dims[3]!;
  const plane = H * W;
  const rgb = new Uint8Array(plane * 3);
  for (let i = 0; i < plane; i++) {
    for (let k = 0; k < 3; k++) rgb[i * 3 + k] = Math.min(Math.max(Math.round((data[k * plane + i]! / 2 + 0.5) * 255), 0), 255);
  }
  return { rgb, width: W, height: H };
}

/** Planar [3,H,W] floats in [0,1] → interleaved RGB8 as numpy_to_pil: `(x * 255).round()` in float32, half to even. */
export function toRgb8(image: PlanarImage): Uint8Array {
  const plane = image.width * image.height;
  const bytes = new Uint8Array(plane * 3);
  const out = new Uint8ClampedArray(bytes.buffer);
  const data = image.data;
  // Plane by plane keeps the reads contiguous; the clamped store rounds half to even, as numpy.
  for (let c = 0; c < 3; c++) {
    const base = c * plane;
    for (let i = 0, o = c; i < plane; i++, o += 3) out[o] = Math.fround(data[base + i]! * 255);
  }
  return bytes;
}
