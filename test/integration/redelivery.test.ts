import { type Job, UnrecoverableError } from 'bullmq';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_JOB_NAME, type CommandJobData } from '../../contracts/index.js';
import { createDb } from '../../db/create-db.js';
import type { Db } from '../../db/database.js';
import { type ExecutionOutcome, executeCommand } from '../../worker/command-executor.js';
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

/**
 * Before a describe's tests: a stack without a worker (nothing but the test runs its commands),
 * a pool on its database, and `collection`, handed to `set`; after them, both closed.
 */
function openStack(collection: string, set: (stack: Stack, db: Db) => void): void {
  let opened: { stack: Stack; db: Db } | undefined;
  beforeAll(async () => {
    const stack = await startStack({ worker: false });
    opened = { stack, db: createDb(stack.database.url, { max: 8, applicationName: 'redelivery-test' }) };
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

describe('a job delivered twice to the processor, one delivery after the other', () => {
  let stack: Stack;
  let db: Db;
  openStack('seq', (s, d) => {
    stack = s;
    db = d;
  });

  const processor = (deleteBatchSize = 100) => commandProcessor({ db, logger: silent, settings: { deleteBatchSize } });
  /** The job the producer enqueues for a short command. */
  const shortJob = async (id: string) => fakeJob(id, { short: true });

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

describe('a job delivered twice at the same time', () => {
  let stack: Stack;
  let db: Db;
  openStack('dup', (s, d) => {
    stack = s;
    db = d;
  });

  const processor = (deleteBatchSize = 100) => commandProcessor({ db, logger: silent, settings: { deleteBatchSize } });
  /** The job the producer enqueues for a short command. */
  const shortJob = async (id: string) => fakeJob(id, { short: true });

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

describe('a job for a command that is not in the database', () => {
  let stack: Stack;
  let db: Db;
  openStack('missing', (s, d) => {
    stack = s;
    db = d;
  });

  it('ends without retries (UnrecoverableError) and changes nothing', async () => {
    const [kept] = await tokenize(stack, 'missing', [{ object: { id: 'm1' } }]);
    const missing = '00000000-0000-4000-8000-000000000000';
    const run = commandProcessor({ db, logger: silent, settings: { deleteBatchSize: 100 } });
    await expect(run(fakeJob(missing, { short: true }))).rejects.toBeInstanceOf(UnrecoverableError);
    expect(await executeCommand({ db, logger: silent, settings: { deleteBatchSize: 100 } }, missing, { finalAttempt: true })).toEqual({ state: 'missing' });
    expect(await tokenIdsOf(db, 'missing')).toContain(kept);
    expect(await outboxTypes(db, missing)).toEqual([]);
  });
});
