/**
 * Every message of the depthcast wire protocol, as zod schemas. Server, CLI and the preview page
 * import this one module; TypeScript types come from z.infer. Bump PROTOCOL_VERSION on any
 * incompatible change. docs/protocol.md is the prose version of this file.
 */
import { z } from 'zod';
import { WIRE_BOUNDS } from './limits.ts';

export const PROTOCOL_VERSION = 1;

export const JobId = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'jobId: 1-64 characters of A-Z a-z 0-9 _ . : -');
export const StreamName = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'stream: 1-64 characters of A-Z a-z 0-9 _ . : -');

export const SCHEDULER_NAMES = ['ddim', 'pndm', 'euler', 'euler-a', 'dpmpp-2m', 'dpmpp-2m-karras', 'lcm'] as const;
export const SchedulerName = z.enum(SCHEDULER_NAMES);
export type SchedulerName = z.infer<typeof SchedulerName>;
/**
 * diffusers class names: results report the model's own scheduler by its class when a frame
 * named none, and sending that back means the same thing (the model's scheduler_config.json).
 */
export const SCHEDULER_CLASS_NAMES = [
  'DDIMScheduler', 'PNDMScheduler', 'EulerDiscreteScheduler', 'EulerAncestralDiscreteScheduler', 'DPMSolverMultistepScheduler', 'LCMScheduler',
] as const;
export const SchedulerParam = z.union([SchedulerName, z.enum(SCHEDULER_CLASS_NAMES)]);

export const DEVICE_NAMES = ['auto', 'cpu', 'cuda', 'dml', 'webgpu', 'coreml'] as const;
export const DeviceName = z.enum(DEVICE_NAMES);

/** How linear depth becomes the model's near-is-high conditioning (docs/depth.md). */
export const DepthRange = z.enum(['fixed', 'auto']);

export const RegionOptions = z.object({
  /** Objects without their own prompt get "<label>" as a prompt instead of the global prompt. */
  composeFromLabels: z.boolean().default(false),
  /** Soft edge width of region masks, in latent pixels. */
  feather: z.number().min(0).max(16).default(2),
}).strict();

/** How step previews travel: JPEG, or raw RGB8 (width·height·3 bytes), which skips the encoder and the client's decoder. */
export const PreviewFormat = z.enum(['jpeg', 'rgb8']);
export type PreviewFormat = z.infer<typeof PreviewFormat>;

/**
 * How the finished image travels: png, with the parameters in its text chunks (what is saved), or
 * raw RGB8 (width·height·3 bytes, rows top to bottom) for live viewers, which skips the PNG writer
 * and the client's decoder.
 */
export const ResultFormat = z.enum(['png', 'rgb8']);
export type ResultFormat = z.infer<typeof ResultFormat>;

export const SizingMode = z.enum(['native', 'exact']);

export const GenerationParams = z.object({
  /** A model name from the service's registry (GET /v1/models). Never a path. */
  model: z.string().min(1).max(WIRE_BOUNDS.modelNameChars).optional(),
  prompt: z.string().max(WIRE_BOUNDS.promptChars),
  negativePrompt: z.string().max(WIRE_BOUNDS.promptChars).default(''),
  /** Output size (any size within maxOutputPixels); defaults to the depth frame's size. One side alone keeps the depth's aspect. */
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
  /**
   * native (default): generate at the model's native pixel count with the output's aspect, then
   * upscale to the output size (sharp). exact: generate at the output size itself (multiples
   * of 8, within maxGenerationPixels). See src/pipelines/sizing.ts.
   */
  sizing: SizingMode.default('native'),
  steps: z.number().int().min(1).max(WIRE_BOUNDS.steps).optional(),
  guidance: z.number().min(0).max(50).optional(),
  /** Img2img strength in (0,1]; only used with an init image. */
  strength: z.number().gt(0).max(1).optional(),
  /** Unsigned 32-bit seed; omitted = random (the result reports the seed used). */
  seed: z.number().int().min(0).max(0xffffffff).optional(),
  scheduler: SchedulerParam.optional(),
  controlnetScale: z.number().min(0).max(4).optional(),
  /** auto: per-frame min/max, as the reference does (default). fixed: map near..far, steady across frames. */
  depthRange: DepthRange.default('auto'),
  /** Send a preview every N steps (0 = none). */
  previewEvery: z.number().int().min(0).max(1000).default(1),
  /** jpeg (default), or rgb8: raw interleaved RGB bytes, rows top to bottom, with nothing to encode or decode. */
  previewFormat: PreviewFormat.default('jpeg'),
  /** png (default), or rgb8: raw interleaved RGB bytes, rows top to bottom. WebSocket only: HTTP and batch runs always give PNG. */
  resultFormat: ResultFormat.default('png'),
  regions: RegionOptions.optional(),
  /**
   * Frames of a sequence on one stream (docs/batch.md#animation-without-flicker). consistent: a
   * frame with `motion` continues the previous frame of its stream (warped previous output kept
   * where visible, disocclusions generated; src/motion/consistent.ts) at the generated size (depth
   * and motion are resampled to it); needs depth kind zdepth. A frame whose previous frame is missing, failed or
   * was cancelled runs per frame and its result says why. per-frame: every frame on its own, but
   * remembered, so the next frame's result carries the pair's warp score. Absent: no sequence
   * (a frame with motion is still scored).
   */
  consistency: z.enum(['per-frame', 'consistent']).optional(),
}).strict();
export type GenerationParams = z.infer<typeof GenerationParams>;
export type GenerationParamsInput = z.input<typeof GenerationParams>;

export const DepthDType = z.enum(['f32', 'f16', 'u16']);
export const DepthKind = z.enum(['zdepth', 'disparity', 'normalized']);

export const DepthPart = z.object({
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  dtype: DepthDType,
  /** zdepth: linear camera Z, far = large, background = inf or >= far. disparity: near = high.
   *  normalized: [0,1], 1 = near. */
  kind: DepthKind,
  near: z.number().positive().finite(),
  far: z.number().positive(),
  byteLength: z.number().int().nonnegative(),
}).strict().refine((d) => d.far > d.near, { message: 'depth.far must be greater than depth.near', path: ['far'] });

export const InitImagePart = z.object({
  format: z.enum(['png', 'jpeg', 'rgba8']),
  /** Required for rgba8; encoded formats carry their own size. */
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
  byteLength: z.number().int().nonnegative(),
}).strict();

export const LayoutObject = z.object({
  /** Value of this object in the index map; 0 is background. */
  id: z.number().int().min(1).max(65535),
  label: z.string().min(1).max(WIRE_BOUNDS.labelChars),
  prompt: z.string().max(WIRE_BOUNDS.promptChars).optional(),
  weight: z.number().min(0).max(10).default(1),
  /** Screen-space box [x0, y0, x1, y1] in frame pixels, informational. */
  bbox: z.tuple([z.number(), z.number(), z.number(), z.number()]).optional(),
}).strict();
export type LayoutObject = z.infer<typeof LayoutObject>;

/** Object layout: a u16 little-endian index map (0 = background) plus what each id is. */
export const LayoutPart = z.object({
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  byteLength: z.number().int().nonnegative(),
  objects: z.array(LayoutObject).max(WIRE_BOUNDS.layoutObjects),
}).strict();

const Matrix4 = z.array(z.number().finite()).length(16);

/**
 * Motion to the previous frame of the stream (docs/protocol.md#motion): 2 planes of pixel offsets
 * (x then y, current → previous, rows top to bottom) in the payload, or the camera poses for
 * reprojecting the depth (static scenes). Conventions: src/motion/flow.ts.
 */
export const MotionPart = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('flow'),
    dtype: z.enum(['f32', 'f16']),
    width: z.number().int().positive(),
    height: z.number().int().positive(),
    byteLength: z.number().int().nonnegative(),
    /** The job whose frame this motion leads back to; when given, a different remembered frame means that one is missing. */
    previousJobId: JobId.optional(),
  }).strict(),
  z.object({
    kind: z.literal('pose'),
    /** Pinhole intrinsics in pixels of the depth frame; (cx, cy) from the top-left corner. */
    intrinsics: z.object({ fx: z.number().positive().finite(), fy: z.number().positive().finite(), cx: z.number().finite(), cy: z.number().finite() }).strict(),
    /** Camera-to-world, row-major, camera looking down −Z with +Y up (Blender's matrix_world). */
    pose: Matrix4,
    previousPose: Matrix4,
    previousJobId: JobId.optional(),
  }).strict(),
]);
export type MotionPart = z.infer<typeof MotionPart>;

/** Header of a client→server binary depth frame. Payload: depth bytes, then init bytes, then layout bytes, then motion flow bytes. */
export const FrameHeader = z.object({
  type: z.literal('frame'),
  protocol: z.literal(PROTOCOL_VERSION),
  jobId: JobId,
  stream: StreamName.default('default'),
  /** live: newest frame wins on its stream. batch: FIFO, never dropped. */
  mode: z.enum(['live', 'batch']).default('live'),
  depth: DepthPart,
  init: InitImagePart.optional(),
  layout: LayoutPart.optional(),
  motion: MotionPart.optional(),
  params: GenerationParams,
}).strict();
export type FrameHeader = z.infer<typeof FrameHeader>;
export type FrameHeaderInput = z.input<typeof FrameHeader>;

// ---- client → server JSON ----
export const CancelMessage = z.object({
  type: z.literal('cancel'),
  jobId: JobId.optional(),
  stream: StreamName.optional(),
}).strict().refine((m) => m.jobId !== undefined || m.stream !== undefined, { message: 'cancel needs jobId or stream' });

export const ClientHelloMessage = z.object({
  type: z.literal('hello'),
  protocol: z.number().int(),
  client: z.string().max(100).optional(),
}).strict();

export const ClientMessage = z.discriminatedUnion('type', [CancelMessage, ClientHelloMessage]);
export type ClientMessage = z.infer<typeof ClientMessage>;

// ---- server → client JSON ----
export const Limits = z.object({
  maxMessageBytes: z.number().int(),
  maxDepthPixels: z.number().int(),
  maxOutputPixels: z.number().int(),
  maxGenerationPixels: z.number().int(),
  maxPromptChars: z.number().int(),
  maxSteps: z.number().int(),
  maxQueuedJobs: z.number().int(),
  maxRegions: z.number().int(),
});
export type Limits = z.infer<typeof Limits>;

/** What one client (or all together) can make the service hold; defaults in server/limits.ts. */
export const Budgets = z.object({
  /** Live and batch streams one WebSocket connection may have at once; a frame for one more gets LIMIT_EXCEEDED. */
  maxStreamsPerConnection: z.number().int(),
  /** Jobs one connection (or all HTTP requests together) may have waiting; past it BUSY, while others still get room. */
  maxQueuedPerConnection: z.number().int(),
  /** Bytes a connection may leave unread in its send buffer (previews are dropped before that). */
  maxOutputBytes: z.number().int(),
  /** How long a connection may stay over maxOutputBytes before it is closed (4008). */
  outputStallMs: z.number().int(),
  /** How long one incoming WebSocket message may take to arrive, from its first byte (4008 past it). */
  messageAssemblyMs: z.number().int(),
  /**
   * Bytes of incoming WebSocket messages, all connections together: being assembled (the
   * connection that would pass it is closed, 1013) or held by queued and running jobs (a frame
   * that would pass it gets BUSY).
   */
  maxIncomingBytes: z.number().int(),
  /** WebSocket connections at once; past it the upgrade gets 429 BUSY. */
  maxConnections: z.number().int(),
  /** An HTTP body above this many bytes (or of unknown length) is large. */
  largeBodyBytes: z.number().int(),
  /** Large HTTP bodies held at once (from reading until the answer); past it 429 BUSY. */
  maxLargeBodies: z.number().int(),
});
export type Budgets = z.infer<typeof Budgets>;

/** `hello.budgets`: the budgets, with the heartbeat and preview-drop settings that act beside them. */
export const HelloBudgets = Budgets.extend({
  /** The service pings this often; a socket that did not echo the last ping's payload is cut. */
  heartbeatMs: z.number().int(),
  /** Previews are skipped while more than this many bytes wait unsent on the connection. */
  previewDropBytes: z.number().int(),
}).strict();
export type HelloBudgets = z.infer<typeof HelloBudgets>;

export const ModelInfo = z.object({
  name: z.string(),
  family: z.enum(['depth2img', 'controlnet']),
  dtype: z.enum(['fp32', 'fp16']).optional(),
  loaded: z.boolean(),
  default: z.boolean().optional(),
  /** A tiny random-weight test model (`models create-tiny`): its images are abstract, not pictures. */
  tiny: z.boolean().optional(),
  /** What a frame that leaves these out runs with (the registry entry's, else the scheduler class's). */
  defaults: z.object({ steps: z.number().int().positive(), guidance: z.number().nonnegative(), scheduler: SchedulerName.optional() }).optional(),
});
export type ModelInfo = z.infer<typeof ModelInfo>;

export const ServerHelloMessage = z.object({
  type: z.literal('hello'),
  protocol: z.literal(PROTOCOL_VERSION),
  server: z.object({ name: z.literal('depthcast'), version: z.string() }),
  models: z.array(ModelInfo),
  schedulers: z.array(SchedulerName),
  devices: z.array(z.string()),
  device: z.string(),
  limits: Limits,
  budgets: HelloBudgets,
});

export const AcceptedMessage = z.object({
  type: z.literal('accepted'),
  jobId: JobId,
  stream: StreamName,
  /** 0 = running next; n = n jobs ahead. */
  position: z.number().int().nonnegative(),
});

export const ProgressMessage = z.object({
  type: z.literal('progress'),
  jobId: JobId,
  step: z.number().int(),
  total: z.number().int(),
  timestep: z.number(),
});

export const CancelledMessage = z.object({
  type: z.literal('cancelled'),
  jobId: JobId,
  reason: z.enum(['client', 'superseded', 'disconnect', 'shutdown']),
});

export const ErrorMessage = z.object({
  type: z.literal('error'),
  jobId: z.string().optional(),
  code: z.string(),
  message: z.string(),
});

export const ServerMessage = z.discriminatedUnion('type', [
  ServerHelloMessage, AcceptedMessage, ProgressMessage, CancelledMessage, ErrorMessage,
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

// ---- server → client binary headers ----
export const PreviewHeader = z.object({
  type: z.literal('preview'),
  jobId: JobId,
  step: z.number().int(),
  total: z.number().int(),
  width: z.number().int(),
  height: z.number().int(),
  format: PreviewFormat,
});

export const Timings = z.record(z.string(), z.number());

/** A frame pair's score (docs/batch.md): mean |I_t − warp(I_t−1)| over valid pixels, RGB in [0, 1]. */
export const PairScoreReport = z.object({
  error: z.number(),
  validFraction: z.number(),
  /** The same over disoccluded pixels inside the frame (new surfaces), which must stay high. */
  disoccludedDifference: z.number(),
});

/** How a frame with motion or params.consistency ran, and its warp score against the previous frame. */
export const ConsistencyReport = z.object({
  mode: z.enum(['per-frame', 'consistent']),
  /** Why a frame that asked for the consistent mode ran per frame. */
  fallback: z.string().optional(),
  /** The job of the previous frame it was scored (and, in consistent mode, generated) against. */
  previousJobId: z.string().optional(),
  score: PairScoreReport.optional(),
});
export type ConsistencyReport = z.infer<typeof ConsistencyReport>;

export const ResultHeader = z.object({
  type: z.literal('result'),
  jobId: JobId,
  stream: StreamName,
  format: ResultFormat,
  width: z.number().int(),
  height: z.number().int(),
  /** The size the model generated at; differs from width×height when the image was upscaled. */
  generated: z.object({ width: z.number().int(), height: z.number().int() }),
  seed: z.number().int(),
  finishReason: z.enum(['SUCCESS']),
  params: z.record(z.string(), z.unknown()),
  model: z.object({ name: z.string(), hash: z.string() }),
  /** Milliseconds per stage (tokenize, textEncoder, unet, controlnet, vaeEncode, vaeDecode, png, total, ...). */
  timings: Timings,
  /** Frames with motion or params.consistency: the mode that ran, a fallback's reason, the warp score. */
  consistency: ConsistencyReport.optional(),
  /** Set when a near-identical earlier frame's result was sent again instead of recomputing. */
  reusedFrom: JobId.optional(),
});
export type ResultHeader = z.infer<typeof ResultHeader>;

export const ServerBinaryHeader = z.discriminatedUnion('type', [PreviewHeader, ResultHeader]);
export type ServerBinaryHeader = z.infer<typeof ServerBinaryHeader>;

// ---- HTTP ----
export const HttpGenerateRequest = z.object({
  depth: z.object({
    /** base64 of the raw little-endian pixels (dtype) */
    data: z.string(),
    width: z.number().int().positive(),
    height: z.number().int().positive(),
    dtype: DepthDType.default('f32'),
    kind: DepthKind.default('zdepth'),
    near: z.number().positive().finite(),
    far: z.number().positive(),
  }).strict(),
  /** base64 PNG or JPEG */
  init: z.string().optional(),
  layout: z.object({
    /** base64 of the u16 little-endian index map */
    data: z.string(),
    width: z.number().int().positive(),
    height: z.number().int().positive(),
    objects: z.array(LayoutObject).max(WIRE_BOUNDS.layoutObjects),
  }).strict().optional(),
  params: GenerationParams,
}).strict();
export type HttpGenerateRequest = z.infer<typeof HttpGenerateRequest>;

/** Most frame pairs in one series of a warp plot. */
export const WARP_PLOT_MAX_PAIRS = 10_000;

/**
 * POST /v1/plots/warp: the PNG plot of warp error per frame pair that batch reports carry
 * (src/motion/plot.ts), for clients that draw no images themselves (the Blender add-on's Render
 * Animation and its batch script). Pairs may carry more fields (a sequence summary's pairs); only
 * `frame` and `error` are read.
 */
export const WarpPlotRequest = z.object({
  title: z.string().max(200),
  series: z.array(z.object({
    label: z.string().max(100),
    pairs: z.array(z.object({ frame: z.number().int(), error: z.number().finite().nonnegative() })).max(WARP_PLOT_MAX_PAIRS),
  }).strict()).min(1).max(4),
}).strict();
export type WarpPlotRequest = z.infer<typeof WarpPlotRequest>;

/** Formats a zod error as "path: message; path: message" so users see which field to fix. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) => `${issue.path.length ? issue.path.join('.') : '(root)'}: ${issue.message}`)
    .join('; ');
}
