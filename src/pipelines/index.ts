import type { LoadedModel } from '../models/load.ts';
import { runControlnet } from './controlnet.ts';
import { runDepth2Img } from './depth2img.ts';
import type { GenerateInput, GenerateOutput } from './types.ts';

export type { GenerateInput, GenerateOutput, PlanarImage, RegionPrompt, StepEvent } from './types.ts';

/** Runs the pipeline of the model's family. */
export function generate(model: LoadedModel, input: GenerateInput): Promise<GenerateOutput> {
  return model.family === 'depth2img' ? runDepth2Img(model, input) : runControlnet(model, input);
}
