import { sql } from 'kysely';
import {
  type AuditContext,
  type Canceller,
  type Command,
  type CommandType,
  type EventType,
  type JobCursor,
  type JobProgress,
  type JobState,
  type RevocationEvent,
  type StoredError,
  terminalEventTypes,
} from '../../contracts/index.js';
import type { CommandRow, NewCommand } from '../command.table.js';
import { type Executor, retryReadOnce } from '../database.js';
import { type AccessTokenWithSubject, credentialColumns, credentialColumnTypes, credentialHolds } from './access-token.repository.js';
import { LAST_IN_TRANSACTION } from '../pipelined.js';
import { executePrepared } from '../prepared.js';
import { type AuditEntry, auditRows } from './audit-log.repository.js';
import { type OutboxEvent, outboxRows } from './outbox.repository.js';

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

/**
 * How a step leaves the command: ended (succeeded or failed, or cancelled: see
 * worker/command-cancel.ts), or checkpointed for the next step.
 */
export type StepEnd =
  | { state: Extract<JobState, 'succeeded'>; result: Record<string, unknown>; progress?: JobProgress | null }
  | { state: Extract<JobState, 'failed'>; error: StoredError }
  | { state: Extract<JobState, 'cancelled'>; result: Record<string, unknown> | null }
  | { state: Extract<JobState, 'running'>; progress: JobProgress | null; checkpoint: Record<string, unknown> };

export interface StepRecord {
  id: string;
  /** The first step of a delivery: count the attempt (attempts + 1, started_at on the first one). */
  start: boolean;
  audit: AuditContext;
  entries: readonly AuditEntry[];
  events: readonly RevocationEvent[];
  /** Outbox rows the step's effect wrote already: they come before `events` in what commitSteps returns. */
  written?: readonly OutboxEvent[];
  end: StepEnd;
  /**
   * The step ran on this copy of its command (a job's, CommandJobData.carried) without locking
   * its row first: commitSteps locks it, and fails with CommandNotAsExpected unless the command
   * is still queued with exactly this payload and audit context.
   */
  expected?: { payload: Command; audit: AuditContext };
}

/** SQLSTATE of commands_as_expected (migration 0003). */
const NOT_AS_EXPECTED = 'RV001';

/**
 * Raised by commitSteps when a step's `expected` command was not queued with those contents
 * (ended, resumed, missing or different): the statement failed, so nothing of the transaction
 * is committed.
 */
export class CommandNotAsExpected extends Error {
  constructor(options?: { cause: unknown }) {
    super('the command was not queued with the contents its step ran on; nothing was committed', options);
    this.name = 'CommandNotAsExpected';
  }
}

/**
 * Writes what command steps leave behind, in the caller's transaction and in ONE prepared
 * statement however many steps: their audit rows and outbox events (data-modifying CTEs, in the
 * order given, so each command's events keep their order), each command's terminal state or
 * checkpoint (and, on the first step of a delivery, its attempt), and a NOTIFY on
 * COMMAND_CHANNEL per command (`done:<id>:<state>` or `step:<id>`, delivered at commit). The rows travel
 * as three JSON arrays, so the statement has one shape for one step or thirty. A step with
 * `expected` updates its command only if it is queued with those contents, and the statement
 * fails (CommandNotAsExpected) unless every step's command was updated; the others' rows the
 * caller locked before.
 * The steps MUST name distinct commands, and the statement MUST be the last of its transaction
 * (LAST_IN_TRANSACTION: on the worker's pool the COMMIT goes out right behind it, see
 * db/pipelined.ts). Returns each step's outbox rows in order (its `written`
 * ones first), each with its JSON text: once the transaction commits, the worker puts them on the
 * stream (EventPublisher).
 */
export async function commitSteps(trx: Executor, steps: readonly StepRecord[]): Promise<OutboxEvent[]> {
  const audit = steps.flatMap((step) => auditRows(step.id, step.audit, step.entries));
  const outbox = steps.flatMap((step) => outboxRows(step.id, step.events));
  const commands = steps.map(({ id, start, end, expected }) => ({
    id,
    start,
    expected: expected ?? null,
    state: end.state,
    progress_set: end.state === 'running' || (end.state === 'succeeded' && end.progress !== undefined),
    progress: end.state === 'running' || end.state === 'succeeded' ? (end.progress ?? null) : null,
    checkpoint: end.state === 'running' ? end.checkpoint : null,
    result: end.state === 'succeeded' || end.state === 'cancelled' ? end.result : null,
    error: end.state === 'failed' ? end.error : null,
  }));
  const written = await executePrepared(
    trx,
    sql<{ id: string | null; event_id: string | null; steps: number }>`${sql.raw(LAST_IN_TRANSACTION)}
      with audit_rows as (
        insert into audit_log (command_id, action, actor_id, actor_kind, tenant_ids, reason, adhoc_reason, custom_audit, request_id, source, collection, data)
        select command_id, action, actor_id, actor_kind, tenant_ids, reason, adhoc_reason, custom_audit, request_id, source, collection, data::jsonb
        from jsonb_to_recordset(${JSON.stringify(audit)}::jsonb) as r (command_id uuid, action text, actor_id text, actor_kind text, tenant_ids text[],
          reason text, adhoc_reason text, custom_audit text, request_id text, source text, collection text, data text)
      ), outbox_rows as (
        insert into outbox (event_id, command_id, event)
        select event_id, command_id, event::jsonb
        from jsonb_to_recordset(${JSON.stringify(outbox)}::jsonb) as o (event_id uuid, command_id uuid, event text)
        returning id, event_id
      ), updated as (
        update commands c set
          attempts = c.attempts + case when v.start then 1 else 0 end,
          started_at = case when v.start then coalesce(c.started_at, now()) else c.started_at end,
          state = v.state,
          progress = case when v.progress_set then v.progress else c.progress end,
          checkpoint = case when v.state = 'running' then v.checkpoint else c.checkpoint end,
          result = case when v.state = 'running' then c.result else v.result end,
          error = case when v.state = 'running' then c.error else v.error end,
          finished_at = case when v.state = 'running' then c.finished_at else now() end
        from jsonb_to_recordset(${JSON.stringify(commands)}::jsonb) as v (id uuid, start boolean, expected jsonb, state text, progress_set boolean, progress jsonb,
          checkpoint jsonb, result jsonb, error jsonb)
        where c.id = v.id and (v.expected is null or (c.state = 'queued' and c.payload = v.expected->'payload' and c.audit = v.expected->'audit'))
        returning pg_notify(${COMMAND_CHANNEL}, case when v.state = 'running' then 'step:' || c.id else 'done:' || c.id || ':' || v.state end)
      )
      select o.id::text as id, o.event_id::text as event_id, s.steps
      from (select commands_as_expected((select count(*) from updated)::int, ${commands.length}::int) as steps) s left join outbox_rows o on true`.compile(trx),
  ).catch((error: unknown) => {
    throw (error as { code?: unknown }).code === NOT_AS_EXPECTED ? new CommandNotAsExpected({ cause: error }) : error;
  });
  const idOf = new Map(written.flatMap((row) => (row.event_id === null ? [] : [[row.event_id, row.id!] as const])));
  const textOf = new Map(outbox.map((row) => [row.event_id, row.event]));
  return steps.flatMap((step) => [
    ...(step.written ?? []),
    ...step.events.map(({ event_id, type }) => ({ id: idOf.get(event_id)!, event: textOf.get(event_id)!, commandId: step.id, terminal: isTerminalEvent(type) })),
  ]);
}

const isTerminalEvent = (type: EventType): boolean => (terminalEventTypes as readonly EventType[]).includes(type);

/** One step's writes (see commitSteps). */
export async function commitStep(trx: Executor, step: StepRecord): Promise<OutboxEvent[]> {
  return commitSteps(trx, [step]);
}

/**
 * Takes a subject ID; returns the ID of a `subject.lockout` of that subject that has not ended
 * (queued or running), or undefined. Reads the pending commands only (index commands_pending).
 */
export async function findUnfinishedLockout(db: Executor, subjectId: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('commands')
    .select('id')
    .where('state', 'in', ['queued', 'running'])
    .where('type', '=', 'subject.lockout')
    .where(sql<boolean>`payload -> 'subject' ->> 'id' = ${subjectId}`)
    .limit(1)
    .executeTakeFirst();
  return row?.id;
}

/** Non-terminal commands accepted before `olderThan`, oldest first (the reconciler's list). */
export async function listUnfinishedCommands(db: Executor, olderThan: Date, limit: number): Promise<{ id: string; state: JobState }[]> {
  return db.selectFrom('commands').select(['id', 'state']).where('state', 'in', ['queued', 'running']).where('created_at', '<', olderThan).orderBy('created_at').limit(limit).execute();
}

export interface CommandListFilter {
  /** Only this subject's commands; undefined: everyone's (subjects:admin). */
  submitterId?: string | undefined;
  state?: JobState | undefined;
  type?: CommandType | undefined;
  /** created_at >= this (a timestamptz literal: an ISO date-time with an offset). */
  since?: string | undefined;
  /** Commands after this position in the list (older, or as old with a smaller ID). */
  after?: JobCursor | undefined;
}

/** The exact created_at (microseconds, UTC) a cursor carries: a JS Date holds milliseconds only. */
const cursorTime = sql<string>`to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * Commands matching the filter, newest first (created_at, then ID, descending), at most
 * `limit`, each with its position for the next page's `after`. Keyset pagination: a page reads
 * only its own index entries (migration 0006: commands_created_at, commands_submitter_created_at,
 * commands_state_created_at), however deep it is.
 */
export async function listCommands(db: Executor, filter: CommandListFilter, limit: number): Promise<(CommandRow & { position: JobCursor })[]> {
  let query = db.selectFrom('commands').selectAll().select(cursorTime.as('position_time'));
  if (filter.submitterId !== undefined) query = query.where('submitter_id', '=', filter.submitterId);
  if (filter.state !== undefined) query = query.where('state', '=', filter.state);
  if (filter.type !== undefined) query = query.where('type', '=', filter.type);
  if (filter.since !== undefined) query = query.where('created_at', '>=', sql<Date>`${filter.since}::timestamptz`);
  const after = filter.after;
  if (after !== undefined) query = query.where(sql<boolean>`(created_at, id) < (${after.createdAt}::timestamptz, ${after.id}::uuid)`);
  const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
  return rows.map(({ position_time, ...row }) => ({ ...row, position: { createdAt: position_time, id: row.id } }));
}

/**
 * Deletes at most `limit` commands that ended (succeeded, failed or cancelled) more than
 * `retentionDays` ago, oldest first (index commands_finished_at), with their idempotency keys
 * (columns of the row) and any cancel still asked of them (one the job's own end outran);
 * returns how many. Their audit rows stay (audit_log has no foreign key to commands since
 * migration 0006). Rows another transaction holds are skipped, so a revocation never waits on it.
 */
export async function deleteFinishedCommands(db: Executor, retentionDays: number, limit: number): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    with gone as (
      delete from commands where id in (
        select id from commands
        where finished_at < now() - make_interval(days => ${retentionDays}) and state in ('succeeded', 'failed', 'cancelled')
        order by finished_at
        limit ${limit}
        for update skip locked)
      returning id
    ), asked as (
      delete from command_cancellations where command_id in (select id from gone)
    )
    select count(*)::int as n from gone`.execute(db);
  return rows[0]?.n ?? 0;
}

/** The channel a transaction NOTIFYs with `done:<id>` or `step:<id>` when it commits a command step. */
export const COMMAND_CHANNEL = 'revocation_commands';
