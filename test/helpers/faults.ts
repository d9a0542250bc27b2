import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import pg from 'pg';
import { expect } from 'vitest';
import { COMMAND_QUEUE, type CommandJobData, EVENT_FIELD, RevocationEvent } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { COMMAND_CHANNEL } from '../../db/repositories/command.repository.js';
import type { RunningWorker } from '../../worker/start-worker.js';
import { sleep } from './sleep.js';
import type { Stack } from './stack.js';

/**
 * Shared pieces of the fault-injection tests (worker and producer processes killed or signalled):
 * bounded concurrency, waiting for commands to end, the exactly-once checks and a listener for the
 * executor's per-step notifications.
 */

/** Runs `fn` over `items`, at most `n` at a time; results in input order. */
export async function bounded<T, R>(items: readonly T[], n: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        results[i] = await fn(items[i] as T, i);
      }
    }),
  );
  return results;
}

/** How many of these commands are in one of these states. */
export async function countInStates(db: Db, ids: readonly string[], states: readonly ('queued' | 'running' | 'succeeded' | 'failed')[]): Promise<number> {
  if (ids.length === 0) return 0;
  const row = await db
    .selectFrom('commands')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('id', 'in', [...ids])
    .where('state', 'in', [...states])
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Waits until every one of these commands is terminal in Postgres; returns how long it took. */
export async function waitForTerminal(db: Db, ids: readonly string[], timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const n = await countInStates(db, ids, ['succeeded', 'failed']);
    if (n === ids.length) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`${n} of ${ids.length} commands terminal after ${timeoutMs} ms`);
    await sleep(100);
  }
}

export async function tokenIdsOf(db: Db, collection: string, tag?: string): Promise<string[]> {
  let q = db.selectFrom('vault_tokens').select('token_id').where('collection', '=', collection);
  if (tag !== undefined) q = q.where('tags', '@>', sql<string[]>`array[${tag}]::text[]`);
  return (await q.execute()).map((r) => r.token_id).sort();
}

/** The values that occur more than once. */
export function duplicates(values: readonly string[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const v of values) (seen.has(v) ? twice : seen).add(v);
  return [...twice];
}

/** How many times each value occurs. */
export function tally(values: readonly (string | null)[]): Map<string | null, number> {
  const counts = new Map<string | null, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

/**
 * The exactly-once checks for single-token deletes: each command succeeded with `{ deleted: 1 }`,
 * has one `tokens.deleted` audit row naming its token, one `tokens.deleted` and one
 * `command.succeeded` outbox event; exactly the named tokens are gone (`kept` is what is left).
 */
export async function expectDeletedOnce(db: Db, collection: string, jobs: readonly { id: string; token: string }[], kept: readonly string[]): Promise<void> {
  const ids = jobs.map((j) => j.id);
  const rows = await db.selectFrom('commands').select(['id', 'state', 'result', 'error']).where('id', 'in', ids).execute();
  const notSucceeded = rows.filter((r) => r.state !== 'succeeded' || (r.result as { deleted?: number } | null)?.deleted !== 1);
  expect(notSucceeded.map((r) => `${r.id} ${r.state} ${JSON.stringify(r.result ?? r.error)}`)).toEqual([]);
  expect(rows).toHaveLength(jobs.length);

  expect(await tokenIdsOf(db, collection)).toEqual([...kept].sort());

  const audit = await db.selectFrom('audit_log').select(['command_id', 'action', 'data']).where('command_id', 'in', ids).execute();
  expect(audit.filter((r) => r.action !== 'tokens.deleted')).toEqual([]);
  const auditedFor = new Map<string, string[][]>();
  for (const r of audit) auditedFor.set(r.command_id as string, [...(auditedFor.get(r.command_id as string) ?? []), r.data.token_ids as string[]]);
  const badAudit = jobs.filter((j) => JSON.stringify(auditedFor.get(j.id)) !== JSON.stringify([[j.token]]));
  expect(badAudit.map((j) => `${j.id}: ${JSON.stringify(auditedFor.get(j.id))}`)).toEqual([]);

  const outbox = await db.selectFrom('outbox').select(['command_id', 'event']).where('command_id', 'in', ids).execute();
  const succeeded = tally(outbox.filter((r) => r.event.type === 'command.succeeded').map((r) => r.command_id));
  const deleted = tally(outbox.filter((r) => r.event.type === 'tokens.deleted').map((r) => r.command_id));
  expect(jobs.filter((j) => succeeded.get(j.id) !== 1 || deleted.get(j.id) !== 1).map((j) => j.id)).toEqual([]);
  expect(outbox).toHaveLength(2 * jobs.length);
}

/** A BullMQ Queue handle on the command queue of this Redis and prefix. */
export function commandQueue(url: string, prefix: string): { queue: Queue<CommandJobData>; close(): Promise<void> } {
  const connection = new Redis(url, { maxRetriesPerRequest: null });
  connection.on('error', () => {});
  const queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection, prefix });
  return {
    queue,
    async close() {
      await queue.close().catch(() => {});
      connection.disconnect();
    },
  };
}

/**
 * Runs a reconciler until the command's job is on the queue again: what brings back a command
 * whose job is gone (a killed worker's, removed) without waiting for the reconciler's interval.
 */
export async function reconcileUntilQueued(queue: Queue<CommandJobData>, reconciler: { reconcileOnce(): Promise<unknown> }, id: string): Promise<void> {
  for (let round = 0; !(await queue.getJob(id)); round++) {
    if (round > 100) throw new Error(`the reconciler did not re-enqueue command ${id}`);
    await reconciler.reconcileOnce();
    if (!(await queue.getJob(id))) await sleep(100);
  }
}

/**
 * After a worker process was killed -9 in the middle of a command: drops its job's lock (which
 * would expire on its own after lockDuration) and the stalled job, starts a worker in this process
 * and runs its reconciler until the command is queued again. Resolves with that worker.
 */
export async function resumeOnAnotherWorker(stack: Stack, queue: Queue<CommandJobData>, id: string): Promise<RunningWorker> {
  await stack.redis.del(`${stack.config.QUEUE_PREFIX}:${COMMAND_QUEUE}:${id}:lock`);
  await queue.remove(id);
  expect(await queue.getJob(id)).toBeUndefined();
  const worker = await stack.startWorker();
  await reconcileUntilQueued(queue, worker.reconciler, id);
  return worker;
}

/** Every event on the stream (a fresh connection), parsed against the contract. */
export async function streamEvents(url: string, stream: string): Promise<RevocationEvent[]> {
  const redis = new Redis(url, { maxRetriesPerRequest: 3 });
  redis.on('error', () => {});
  try {
    const entries = await redis.xrange(stream, '-', '+');
    return entries.map(([, fields]) => RevocationEvent.parse(JSON.parse(fields[fields.indexOf(EVENT_FIELD) + 1] ?? 'null')));
  } finally {
    redis.disconnect();
  }
}

/** Backends of this database with this application name that wait on a lock. */
export async function backendsWaitingOnLocks(db: Db, database: string, applicationName: string): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    select count(*) as n from pg_stat_activity
    where datname = ${database} and application_name = ${applicationName} and wait_event_type = 'Lock'`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

/** Counts the `step:<id>` notifications the executor sends when a batch of a command commits. */
export class StepLog {
  private readonly seen = new Map<string, number>();
  private readonly waiters = new Set<{ id: string; n: number; resolve: () => void }>();

  private constructor(readonly client: pg.Client) {
    client.on('notification', (message) => {
      const [kind, id] = (message.payload ?? '').split(':');
      if (kind !== 'step' || !id) return;
      const count = (this.seen.get(id) ?? 0) + 1;
      this.seen.set(id, count);
      for (const waiter of this.waiters) if (waiter.id === id && count >= waiter.n) waiter.resolve();
    });
  }

  /** LISTENs on the command channel of this database. Close with `close()`. */
  static async listen(url: string): Promise<StepLog> {
    const client = new pg.Client({ connectionString: url, application_name: 'fault-test-listener' });
    await client.connect();
    const log = new StepLog(client);
    await client.query(`listen ${COMMAND_CHANNEL}`);
    return log;
  }

  /** Resolves once `n` batches of command `id` have committed (at once if they have). */
  steps(id: string, n: number, timeoutMs = 30_000): Promise<void> {
    if ((this.seen.get(id) ?? 0) >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`command ${id}: ${this.seen.get(id) ?? 0} of ${n} batches committed in ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        id,
        n,
        resolve: () => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve();
        },
      };
      this.waiters.add(waiter);
    });
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => {});
  }
}
