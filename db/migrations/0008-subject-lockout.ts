import { type Kysely, sql } from 'kysely';

/**
 * Account lockout (SPEC §10). `subjects.disabled_at`: set by a `subject.lockout` at its commit,
 * cleared by `subject.unlock`; while it is set nothing the subject holds authenticates and no
 * token is issued to it. A nullable column without a default is added without rewriting the
 * table. `access_tokens_subject_id` serves what reads one subject's tokens: the lockout's
 * batches (by token ID, from where the previous batch ended) and the token list of
 * GET /v1/subjects/{id}/tokens. Token IDs are compared byte by byte (collate "C"): the order
 * needs no locale, and comparing bytes is several times cheaper. Plain CREATE INDEX (the migrator runs each migration in a
 * transaction): on a large table it holds token issuance for the seconds the index takes to build.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table subjects add column disabled_at timestamptz;
    create index access_tokens_subject_id on access_tokens (subject_id, id collate "C");
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop index if exists access_tokens_subject_id;
    alter table subjects drop column if exists disabled_at;
  `.execute(db);
}
