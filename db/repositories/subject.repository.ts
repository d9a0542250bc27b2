import { sql } from 'kysely';
import type { SubjectKind } from '../../contracts/index.js';
import type { Executor } from '../database.js';
import type { NewSubject, SubjectRow, SubjectUpdate } from '../subject.table.js';

/** Takes a subject ID; returns the subject or undefined. */
export async function findSubject(db: Executor, id: string): Promise<SubjectRow | undefined> {
  return db.selectFrom('subjects').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Inserts a subject. Returns the row, or undefined if the ID is taken. */
export async function insertSubject(db: Executor, subject: NewSubject): Promise<SubjectRow | undefined> {
  return db
    .insertInto('subjects')
    .values(subject)
    .onConflict((oc) => oc.column('id').doNothing())
    .returningAll()
    .executeTakeFirst();
}

/** Creates the subject or overwrites its kind, domain, capabilities and scopes. Returns the row. */
export async function upsertSubject(db: Executor, subject: NewSubject): Promise<SubjectRow> {
  return db
    .insertInto('subjects')
    .values(subject)
    .onConflict((oc) =>
      oc.column('id').doUpdateSet((eb) => ({
        kind: eb.ref('excluded.kind'),
        domain_id: eb.ref('excluded.domain_id'),
        capabilities: eb.ref('excluded.capabilities'),
        tenant_ids: eb.ref('excluded.tenant_ids'),
        collections: eb.ref('excluded.collections'),
        updated_at: sql`now()`,
      })),
    )
    .returningAll()
    .executeTakeFirstOrThrow();
}

/**
 * Revokes every temporary token of the subject in one UPDATE, whatever their number: bumps
 * its generation. Returns the new generation, or undefined if no such subject of that kind.
 */
export async function bumpTemporaryGeneration(db: Executor, kind: string, id: string): Promise<number | undefined> {
  const row = await db
    .updateTable('subjects')
    .set((eb) => ({ temporary_generation: eb('temporary_generation', '+', 1), updated_at: sql`now()` }))
    .where('id', '=', id)
    .where('kind', '=', kind as 'user' | 'provider')
    .returning('temporary_generation')
    .executeTakeFirst();
  return row?.temporary_generation;
}

/**
 * Locks the subject out: sets `disabled_at` (kept when already set, so a repeated lockout keeps
 * the first instant). From this UPDATE's commit on, nothing the subject holds authenticates
 * (credentialHolds, accessTokenState) and no token is issued to it (insertAccessTokenIfEnabled
 * waits for this row). Returns the subject, or undefined if no such subject of that kind.
 */
export async function disableSubject(db: Executor, kind: SubjectKind, id: string): Promise<SubjectRow | undefined> {
  return db
    .updateTable('subjects')
    .set({ disabled_at: sql`coalesce(disabled_at, now())`, updated_at: sql`now()` })
    .where('id', '=', id)
    .where('kind', '=', kind)
    .returningAll()
    .executeTakeFirst();
}

/** Enables a locked-out subject again (clears `disabled_at`). Returns the subject, or undefined if no such subject of that kind. */
export async function enableSubject(db: Executor, kind: SubjectKind, id: string): Promise<SubjectRow | undefined> {
  return db
    .updateTable('subjects')
    .set({ disabled_at: null, updated_at: sql`now()` })
    .where('id', '=', id)
    .where('kind', '=', kind)
    .returningAll()
    .executeTakeFirst();
}

/**
 * Replaces the grants given (capabilities, tenant scope, collection scope) of the subject; the
 * others stay. Returns the subject as updated, or undefined if no such subject.
 */
export async function updateSubjectGrants(db: Executor, id: string, grants: Pick<SubjectUpdate, 'capabilities' | 'tenant_ids' | 'collections'>): Promise<SubjectRow | undefined> {
  return db
    .updateTable('subjects')
    .set({ ...grants, updated_at: sql`now()` })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst();
}
