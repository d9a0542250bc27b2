import { sql } from 'kysely';
import type { Executor } from '../database.js';
import type { NewSubject, SubjectRow } from '../subject.table.js';

/** Takes a subject ID; returns the subject or undefined. */
export async function findSubject(db: Executor, id: string): Promise<SubjectRow | undefined> {
  return db.selectFrom('subjects').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Inserts a subject. Returns the row, or undefined if the ID is taken. */
export async function insertSubject(db: Executor, subject: NewSubject): Promise<SubjectRow | undefined> {
  return db.insertInto('subjects').values(subject).onConflict((oc) => oc.column('id').doNothing()).returningAll().executeTakeFirst();
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
