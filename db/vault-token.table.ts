import type { Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { StoredTokenType } from '../contracts/index.js';

/**
 * A Piiano-style vault token. Archived when `archived_at` is set or `expires_at` is past.
 * `token_id` is unique per (collection, tenant): one tenant's IDs never collide with another's,
 * so nothing a caller does can reveal that another tenant holds a given ID.
 */
export interface VaultTokenTable {
  /** Surrogate key: stable across rotation, the keyset for batched deletes. */
  id: Generated<string>;
  collection: string;
  token_id: string;
  object_id: string;
  tenant_id: string | null;
  tags: string[];
  /** Piiano's token type; only the types whose IDs do not derive from values (default randomized). */
  type: Generated<StoredTokenType>;
  /** Piiano's token scope, '' when none. */
  scope: Generated<string>;
  /** The property names the token stands for (Piiano's `props`). */
  props: Generated<string[]>;
  expires_at: Date | null;
  archived_at: Date | null;
  created_at: Generated<Date>;
}
export type VaultTokenRow = Selectable<VaultTokenTable>;
export type NewVaultToken = Insertable<VaultTokenTable>;
export type VaultTokenUpdate = Updateable<VaultTokenTable>;
