/**
 * The one error registry. Every error the service can answer with is listed here with its HTTP
 * status and default message; each route family renders it in its own envelope
 * (producer/plugins/error-envelopes.ts). Seed codes (PV1000 … PV3218) keep the meaning the
 * Piiano Vault documents give them; the others are ours.
 */
export const errorRegistry = {
  PV1000: { status: 500, name: 'internal', message: 'Something went wrong.' },
  PV1001: { status: 400, name: 'access_reason_missing', message: 'The access reason is missing.' },
  PV1002: { status: 400, name: 'invalid_parameter', message: 'The request is invalid.' },
  PV1003: { status: 400, name: 'adhoc_reason_missing', message: 'An adhoc_reason is required when reason is Other.' },
  PV1004: { status: 413, name: 'payload_too_large', message: 'The request is too large.' },
  PV1005: { status: 401, name: 'unauthorized', message: 'The request is unauthorized.' },
  PV1006: { status: 403, name: 'tenant_forbidden', message: 'A requested tenant is outside the caller scope.' },
  PV1007: { status: 403, name: 'missing_capability', message: 'The operation is forbidden due to missing capabilities.' },
  PV1008: { status: 404, name: 'route_not_found', message: 'No such route.' },
  PV1009: { status: 503, name: 'timed_out', message: 'The operation timed out on the server.' },
  PV1010: { status: 503, name: 'unavailable', message: 'The service is unavailable; retry later.' },
  PV1011: { status: 429, name: 'rate_limited', message: 'Too many requests; retry later.' },
  PV1012: { status: 415, name: 'unsupported_media_type', message: 'The request body must be application/json.' },
  PV1013: { status: 405, name: 'method_not_allowed', message: 'The method is not allowed on this route.' },
  PV3001: { status: 404, name: 'collection_not_found', message: 'The collection is not found.' },
  PV3002: { status: 409, name: 'collection_exists', message: 'The collection already exists.' },
  PV3003: { status: 404, name: 'subject_not_found', message: 'The subject is not found.' },
  PV3004: { status: 409, name: 'subject_exists', message: 'The subject already exists.' },
  PV3005: { status: 404, name: 'job_not_found', message: 'The job is not found.' },
  PV3006: { status: 404, name: 'access_token_not_found', message: 'The access token is not found.' },
  PV3007: { status: 409, name: 'token_id_exists', message: 'A token with this ID already exists.' },
  PV3009: { status: 404, name: 'token_not_found', message: 'The token is not found.' },
  PV3010: { status: 422, name: 'idempotency_key_reused', message: 'The Idempotency-Key was already used for a different command.' },
  PV3011: { status: 409, name: 'job_ended', message: 'The job has already ended; it cannot be cancelled.' },
  PV3012: { status: 409, name: 'job_cancelled', message: 'The job was cancelled before it ended.' },
  PV3013: { status: 409, name: 'job_not_cancellable', message: 'The job can no longer be cancelled; it runs to its end.' },
  PV3015: { status: 409, name: 'subject_disabled', message: 'The subject is locked out; unlock it first.' },
  PV3016: { status: 409, name: 'subject_lockout_running', message: 'A lockout of the subject has not ended yet; unlock it once that job has ended.' },
  PV3087: { status: 404, name: 'token_ids_not_found', message: 'One or more token IDs not found.' },
  PV3218: { status: 409, name: 'conflict', message: 'Concurrent conflicting updates to the same object.' },
} as const satisfies Record<string, { status: number; name: string; message: string }>;

export type ErrorCode = keyof typeof errorRegistry;
export const errorCodes = Object.keys(errorRegistry) as ErrorCode[];

/** Context values as thrown: strings, string lists, numbers or nested objects (always JSON). */
export type ErrorContext = Record<string, unknown>;

/**
 * The context as Piiano's error schema types it (`Record<string, string>`, SPEC §6): lists
 * comma-joined, numbers and booleans as text, null as '', objects as JSON.
 */
export function stringContext(context: ErrorContext): Record<string, string> {
  const text = (value: unknown): string => {
    if (typeof value === 'string') return value;
    if (value === null || value === undefined) return '';
    if (Array.isArray(value)) return value.map(text).join(',');
    if (typeof value === 'object') return JSON.stringify(value);
    return `${value as number | boolean | bigint}`;
  };
  return Object.fromEntries(Object.entries(context).map(([key, value]) => [key, text(value)]));
}

/**
 * A failure the service answers with. Thrown anywhere (route, repository, handler); rendered
 * by the route family's renderer; stored as `{ error_code, message, context }` on a failed job.
 */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly context: ErrorContext;
  readonly status: number;
  /** Extra response headers, e.g. Retry-After. */
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, context: ErrorContext = {}, message?: string, headers: Record<string, string> = {}) {
    super(message ?? errorRegistry[code].message);
    this.name = 'AppError';
    this.code = code;
    this.context = context;
    this.status = errorRegistry[code].status;
    this.headers = headers;
  }

  /** The stored form: what a failed job shows, its context in strings like the envelope's. */
  toJSON(): StoredError {
    return { error_code: this.code, message: this.message, context: stringContext(this.context) };
  }
}

/** The error as stored on a job and rendered by the Piiano and native routes. */
export interface StoredError {
  error_code: ErrorCode;
  message: string;
  context: ErrorContext;
}

export function isAppError(value: unknown): value is AppError {
  return value instanceof AppError;
}
