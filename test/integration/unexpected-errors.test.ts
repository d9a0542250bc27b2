import { Writable } from 'node:stream';
import { type Job, UnrecoverableError } from 'bullmq';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_JOB_NAME, type CommandJobData, errorRegistry } from '../../contracts/index.js';
import { createDb } from '../../db/create-db.js';
import type { Db } from '../../db/database.js';
import { executeCommand } from '../../worker/command-executor.js';
import { commandProcessor, startCommandWorker } from '../../worker/command-worker.js';
import { Reconciler } from '../../worker/reconciler.js';
import { createCollection, submitCommand, tokenize } from '../helpers/api.js';
import { commandQueue } from '../helpers/faults.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * A fault no retry mends (a handler's bug, a stored row that no longer parses) is retried like a
 * transient one while the job has attempts left; on its last attempt it ends the command failed
 * with PV1000 (no internals in the stored error; the cause is logged with its stack), with its one
 * command.failed event, so the reconciler has nothing to run again and a caller waiting for the
 * job gets its answer. A database out of reach on the last attempt leaves the command to run again.
 */

const silent = pino({ level: 'silent' });
const internal = { error_code: 'PV1000', message: errorRegistry.PV1000.message, context: {} };

/** A logger whose lines (parsed) land in `lines`. */
function capturingLogger(lines: Record<string, any>[]) {
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return pino({ level: 'info' }, sink);
}

/** A structurally valid BullMQ job for the processor: attempt `attempt` of `attempts`. */
function fakeJob(commandId: string, attempt: number, attempts: number): Job<CommandJobData> {
  return { data: { command_id: commandId }, attemptsMade: attempt - 1, opts: { attempts }, updateProgress: async () => {} } as unknown as Job<CommandJobData>;
}

describe('a command whose attempts end on an unexpected error', () => {
  let stack: Stack;
  let db: Db;
  let commands: ReturnType<typeof commandQueue>;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    // the worker's pool: pipeline mode, COMMIT sent behind the last statement
    db = createDb(stack.database.url, { max: 8, applicationName: 'unexpected-errors-test' });
    commands = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
    await createCollection(stack, 'odd');
  });
  afterAll(async () => {
    await commands?.close();
    await db?.destroy();
    await stack?.close();
  });

  const commandRow = (id: string) => stack.database.db.selectFrom('commands').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
  const outbox = async (id: string) => (await stack.database.db.selectFrom('outbox').select('event').where('command_id', '=', id).orderBy('id').execute()).map((r) => r.event);
  const auditActions = async (id: string) => (await stack.database.db.selectFrom('audit_log').select('action').where('command_id', '=', id).orderBy('id').execute()).map((r) => r.action);

  /** Polls the BullMQ job until it completed or failed. */
  async function settle(jobId: string, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await commands.queue.getJob(jobId);
      const state = job ? await job.getState() : 'missing';
      // read again: another attempt may have ended between the read of the job and of its state
      const ended = state === 'completed' || state === 'failed' ? await commands.queue.getJob(jobId) : undefined;
      if (ended) return { state, attemptsMade: ended.attemptsMade, failedReason: ended.failedReason };
      if (Date.now() > deadline) throw new Error(`job ${jobId} did not settle; state ${state}`);
      await sleep(25);
    }
  }

  it('a stored payload that does not parse: the job fails after its attempts, the command ends failed with PV1000 and one command.failed event, and the reconciler leaves it', async () => {
    const [token] = await tokenize(stack, 'odd', [{ object: { id: 'o1' } }]);
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'odd', token_ids: [token], reason: 'AppFunctionality' });
    await sql`update commands set payload = payload - 'collection' where id = ${id}`.execute(stack.database.db);
    // the producer's job, replaced by one of three attempts without backoff
    await (await commands.queue.getJob(id))?.remove();
    await commands.queue.add(COMMAND_JOB_NAME, { command_id: id }, { jobId: id, attempts: 3 });

    const lines: Record<string, any>[] = [];
    const workerConnection = new Redis(stack.config.REDIS_URL, { maxRetriesPerRequest: null });
    const worker = startCommandWorker({ db, logger: capturingLogger(lines), settings: { deleteBatchSize: 100 } }, { connection: workerConnection, prefix: stack.config.QUEUE_PREFIX, concurrency: 1 });
    let settled: Awaited<ReturnType<typeof settle>>;
    try {
      settled = await settle(id);
    } finally {
      await worker.close();
      workerConnection.disconnect();
    }

    expect(settled).toMatchObject({ state: 'failed', attemptsMade: 3, failedReason: `PV1000: ${internal.message}` });
    // the reconciler finds nothing to run again: the command ended
    const reconciler = new Reconciler(stack.database.db, commands.queue, silent, { intervalMs: 60_000, graceMs: 0 });
    expect(await reconciler.reconcileOnce()).toBe(0);
    expect(await (await commands.queue.getJob(id))?.getState()).toBe('failed');

    expect(await commandRow(id)).toMatchObject({ state: 'failed', result: null, error: internal });
    const events = await outbox(id);
    expect(events.map((e) => e.type)).toEqual(['command.failed']);
    expect(events[0]!.data).toEqual({ command_type: 'tokens.delete', error: internal });
    expect(await auditActions(id)).toEqual(['command.failed']);
    expect((await stack.database.db.selectFrom('vault_tokens').select('token_id').where('token_id', '=', token!).execute()).length).toBe(1);
    // the cause is in the log, with its stack; the stored error says nothing of it
    const logged = lines.find((line) => line.level === 50 && line.err);
    expect(logged?.err).toMatchObject({ type: 'ZodError', stack: expect.stringContaining('ZodError') });
    expect(JSON.stringify(events)).not.toMatch(/ZodError|collection/i);
  });

  it('a handler that throws on a checkpoint it cannot read: retried while attempts remain, then PV1000 after the batch already committed, with one terminal event', async () => {
    const tokens = await tokenize(stack, 'odd', [{ object: { id: 'c1' } }, { object: { id: 'c2' } }, { object: { id: 'c3' } }]);
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'odd', token_ids: tokens, reason: 'AppFunctionality' });
    // a first delivery commits one batch, then is released (a shutdown)
    const stopped = new AbortController();
    stopped.abort();
    await expect(executeCommand({ db, logger: silent, settings: { deleteBatchSize: 1 } }, id, { finalAttempt: false, stop: stopped.signal })).resolves.toEqual({ state: 'released' });
    await sql`update commands set checkpoint = '{"after_id": 1}'::jsonb where id = ${id}`.execute(stack.database.db);
    const run = commandProcessor({ db, logger: silent, settings: { deleteBatchSize: 1 } });

    const first = await run(fakeJob(id, 1, 2)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(first).not.toBeInstanceOf(UnrecoverableError); // BullMQ retries it
    expect(await commandRow(id)).toMatchObject({ state: 'running', error: null });

    const last = await run(fakeJob(id, 2, 2)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(last).toBeInstanceOf(UnrecoverableError);
    expect((last as Error).message).toBe(`PV1000: ${internal.message}`);
    expect(await commandRow(id)).toMatchObject({ state: 'failed', error: internal });
    expect((await outbox(id)).map((e) => e.type)).toEqual(['tokens.deleted', 'command.failed']);
    expect(await auditActions(id)).toEqual(['tokens.deleted', 'command.failed']);

    // a redelivery finds it ended: the same failure, nothing written again
    await expect(run(fakeJob(id, 1, 5))).rejects.toThrow(`PV1000: ${internal.message}`);
    expect((await outbox(id)).map((e) => e.type)).toEqual(['tokens.deleted', 'command.failed']);
  });

  it('a stored audit context that does not parse: the failure is still recorded, by the worker for no tenant', async () => {
    const [token] = await tokenize(stack, 'odd', [{ object: { id: 'a1' } }]);
    const id = await submitCommand(stack, { type: 'tokens.rotate', collection: 'odd', token_ids: [token], reason: 'AppFunctionality' });
    await sql`update commands set audit = '{"actor": null}'::jsonb where id = ${id}`.execute(stack.database.db);

    await expect(commandProcessor({ db, logger: silent, settings: { deleteBatchSize: 100 } })(fakeJob(id, 5, 5))).rejects.toThrow(`PV1000: ${internal.message}`);
    expect(await commandRow(id)).toMatchObject({ state: 'failed', error: internal });
    const [event, ...more] = await outbox(id);
    expect(more).toEqual([]);
    expect(event).toMatchObject({
      type: 'command.failed',
      tenant_ids: null,
      audit: { actor: { id: 'revocation-worker', kind: 'service' }, source: 'system' },
      data: { command_type: 'tokens.rotate', error: internal },
    });
    const audit = await stack.database.db.selectFrom('audit_log').select(['action', 'actor_id', 'collection']).where('command_id', '=', id).execute();
    expect(audit).toEqual([{ action: 'command.failed', actor_id: 'revocation-worker', collection: 'odd' }]);
  });

  it('the database dropping the connection on the last attempt is not such an error: the command is left to run again', async () => {
    const [token] = await tokenize(stack, 'odd', [{ object: { id: 'd1' } }]);
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'odd', token_ids: [token], reason: 'AppFunctionality' });
    const run = commandProcessor({ db, logger: silent, settings: { deleteBatchSize: 100 } });
    // hold the command row; the worker's step waits on it, and its connection is terminated there
    const blocker = new pg.Client({ connectionString: stack.database.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query('select 1 from commands where id = $1 for update', [id]);
      const attempt = run(fakeJob(id, 5, 5)).then(
        () => undefined,
        (e: unknown) => e,
      );
      const waiting = async () =>
        (
          await stack.database.db
            .selectFrom(sql<{ pid: number }>`pg_stat_activity`.as('a'))
            .select('pid')
            .where(sql`application_name`, '=', 'unexpected-errors-test')
            .where(sql`wait_event_type`, '=', 'Lock')
            .execute()
        ).map((r) => r.pid);
      await expect.poll(waiting, { timeout: 5000 }).toHaveLength(1);
      await sql`select pg_terminate_backend(${(await waiting())[0]!})`.execute(stack.database.db);
      await blocker.query('commit');
      const error = await attempt;
      expect(error).toBeInstanceOf(Error);
      expect(error).not.toBeInstanceOf(UnrecoverableError);
    } finally {
      await blocker.end();
    }
    expect(await commandRow(id)).toMatchObject({ state: 'queued', error: null });
    expect(await outbox(id)).toEqual([]);
  });
});
