/**
 * The diffusers ONNX model layout depthcast loads (../shared/conformance/README.md §1),
 * declared as data: component name → file inside the model folder.
 */
export const SESSION_FILES = {
  text_encoder: 'text_encoder/model.onnx',
  unet: 'unet/model.onnx',
  vae_encoder: 'vae_encoder/model.onnx',
  vae_decoder: 'vae_decoder/model.onnx',
  controlnet: 'controlnet/model.onnx',
  /** Optional TAESD-style decoder used only for step previews. */
  vae_decoder_tiny: 'vae_decoder_tiny/model.onnx',
} as const;

export type ComponentName = keyof typeof SESSION_FILES;

export const REQUIRED_FILES = [
  'model_index.json',
  'scheduler/scheduler_config.json',
  'tokenizer/vocab.json',
  'tokenizer/merges.txt',
  SESSION_FILES.text_encoder,
  SESSION_FILES.unet,
  SESSION_FILES.vae_encoder,
  SESSION_FILES.vae_decoder,
] as const;

export type ModelFamily = 'depth2img' | 'controlnet';

/** Which family a model_index `_class_name` (plus the presence of controlnet/) means; null = not a depth model. */
export function familyOf(className: string, hasControlnet: boolean): ModelFamily | null {
  if (/Depth2Img/i.test(className)) return 'depth2img';
  if (hasControlnet || /ControlNet/i.test(className)) return 'controlnet';
  return null;
}

/** Optional `depthcast.json` in a model folder: explicit names where a published export differs. */
export interface DepthcastModelConfig {
  /** The registry entry's defaults (written at install): used when the user names none. */
  defaults?: {
    steps?: number;
    guidance?: number;
    /** A wire name (dpmpp-2m) or a diffusers class name (DPMSolverMultistepScheduler). */
    scheduler?: string;
  };
  /** For exports without vae_decoder/config.json (written at install from the registry entry). */
  vae?: {
    scaling_factor?: number;
  };
  controlnet?: {
    /** ControlNet output name → UNet input name. */
    outputs?: Record<string, string>;
  };
}
