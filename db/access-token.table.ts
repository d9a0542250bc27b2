import type { Generated, Insertable, Selectable } from 'kysely';

/**
 * An access token. The secret itself is never stored: only its SHA-256 (`secret_hash`).
 * Temporary tokens carry the subject's generation at issuance (`generation`, else null).
 */
export interface AccessTokenTable {
  id: string;
  subject_id: string;
  secret_hash: Buffer;
  name: string | null;
  temporary: boolean;
  generation: number | null;
  expires_at: Date | null;
  created_at: Generated<Date>;
}
export type AccessTokenRow = Selectable<AccessTokenTable>;
export type NewAccessToken = Insertable<AccessTokenTable>;
