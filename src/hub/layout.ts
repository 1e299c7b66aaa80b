/** The model-folder layout of /work/shared/conformance/README.md §1, as file names. */

export const REQUIRED_COMPONENTS = ['text_encoder', 'unet', 'vae_encoder', 'vae_decoder'] as const;
/** `controlnet/` only in ControlNet models; `vae_decoder_tiny/` is an optional preview decoder. */
export const OPTIONAL_COMPONENTS = ['controlnet', 'vae_decoder_tiny'] as const;
export const COMPONENTS = [...REQUIRED_COMPONENTS, ...OPTIONAL_COMPONENTS] as const;
export type Component = (typeof COMPONENTS)[number];

export const REQUIRED_FILES = ['model_index.json', 'scheduler/scheduler_config.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt'] as const;
export const OPTIONAL_FILES = ['depthcast.json', 'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json'] as const;

export const CONTROLNET_PIPELINE = 'StableDiffusionControlNetPipeline';
export const DEPTH2IMG_PIPELINE = 'StableDiffusionDepth2ImgPipeline';

export function componentOnnx(c: Component): string {
  return `${c}/model.onnx`;
}

/** True when a parsed model_index.json describes a ControlNet model. */
export function isControlnetIndex(index: unknown): boolean {
  if (!index || typeof index !== 'object') return false;
  const o = index as Record<string, unknown>;
  const entry = o.controlnet;
  return o._class_name === CONTROLNET_PIPELINE || (Array.isArray(entry) && entry[0] !== null && entry[0] !== undefined);
}

/** model_index.json of a base model turned into a ControlNet model's. */
export function controlnetIndexFrom(index: unknown): Record<string, unknown> {
  const o = index && typeof index === 'object' ? { ...(index as Record<string, unknown>) } : {};
  o._class_name = CONTROLNET_PIPELINE;
  o.controlnet = ['diffusers', 'OnnxRuntimeModel'];
  return o;
}
