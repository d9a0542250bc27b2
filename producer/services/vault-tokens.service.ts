import { randomUUID } from 'node:crypto';
import {
  AppError,
  type CountTokensResponse,
  isStoredTokenType,
  type QueryTokensBody,
  storedTokenTypes,
  type StoredTokenType,
  type TokenizeItem,
  type TokenMetadata,
  type TokenRefMetadata,
} from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import type { NewVaultToken } from '../../db/vault-token.table.js';
import { collectionExists } from '../../db/repositories/collection.repository.js';
import type { TenantScope } from '../../db/repositories/tenant-scope.js';
import { countVaultTokens, insertVaultTokens, queryVaultTokens, type SearchedVaultToken } from '../../db/repositories/vault-token.repository.js';

/** A query answers at most this many tokens. */
export const MAX_QUERY_RESULTS = 10_000;

/**
 * Collections known to exist, per database handle. Collections are never deleted (no route or
 * repository removes one), so a name once found stays valid: every token route after the first
 * skips a round trip. Names not found are not remembered (the collection may be created next).
 */
const knownCollections = new WeakMap<Db, Set<string>>();

/** Throws PV3001 unless the collection exists. */
export async function requireCollectionExists(db: Db, collection: string): Promise<void> {
  let known = knownCollections.get(db);
  if (known?.has(collection)) return;
  if (!(await collectionExists(db, collection))) throw new AppError('PV3001', { collection });
  if (!known) knownCollections.set(db, (known = new Set()));
  if (known.size < 10_000) known.add(collection);
}

/**
 * The tenant a new token belongs to: the item's, which must be in scope (PV1006); or, when the
 * item names none, the caller's only tenant; a caller with several tenants must name one.
 */
function tenantOf(item: TokenizeItem, scope: TenantScope, index: number): string | null {
  if (item.tenant_id !== undefined) {
    if (scope !== null && !scope.includes(item.tenant_id)) throw new AppError('PV1006', { tenant_ids: item.tenant_id });
    return item.tenant_id;
  }
  if (scope === null) return null;
  if (scope.length === 1) return scope[0]!;
  throw new AppError('PV1002', { index: String(index) }, `Item ${index}: tenant_id is required when the caller acts for several tenants.`);
}

/**
 * The type a new token gets: randomized or pointer. The other Piiano types derive their IDs from
 * the object's property values, which this service does not hold: PV1002 naming the type.
 */
function typeOf(item: TokenizeItem, index: number): StoredTokenType {
  if (isStoredTokenType(item.type)) return item.type;
  throw new AppError(
    'PV1002',
    { index: String(index), type: item.type },
    `Item ${index}: token type ${item.type} derives its token ID from the object's property values, which this service does not hold; use ${storedTokenTypes.join(' or ')}.`,
  );
}

/**
 * Creates vault tokens, all or none, and returns their token IDs in input order. IDs are new
 * UUIDs unless given; a given ID already used in the collection and tenant is PV3007. Each token
 * keeps its type (randomized unless given), scope ('' unless given), props and tags.
 * `expirationSecs` -1 or absent: the tokens never expire.
 */
export async function tokenize(db: Db, collection: string, scope: TenantScope, items: TokenizeItem[], expirationSecs: number | undefined): Promise<{ token_id: string }[]> {
  const types = items.map(typeOf);
  await requireCollectionExists(db, collection);
  const expiresAt = expirationSecs === undefined || expirationSecs === -1 ? null : new Date(Date.now() + expirationSecs * 1000);
  const rows: NewVaultToken[] = items.map((item, index) => ({
    collection,
    token_id: item.token_id ?? randomUUID(),
    object_id: item.object.id,
    tenant_id: tenantOf(item, scope, index),
    tags: [...new Set(item.tags ?? [])],
    type: types[index]!,
    scope: item.scope ?? '',
    props: [...new Set(item.props ?? [])],
    expires_at: expiresAt,
    archived_at: null,
  }));
  const seen = new Set<string>();
  for (const row of rows) {
    const key = `${row.tenant_id ?? ''}\u0000${row.token_id}`;
    if (seen.has(key)) throw new AppError('PV1002', { token_id: row.token_id }, `token_id ${row.token_id} appears twice in the request.`);
    seen.add(key);
  }
  await db.transaction().execute(async (trx) => {
    const outcome = await insertVaultTokens(trx, rows);
    if (outcome.conflicts.length > 0) throw new AppError('PV3007', { token_ids: outcome.conflicts.join(',') });
  });
  return rows.map((r) => ({ token_id: r.token_id }));
}

export interface SearchOptions {
  /** Archived tokens only (else active ones only). */
  archived: boolean;
  /** Add `agg` to each entry. */
  aggregated: boolean;
}

function tokenRef(row: SearchedVaultToken): TokenRefMetadata {
  const expiration = row.expires_at?.toISOString() ?? null;
  return {
    object_id: row.object_id,
    ...(row.tenant_id === null ? {} : { effective_tenant_id: row.tenant_id }),
    tags: row.tags,
    creation_time: row.created_at.toISOString(),
    expiration_time: expiration,
    effective_expiration_time: expiration,
  };
}

/**
 * Tokens matching every criterion, visible in `scope`, as Piiano's `TokenMetadata[]`: one entry
 * per token ID (and type and scope), in the order each ID was first created, with its tokens
 * (one per tenant holding the ID). Active tokens unless `archived`.
 */
export async function searchTokens(db: Db, collection: string, scope: TenantScope, body: QueryTokensBody, options: SearchOptions): Promise<TokenMetadata[]> {
  await requireCollectionExists(db, collection);
  const rows = await queryVaultTokens(db, collection, scope, { ...body, archived: options.archived }, MAX_QUERY_RESULTS);
  const entries = new Map<string, TokenMetadata>();
  for (const row of rows) {
    const key = JSON.stringify([row.token_id, row.type, row.scope]);
    let entry = entries.get(key);
    if (!entry) entries.set(key, (entry = { token_id: row.token_id, type: row.type, scope: row.scope, tokens: [] }));
    entry.tokens.push(tokenRef(row));
  }
  const result = [...entries.values()];
  if (options.aggregated) {
    for (const entry of result) {
      const expiries = entry.tokens.map((t) => t.effective_expiration_time);
      // ISO strings of one format order as their instants; a token that never expires is the latest
      const max = expiries.includes(null) ? null : (expiries as string[]).reduce((a, b) => (a > b ? a : b));
      entry.agg = { max_effective_expiration_time: max };
    }
  }
  return result;
}

/** `{ active, archived, total }` counts of the tokens visible in `scope`. */
export async function countTokens(db: Db, collection: string, scope: TenantScope): Promise<CountTokensResponse> {
  await requireCollectionExists(db, collection);
  return countVaultTokens(db, collection, scope);
}
