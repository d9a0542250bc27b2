import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { findAccessTokensByHashes } from '../../db/repositories/access-token.repository.js';
import { accessTokenState, type Caller, requireCapability, type SubjectTokenLookup, tenantScope } from '../access.js';
import { hashSecret, sameHash } from '../secrets.js';
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
 * Resolves a secret to the caller it authenticates. Throws PV1005 for an unknown, expired or
 * revoked token: the answer does not tell which, to give an attacker nothing. With
 * `subjectSecret`, also looks that token up, in the same query.
 */
export async function authenticateSecret(db: Db, secret: string, subjectSecret?: string): Promise<{ caller: Caller; subjectToken?: SubjectTokenLookup }> {
  const hash = hashSecret(secret);
  const subjectHash = subjectSecret === undefined ? undefined : hashSecret(subjectSecret);
  const rows = await findAccessTokensByHashes(db, subjectHash ? [hash, subjectHash] : [hash]);
  const found = rows.find((r) => sameHash(r.token.secret_hash, hash));
  if (!found || accessTokenState(found.token, found.subject) !== 'valid') {
    throw new AppError('PV1005', {});
  }
  const caller = { subject: found.subject, tokenId: found.token.id };
  if (subjectSecret === undefined || !subjectHash) return { caller };
  return { caller, subjectToken: { secret: subjectSecret, found: rows.find((r) => sameHash(r.token.secret_hash, subjectHash)) } };
}

/**
 * Authenticates every request whose route is not marked `config: { public: true }`. Browser
 * paths (the dashboard) answer 401 with a Basic challenge and need `subjects:admin`. On every
 * authenticated route, an `X-Tenant-Id` naming a tenant outside the caller's scope is 403
 * PV1006 (SPEC §2), whether or not the route reads tenants.
 */
export function installAuthentication(app: FastifyInstance, db: Db): void {
  app.decorateRequest('caller', null as unknown as Caller);
  app.decorateRequest('subjectToken', undefined);
  app.addHook('onRequest', async (request, reply) => {
    if (request.routeOptions.config?.public || request.is404) return;
    if (!isBrowserRoute(request)) {
      const subjectSecret = request.routeOptions.config?.subjectToken ? subjectTokenSecret(request) : undefined;
      const { caller, subjectToken } = await authenticateSecret(db, presentedSecret(request), subjectSecret);
      request.caller = caller;
      request.subjectToken = subjectToken;
      tenantScope(request.caller.subject, request.headers['x-tenant-id']);
      return;
    }
    // The dashboard's plugin has an error handler of its own: answer here, in our envelope.
    try {
      request.caller = (await authenticateSecret(db, presentedSecret(request))).caller;
      requireCapability(request.caller, 'subjects:admin');
      tenantScope(request.caller.subject, request.headers['x-tenant-id']);
    } catch (error) {
      const appError = toAppError(error);
      if (appError.code === 'PV1005') reply.header('www-authenticate', 'Basic realm="revocation admin", charset="UTF-8"');
      return sendError(request, reply, appError);
    }
  });
}
