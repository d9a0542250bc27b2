import type { FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import { AppError } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { credentialColumns, findAccessTokensByHashes } from '../../db/repositories/access-token.repository.js';
import type { RecordOutcome } from '../../db/repositories/command.repository.js';
import { accessTokenState, type Caller, type SubjectTokenLookup, tenantScope } from '../access.js';
import { hashSecret, sameHash } from '../secrets.js';
import { credentialCacheLookups } from './metrics.js';

/**
 * Where a request's caller comes from: a read of its credential, or, on the command routes, the
 * callers that authenticated lately (by their secret's hash; only valid credentials enter, so
 * unknown secrets cannot fill it), sparing them the read.
 *
 * Invariant: a cached caller serves only a route marked `cachedCredential` (one that answers
 * through intake's `submit`) and not `subjectToken`, and only when X-Tenant-Id names no tenant
 * outside its scope. Each answer given on it is either a command recorded by a statement that
 * re-checked the credential (`decide`: insertCommands' credentialHolds), or is given after a
 * fresh read of the credential: a refusal inside `decide` stands only if the fresh read decides
 * alike, else it is decided again on the fresh caller; a dry run, and every error answered
 * outside `decide`, wait for `confirm` (401 if the credential no longer authenticates, 403 if
 * X-Tenant-Id is now outside its scope).
 */

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The caller may come from the credential cache: the route answers through `submit`. */
    cachedCredential?: boolean;
  }
}

/** How long a cached caller is kept without being read afresh. */
const CREDENTIAL_CACHE_TTL_MS = 5 * 60_000;

/** A decision on a caller whose credential keeps changing is tried at most this often. */
const MAX_RUNS = 3;

/** A recorded command: what `decide` returns. */
export type Recorded = Extract<RecordOutcome, { credentialHolds: true }>;

export class CredentialCache {
  readonly #db: Db;
  readonly #entries: LRUCache<string, Caller> | undefined;
  /** Requests whose caller came from the cache and that no fresh read or recording statement has confirmed since. */
  readonly #unconfirmed = new WeakSet<FastifyRequest>();

  /** `max` 0 turns the cache off: every request reads its credential. */
  constructor(db: Db, max: number, ttlMs = CREDENTIAL_CACHE_TTL_MS) {
    this.#db = db;
    this.#entries = max > 0 ? new LRUCache({ max, ttl: ttlMs }) : undefined;
  }

  /**
   * The caller of a request presenting the secret of `hash` (PV1005 if it does not authenticate):
   * from the cache when the invariant allows it, else read. With `subjectSecret`, also looks that
   * token up, in the same query (never from the cache).
   */
  async authenticate(request: FastifyRequest, hash: Buffer, subjectSecret?: string): Promise<{ caller: Caller; subjectToken?: SubjectTokenLookup }> {
    const config = request.routeOptions.config;
    const cached = config?.cachedCredential && !config.subjectToken ? this.#get(hash) : undefined;
    if (cached && inTenantScope(cached, request)) {
      this.#unconfirmed.add(request);
      return { caller: cached };
    }
    return this.#read(hash, subjectSecret);
  }

  /**
   * Runs `attempt` — the decision on `request.caller`, ending in the statement that records its
   * command — and returns the recorded command. A refusal (thrown) on a cached caller stands only
   * if a fresh read decides alike; otherwise, and whenever the statement finds the credential no
   * longer holds, the caller is read afresh and `attempt` runs again: PV1010 after MAX_RUNS.
   * So `attempt` only reads until its statement, which records nothing unless it returns it.
   */
  async decide(request: FastifyRequest, attempt: () => Promise<RecordOutcome>): Promise<Recorded> {
    for (let run = 1; run <= MAX_RUNS; run++) {
      let outcome: RecordOutcome;
      try {
        outcome = await attempt();
      } catch (refusal) {
        if (!this.#unconfirmed.has(request) || !(await this.#reread(request))) throw refusal;
        continue;
      }
      if (outcome.credentialHolds) {
        this.#unconfirmed.delete(request);
        return outcome;
      }
      await this.#reread(request);
    }
    throw new AppError('PV1010', {}, 'The credential kept changing while the request was served; retry.', { 'retry-after': '1' });
  }

  /** Reads a cached caller afresh before anything is answered on it (see the invariant); otherwise does nothing. */
  async confirm(request: FastifyRequest): Promise<void> {
    if (this.#unconfirmed.has(request)) await this.#reread(request);
  }

  /** The cached caller of this hash, if it is still valid by its own dates. */
  #get(hash: Buffer): Caller | undefined {
    const caller = this.#entries?.get(hash.toString('base64'));
    const outcome = caller === undefined ? 'miss' : accessTokenState(caller.token, caller.subject) === 'valid' ? 'hit' : 'expired';
    credentialCacheLookups.inc({ outcome });
    return outcome === 'hit' ? caller : undefined;
  }

  /** Reads the credential, caching the caller it authenticates, or forgetting it when it no longer does. */
  async #read(hash: Buffer, subjectSecret?: string): Promise<{ caller: Caller; subjectToken?: SubjectTokenLookup }> {
    const key = hash.toString('base64');
    try {
      const found = await readCredential(this.#db, hash, subjectSecret);
      this.#entries?.set(key, found.caller);
      return found;
    } catch (error) {
      if (error instanceof AppError) this.#entries?.delete(key);
      throw error;
    }
  }

  /**
   * Replaces `request.caller` by a fresh read and checks X-Tenant-Id against it (PV1005, PV1006
   * as onRequest would answer); true if the read changes what a decision rests on.
   */
  async #reread(request: FastifyRequest): Promise<boolean> {
    this.#unconfirmed.delete(request);
    const before = request.caller;
    request.caller = (await this.#read(before.token.secret_hash)).caller;
    tenantScope(request.caller.subject, request.headers['x-tenant-id']);
    return !sameAuthorization(before, request.caller);
  }
}

/**
 * Resolves a secret's hash to the caller it authenticates. Throws PV1005 for an unknown, expired
 * or revoked token: the answer does not tell which, to give an attacker nothing. With
 * `subjectSecret`, also looks that token up, in the same query.
 */
async function readCredential(db: Db, hash: Buffer, subjectSecret?: string): Promise<{ caller: Caller; subjectToken?: SubjectTokenLookup }> {
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

/** Whether X-Tenant-Id names only tenants in the caller's scope (tenantScope would not refuse it). */
function inTenantScope(caller: Caller, request: FastifyRequest): boolean {
  try {
    tenantScope(caller.subject, request.headers['x-tenant-id']);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether two reads of a caller would decide a request alike: what the statement that records a
 * command re-checks of it (credentialColumns, compared by credentialHolds) is the same.
 */
function sameAuthorization(a: Caller, b: Caller): boolean {
  return JSON.stringify(credentialColumns(a)) === JSON.stringify(credentialColumns(b));
}
