import { type Kysely, sql } from 'kysely';

/** The whole schema of the first release. Indexes are named after the query they serve. */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table collections (
      name text primary key,
      created_at timestamptz not null default now()
    );

    -- keyed by (collection, id): every access is within one collection, and a batched delete
    -- walks one collection in key order without touching the others' rows
    create table vault_tokens (
      id bigint generated always as identity,
      collection text not null references collections (name) on delete cascade,
      token_id text not null,
      object_id text not null,
      tenant_id text,
      tags text[] not null default '{}',
      expires_at timestamptz,
      archived_at timestamptz,
      created_at timestamptz not null default now(),
      constraint vault_tokens_tags_max check (cardinality(tags) <= 10),
      primary key (collection, id)
    );
    -- lookup and rotate by token ID; unique per tenant (no tenant counts as one tenant)
    create unique index vault_tokens_collection_token_id_tenant
      on vault_tokens (collection, token_id, tenant_id) nulls not distinct;
    -- criteria object_ids, tenant scope, tags (GIN: tags @> array[...])
    create index vault_tokens_collection_object_id on vault_tokens (collection, object_id);
    create index vault_tokens_collection_tenant_id on vault_tokens (collection, tenant_id);
    create index vault_tokens_tags on vault_tokens using gin (tags);

    create table subjects (
      id text primary key,
      kind text not null check (kind in ('user', 'provider', 'service')),
      domain_id text not null default 'default',
      capabilities text[] not null default '{}',
      tenant_ids text[],
      collections text[],
      temporary_generation integer not null default 0,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );

    create table access_tokens (
      id text primary key,
      subject_id text not null references subjects (id) on delete cascade,
      secret_hash bytea not null,
      name text,
      temporary boolean not null,
      generation integer,
      expires_at timestamptz,
      created_at timestamptz not null default now(),
      constraint access_tokens_generation_iff_temporary check (temporary = (generation is not null))
    );
    -- authentication: secret -> token
    create unique index access_tokens_secret_hash on access_tokens (secret_hash);
    -- sweeper: temporary tokens of older generations, expired tokens
    create index access_tokens_subject_generation on access_tokens (subject_id, generation) where temporary;
    create index access_tokens_expires_at on access_tokens (expires_at) where expires_at is not null;

    create table commands (
      id uuid primary key,
      type text not null,
      payload jsonb not null,
      payload_hash text not null,
      submitter_id text not null,
      idempotency_key text,
      audit jsonb not null,
      state text not null default 'queued' check (state in ('queued', 'running', 'succeeded', 'failed')),
      attempts integer not null default 0,
      progress jsonb,
      checkpoint jsonb,
      result jsonb,
      error jsonb,
      created_at timestamptz not null default now(),
      started_at timestamptz,
      finished_at timestamptz
    );
    -- Idempotency-Key is scoped to the submitting subject
    create unique index commands_submitter_idempotency_key on commands (submitter_id, idempotency_key)
      where idempotency_key is not null;
    -- reconciler: every command that has not ended
    create index commands_pending on commands (created_at) where state in ('queued', 'running');

    create table audit_log (
      id bigint generated always as identity primary key,
      command_id uuid references commands (id),
      occurred_at timestamptz not null default now(),
      action text not null,
      actor_id text not null,
      actor_kind text not null,
      tenant_ids text[],
      reason text,
      adhoc_reason text,
      custom_audit text,
      request_id text,
      source text not null,
      collection text,
      data jsonb not null
    );
    create index audit_log_command_id on audit_log (command_id);
    create index audit_log_collection_occurred_at on audit_log (collection, occurred_at);
    create index audit_log_occurred_at on audit_log (occurred_at);

    create function audit_log_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_log is append-only' using errcode = 'insufficient_privilege';
    end
    $$;
    create trigger audit_log_no_update_or_delete before update or delete on audit_log
      for each row execute function audit_log_append_only();
    create trigger audit_log_no_truncate before truncate on audit_log
      for each statement execute function audit_log_append_only();

    create table outbox (
      id bigint generated always as identity primary key,
      event_id uuid not null unique,
      command_id uuid not null,
      event jsonb not null,
      created_at timestamptz not null default now(),
      published_at timestamptz
    );
    -- relay: unpublished events in commit order
    create index outbox_unpublished on outbox (id) where published_at is null;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop table if exists outbox, audit_log, commands, access_tokens, subjects, vault_tokens, collections;
    drop function if exists audit_log_append_only();
  `.execute(db);
}
