/**
 * Commands: recording them (once per idempotency key, for a credential that still holds), reading
 * them, locking them for a step, the cancels asked of them, and the channel their steps NOTIFY.
 * What a step writes: command-step.repository.ts; lists and retention: command-list.repository.ts.
 */
import { sql } from 'kysely';
import type { AuditContext, Canceller, Command } from '../../contracts/index.js';
import type { CommandRow, NewCommand } from '../command.table.js';
import { type Executor, retryReadOnce } from '../database.js';
import { type AccessTokenWithSubject, credentialColumns, credentialColumnTypes, credentialHolds } from './access-token.repository.js';
import { executePrepared } from '../prepared.js';

/** A command to record, and the credential it is recorded for. */
export interface CommandRecord {
  command: Omit<NewCommand, 'payload' | 'audit'> & { payload: Command; audit: AuditContext };
  credential: AccessTokenWithSubject;
}

/** What recording a command came to (insertCommands). */
export type RecordOutcome = { credentialHolds: false } | { credentialHolds: true; inserted: boolean; row: CommandRow };

/**
 * Records commands, each on behalf of its credential, in ONE statement however many (the rows
 * travel as one JSON array): each row is inserted only if its credential still holds
 * (credentialHolds, in the statement's own snapshot); otherwise `{ credentialHolds: false }` and
 * nothing. A row whose idempotency key its submitter already used (or uses earlier in the same
 * call) is not inserted: `{ inserted: false, row: <that command> }`. Concurrent inserts with one
 * key wait on each other's unique-index entry, so exactly one command is created; rows go in in
 * key order, so two calls never wait on each other both ways. Outcomes in input order.
 */
export async function insertCommands(db: Executor, records: readonly CommandRecord[]): Promise<RecordOutcome[]> {
  const input = records.map(({ command: c, credential }, ord) => ({
    ord,
    id: c.id,
    type: c.type,
    payload: c.payload,
    payload_hash: c.payload_hash,
    submitter_id: c.submitter_id,
    idempotency_key: c.idempotency_key ?? null,
    audit: c.audit,
    ...credentialColumns(credential),
  }));
  const rows = await executePrepared(
    db,
    sql<{ ord: number; credential_holds: boolean } & Partial<CommandRow>>`
      with input as (
        select * from jsonb_to_recordset(${JSON.stringify(input)}::jsonb) as i (ord int, id uuid, type text, payload jsonb, payload_hash text,
          submitter_id text, idempotency_key text, audit jsonb, ${credentialColumnTypes})
      ), checked as (
        select i.*, ${credentialHolds('i')} as ok from input i
      ), inserted as (
        insert into commands (id, type, payload, payload_hash, submitter_id, idempotency_key, audit)
        select id, type, payload, payload_hash, submitter_id, idempotency_key, audit from checked where ok order by submitter_id, idempotency_key, ord
        on conflict (submitter_id, idempotency_key) where idempotency_key is not null do nothing
        returning *
      )
      select c.ord, c.ok as credential_holds, inserted.* from checked c left join inserted on inserted.id = c.id order by c.ord`.compile(db),
  );
  const outcomes: RecordOutcome[] = rows.map(({ ord: _, credential_holds, ...row }) =>
    !credential_holds ? { credentialHolds: false } : { credentialHolds: true, inserted: row.id != null, row: row as CommandRow },
  );
  const replays = outcomes.flatMap((o, i) => (o.credentialHolds && !o.inserted ? [records[i]!.command] : []));
  if (replays.length > 0) {
    const earlier = await db
      .selectFrom('commands')
      .selectAll()
      .where((eb) => eb.or(replays.map((c) => eb.and([eb('submitter_id', '=', c.submitter_id), eb('idempotency_key', '=', c.idempotency_key ?? null)]))))
      .execute();
    const byKey = new Map(earlier.map((row) => [`${row.submitter_id}\u0000${row.idempotency_key}`, row]));
    outcomes.forEach((o, i) => {
      if (!o.credentialHolds || o.inserted) return;
      const c = records[i]!.command;
      const row = byKey.get(`${c.submitter_id}\u0000${c.idempotency_key}`);
      if (!row) throw new Error(`command ${c.id}: neither inserted nor found under its idempotency key`);
      o.row = row;
    });
  }
  return outcomes;
}

/** The command `submitterId` submitted under an Idempotency-Key, or undefined. Index: commands_submitter_idempotency_key. */
export async function findCommandByIdempotencyKey(db: Executor, submitterId: string, key: string): Promise<CommandRow | undefined> {
  return retryReadOnce(() => db.selectFrom('commands').selectAll().where('submitter_id', '=', submitterId).where('idempotency_key', '=', key).executeTakeFirst());
}

/** Takes a command ID; returns the command or undefined. */
export async function findCommand(db: Executor, id: string): Promise<CommandRow | undefined> {
  const [row] = await executePrepared(db, db.selectFrom('commands').selectAll().where('id', '=', id).compile());
  return row;
}

/** A command row locked for a step, with the cancel asked of it meanwhile (command_cancellations), if any. */
export type LockedCommand = CommandRow & { cancel_request: Canceller | null };

/**
 * Locks the command rows for the rest of the transaction, in key order (two transactions locking
 * overlapping sets cannot deadlock on them); returns those that exist, by ID, each with its
 * pending cancel request read in the same statement. With `skipLocked`, rows another
 * transaction holds are left out (as if missing) instead of waited for.
 */
export async function lockCommands(trx: Executor, ids: readonly string[], options: { skipLocked?: boolean } = {}): Promise<Map<string, LockedCommand>> {
  let query = trx
    .selectFrom('commands')
    .selectAll('commands')
    .select((eb) => eb.selectFrom('command_cancellations').select('requested_by').whereRef('command_cancellations.command_id', '=', 'commands.id').as('cancel_request'))
    .where('id', '=', sql<string>`any(${[...ids]}::uuid[])`)
    .orderBy('id')
    .forUpdate('commands');
  if (options.skipLocked) query = query.skipLocked();
  const rows = await executePrepared(trx, query.compile());
  return new Map(rows.map((row) => [row.id, row as LockedCommand]));
}

/**
 * Asks a command to be cancelled by the step that next locks it (LockedCommand.cancel_request).
 * Never waits for the command row. A cancel asked already is kept as it was (the first asker).
 */
export async function requestCancel(db: Executor, commandId: string, by: Canceller): Promise<void> {
  await db
    .insertInto('command_cancellations')
    .values({ command_id: commandId, requested_by: JSON.stringify(by) })
    .onConflict((oc) => oc.column('command_id').doNothing())
    .execute();
}

/** Removes the cancel asked of a command (it ended, cancelled or not). */
export async function withdrawCancelRequest(db: Executor, commandId: string): Promise<void> {
  await db.deleteFrom('command_cancellations').where('command_id', '=', commandId).execute();
}

/** Keeps the rest of the transaction on one core (no parallel workers): for background work beside a command's steps. */
export async function useOneCore(trx: Executor): Promise<void> {
  await sql`set local max_parallel_workers_per_gather = 0`.execute(trx);
}

/**
 * Runs the rest of the transaction's statements for at most `ms` each (SET LOCAL
 * statement_timeout): one that runs longer is cancelled with SQLSTATE 57014 (query_canceled).
 */
export async function limitStatementTime(trx: Executor, ms: number): Promise<void> {
  await sql`select set_config('statement_timeout', ${String(Math.ceil(ms))}, true)`.execute(trx);
}

/** The channel a transaction NOTIFYs with `done:<id>:<state>` or `step:<id>` when it commits a command step. */
export const COMMAND_CHANNEL = 'revocation_commands';
