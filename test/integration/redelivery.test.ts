import { type Job, UnrecoverableError } from 'bullmq';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_JOB_NAME, type CommandJobData } from '../../contracts/index.js';
import { createDb } from '../../db/create-db.js';
import { LAST_IN_TRANSACTION } from '../../db/pipelined.js';
import type { Db } from '../../db/database.js';
import { CommandReleased, type ExecutionOutcome, executeCommand } from '../../worker/command-executor.js';
import { commandProcessor } from '../../worker/command-worker.js';
import { call, createCollection, submitCommand, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { commandQueue } from '../helpers/faults.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §4.2: exactly-once effects over at-least-once delivery. A job delivered twice (one after
 * the other, after its BullMQ job was removed and re-added, or twice at the same time) has one
 * effect, one set of audit rows and outbox events, and returns the same outcome every time.
 */

const silent = pino({ level: 'silent' });

/** A structurally valid BullMQ job for the processor: the first of five attempts. */
function fakeJob(commandId: string, hints: Omit<CommandJobData, 'command_id'> = {}): Job<CommandJobData> {
  return { data: { command_id: commandId, ...hints }, attemptsMade: 0, opts: { attempts: 5 }, updateProgress: async () => {} } as unknown as Job<CommandJobData>;
}

async function tokenIdsOf(db: Db, collection: string): Promise<string[]> {
  const rows = await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', collection).execute();
  return rows.map((r) => r.token_id).sort();
}

async function outboxTypes(db: Db, commandId: string): Promise<string[]> {
  const rows = await db.selectFrom('outbox').select('event').where('command_id', '=', commandId).orderBy('id').execute();
  return rows.map((r) => r.event.type);
}

async function auditRows(db: Db, commandId: string) {
  return db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', commandId).orderBy('id').execute();
}

async function commandRow(db: Db, commandId: string) {
  return db.selectFrom('commands').selectAll().where('id', '=', commandId).executeTakeFirstOrThrow();
}

/** The hints the producer puts on a short command's job: short, and a copy of the row as recorded. */
async function copyHints(db: Db, commandId: string): Promise<Omit<CommandJobData, 'command_id'>> {
  const row = await commandRow(db, commandId);
  return { short: true, carried: { payload: row.payload, audit: row.audit } };
}

/**
 * Each delivery test runs on jobs that name their command only, and on jobs that carry a copy of
 * a short command as the producer's do (on the worker's pipelined pool): a delivery on a copy
 * applies its effect before it finds the command ended, and must keep none of it.
 */
const kinds = [
  { copies: false, jobs: 'jobs naming their command' },
  { copies: true, jobs: 'jobs carrying a copy of a short command' },
];

/**
 * Before a describe's tests: a stack without a worker (nothing but the test runs its commands),
 * a pool on its database, and `collection`, handed to `set`; after them, both closed.
 */
function openStack(collection: string, pool: { pipeline: boolean; applicationName: string }, set: (stack: Stack, db: Db) => void): void {
  let opened: { stack: Stack; db: Db } | undefined;
  beforeAll(async () => {
    const stack = await startStack({ worker: false });
    opened = { stack, db: createDb(stack.database.url, { max: 8, ...pool }) };
    set(opened.stack, opened.db);
    await createCollection(stack, collection);
  });
  afterAll(async () => {
    await opened?.db.destroy();
    await opened?.stack.close();
  });
}

function count<T>(items: readonly T[], item: T): number {
  return items.filter((i) => i === item).length;
}

describe.each(kinds)('a job delivered twice to the processor, one delivery after the other, $jobs', ({ copies }) => {
  let stack: Stack;
  let db: Db;
  openStack('seq', { pipeline: copies, applicationName: 'redelivery-test' }, (s, d) => {
    stack = s;
    db = d;
  });

  const processor = (deleteBatchSize = 100) => commandProcessor({ db, logger: silent, settings: { deleteBatchSize } });
  /** The job the producer would enqueue for a short command (with its copy, in copies mode). */
  const shortJob = async (id: string) => fakeJob(id, copies ? await copyHints(db, id) : {});

  it('rotates once and returns the identical mapping on the second delivery', async () => {
    const [a, b, keep] = await tokenize(stack, 'seq', [{ object: { id: 'r1' } }, { object: { id: 'r2' } }, { object: { id: 'r3' } }]);
    const id = await submitCommand(stack, { type: 'tokens.rotate', collection: 'seq', token_ids: [a, b], reason: 'AppFunctionality' });
    const run = processor();

    const job = await shortJob(id);
    const first = await run(job);
    const second = await run(job);

    expect(first.state).toBe('succeeded');
    expect(second).toEqual(first);
    const mapping = (first as Extract<ExecutionOutcome, { state: 'succeeded' }>).result.mapping as Record<string, string>;
    expect(Object.keys(mapping).sort()).toEqual([a, b].sort());
    const fresh = Object.values(mapping);
    expect(new Set(fresh).size).toBe(2);
    // renamed once: the old IDs are gone, each has exactly one new ID, and that one is the mapping's
    const tokens = await tokenIdsOf(db, 'seq');
    expect(tokens).toEqual([...fresh, keep].sort());
    const row = await commandRow(db, id);
    expect(row).toMatchObject({ state: 'succeeded', result: { mapping } });
    expect(count(await outboxTypes(db, id), 'command.succeeded')).toBe(1);
    expect(count(await outboxTypes(db, id), 'tokens.rotated')).toBe(1);
    const audit = await auditRows(db, id);
    expect(audit.map((r) => r.action)).toEqual(['tokens.rotated']);
    expect(audit[0]?.data).toEqual({ mapping });
  });

  it('deletes once and answers { deleted: N } on both deliveries', async () => {
    await tokenize(stack, 'seq', [
      { object: { id: 'd1' }, tags: ['gone-once'] },
      { object: { id: 'd2' }, tags: ['gone-once'] },
      { object: { id: 'd3' }, tags: ['gone-once'] },
    ]);
    const before = await tokenIdsOf(db, 'seq');
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'seq', tags: ['gone-once'], reason: 'AppFunctionality' });
    const run = processor();

    const first = await run(fakeJob(id));
    const second = await run(fakeJob(id));

    expect(first).toEqual({ state: 'succeeded', result: { deleted: 3 } });
    expect(second).toEqual(first);
    expect(await tokenIdsOf(db, 'seq')).toHaveLength(before.length - 3);
    const types = await outboxTypes(db, id);
    expect(count(types, 'command.succeeded')).toBe(1);
    expect(count(types, 'tokens.deleted')).toBe(1);
    expect((await auditRows(db, id)).map((r) => r.action)).toEqual(['tokens.deleted']);
  });

  it('a batched delete delivered again after it finished does not run another batch', async () => {
    await tokenize(
      stack,
      'seq',
      Array.from({ length: 5 }, (_, i) => ({ object: { id: `b${i}` }, tags: ['batched-once'] })),
    );
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'seq', tags: ['batched-once'], reason: 'AppFunctionality' });
    const run = processor(2);

    const first = await run(fakeJob(id));
    const second = await run(fakeJob(id));

    expect(first).toEqual({ state: 'succeeded', result: { deleted: 5 } });
    expect(second).toEqual(first);
    const audit = await auditRows(db, id);
    expect(audit.map((r) => r.action)).toEqual(['tokens.deleted', 'tokens.deleted', 'tokens.deleted']);
    expect(audit.flatMap((r) => r.data.token_ids as string[])).toHaveLength(5);
    expect(count(await outboxTypes(db, id), 'command.succeeded')).toBe(1);
    expect(await commandRow(db, id)).toMatchObject({ state: 'succeeded', progress: { processed: 5, total: 5 } });
  });

  it('bumps the temporary generation once for a revoke-all delivered twice', async () => {
    const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user' } });
    expect(created.status).toBe(201);
    const userId = created.body.id as string;
    const generation = async () => (await db.selectFrom('subjects').select('temporary_generation').where('id', '=', userId).executeTakeFirstOrThrow()).temporary_generation;
    const before = await generation();
    const id = await submitCommand(stack, { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: userId } });
    const run = processor();

    const job = await shortJob(id);
    const first = await run(job);
    const second = await run(job);

    expect(first).toEqual({ state: 'succeeded', result: { subject: { kind: 'user', id: userId }, generation: before + 1 } });
    expect(second).toEqual(first);
    expect(await generation()).toBe(before + 1);
    const types = await outboxTypes(db, id);
    expect(count(types, 'command.succeeded')).toBe(1);
    expect(count(types, 'temporary_tokens.revoked')).toBe(1);
    expect((await auditRows(db, id)).map((r) => r.action)).toEqual(['temporary_tokens.revoked']);
  });

  it('a failed rotate delivered twice fails the same way both times and records one failure', async () => {
    const [present] = await tokenize(stack, 'seq', [{ object: { id: 'f1' } }]);
    const id = await submitCommand(stack, { type: 'tokens.rotate', collection: 'seq', token_ids: [present, 'no-such-token'], reason: 'AppFunctionality' });
    const run = processor();

    const errors: unknown[] = [];
    const job = await shortJob(id);
    for (let i = 0; i < 2; i++)
      errors.push(
        await run(job).then(
          () => undefined,
          (e: unknown) => e,
        ),
      );

    for (const error of errors) {
      expect(error).toBeInstanceOf(UnrecoverableError);
      expect((error as Error).message).toMatch(/^PV3087: /);
    }
    expect((await tokenIdsOf(db, 'seq')).includes(present as string)).toBe(true);
    const row = await commandRow(db, id);
    expect(row).toMatchObject({ state: 'failed', result: null, error: { error_code: 'PV3087', context: { token_ids: 'no-such-token' } } });
    expect(await outboxTypes(db, id)).toEqual(['command.failed']);
    expect((await auditRows(db, id)).map((r) => r.action)).toEqual(['command.failed']);
  });
});

describe('a finished job removed from BullMQ and added again', () => {
  let stack: Stack;
  let commands: ReturnType<typeof commandQueue>;
  beforeAll(async () => {
    stack = await startStack();
    commands = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
    await createCollection(stack, 'again');
  });
  afterAll(async () => {
    await commands?.close();
    await stack?.close();
  });

  /** Polls the BullMQ job until it completed or failed; returns its state and return value. */
  async function settle(jobId: string, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await commands.queue.getJob(jobId);
      const state = job ? await job.getState() : 'missing';
      if (state === 'completed' || state === 'failed') return { state, returnvalue: job?.returnvalue as ExecutionOutcome | undefined, failedReason: job?.failedReason };
      if (Date.now() > deadline) throw new Error(`job ${jobId} did not settle; state ${state}`);
      await sleep(25);
    }
  }

  it('returns the stored mapping and renames nothing again', async () => {
    const ids = await tokenize(stack, 'again', [{ object: { id: 'a1' } }, { object: { id: 'a2' } }, { object: { id: 'a3' } }]);
    const accepted = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.rotate', collection: 'again', token_ids: ids.slice(0, 2), reason: 'AppFunctionality' } });
    expect(accepted.status).toBe(202);
    const jobId = accepted.body.job_id as string;
    const done = await waitForJob(stack, jobId);
    expect(done.state).toBe('succeeded');
    const mapping = done.result.mapping as Record<string, string>;
    const tokensAfterFirst = await tokenIdsOf(stack.database.db, 'again');
    expect(tokensAfterFirst).toEqual([...Object.values(mapping), ids[2]].sort());

    // the first delivery's BullMQ job is settled (or already trimmed): remove it, add it again
    const previous = await commands.queue.getJob(jobId);
    if (previous) {
      await settle(jobId);
      await previous.remove();
    }
    expect(await commands.queue.getJob(jobId)).toBeUndefined();
    await commands.queue.add(COMMAND_JOB_NAME, { command_id: jobId }, { jobId, attempts: 5 });
    const redelivered = await settle(jobId);

    expect(redelivered.state).toBe('completed');
    expect(redelivered.returnvalue).toEqual({ state: 'succeeded', result: { mapping } });
    const after = await waitForJob(stack, jobId);
    expect(after).toMatchObject({ state: 'succeeded', result: { mapping } });
    expect(after.attempts).toBeGreaterThanOrEqual(done.attempts);
    expect(after.attempts).toBeLessThanOrEqual(done.attempts + 1);
    expect(await tokenIdsOf(stack.database.db, 'again')).toEqual(tokensAfterFirst);
    const types = await outboxTypes(stack.database.db, jobId);
    expect(count(types, 'command.succeeded')).toBe(1);
    expect(count(types, 'tokens.rotated')).toBe(1);
    expect((await auditRows(stack.database.db, jobId)).map((r) => r.action)).toEqual(['tokens.rotated']);
    // on the stream (at least once; consumers dedupe on event_id): one terminal event, the same mapping
    const events = await waitForEvents(stack, (es) => es.some((e) => e.job_id === jobId && e.type === 'command.succeeded'));
    const terminal = events.filter((e) => e.job_id === jobId && e.type === 'command.succeeded');
    expect(new Set(terminal.map((e) => e.event_id)).size).toBe(1);
    expect(terminal[0]?.data).toEqual({ command_type: 'tokens.rotate', result: { mapping } });
    const rotated = events.filter((e) => e.job_id === jobId && e.type === 'tokens.rotated');
    expect(new Set(rotated.map((e) => e.event_id)).size).toBe(1);
  });
});

describe.each(kinds)('a job delivered twice at the same time, $jobs', ({ copies }) => {
  let stack: Stack;
  let db: Db;
  openStack('dup', { pipeline: copies, applicationName: 'redelivery-test' }, (s, d) => {
    stack = s;
    db = d;
  });

  const processor = (deleteBatchSize = 100) => commandProcessor({ db, logger: silent, settings: { deleteBatchSize } });
  /** The job the producer would enqueue for a short command (with its copy, in copies mode). */
  const shortJob = async (id: string) => fakeJob(id, copies ? await copyHints(db, id) : {});

  it('both deliveries of a rotate resolve with the same mapping; tokens are renamed once', async () => {
    const ids = await tokenize(
      stack,
      'dup',
      Array.from({ length: 4 }, (_, i) => ({ object: { id: `c${i}` } })),
    );
    const id = await submitCommand(stack, { type: 'tokens.rotate', collection: 'dup', token_ids: ids, reason: 'AppFunctionality' });

    const job = await shortJob(id);
    const [first, second] = await Promise.all([processor()(job), processor()(job)]);

    expect(first.state).toBe('succeeded');
    expect(second).toEqual(first);
    const mapping = (first as Extract<ExecutionOutcome, { state: 'succeeded' }>).result.mapping as Record<string, string>;
    expect(Object.keys(mapping).sort()).toEqual([...ids].sort());
    const remaining = await db
      .selectFrom('vault_tokens')
      .select('token_id')
      .where('collection', '=', 'dup')
      .where('token_id', 'in', [...ids, ...Object.values(mapping)])
      .execute();
    expect(remaining.map((r) => r.token_id).sort()).toEqual(Object.values(mapping).sort());
    expect(count(await outboxTypes(db, id), 'command.succeeded')).toBe(1);
    expect((await auditRows(db, id)).map((r) => r.action)).toEqual(['tokens.rotated']);
  });

  it('both deliveries of a batched delete resolve with the same count; each token is deleted by one batch', async () => {
    const ids = await tokenize(
      stack,
      'dup',
      Array.from({ length: 9 }, (_, i) => ({ object: { id: `t${i}` }, tags: ['twice-at-once'] })),
    );
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'dup', tags: ['twice-at-once'], reason: 'AppFunctionality' });

    const [first, second] = await Promise.all([processor(2)(fakeJob(id)), processor(2)(fakeJob(id))]);

    expect(first).toEqual({ state: 'succeeded', result: { deleted: 9 } });
    expect(second).toEqual(first);
    const left = await db.selectFrom('vault_tokens').select('token_id').where('token_id', 'in', ids).execute();
    expect(left).toEqual([]);
    const audit = await auditRows(db, id);
    expect(audit.map((r) => r.action)).toEqual(Array(5).fill('tokens.deleted'));
    const deleted = audit.flatMap((r) => r.data.token_ids as string[]);
    expect(deleted.sort()).toEqual([...ids].sort());
    const outbox = await db.selectFrom('outbox').select('event').where('command_id', '=', id).orderBy('id').execute();
    const batches = outbox.filter((r) => r.event.type === 'tokens.deleted').map((r) => (r.event.data as { batch: { index: number; last: boolean } }).batch);
    expect(batches.map((b) => b.index)).toEqual([0, 1, 2, 3, 4]);
    expect(batches.map((b) => b.last)).toEqual([false, false, false, false, true]);
    expect(
      count(
        outbox.map((r) => r.event.type),
        'command.succeeded',
      ),
    ).toBe(1);
    expect(await commandRow(db, id)).toMatchObject({ state: 'succeeded', progress: { processed: 9, total: 9 }, result: { deleted: 9 } });
  });

  it('both deliveries of a failing rotate fail with PV3087; one failure is recorded and nothing is renamed', async () => {
    const [present] = await tokenize(stack, 'dup', [{ object: { id: 'stays' } }]);
    const id = await submitCommand(stack, { type: 'tokens.rotate', collection: 'dup', token_ids: [present, 'never-was'], reason: 'AppFunctionality' });

    const job = await shortJob(id);
    const errors = await Promise.all(
      [0, 1].map(() =>
        processor()(job).then(
          () => undefined,
          (e: unknown) => e,
        ),
      ),
    );

    for (const error of errors) {
      expect(error).toBeInstanceOf(UnrecoverableError);
      expect((error as Error).message).toMatch(/^PV3087: /);
    }
    const row = await commandRow(db, id);
    expect(row).toMatchObject({ state: 'failed', error: { error_code: 'PV3087', context: { token_ids: 'never-was' } } });
    expect(
      await db
        .selectFrom('vault_tokens')
        .select('token_id')
        .where('token_id', '=', present as string)
        .execute(),
    ).toHaveLength(1);
    expect(await outboxTypes(db, id)).toEqual(['command.failed']);
    expect((await auditRows(db, id)).map((r) => r.action)).toEqual(['command.failed']);
  });

  it('both deliveries of a revoke-all resolve with the same generation, bumped once', async () => {
    const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user' } });
    expect(created.status).toBe(201);
    const userId = created.body.id as string;
    const id = await submitCommand(stack, { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: userId } });

    const job = await shortJob(id);
    const [first, second] = await Promise.all([processor()(job), processor()(job)]);

    expect(first).toEqual({ state: 'succeeded', result: { subject: { kind: 'user', id: userId }, generation: 1 } });
    expect(second).toEqual(first);
    const subject = await db.selectFrom('subjects').select('temporary_generation').where('id', '=', userId).executeTakeFirstOrThrow();
    expect(subject.temporary_generation).toBe(1);
    expect(count(await outboxTypes(db, id), 'command.succeeded')).toBe(1);
  });
});

/**
 * A short command's job carries a copy of the command (CommandJobData.carried), and the worker
 * applies the first step's effect before it locks the command row (runCarriedStep). The copy is
 * never trusted: the step commits only if its last statement finds the command queued with the
 * copy's contents; otherwise nothing of it is kept and the step runs again on the stored command.
 */
describe("a job carrying its command's copy", () => {
  let stack: Stack;
  let db: Db;
  // the worker's pool: pipeline mode, COMMIT sent behind the last statement
  openStack('copy', { pipeline: true, applicationName: 'redelivery-carried-test' }, (s, d) => {
    stack = s;
    db = d;
  });

  const run = (job: Job<CommandJobData>) => commandProcessor({ db, logger: silent, settings: { deleteBatchSize: 100 } })(job);
  const hintsOf = (id: string) => copyHints(db, id);
  const deleteOf = (token: string) => ({ type: 'tokens.delete', collection: 'copy', token_ids: [token], reason: 'AppFunctionality' });

  it('applies the effect before it locks the command row, and commits effect, records and state together', async () => {
    const [token] = await tokenize(stack, 'copy', [{ object: { id: 'c1' } }]);
    const id = await submitCommand(stack, deleteOf(token!));
    // hold the command row: a step that locks it first waits before deleting anything
    const blocker = new pg.Client({ connectionString: stack.database.url });
    // outside any transaction (one sees pg_stat_activity as it was at its first look)
    const observer = new pg.Client({ connectionString: stack.database.url });
    await blocker.connect();
    await observer.connect();
    try {
      await blocker.query('begin');
      await blocker.query('select 1 from commands where id = $1 for update', [id]);
      const running = run(fakeJob(id, await hintsOf(id)));
      // the worker waits on the command row in its LAST statement (commitSteps', marked so; the
      // text shown is cut short), its effect already applied
      const waiting = async () => (await observer.query<{ query: string }>(`select query from pg_stat_activity where application_name = 'redelivery-carried-test' and wait_event_type = 'Lock'`)).rows;
      await expect.poll(waiting, { timeout: 5000 }).toEqual([{ query: expect.stringContaining(LAST_IN_TRANSACTION) }]);
      // the token row is the worker's already (deleted by its open transaction)
      await expect(observer.query('select 1 from vault_tokens where token_id = $1 for update nowait', [token])).rejects.toMatchObject({ code: '55P03' });
      await blocker.query('commit');
      expect(await running).toEqual({ state: 'succeeded', result: { deleted: 1 } });
    } finally {
      await blocker.end();
      await observer.end();
    }
    expect(await tokenIdsOf(db, 'copy')).not.toContain(token);
    expect(await commandRow(db, id)).toMatchObject({ state: 'succeeded', attempts: 1, result: { deleted: 1 } });
    expect(await outboxTypes(db, id)).toEqual(['tokens.deleted', 'command.succeeded']);
    expect((await auditRows(db, id)).map((r) => r.action)).toEqual(['tokens.deleted']);
  });

  it('a revoke-all delivered again with its copy: the second effect is rolled back, the stored outcome returned', async () => {
    const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user' } });
    const userId = created.body.id as string;
    const generation = async () => (await db.selectFrom('subjects').select('temporary_generation').where('id', '=', userId).executeTakeFirstOrThrow()).temporary_generation;
    const before = await generation();
    const id = await submitCommand(stack, { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: userId } });
    const hints = await hintsOf(id);

    const first = await run(fakeJob(id, hints));
    // the copy's step bumps the generation again, then finds the command ended: all rolled back
    const second = await run(fakeJob(id, hints));

    expect(first).toEqual({ state: 'succeeded', result: { subject: { kind: 'user', id: userId }, generation: before + 1 } });
    expect(second).toEqual(first);
    expect(await generation()).toBe(before + 1);
    expect(await outboxTypes(db, id)).toEqual(['temporary_tokens.revoked', 'command.succeeded']);
    expect(await commandRow(db, id)).toMatchObject({ state: 'succeeded', attempts: 1 });
  });

  it('a copy that differs from the stored command: its effect is rolled back and the stored command runs', async () => {
    const [stored, other] = await tokenize(stack, 'copy', [{ object: { id: 'c2' } }, { object: { id: 'c3' } }]);
    const id = await submitCommand(stack, deleteOf(stored!));
    const hints = await hintsOf(id);
    const forged = { ...hints, carried: { ...hints.carried!, payload: { ...hints.carried!.payload, token_ids: [other!] } as never } };

    expect(await run(fakeJob(id, forged))).toEqual({ state: 'succeeded', result: { deleted: 1 } });

    const left = await tokenIdsOf(db, 'copy');
    expect(left).not.toContain(stored);
    expect(left).toContain(other);
    const audit = await auditRows(db, id);
    expect(audit.map((r) => r.data.token_ids)).toEqual([[stored]]);
    expect(await commandRow(db, id)).toMatchObject({ state: 'succeeded', attempts: 1 });
  });

  it('a copy on which the step fails (no such token) decides nothing: the stored command runs and succeeds', async () => {
    const [stored] = await tokenize(stack, 'copy', [{ object: { id: 'c4' } }]);
    const id = await submitCommand(stack, deleteOf(stored!));
    const hints = await hintsOf(id);
    const forged = { ...hints, carried: { ...hints.carried!, payload: { ...hints.carried!.payload, token_ids: ['no-such-token'] } as never } };

    expect(await run(fakeJob(id, forged))).toEqual({ state: 'succeeded', result: { deleted: 1 } });
    expect(await tokenIdsOf(db, 'copy')).not.toContain(stored);
    expect(await outboxTypes(db, id)).toEqual(['tokens.deleted', 'command.succeeded']);
  });

  it('a copy whose audit context differs (another tenant scope, another request): the stored one is what runs and is recorded', async () => {
    const [token] = await tokenize(stack, 'copy', [{ object: { id: 'c7' } }]);
    const id = await submitCommand(stack, deleteOf(token!));
    const hints = await hintsOf(id);
    const stored = hints.carried!.audit;
    const forged = { ...hints, carried: { ...hints.carried!, audit: { ...stored, tenant_ids: ['someone-else'], request_id: 'forged' } } };

    expect(await run(fakeJob(id, forged))).toEqual({ state: 'succeeded', result: { deleted: 1 } });
    const audit = await db.selectFrom('audit_log').select(['request_id', 'tenant_ids']).where('command_id', '=', id).execute();
    expect(audit).toEqual([{ request_id: stored.request_id, tenant_ids: stored.tenant_ids }]);
    expect(await tokenIdsOf(db, 'copy')).not.toContain(token);
  });

  it('a copy of a command an earlier delivery left running (resumed): it resumes from the checkpoint, not from the copy', async () => {
    const tokens = await tokenize(stack, 'copy', [{ object: { id: 'r8' } }, { object: { id: 'r9' } }, { object: { id: 'r10' } }]);
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'copy', token_ids: tokens, reason: 'AppFunctionality' });
    const hints = await hintsOf(id);
    // the first delivery commits one batch of one token, then is released (a shutdown)
    const stopped = new AbortController();
    stopped.abort();
    const deps = { db, logger: silent, settings: { deleteBatchSize: 1 } };
    await expect(executeCommand(deps, id, { finalAttempt: false, stop: stopped.signal })).rejects.toBeInstanceOf(CommandReleased);
    expect(await commandRow(db, id)).toMatchObject({ state: 'running', attempts: 1, progress: { processed: 1 } });

    // the copy says nothing of that: its step would start from the first token again
    expect(await executeCommand(deps, id, { finalAttempt: false, short: true, carried: hints.carried })).toEqual({ state: 'succeeded', result: { deleted: 3 } });
    expect(await tokenIdsOf(db, 'copy')).not.toEqual(expect.arrayContaining([tokens[0]]));
    const audit = await auditRows(db, id);
    expect(audit.flatMap((r) => r.data.token_ids as string[]).sort()).toEqual([...tokens].sort());
    expect(audit.map((r) => (r.data.batch as { index: number }).index)).toEqual([0, 1, 2]);
    expect(await commandRow(db, id)).toMatchObject({ state: 'succeeded', attempts: 2, progress: { processed: 3 } });
    expect(count(await outboxTypes(db, id), 'tokens.deleted')).toBe(3);
  });

  it('a copy of a failing command: the failure is recorded once, from the stored command', async () => {
    const id = await submitCommand(stack, deleteOf('not-there'));
    const error = await run(fakeJob(id, await hintsOf(id))).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((error as Error).message).toMatch(/^PV3009: /);
    expect(await commandRow(db, id)).toMatchObject({ state: 'failed', attempts: 1, error: { error_code: 'PV3009' } });
    expect(await outboxTypes(db, id)).toEqual(['command.failed']);
  });

  it('a copy that is not a command, or a job for a command not in the database', async () => {
    const [token] = await tokenize(stack, 'copy', [{ object: { id: 'c5' } }]);
    const id = await submitCommand(stack, deleteOf(token!));
    expect(await run(fakeJob(id, { short: true, carried: { payload: { type: 'nonsense' }, audit: {} } as never }))).toEqual({ state: 'succeeded', result: { deleted: 1 } });

    // a copy of a real command under an ID that is not in the database: nothing is deleted
    const [kept] = await tokenize(stack, 'copy', [{ object: { id: 'c6' } }]);
    const real = await submitCommand(stack, deleteOf(kept!));
    const hints = await hintsOf(real);
    const missing = '00000000-0000-4000-8000-000000000000';
    await expect(run(fakeJob(missing, hints))).rejects.toBeInstanceOf(UnrecoverableError);
    expect(await tokenIdsOf(db, 'copy')).toContain(kept);
    expect(await outboxTypes(db, missing)).toEqual([]);
  });
});
