/**
 * What command steps leave behind, in ONE statement per transaction (commitSteps): audit rows,
 * outbox events, each command's checkpoint or end, and the NOTIFY of its step.
 */
import { sql } from 'kysely';
import { type AuditContext, type EventType, type JobProgress, type JobState, type RevocationEvent, type StoredError, terminalEventTypes } from '../../contracts/index.js';
import type { Executor } from '../database.js';
import { executePrepared } from '../prepared.js';
import { type AuditEntry, auditRows } from './audit-log.repository.js';
import { COMMAND_CHANNEL } from './command.repository.js';
import { type OutboxEvent, outboxRows } from './outbox.repository.js';

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
}

/**
 * Writes what command steps leave behind, in the caller's transaction and in ONE prepared
 * statement however many steps: their audit rows and outbox events (data-modifying CTEs, in the
 * order given, so each command's events keep their order), each command's terminal state or
 * checkpoint (and, on the first step of a delivery, its attempt), and a NOTIFY on
 * COMMAND_CHANNEL per command (`done:<id>:<state>` or `step:<id>`, delivered at commit). The rows travel
 * as three JSON arrays, so the statement has one shape for one step or thirty.
 * The steps MUST name distinct commands, whose rows the caller locked. Returns each step's outbox
 * rows in order (its `written` ones first), each with its JSON text: once the transaction commits, the worker puts them on the
 * stream (EventPublisher).
 */
export async function commitSteps(trx: Executor, steps: readonly StepRecord[]): Promise<OutboxEvent[]> {
  const audit = steps.flatMap((step) => auditRows(step.id, step.audit, step.entries));
  const outbox = steps.flatMap((step) => outboxRows(step.id, step.events));
  const commands = steps.map(({ id, start, end }) => ({
    id,
    start,
    state: end.state,
    progress_set: end.state === 'running' || (end.state === 'succeeded' && end.progress !== undefined),
    progress: end.state === 'running' || end.state === 'succeeded' ? (end.progress ?? null) : null,
    checkpoint: end.state === 'running' ? end.checkpoint : null,
    result: end.state === 'succeeded' || end.state === 'cancelled' ? end.result : null,
    error: end.state === 'failed' ? end.error : null,
  }));
  const written = await executePrepared(
    trx,
    sql<{ id: string; event_id: string }>`
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
        from jsonb_to_recordset(${JSON.stringify(commands)}::jsonb) as v (id uuid, start boolean, state text, progress_set boolean, progress jsonb,
          checkpoint jsonb, result jsonb, error jsonb)
        where c.id = v.id
        returning pg_notify(${COMMAND_CHANNEL}, case when v.state = 'running' then 'step:' || c.id else 'done:' || c.id || ':' || v.state end)
      )
      select id::text as id, event_id::text as event_id from outbox_rows`.compile(trx),
  );
  const idOf = new Map(written.map((row) => [row.event_id, row.id]));
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
