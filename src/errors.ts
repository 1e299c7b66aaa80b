/**
 * The one error type of depthcast. Every failure a user can cause or meet carries a stable
 * string `code` and a message that says what to fix; transports map the code once
 * (HTTP status here, WS `error` replies in server/).
 */
export const ERROR_CODES = {
  BAD_REQUEST: 400,
  BAD_DEPTH: 400,
  BAD_IMAGE: 400,
  BAD_LAYOUT: 400,
  BAD_FRAME: 400,
  BAD_MANIFEST: 400,
  UNSUPPORTED_SCHEDULER: 400,
  UNSUPPORTED_DEVICE: 400,
  LIMIT_EXCEEDED: 413,
  UNAUTHORIZED: 401,
  FORBIDDEN_ORIGIN: 403,
  NOT_FOUND: 404,
  MODEL_NOT_FOUND: 404,
  JOB_NOT_FOUND: 404,
  CANCELLED: 409,
  BUSY: 429,
  BAD_MODEL: 422,
  UNSAFE_PATH: 422,
  HASH_MISMATCH: 422,
  OUT_OF_NOISE: 500,
  INFERENCE_FAILED: 500,
  INTERNAL: 500,
  SHUTTING_DOWN: 503,
  OFFLINE: 503,
  DOWNLOAD_FAILED: 502,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class DepthcastError extends Error {
  override readonly name = 'DepthcastError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code];
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}

/** Normalises anything thrown into a DepthcastError; unknown failures become INTERNAL with their message kept. */
export function toDepthcastError(err: unknown, fallback: ErrorCode = 'INTERNAL'): DepthcastError {
  if (err instanceof DepthcastError) return err;
  if (err && typeof err === 'object' && 'code' in err && isErrorCode((err as { code: unknown }).code)) {
    const e = err as { code: ErrorCode; message?: string; details?: Record<string, unknown> };
    return new DepthcastError(e.code, e.message ?? e.code, e.details);
  }
  if (err instanceof Error && err.name === 'AbortError') return new DepthcastError('CANCELLED', 'the job was cancelled');
  const message = err instanceof Error ? err.message : String(err);
  return new DepthcastError(fallback, message);
}
