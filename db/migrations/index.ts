import type { Migration } from 'kysely';
import * as m0001 from './0001-initial.js';
import * as m0002 from './0002-uncompressed-id-lists.js';
import * as m0003 from './0003-commands-as-expected.js';
import * as m0004 from './0004-outbox-written-at-insert.js';
import * as m0005 from './0005-vault-token-type-scope-props.js';
import * as m0006 from './0006-jobs-list-index.js';
import * as m0007 from './0007-command-cancel.js';
import * as m0008 from './0008-subject-lockout.js';
import * as m0009 from './0009-outbox-token-ids-by-reference.js';

/** Every migration, in order. Add new ones here; names sort in application order. */
export const migrations: Record<string, Migration> = {
  '0001-initial': m0001,
  '0002-uncompressed-id-lists': m0002,
  '0003-commands-as-expected': m0003,
  '0004-outbox-written-at-insert': m0004,
  '0005-vault-token-type-scope-props': m0005,
  '0006-jobs-list-index': m0006,
  '0007-command-cancel': m0007,
  '0008-subject-lockout': m0008,
  '0009-outbox-token-ids-by-reference': m0009,
};
