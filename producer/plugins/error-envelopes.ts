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

/** Onezone routes: `{ error: { id, details, description } }`, id in Onezone's camelCase. */
function renderOnezone(e: RenderableError) {
  return { error: { id: onezoneId(e.code), details: { error_code: e.code, ...e.context }, description: e.message } };
}

function onezoneId(code: ErrorCode): string {
  return errorRegistry[code].name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
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
