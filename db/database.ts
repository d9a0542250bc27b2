import type { Kysely, Transaction } from 'kysely';
import type { AccessTokenTable } from './access-token.table.js';
import type { AuditLogTable } from './audit-log.table.js';
import type { CollectionTable } from './collection.table.js';
import type { CommandCancellationTable } from './command-cancellation.table.js';
import type { CommandTable } from './command.table.js';
import type { OutboxTable } from './outbox.table.js';
import type { SubjectTable } from './subject.table.js';
import type { VaultTokenTable } from './vault-token.table.js';

export interface Database {
  collections: CollectionTable;
  vault_tokens: VaultTokenTable;
  subjects: SubjectTable;
  access_tokens: AccessTokenTable;
  commands: CommandTable;
  command_cancellations: CommandCancellationTable;
  audit_log: AuditLogTable;
  outbox: OutboxTable;
}

export type Db = Kysely<Database>;
export type Trx = Transaction<Database>;
/** Repositories take either: the caller decides whether a transaction is open. */
export type Executor = Db | Trx;
