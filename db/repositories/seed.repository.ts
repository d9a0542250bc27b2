import { sql } from 'kysely';
import type { Executor } from '../database.js';

export interface VaultSeed {
  collection: string;
  count: number;
  /** Every k-th token (k = round(1 / tagRatio)) carries `tag`; the rest carry 'bulk'. */
  tag: string;
  tagRatio: number;
  tenantId: string | null;
  /** Object IDs are `<objectPrefix><n>`. */
  objectPrefix: string;
}

/**
 * Inserts `count` vault tokens in one INSERT … SELECT over generate_series (no round trip per
 * row). Returns how many carry the tag. Token IDs are random UUIDs.
 */
export async function seedVaultTokens(db: Executor, seed: VaultSeed): Promise<number> {
  const every = seed.tagRatio <= 0 ? 0 : Math.max(1, Math.round(1 / seed.tagRatio));
  await sql`
    insert into vault_tokens (collection, token_id, object_id, tenant_id, tags)
    select ${seed.collection}, gen_random_uuid()::text, ${seed.objectPrefix} || g, ${seed.tenantId},
           case when ${every}::int > 0 and g % ${every}::int = 0 then array[${seed.tag}::text] else array['bulk'::text] end
    from generate_series(1, ${seed.count}::int) as g`.execute(db);
  return every === 0 ? 0 : Math.floor(seed.count / every);
}

/**
 * Issues `count` temporary access tokens to a subject under its current generation, valid for
 * `ttlSeconds`, in one statement. Their secrets are random and never known: for load only.
 */
export async function seedTemporaryAccessTokens(db: Executor, subjectId: string, count: number, ttlSeconds: number): Promise<void> {
  await sql`
    insert into access_tokens (id, subject_id, secret_hash, temporary, generation, expires_at)
    select gen_random_uuid()::text, s.id, sha256(convert_to(gen_random_uuid()::text || g::text, 'UTF8')), true,
           s.temporary_generation, now() + make_interval(secs => ${ttlSeconds})
    from subjects s, generate_series(1, ${count}::int) as g
    where s.id = ${subjectId}`.execute(db);
}

/**
 * Issues `count` named access tokens to a subject in one statement, named `<namePrefix><n>`.
 * Their secrets are random and never known: for load only.
 */
export async function seedNamedAccessTokens(db: Executor, subjectId: string, count: number, namePrefix = 'seeded-'): Promise<void> {
  await sql`
    insert into access_tokens (id, subject_id, secret_hash, name, temporary, generation, expires_at)
    select gen_random_uuid()::text, ${subjectId}, sha256(convert_to(gen_random_uuid()::text || g::text, 'UTF8')), ${namePrefix} || g, false, null, null
    from generate_series(1, ${count}::int) as g`.execute(db);
}
