import { STATUS_CODES } from 'node:http';
import { type ErrorCode, errorRegistry, type ErrorContext, stringContext } from '../../contracts/index.js';

/** Route families, each with its seed's error envelope (SPEC §7). */
export type RouteFamily = 'piiano' | 'keystone' | 'onezone' | 'native';

export interface RenderableError {
  code: ErrorCode;
  message: string;
  context: ErrorContext;
}

/**
 * Piiano and native routes: `{ error_code, message, context }`, every context value a string as
 * Piiano's schema types it (the generated client declares `context: Record<string, string>`).
 */
function renderPiiano(e: RenderableError) {
  return { error_code: e.code, message: e.message, context: stringContext(e.context) };
}

/** Keystone route: `{ error: { code, title, message } }`. */
function renderKeystone(e: RenderableError) {
  const status = errorRegistry[e.code].status;
  return { error: { code: status, title: STATUS_CODES[status] ?? 'Error', message: e.message } };
}

/**
 * Onezone routes: `{ error: { id, details, description } }` with Onedata's own error ids and
 * details (ctool's `errors:to_json/1`), plus our `error_code` and context in `details`.
 */
function renderOnezone(e: RenderableError) {
  const { id, details } = onezoneErrors[e.code](e.context);
  return { error: { id, details: { ...e.context, ...details, error_code: e.code }, description: e.message } };
}

interface OnedataError {
  id: string;
  details?: Record<string, unknown>;
}

const notFound = (): OnedataError => ({ id: 'notFound' });
const forbidden = (): OnedataError => ({ id: 'forbidden' });
const alreadyExists = (): OnedataError => ({ id: 'alreadyExists' });
const temporaryFailure = (): OnedataError => ({ id: 'temporaryFailure' });

/** The Onedata error of each registry code; the 400s name the offending key, as Onedata's do. */
const onezoneErrors: Record<ErrorCode, (context: ErrorContext) => OnedataError> = {
  PV1000: () => ({ id: 'internalServerError' }),
  PV1001: () => ({ id: 'missingRequiredValue', details: { key: 'reason' } }),
  PV1002: badValue,
  PV1003: () => ({ id: 'missingRequiredValue', details: { key: 'adhoc_reason' } }),
  PV1004: () => ({ id: 'badValueTextTooLarge', details: { key: 'body' } }),
  PV1005: () => ({ id: 'unauthorized' }),
  PV1006: forbidden,
  PV1007: forbidden,
  PV1008: notFound,
  PV1009: () => ({ id: 'timeout' }),
  PV1010: temporaryFailure,
  PV1011: (context) => ({ id: 'limitReached', details: { limit: context.limit, resourceDescription: `requests per ${String(context.window_seconds)} seconds` } }),
  PV1012: () => ({ id: 'malformedData' }),
  // Onedata has no id of its own for a method a path lacks (its REST answers 405 without a body)
  PV1013: () => ({ id: 'notSupported' }),
  PV3001: notFound,
  PV3002: alreadyExists,
  PV3003: notFound,
  PV3004: alreadyExists,
  PV3005: notFound,
  PV3006: notFound,
  PV3007: alreadyExists,
  PV3009: notFound,
  PV3010: () => ({ id: 'badValueIdentifierOccupied', details: { key: 'Idempotency-Key' } }),
  // Onedata has no job cancel: ids of our own, after the registry names (PV3011 is answered on native routes only)
  PV3011: () => ({ id: 'jobEnded' }),
  PV3012: () => ({ id: 'jobCancelled' }),
  PV3013: () => ({ id: 'jobNotCancellable' }),
  // Onedata's own id for an account an administrator has blocked
  PV3015: () => ({ id: 'userBlocked' }),
  PV3016: temporaryFailure,
  PV3087: notFound,
  PV3218: temporaryFailure,
};

/** Headers whose bad value has an Onedata id of its own; other keys are `badData`. */
const headerIds: Record<string, string> = { 'X-Tenant-Id': 'badValueIdentifier', 'Idempotency-Key': 'badValueString', 'X-Subject-Token': 'badValueToken' };

/**
 * A PV1002 as Onedata's bad-value error naming the key: a header's name, or the first field a
 * schema refused (toAppError lists them as `field: message` under params, querystring or body).
 * Path parameters are identifiers; without a key (an unreadable URL or body) it is `malformedData`.
 */
function badValue(context: ErrorContext): OnedataError {
  if (typeof context.header === 'string') return { id: headerIds[context.header] ?? 'badData', details: { key: context.header } };
  for (const where of ['params', 'querystring', 'body', 'headers']) {
    const problems = context[where];
    if (!Array.isArray(problems) || typeof problems[0] !== 'string') continue;
    const key = /^([A-Za-z_][\w.-]*): /.exec(problems[0])?.[1] ?? where;
    return { id: where === 'params' ? 'badValueIdentifier' : 'badData', details: { key } };
  }
  return { id: 'malformedData' };
}

export const renderers: Record<RouteFamily, (e: RenderableError) => unknown> = {
  piiano: renderPiiano,
  native: renderPiiano,
  keystone: renderKeystone,
  onezone: renderOnezone,
};

/** The family a URL belongs to, for errors raised before a route is matched (404, 405, 413). */
export function familyOfUrl(url: string): RouteFamily {
  if (url.startsWith('/api/pvlt/')) return 'piiano';
  if (url.startsWith('/v3/auth/')) return 'keystone';
  if (url.startsWith('/api/v3/onezone/')) return 'onezone';
  return 'native';
}
