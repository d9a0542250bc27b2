import type { FastifyInstance, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import { AppError } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { credentialColumns, findAccessTokensByHashes } from '../../db/repositories/access-token.repository.js';
import { accessTokenState, type Caller, requireCapability, StaleCredential, type SubjectTokenLookup, tenantScope } from '../access.js';
import { hashSecret, sameHash } from '../secrets.js';
import { sendError, toAppError } from './error-handler.js';
import { credentialCacheLookups } from './metrics.js';
import { DASHBOARD_PATH } from './queue-dashboard.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller; set on every route not marked `public`. */
    caller: Caller;
    /** `caller` came from the credential cache and has not been read afresh since. */
    callerCached: boolean;
    /**
     * On routes marked `config: { subjectToken: true }`: the access token that X-Subject-Token
     * names, looked up with the caller's credential in the same round trip. Undefined when the
     * header is absent or unusable (the route answers that).
     */
    subjectToken: SubjectTokenLookup | undefined;
    /** The request's command is recorded: from then on the route never runs again (intake.ts). */
    recorded: boolean;
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
 * Resolves a secret's hash to the caller it authenticates. Throws PV1005 for an unknown, expired
 * or revoked token: the answer does not tell which, to give an attacker nothing. With
 * `subjectSecret`, also looks that token up, in the same query.
 */
async function authenticateHash(db: Db, hash: Buffer, subjectSecret?: string): Promise<{ caller: Caller; subjectToken?: SubjectTokenLookup }> {
  const subjectHash = subjectSecret === undefined ? undefined : hashSecret(subjectSecret);
  const rows = await findAccessTokensByHashes(db, subjectHash ? [hash, subjectHash] : [hash]);
  const found = rows.find((r) => sameHash(r.token.secret_hash, hash));
  if (!found || accessTokenState(found.token, found.subject) !== 'valid') {
    throw new AppError('PV1005', {});
  }
  const caller = { subject: found.subject, token: found.token };
  if (subjectSecret === undefined || !subjectHash) return { caller };
  return { caller, subjectToken: { secret: subjectSecret, hash: subjectHash, found: rows.find((r) => sameHash(r.token.secret_hash, subjectHash)) } };
}

/**
 * Whether two reads of a caller would decide a request alike: what the statement that records a
 * command re-checks of it (credentialColumns, compared by credentialHolds) is the same.
 */
function sameAuthorization(a: Caller, b: Caller): boolean {
  return JSON.stringify(credentialColumns(a)) === JSON.stringify(credentialColumns(b));
}

/**
 * Callers that authenticated lately, by their secret's hash (only valid credentials enter, so
 * unknown secrets cannot fill it). Routes marked `config: { cachedCredential: true }` take the
 * caller from here instead of looking it up: each of them records its command in a statement
 * that re-checks the credential (credentialHolds), so a revoked token or a changed subject
 * never gets a command through; and any error they answer is confirmed on a fresh read first.
 * `max` 0 turns it off.
 */
export class CredentialCache {
  readonly #entries: LRUCache<string, Caller> | undefined;

  constructor(max: number, ttlMs = CREDENTIAL_CACHE_TTL_MS) {
    this.#entries = max > 0 ? new LRUCache({ max, ttl: ttlMs }) : undefined;
  }

  /** The cached caller of this hash, if it is still valid by its own dates. */
  get(hash: Buffer): Caller | undefined {
    const caller = this.#entries?.get(hash.toString('base64'));
    const outcome = caller === undefined ? 'miss' : accessTokenState(caller.token, caller.subject) === 'valid' ? 'hit' : 'expired';
    credentialCacheLookups.inc({ outcome });
    return outcome === 'hit' ? caller : undefined;
  }

  set(caller: Caller): void {
    this.#entries?.set(caller.token.secret_hash.toString('base64'), caller);
  }

  delete(hash: Buffer): void {
    this.#entries?.delete(hash.toString('base64'));
  }
}

/** How long a cached caller is kept without being read afresh. */
export const CREDENTIAL_CACHE_TTL_MS = 5 * 60_000;

/** A request decided on a cached caller is run again at most this often with fresh reads. */
const MAX_FRESH_RUNS = 3;

/**
 * Authenticates every request whose route is not marked `config: { public: true }`. Browser
 * paths (the dashboard) answer 401 with a Basic challenge and need `subjects:admin`. On every
 * authenticated route, an `X-Tenant-Id` naming a tenant outside the caller's scope is 403
 * PV1006 (SPEC §2), whether or not the route reads tenants.
 *
 * Routes marked `cachedCredential` may be served from `credentials` (see CredentialCache):
 * their handler is wrapped so that a StaleCredential, or an error decided on a cached caller
 * that a fresh read changes, runs the handler again on the fresh caller. Returns
 * `confirmCaller`, for the error handler: errors raised outside the handler (validation, body,
 * rate limit) on a cached caller are answered 401 if the credential no longer authenticates.
 */
export function installAuthentication(app: FastifyInstance, db: Db, credentials: CredentialCache): { confirmCaller: (request: FastifyRequest) => Promise<void> } {
  app.decorateRequest('caller', null as unknown as Caller);
  app.decorateRequest('callerCached', false);
  app.decorateRequest('subjectToken', undefined);
  app.decorateRequest('recorded', false);

  const lookUp = async (hash: Buffer, subjectSecret?: string) => {
    try {
      const found = await authenticateHash(db, hash, subjectSecret);
      credentials.set(found.caller);
      return found;
    } catch (error) {
      if (error instanceof AppError) credentials.delete(hash);
      throw error;
    }
  };
  /** Reads the caller afresh (PV1005 if it no longer authenticates); true if that changes a decision. */
  const refreshCaller = async (request: FastifyRequest): Promise<boolean> => {
    const before = request.caller;
    request.callerCached = false;
    request.caller = (await lookUp(before.token.secret_hash)).caller;
    return !sameAuthorization(before, request.caller);
  };

  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config;
    if (config?.public || request.is404) return;
    if (!isBrowserRoute(request)) {
      const hash = hashSecret(presentedSecret(request));
      const cached = config?.cachedCredential && !config.subjectToken ? credentials.get(hash) : undefined;
      if (cached) {
        request.caller = cached;
        request.callerCached = true;
        try {
          tenantScope(cached.subject, request.headers['x-tenant-id']);
        } catch {
          await refreshCaller(request);
          tenantScope(request.caller.subject, request.headers['x-tenant-id']);
        }
        return;
      }
      const { caller, subjectToken } = await lookUp(hash, config?.subjectToken ? subjectTokenSecret(request) : undefined);
      request.caller = caller;
      request.subjectToken = subjectToken;
      tenantScope(request.caller.subject, request.headers['x-tenant-id']);
      return;
    }
    // The dashboard's plugin has an error handler of its own: answer here, in our envelope.
    try {
      request.caller = (await lookUp(hashSecret(presentedSecret(request)))).caller;
      requireCapability(request.caller, 'subjects:admin');
      tenantScope(request.caller.subject, request.headers['x-tenant-id']);
    } catch (error) {
      const appError = toAppError(error);
      if (appError.code === 'PV1005') reply.header('www-authenticate', 'Basic realm="revocation admin", charset="UTF-8"');
      return sendError(request, reply, appError);
    }
  });

  app.addHook('onRoute', (route) => {
    if (!route.config?.cachedCredential) return;
    const handler = route.handler;
    route.handler = async function cachedCredentialHandler(this: FastifyInstance, request, reply) {
      for (let run = 1; ; run++) {
        try {
          return await handler.call(this, request, reply);
        } catch (error) {
          const stale = error instanceof StaleCredential;
          if (request.recorded || (!stale && !request.callerCached)) throw error;
          if (run === MAX_FRESH_RUNS) throw new AppError('PV1010', {}, 'The credential kept changing while the request was served; retry.', { 'retry-after': '1' });
          const changed = await refreshCaller(request);
          if (!stale && !changed) throw error;
          tenantScope(request.caller.subject, request.headers['x-tenant-id']);
        }
      }
    };
  });

  return {
    async confirmCaller(request) {
      // an error after the command was recorded is about that command, whoever the caller is now
      if (request.callerCached && !request.recorded) await refreshCaller(request);
    },
  };
}
