import { type Kysely, sql } from 'kysely';

/**
 * A vault token keeps what Piiano's tokenize gives it: its `type` (randomized or pointer, the
 * types whose IDs do not derive from object values), `scope` ('' when none) and `props` (the
 * property names it stands for). Columns with a constant default are added without rewriting the
 * table; existing rows read as randomized, unscoped, no props. The check is added NOT VALID so
 * that it does not scan the table under the migration's lock: every existing row holds the
 * default, and new and updated rows are checked.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table vault_tokens
      add column type text not null default 'randomized',
      add column scope text not null default '',
      add column props text[] not null default '{}';
    alter table vault_tokens add constraint vault_tokens_type check (type in ('randomized', 'pointer')) not valid;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table vault_tokens
      drop constraint if exists vault_tokens_type,
      drop column if exists type,
      drop column if exists scope,
      drop column if exists props;
  `.execute(db);
}
