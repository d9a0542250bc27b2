import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../../contracts/index.js';
import { type Caller, requireCapability, type SubjectTokenLookup, tenantScope } from '../access.js';
import { hashSecret } from '../secrets.js';
import type { CredentialCache } from './credential-cache.js';
import { sendError, toAppError } from './error-handler.js';
import { DASHBOARD_PATH } from './queue-dashboard.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller; set on every route not marked `public`. */
    caller: Caller;
    /**
     * On routes marked `config: { subjectToken: true }`: the access token that X-Subject-Token
     * names, looked up with the caller's credential in the same round trip. Undefined when the
     * header is absent or unusable (the route answers that).
     */
    subjectToken: SubjectTokenLookup | undefined;
  }
}

/** The X-Subject-Token header's secret, trimmed, or undefined when absent, blank or too long. */
export function subjectTokenSecret(request: FastifyRequest): string | undefined {
  const secret = request.headers['x-subject-token'];
  if (typeof secret !== 'string' || secret.trim() === '' || secret.length > MAX_SECRET_LENGTH) return undefined;
  return secret.trim();
}

const MAX_SECRET_LENGTH = 512;

/**
 * Routes a browser reaches (the queue dashboard): HTTP Basic auth, the access token as password.
 * Decided from the matched route, never from the raw URL: Fastify routes on the decoded path,
 * so `/%61dmin/queues` reaches the dashboard too.
 */
function isBrowserRoute(request: FastifyRequest): boolean {
  return request.routeOptions.url?.startsWith(DASHBOARD_PATH) ?? false;
}

function basicPassword(authorization: string): string | undefined {
  const match = /^Basic[ ]+([A-Za-z0-9+/=]+)\s*$/i.exec(authorization);
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon >= 0 && colon < decoded.length - 1 ? decoded.slice(colon + 1) : undefined;
}

/**
 * The credential of a request: `Authorization: Bearer <token>` or `X-Auth-Token: <token>`.
 * Throws PV1005 when it is missing or malformed.
 */
export function presentedSecret(request: FastifyRequest): string {
  const authorization = request.headers.authorization;
  if (authorization !== undefined && isBrowserRoute(request)) {
    const password = basicPassword(authorization);
    if (password) return checkLength(password);
  }
  if (authorization !== undefined) {
    const match = /^Bearer[ ]+(\S+)\s*$/i.exec(authorization);
    if (!match?.[1]) throw new AppError('PV1005', {}, "The Authorization header must be 'Bearer <token>'.");
    return checkLength(match[1]);
  }
  const xAuth = request.headers['x-auth-token'];
  if (typeof xAuth === 'string' && xAuth.trim() !== '') return checkLength(xAuth.trim());
  throw new AppError('PV1005', {}, 'No credential: send Authorization: Bearer <token> or X-Auth-Token.');
}

function checkLength(secret: string): string {
  if (secret.length > MAX_SECRET_LENGTH) throw new AppError('PV1005', {}, 'The credential is malformed.');
  return secret;
}

/**
 * Authenticates every request whose route is not marked `config: { public: true }`, its caller
 * coming from `credentials` (credential-cache.ts). Browser paths (the dashboard) answer 401 with
 * a Basic challenge and need `subjects:admin`. On every authenticated route, an `X-Tenant-Id`
 * naming a tenant outside the caller's scope is 403 PV1006 (SPEC §2), whether or not the route
 * reads tenants.
 */
export function installAuthentication(app: FastifyInstance, credentials: CredentialCache): void {
  app.decorateRequest('caller', null as unknown as Caller);
  app.decorateRequest('subjectToken', undefined);

  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config;
    if (config?.public || request.is404) return;
    if (!isBrowserRoute(request)) {
      const hash = hashSecret(presentedSecret(request));
      const { caller, subjectToken } = await credentials.authenticate(request, hash, config?.subjectToken ? subjectTokenSecret(request) : undefined);
      request.caller = caller;
      request.subjectToken = subjectToken;
      tenantScope(caller.subject, request.headers['x-tenant-id']);
      return;
    }
    // The dashboard's plugin has an error handler of its own: answer here, in our envelope.
    try {
      request.caller = (await credentials.authenticate(request, hashSecret(presentedSecret(request)))).caller;
      requireCapability(request.caller, 'subjects:admin');
      tenantScope(request.caller.subject, request.headers['x-tenant-id']);
    } catch (error) {
      const appError = toAppError(error);
      if (appError.code === 'PV1005') reply.header('www-authenticate', 'Basic realm="revocation admin", charset="UTF-8"');
      return sendError(request, reply, appError);
    }
  });
}
