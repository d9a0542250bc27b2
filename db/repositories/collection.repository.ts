import type { Executor } from '../database.js';
import type { CollectionRow } from '../collection.table.js';

/** Inserts a collection. Returns the row, or undefined if the name is taken. */
export async function insertCollection(db: Executor, name: string): Promise<CollectionRow | undefined> {
  return db
    .insertInto('collections')
    .values({ name })
    .onConflict((oc) => oc.column('name').doNothing())
    .returningAll()
    .executeTakeFirst();
}

/** Takes a name; returns whether the collection exists. */
export async function collectionExists(db: Executor, name: string): Promise<boolean> {
  const row = await db.selectFrom('collections').select('name').where('name', '=', name).executeTakeFirst();
  return row !== undefined;
}
