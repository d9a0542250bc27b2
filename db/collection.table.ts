import type { Generated, Insertable, Selectable } from 'kysely';

export interface CollectionTable {
  name: string;
  created_at: Generated<Date>;
}
export type CollectionRow = Selectable<CollectionTable>;
export type NewCollection = Insertable<CollectionTable>;
