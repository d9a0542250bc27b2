import type { Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { Capability, SubjectKind } from '../contracts/index.js';

/** A caller: user, provider or service. `null` scopes mean "all". */
export interface SubjectTable {
  id: string;
  kind: SubjectKind;
  domain_id: string;
  capabilities: Capability[];
  tenant_ids: string[] | null;
  collections: string[] | null;
  /** Temporary tokens issued under an older generation are revoked. */
  temporary_generation: Generated<number>;
  /** Set while the subject is locked out (SPEC §10): nothing it holds authenticates. */
  disabled_at: Generated<Date | null>;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}
export type SubjectRow = Selectable<SubjectTable>;
export type NewSubject = Insertable<SubjectTable>;
export type SubjectUpdate = Updateable<SubjectTable>;
