/**
 * Everything a frame must pass before it is queued, shared by WebSocket and HTTP: limits,
 * byte counts of each payload part, layout shape, model naming and a scan of the depth values.
 * Payload parts stay views of the received bytes.
 */
import { DepthcastError } from '../src/errors.ts';
import { checkLimit } from '../src/protocol/limits.ts';
import type { FrameHeader, Limits } from '../src/protocol/schemas.ts';
import { checkRequestedSize } from '../src/pipelines/sizing.ts';
import { BYTES_PER_SAMPLE, type ScannedDepth, scanDepth } from '../src/depth/scan.ts';
import type { FlowField } from '../src/motion/flow.ts';
import { checkMotionHeader, decodeFlow } from '../src/motion/wire.ts';

export interface Frame {
  header: FrameHeader;
  depth: ScannedDepth;
  init?: Uint8Array;
  layout?: Uint8Array;
  /** Decoded, checked flow to the previous frame (header.motion kind "flow"); owned. */
  flow?: FlowField;
  /** The flow's bytes as received (a view), for the engine's consistent mode. */
  motion?: Uint8Array;
  /** performance.now() when the bytes arrived. */
  receivedAt: number;
}

export interface FrameParts {
  depth: Uint8Array;
  init?: Uint8Array;
  layout?: Uint8Array;
  motion?: Uint8Array;
}

/** Clients name models from GET /v1/models; anything path-like is refused outright. */
export function checkModelName(name: string | undefined): void {
  if (name !== undefined && (/[/\\]/.test(name) || name.startsWith('.') || name.includes(':'))) {
    throw new DepthcastError('BAD_REQUEST', `params.model must be a model name from GET /v1/models, not a path (got ${JSON.stringify(name)})`);
  }
}

function checkParams(header: FrameHeader, limits: Limits): void {
  const { params, depth } = header;
  checkLimit('params.prompt', params.prompt.length, limits.maxPromptChars, 'characters');
  checkLimit('params.negativePrompt', params.negativePrompt.length, limits.maxPromptChars, 'characters');
  if (params.steps !== undefined) checkLimit('params.steps', params.steps, limits.maxSteps, 'steps');
  // The requested size is the output size; the generated size follows from the model's
  // (src/pipelines/sizing.ts), so only sizing "exact" meets the generation limit here.
  checkRequestedSize(params, depth, limits);
  checkModelName(params.model);
}

/** Splits the payload into depth | init | layout by the header's byte lengths; every byte must be accounted for. */
function splitPayload(header: FrameHeader, payload: Uint8Array): FrameParts {
  const { depth, init, layout } = header;
  const flow = header.motion?.kind === 'flow' ? header.motion : undefined;
  const expected = depth.byteLength + (init?.byteLength ?? 0) + (layout?.byteLength ?? 0) + (flow?.byteLength ?? 0);
  if (expected !== payload.byteLength) {
    throw new DepthcastError('BAD_FRAME', `payload has ${payload.byteLength} bytes but the header's byteLengths add up to ${expected} (depth ${depth.byteLength}${init ? ` + init ${init.byteLength}` : ''}${layout ? ` + layout ${layout.byteLength}` : ''}${flow ? ` + motion ${flow.byteLength}` : ''})`);
  }
  let offset = depth.byteLength;
  const parts: FrameParts = { depth: payload.subarray(0, offset) };
  if (init) parts.init = payload.subarray(offset, (offset += init.byteLength));
  if (layout) parts.layout = payload.subarray(offset, (offset += layout.byteLength));
  if (flow) parts.motion = payload.subarray(offset, (offset += flow.byteLength));
  return parts;
}

/** Checks a frame header against the limits and itself (sizes, byte counts, regions, params). */
function checkHeader(header: FrameHeader, limits: Limits): void {
  const { depth, init, layout } = header;
  const pixels = depth.width * depth.height;
  checkLimit(`depth ${depth.width}×${depth.height}`, pixels, limits.maxDepthPixels, 'pixels');
  const depthBytes = pixels * BYTES_PER_SAMPLE[depth.dtype];
  if (depth.byteLength !== depthBytes) {
    throw new DepthcastError('BAD_FRAME', `depth.byteLength is ${depth.byteLength}, expected ${depth.width}×${depth.height} ${depth.dtype} = ${depthBytes} bytes`);
  }
  if (init?.format === 'rgba8') {
    if (!init.width || !init.height) throw new DepthcastError('BAD_FRAME', 'an rgba8 init image needs init.width and init.height');
    checkLimit(`init image ${init.width}×${init.height}`, init.width * init.height, limits.maxDepthPixels, 'pixels');
    if (init.byteLength !== init.width * init.height * 4) {
      throw new DepthcastError('BAD_FRAME', `init.byteLength is ${init.byteLength}, expected ${init.width}×${init.height}×4 = ${init.width * init.height * 4}`);
    }
  } else if (init && init.byteLength === 0) {
    throw new DepthcastError('BAD_IMAGE', 'init image is empty (byteLength 0)');
  }
  if (layout) {
    if (layout.width !== depth.width || layout.height !== depth.height) {
      throw new DepthcastError('BAD_LAYOUT', `layout map is ${layout.width}×${layout.height} but the depth is ${depth.width}×${depth.height}; send them at the same size`);
    }
    if (layout.byteLength !== pixels * 2) throw new DepthcastError('BAD_FRAME', `layout.byteLength is ${layout.byteLength}, expected ${pixels} u16 ids = ${pixels * 2} bytes`);
    const compose = header.params.regions?.composeFromLabels ?? false;
    let regions = 0;
    for (const o of layout.objects) {
      if (o.prompt !== undefined) checkLimit(`layout object ${o.id} prompt`, o.prompt.length, limits.maxPromptChars, 'characters');
      if (o.prompt || compose) regions++;
    }
    checkLimit('layout regions with prompts', regions, limits.maxRegions, 'regions');
  }
  checkMotionHeader(header.motion, depth.width, depth.height);
  checkParams(header, limits);
}

/**
 * A depth map that is one value everywhere has no geometry to stretch over the model's range
 * (depthRange "auto", the default): refused here, before `accepted`, not by the engine later.
 */
function checkNotConstant(header: FrameHeader, depth: ScannedDepth): void {
  const { foreground } = depth;
  const everywhere = foreground.count === header.depth.width * header.depth.height;
  if (everywhere && foreground.min === foreground.max && (header.params.depthRange ?? 'auto') === 'auto') {
    throw new DepthcastError('BAD_DEPTH', `depth is ${foreground.min} at every pixel; depthRange "auto" needs some depth variation (or send depthRange "fixed")`);
  }
}

function toFrame(header: FrameHeader, parts: FrameParts, receivedAt: number): Frame {
  const frame: Frame = { header, depth: scanDepth(parts.depth, header.depth, header.mode === 'live'), receivedAt };
  checkNotConstant(header, frame.depth);
  if (parts.init) frame.init = parts.init;
  if (parts.layout) frame.layout = parts.layout;
  if (header.motion?.kind === 'flow') {
    if (!parts.motion) throw new DepthcastError('BAD_FRAME', 'motion kind "flow" needs its bytes in the payload');
    frame.flow = decodeFlow(header.motion, parts.motion);
    frame.motion = parts.motion;
  }
  return frame;
}

/** A binary WebSocket frame: header plus one payload holding depth | init | layout. */
export function intakeFrame(header: FrameHeader, payload: Uint8Array, limits: Limits, receivedAt = performance.now()): Frame {
  checkHeader(header, limits);
  return toFrame(header, splitPayload(header, payload), receivedAt);
}

/** An HTTP request: the parts arrive separately; the header's byteLengths must match them. */
export function intakeParts(header: FrameHeader, parts: FrameParts, limits: Limits, receivedAt = performance.now()): Frame {
  checkHeader(header, limits);
  const given = { depth: parts.depth.byteLength, init: parts.init?.byteLength, layout: parts.layout?.byteLength };
  const declared = { depth: header.depth.byteLength, init: header.init?.byteLength, layout: header.layout?.byteLength };
  for (const key of ['depth', 'init', 'layout'] as const) {
    if (given[key] !== declared[key]) throw new DepthcastError('BAD_FRAME', `${key} has ${given[key] ?? 0} bytes, expected ${declared[key] ?? 0}`);
  }
  return toFrame(header, parts, receivedAt);
}
