import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { AppError, errorRegistry } from '../../contracts/index.js';
import { isDatabaseUnavailable } from '../../db/database.js';
import { familyOfUrl, renderers, type RenderableError } from './error-envelopes.js';

/**
 * Normalises anything thrown into a registry error, like graphile-worker's coerceError:
 * AppError as is; schema validation → PV1002 naming each bad field; Fastify's own 4xx → the
 * matching code; an unreachable database → PV1010 with Retry-After; anything else → PV1000.
 */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const e = error as FastifyError & { code?: string; validationContext?: string };
  if (hasZodFastifySchemaValidationErrors(e)) {
    const where = e.validationContext ?? 'request';
    const problems = e.validation.map((v) => {
      const path = v.instancePath.replace(/^\//, '').replace(/\//g, '.');
      return path ? `${path}: ${v.message}` : `${v.message}`;
    });
    return new AppError('PV1002', { [where]: problems }, `Invalid ${where}: ${problems.join('; ')}`);
  }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new AppError('PV1004', {});
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new AppError('PV1012', {});
  if (e.code === 'FST_ERR_RATE_LIMIT' || e.statusCode === 429) return new AppError('PV1011', {});
  if (isDatabaseUnavailable(error)) return unavailable();
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new AppError('PV1002', {}, e.message || errorRegistry.PV1002.message);
  }
  return new AppError('PV1000', {});
}

function unavailable(): AppError {
  return new AppError('PV1010', {}, 'The database is unavailable; retry later.', { 'retry-after': '5' });
}

/** Sends `error` in the envelope of the route's family. */
export function sendError(request: FastifyRequest, reply: FastifyReply, error: AppError): FastifyReply {
  const family = request.routeOptions.config?.family ?? familyOfUrl(request.url);
  const renderable: RenderableError = { code: error.code, message: error.message, context: error.context };
  for (const [name, value] of Object.entries(error.headers)) reply.header(name, value);
  return reply.code(error.status).type('application/json').send(renderers[family](renderable));
}

/**
 * Installs the error and not-found handlers: every error leaves in its family's envelope; a
 * method a path does not have is 405 with `Allow`, from the registered routes.
 * `confirmCaller` runs first (CredentialCache.confirm): an error answered to a caller taken from
 * the credential cache is answered 401 (or 403) instead when a fresh read of it says so.
 */
export function installErrorHandling(app: FastifyInstance, confirmCaller: (request: FastifyRequest) => Promise<void>): void {
  app.setErrorHandler(async (error, request, reply) => {
    let appError = toAppError(error);
    if (appError.status !== 401) appError = await confirmCaller(request).then(() => appError, toAppError);
    if (appError.code === 'PV1000') request.log.error({ err: error }, 'unhandled error');
    else if (appError.code === 'PV1010') request.log.warn({ err: error }, 'dependency unavailable');
    return sendError(request, reply, appError);
  });
  const allowedMethods = indexMethods(app);
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const allowed = allowedMethods(request.url);
    if (allowed.length === 0) return sendError(request, reply, new AppError('PV1008', { method: request.method, url: path }));
    return sendError(
      request,
      reply,
      new AppError('PV1013', { method: request.method, allowed: allowed.join(', ') }, `${request.method} is not allowed on ${path}; it allows ${allowed.join(', ')}.`, { allow: allowed.join(', ') }),
    );
  });
}

/**
 * Records the methods of every route registered from now on; returns, for a request URL, the
 * methods that have a route matching it (Fastify's router decides, as for the request itself),
 * sorted. An unmatched request whose path another method serves is 405 with `Allow` (RFC 9110).
 */
function indexMethods(app: FastifyInstance): (url: string) => string[] {
  const methods = new Set<string>();
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) methods.add(method.toUpperCase());
  });
  return (url) => {
    // the router answers an undecodable path with its bad-URL handler, whatever the method
    try {
      decodeURI(url.split('?')[0] ?? '');
    } catch {
      return [];
    }
    return [...methods].filter((method) => app.findRoute({ method: method, url }) !== null).sort();
  };
}
