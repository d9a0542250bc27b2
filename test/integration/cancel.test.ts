import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_JOB_NAME, COMMAND_JOB_OPTIONS, COMMAND_QUEUE, JobView, type RevocationEvent } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { seedNamedAccessTokens, seedVaultTokens } from '../../db/repositories/seed.repository.js';
import { call, createCollection, subjectWithToken, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { commandQueue } from '../helpers/faults.js';
import { killChildren, spawnWorker } from '../helpers/processes.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';
import { outboxEventsOf } from '../../db/repositories/outbox.repository.js';

/**
 * SPEC §10, `POST /v1/jobs/{id}/cancel`: a queued job never runs; a running bulk delete stops
 * after the batch it is in commits, whichever worker runs it; state `cancelled`, result
 * `{ deleted: N }` of what really went, one `command.cancelled` event; idempotent; 409 for a job
 * that ended; 404 for someone else's. A cancel and the job's own end race on the command row:
 * whichever commits first wins and the other finds it so.
 */

const REASON = 'FraudPreventionSecurityAndCompliance';
const BATCH = 10;
type Headers = Record<string, string>;

const uid = () => randomBytes(4).toString('hex');
const cancel = (stack: Stack, id: string, headers: Headers = stack.admin) => call(stack, 'POST', `/v1/jobs/${id}/cancel`, { headers });
const submit = (stack: Stack, body: unknown, headers: Headers = stack.admin) => call(stack, 'POST', '/v1/commands', { headers, body });
const deleteByTag = (collection: string, tag: string) => ({ type: 'tokens.delete', collection, tags: [tag], reason: REASON });

/** The command's outbox events, whole, in order. */
async function outboxOf(db: Db, id: string): Promise<RevocationEvent[]> {
  return outboxEventsOf(db, id);
}

/** Waits until a cancel has been asked of the command (a worker's step held it: command_cancellations). */
async function untilCancelAsked(db: Db, id: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await db.selectFrom('command_cancellations').select('command_id').where('command_id', '=', id).executeTakeFirst())) {
    if (Date.now() > deadline) throw new Error(`no cancel was asked of ${id} within ${timeoutMs} ms`);
    await sleep(20);
  }
}

/**
 * Sends a cancel of the command while `holder` keeps its worker's step waiting and, once the
 * cancel has been asked of that step, lets the step go; returns the cancel's answer.
 */
async function cancelWhileHeld(stack: Stack, id: string, holder: { release(): Promise<void> }) {
  const cancelled = cancel(stack, id);
  await untilCancelAsked(stack.database.db, id);
  await holder.release();
  return cancelled;
}

/** Holds row locks on tokens in a transaction of its own: a worker whose batch takes one of them waits at that batch. */
class TokenHolder {
  private constructor(
    private readonly client: pg.Client,
    private readonly pid: number,
  ) {}

  static async lock(url: string, tokenKeys: readonly string[]): Promise<TokenHolder> {
    return TokenHolder.lockRows(url, 'vault_tokens', tokenKeys);
  }

  /** Locks rows of `table` by their `id`. */
  static async lockRows(url: string, table: 'vault_tokens' | 'access_tokens' | 'subjects', ids: readonly string[]): Promise<TokenHolder> {
    const client = new pg.Client({ connectionString: url, application_name: 'cancel-test-holder' });
    await client.connect();
    const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
    await client.query('begin');
    const locked = await client.query(`select id from ${table} where id::text = any($1::text[]) for update`, [ids]);
    if (locked.rowCount !== ids.length) throw new Error(`locked ${locked.rowCount} of ${ids.length} rows of ${table}`);
    return new TokenHolder(client, rows[0]!.pid);
  }

  /** Waits until a worker's backend waits for one of the held tokens (its batch, holding the command row). */
  async untilWorkerWaits(db: Db, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where application_name = 'revocation-worker' and ${this.pid}::int = any(pg_blocking_pids(pid))`.execute(
        db,
      );
      if (rows[0]!.n > 0) return;
      if (Date.now() > deadline) throw new Error(`no worker waited for the held tokens within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  private released = false;

  /** Ends the transaction and the connection; again, does nothing. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.client.query('rollback');
    await this.client.end();
  }
}

/** The keys of the collection's tokens, lowest first: batch i of a delete takes keys [i × BATCH, (i + 1) × BATCH). */
async function keysOf(db: Db, collection: string): Promise<string[]> {
  return (await db.selectFrom('vault_tokens').select('id').where('collection', '=', collection).orderBy('id').execute()).map((r) => r.id);
}

/** The BullMQ job once it has completed (polled), with what the processor returned. */
async function completedJob(stack: Stack, id: string, timeoutMs = 20_000): Promise<unknown> {
  const { queue, close } = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await queue.getJob(id);
      // read again once completed: the job read before may predate its return value
      if (job && (await job.getState()) === 'completed') return (await queue.getJob(id))?.returnvalue;
      if (Date.now() > deadline) throw new Error(`job ${id} did not complete within ${timeoutMs} ms (state ${job ? await job.getState() : 'missing'})`);
      await sleep(50);
    }
  } finally {
    await close();
  }
}

async function cancelledCount(stack: Stack, type: string): Promise<number> {
  const text = (await stack.producer.app.inject({ method: 'GET', url: '/metrics' })).body;
  const line = text.split('\n').find((l) => l.startsWith('revocation_commands_total{') && l.includes(`type="${type}"`) && l.includes('outcome="cancelled"'));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('cancelling a queued job', () => {
  let stack: Stack;
  let collection: string;
  let writer: Awaited<ReturnType<typeof subjectWithToken>>;
  let other: Awaited<ReturnType<typeof subjectWithToken>>;
  /** Jobs cancelled while queued, and what must still be there once a worker has seen them. */
  const cancelledJobs: JobView[] = [];
  let tokensKept: string[];
  let victim: Awaited<ReturnType<typeof subjectWithToken>>;

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { DELETE_BATCH_SIZE: String(BATCH) } });
    collection = `cq_${uid()}`;
    await createCollection(stack, collection);
    writer = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
    other = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
    victim = await subjectWithToken(stack, { kind: 'user' }, { temporary: true, ttl_seconds: 3600 });
    tokensKept = await tokenize(
      stack,
      collection,
      Array.from({ length: 25 }, (_, i) => ({ object: { id: `q${i}` }, tags: ['queued'] })),
    );
  });
  afterAll(() => stack?.close());

  it('ends it cancelled at once, with what it did (nothing), an audit row and one command.cancelled event; a second cancel answers the same', async () => {
    const metricBefore = await cancelledCount(stack, 'tokens.delete');
    const accepted = await submit(stack, deleteByTag(collection, 'queued'), writer.headers);
    expect(accepted.status).toBe(202);
    const id = accepted.body.job_id as string;

    const r = await cancel(stack, id, writer.headers);

    expect(r.status).toBe(200);
    const job = JobView.parse(r.body);
    expect(job).toMatchObject({ job_id: id, state: 'cancelled', attempts: 0, result: { deleted: 0 }, error: null, progress: null, started_at: null });
    expect(job.finished_at).not.toBeNull();
    expect((await call(stack, 'GET', `/v1/jobs/${id}`, { headers: writer.headers })).body).toEqual(r.body);
    const again = await cancel(stack, id, writer.headers);
    expect(again).toMatchObject({ status: 200, body: r.body });

    const events = await outboxOf(stack.database.db, id);
    expect(events.map((e) => e.type)).toEqual(['command.cancelled']);
    expect(events[0]).toMatchObject({
      job_id: id,
      audit: { actor: { id: writer.subject.id } },
      data: { command_type: 'tokens.delete', result: { deleted: 0 }, cancelled_by: { id: writer.subject.id, kind: 'service', request_id: expect.any(String) } },
    });
    const audit = await stack.database.db.selectFrom('audit_log').select(['action', 'collection', 'actor_id', 'data']).where('command_id', '=', id).execute();
    expect(audit).toEqual([{ action: 'command.cancelled', collection, actor_id: writer.subject.id, data: events[0]!.data }]);
    expect(await cancelledCount(stack, 'tokens.delete')).toBe(metricBefore + 1);
    cancelledJobs.push(job);
  });

  it('cancels every command type; the ones that run in one step end with result null', async () => {
    const named = await submit(stack, { type: 'tokens.delete', collection, token_ids: tokensKept.slice(0, 3), reason: REASON });
    const rotate = await submit(stack, { type: 'tokens.rotate', collection, token_ids: tokensKept.slice(3, 5), reason: REASON });
    const revoke = await submit(stack, { type: 'access_token.revoke', token_id: victim.tokenId });
    const revokeAll = await submit(stack, { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: victim.subject.id } });
    const lockout = await submit(stack, { type: 'subject.lockout', subject: { kind: 'user', id: victim.subject.id } });
    for (const [accepted, result] of [
      [named, { deleted: 0 }],
      [rotate, null],
      [revoke, null],
      [revokeAll, null],
      [lockout, { subject: { kind: 'user', id: victim.subject.id }, revoked: 0 }],
    ] as const) {
      expect(accepted.status).toBe(202);
      const r = await cancel(stack, accepted.body.job_id);
      expect(r.status, accepted.body.type).toBe(200);
      expect(r.body, accepted.body.type).toMatchObject({ state: 'cancelled', result });
      expect(
        (await outboxOf(stack.database.db, accepted.body.job_id)).map((e) => [e.type, e.data]),
        accepted.body.type,
      ).toEqual([['command.cancelled', { command_type: accepted.body.type, result, cancelled_by: { id: 'admin', kind: 'service', request_id: expect.any(String) } }]]);
      cancelledJobs.push(JobView.parse(r.body));
    }
  });

  it("answers someone else's job 404 PV3005, as GET does and as for a job that does not exist, and leaves it queued; subjects:admin may cancel it", async () => {
    const accepted = await submit(stack, deleteByTag(collection, 'queued'), writer.headers);
    const id = accepted.body.job_id as string;

    const stranger = await cancel(stack, id, other.headers);
    expect(stranger).toMatchObject({ status: 404, body: { error_code: 'PV3005', context: { job_id: id } } });
    expect((await call(stack, 'GET', `/v1/jobs/${id}`, { headers: other.headers })).status).toBe(404);
    const unknown = await cancel(stack, '00000000-0000-4000-8000-000000000000', writer.headers);
    expect(unknown).toMatchObject({ status: 404, body: { error_code: 'PV3005' } });
    expect({ ...unknown.body, context: {} }).toEqual({ ...stranger.body, context: {} });
    expect((await cancel(stack, 'not-a-uuid', writer.headers)).status).toBe(400);
    expect((await call(stack, 'GET', `/v1/jobs/${id}`, { headers: writer.headers })).body.state).toBe('queued');
    expect(await outboxOf(stack.database.db, id)).toEqual([]);

    const byAdmin = await cancel(stack, id);
    expect(byAdmin).toMatchObject({ status: 200, body: { state: 'cancelled' } });
    cancelledJobs.push(JobView.parse(byAdmin.body));
  });

  it('answers a synchronous seed call whose job is cancelled 409 PV3012 in the seed envelope (the waiter wakes on the cancel)', async () => {
    const waiting = [
      { family: 'piiano', request: call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${collection}/tokens?tags=queued&reason=${REASON}`, { headers: stack.admin }) },
      { family: 'onezone', request: call(stack, 'DELETE', `/api/v3/onezone/users/${victim.subject.id}/tokens/temporary`, { headers: stack.admin }) },
    ];
    // both recorded and waiting: cancel them
    const ids = async () => (await stack.database.db.selectFrom('commands').select('id').where('state', '=', 'queued').execute()).map((r) => r.id);
    for (let round = 0; (await ids()).length < 2; round++) {
      if (round > 200) throw new Error('the seed calls were not recorded');
      await sleep(25);
    }
    const queued = await ids();
    for (const id of queued) expect((await cancel(stack, id)).status).toBe(200);

    const [piiano, onezone] = await Promise.all(waiting.map((w) => w.request));
    expect(piiano!.status).toBe(409);
    expect(piiano!.body).toEqual({ error_code: 'PV3012', message: expect.stringMatching(/cancelled before it ended, after deleting 0 tokens/), context: { job_id: expect.any(String), deleted: '0' } });
    expect(piiano!.headers.location).toBe(`/v1/jobs/${piiano!.body.context.job_id}`);
    expect(onezone!.status).toBe(409);
    expect(onezone!.body).toEqual({ error: { id: 'jobCancelled', details: { error_code: 'PV3012', job_id: expect.any(String) }, description: expect.any(String) } });
    for (const id of queued) cancelledJobs.push(JobView.parse((await call(stack, 'GET', `/v1/jobs/${id}`, { headers: stack.admin })).body));
  });

  it('never runs a cancelled job once a worker starts: its BullMQ job completes as cancelled, nothing is deleted, rotated or revoked, and each command.cancelled event reaches the stream', async () => {
    const generation = (await call(stack, 'GET', `/api/v3/onezone/users/${victim.subject.id}/tokens/temporary`, { headers: stack.admin })).body;
    await stack.startWorker();

    for (const job of cancelledJobs) {
      expect(await completedJob(stack, job.job_id), job.type).toEqual({ state: 'cancelled', result: job.result });
      expect((await call(stack, 'GET', `/v1/jobs/${job.job_id}`, { headers: stack.admin })).body, job.type).toEqual(job);
    }
    const kept = await stack.database.db.selectFrom('vault_tokens').select('token_id').where('collection', '=', collection).execute();
    expect(kept.map((t) => t.token_id).sort()).toEqual([...tokensKept].sort());
    expect((await call(stack, 'GET', '/v1/auth/verify', { headers: { ...stack.admin, 'x-subject-token': victim.token } })).status).toBe(200);
    expect((await call(stack, 'GET', `/api/v3/onezone/users/${victim.subject.id}/tokens/temporary`, { headers: stack.admin })).body).toEqual(generation);

    // the relay publishes what the producer's cancel committed
    const ids = new Set(cancelledJobs.map((j) => j.job_id));
    const events = await waitForEvents(stack, (es) => es.filter((e) => ids.has(e.job_id)).length >= ids.size, 30_000);
    const streamed = new Map(events.filter((e) => ids.has(e.job_id)).map((e) => [e.event_id, e]));
    expect([...streamed.values()].map((e) => e.type)).toEqual(cancelledJobs.map(() => 'command.cancelled'));
    expect(new Set([...streamed.values()].map((e) => e.job_id))).toEqual(ids);
  }, 60_000);
});

describe('cancelling a running bulk delete (one worker in the process)', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ env: { DELETE_BATCH_SIZE: String(BATCH) } });
  });
  afterAll(() => stack?.close());

  /** A collection of `n` tokens tagged `tag`, and their keys in order. */
  async function breach(n: number, tag: string): Promise<{ collection: string; keys: string[] }> {
    const collection = `cr_${uid()}`;
    await createCollection(stack, collection);
    await seedVaultTokens(stack.database.db, { collection, count: n, tag, tagRatio: 1, tenantId: null, objectPrefix: 'o' });
    return { collection, keys: await keysOf(stack.database.db, collection) };
  }

  /**
   * Submits a delete by tag with a token of batch `parkAt` held, so the worker waits in that
   * batch (holding the command row); then sends the cancel, which asks the next step to cancel
   * and waits; then releases the token. Returns the job ID and the cancel's answer.
   */
  async function cancelWhileParked(collection: string, tag: string, keys: string[], parkAt: number) {
    const holder = await TokenHolder.lock(stack.database.url, [keys[parkAt * BATCH + 5]!]);
    try {
      const accepted = await submit(stack, deleteByTag(collection, tag));
      expect(accepted.status).toBe(202);
      const id = accepted.body.job_id as string;
      await holder.untilWorkerWaits(stack.database.db);
      return { id, answer: await cancelWhileHeld(stack, id, holder) };
    } finally {
      await holder.release();
    }
  }

  it('stops after the batch in progress commits: result = the tokens really deleted; no batch after it runs', async () => {
    const { collection, keys } = await breach(100, 'mid');
    const metricBefore = await cancelledCount(stack, 'tokens.delete');

    const { id, answer } = await cancelWhileParked(collection, 'mid', keys, 3);

    // batches 0..3 committed (the cancel waited for the fourth), nothing after
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ job_id: id, state: 'cancelled', result: { deleted: 4 * BATCH }, progress: { processed: 4 * BATCH }, attempts: 1, error: null });
    expect(await completedJob(stack, id)).toEqual({ state: 'cancelled', result: { deleted: 4 * BATCH } });
    const left = await keysOf(stack.database.db, collection);
    expect(left).toEqual(keys.slice(4 * BATCH));
    expect(keys.length - left.length).toBe(answer.body.result.deleted);

    const events = await outboxOf(stack.database.db, id);
    const deleted = events.filter((e) => e.type === 'tokens.deleted').flatMap((e) => (e.data as { token_ids: string[] }).token_ids);
    expect(deleted).toHaveLength(4 * BATCH);
    expect(events.map((e) => e.type).filter((t) => t.startsWith('command.'))).toEqual(['command.cancelled']);
    expect(events.at(-1)).toMatchObject({ type: 'command.cancelled', data: { result: { deleted: 4 * BATCH } } });
    const audited = await stack.database.db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', id).orderBy('id').execute();
    expect(audited.filter((a) => a.action === 'tokens.deleted').flatMap((a) => a.data.token_ids as string[])).toEqual(deleted);
    expect(audited.at(-1)?.action).toBe('command.cancelled');
    expect(await cancelledCount(stack, 'tokens.delete')).toBe(metricBefore + 1);
    expect(await stack.database.db.selectFrom('command_cancellations').selectAll().where('command_id', '=', id).execute()).toEqual([]);
    const again = await cancel(stack, id);
    expect(again).toMatchObject({ status: 200, body: answer.body });
  });

  it('answers 202 with the running job when its step outlasts the wait; the cancel stands, and the next step ends it cancelled', async () => {
    const { collection, keys } = await breach(100, 'slow');
    const holder = await TokenHolder.lock(stack.database.url, [keys[3 * BATCH + 5]!]);
    let id: string;
    try {
      id = (await submit(stack, deleteByTag(collection, 'slow'))).body.job_id as string;
      await holder.untilWorkerWaits(stack.database.db);

      const answer = await cancel(stack, id);

      expect(answer.status).toBe(202);
      expect(answer.body).toMatchObject({ job_id: id, state: 'running', progress: { processed: 3 * BATCH } });
      expect(answer.headers.location).toBe(`/v1/jobs/${id}`);
      expect(await stack.database.db.selectFrom('command_cancellations').select(['command_id', 'requested_by']).execute()).toEqual([
        { command_id: id, requested_by: { id: 'admin', kind: 'service', request_id: expect.any(String) } },
      ]);
    } finally {
      await holder.release();
    }
    const job = await waitForJob(stack, id);
    expect(job).toMatchObject({ state: 'cancelled', result: { deleted: 4 * BATCH } });
    expect(await keysOf(stack.database.db, collection)).toEqual(keys.slice(4 * BATCH));
    expect((await outboxOf(stack.database.db, id)).at(-1)).toMatchObject({ type: 'command.cancelled', data: { cancelled_by: { id: 'admin' }, result: { deleted: 4 * BATCH } } });
    expect(await stack.database.db.selectFrom('command_cancellations').selectAll().execute()).toEqual([]);
    expect(await cancel(stack, id)).toMatchObject({ status: 200, body: job });
  }, 40_000);

  it('races the last batch: the job that ends first wins (succeeded, the cancel 409 PV3011), nothing lost or doubled', async () => {
    const { collection, keys } = await breach(3 * BATCH, 'last');

    const { id, answer } = await cancelWhileParked(collection, 'last', keys, 2);

    expect(answer).toMatchObject({ status: 409, body: { error_code: 'PV3011', context: { job_id: id, state: 'succeeded' } } });
    // the cancel it outran is withdrawn
    expect(await stack.database.db.selectFrom('command_cancellations').selectAll().execute()).toEqual([]);
    const job = await waitForJob(stack, id);
    expect(job).toMatchObject({ state: 'succeeded', result: { deleted: 3 * BATCH } });
    expect(await keysOf(stack.database.db, collection)).toEqual([]);
    const events = await outboxOf(stack.database.db, id);
    expect(events.map((e) => e.type).filter((t) => t.startsWith('command.'))).toEqual(['command.succeeded']);
    expect(events.filter((e) => e.type === 'tokens.deleted').flatMap((e) => (e.data as { token_ids: string[] }).token_ids)).toHaveLength(3 * BATCH);
  });

  it('races the last batch: the cancel that comes first wins (cancelled after the batch before it), and the last batch never runs', async () => {
    const { collection, keys } = await breach(3 * BATCH, 'first');

    const { id, answer } = await cancelWhileParked(collection, 'first', keys, 1);

    expect(answer).toMatchObject({ status: 200, body: { state: 'cancelled', result: { deleted: 2 * BATCH } } });
    expect(await completedJob(stack, id)).toEqual({ state: 'cancelled', result: { deleted: 2 * BATCH } });
    expect(await keysOf(stack.database.db, collection)).toEqual(keys.slice(2 * BATCH));
    const events = await outboxOf(stack.database.db, id);
    expect(events.map((e) => e.type)).toEqual(['tokens.deleted', 'tokens.deleted', 'command.cancelled']);
    expect(events.flatMap((e) => (e.type === 'tokens.deleted' ? (e.data as { batch: { last: boolean } }).batch.last : []))).toEqual([false, false]);
  });

  it('refuses to cancel a lockout that has started (409 PV3013): it has disabled the account, and its remaining tokens must go before an unlock', async () => {
    const { id: subjectId } = (await subjectWithToken(stack, { kind: 'user' })).subject as { id: string };
    await seedNamedAccessTokens(stack.database.db, subjectId, 3 * BATCH);
    const tokens = (
      await stack.database.db
        .selectFrom('access_tokens')
        .select('id')
        .where('subject_id', '=', subjectId)
        .orderBy(sql`id collate "C"`)
        .execute()
    ).map((t) => t.id);
    // the lockout waits in its second batch, after its first step disabled the subject
    const holder = await TokenHolder.lockRows(stack.database.url, 'access_tokens', [tokens[BATCH + 3]!]);
    let id: string;
    try {
      id = (await submit(stack, { type: 'subject.lockout', subject: { kind: 'user', id: subjectId } })).body.job_id as string;
      await holder.untilWorkerWaits(stack.database.db);

      const answer = await cancel(stack, id);

      expect(answer).toMatchObject({ status: 409, body: { error_code: 'PV3013', context: { job_id: id, state: 'running' } } });
    } finally {
      await holder.release();
    }
    expect(await waitForJob(stack, id)).toMatchObject({ state: 'succeeded', result: { revoked: 3 * BATCH + 1 } });
    expect(await stack.database.db.selectFrom('access_tokens').select('id').where('subject_id', '=', subjectId).execute()).toEqual([]);
  });

  it('drops a cancel asked while a lockout ran its first step: the lockout runs to its end, and the cancel answers 409', async () => {
    const { id: subjectId } = (await subjectWithToken(stack, { kind: 'user' })).subject as { id: string };
    await seedNamedAccessTokens(stack.database.db, subjectId, 2 * BATCH);
    // its first step waits for the subject row, holding the command row while the job is still queued
    const holder = await TokenHolder.lockRows(stack.database.url, 'subjects', [subjectId]);
    let id: string;
    let answer: Awaited<ReturnType<typeof cancel>>;
    try {
      id = (await submit(stack, { type: 'subject.lockout', subject: { kind: 'user', id: subjectId } })).body.job_id as string;
      await holder.untilWorkerWaits(stack.database.db);
      answer = await cancelWhileHeld(stack, id, holder);
    } finally {
      await holder.release();
    }
    expect(answer.status).toBe(409);
    expect(['PV3013', 'PV3011']).toContain(answer.body.error_code);
    expect(await waitForJob(stack, id)).toMatchObject({ state: 'succeeded', result: { revoked: 2 * BATCH + 1 } });
    expect(await stack.database.db.selectFrom('access_tokens').select('id').where('subject_id', '=', subjectId).execute()).toEqual([]);
    expect((await outboxOf(stack.database.db, id)).map((e) => e.type).filter((t) => t.startsWith('command.'))).toEqual(['command.succeeded']);
    expect(await stack.database.db.selectFrom('command_cancellations').selectAll().where('command_id', '=', id).execute()).toEqual([]);
  });

  it('answers a job that succeeded or failed 409 PV3011 and leaves it as it was', async () => {
    const collection = `ce_${uid()}`;
    await createCollection(stack, collection);
    const [token] = await tokenize(stack, collection, [{ object: { id: 'e1' } }]);
    const succeeded = await waitForJob(stack, (await submit(stack, { type: 'tokens.delete', collection, token_ids: [token], reason: REASON })).body.job_id);
    const failed = await waitForJob(stack, (await submit(stack, { type: 'tokens.rotate', collection, token_ids: ['no-such-token'], reason: REASON })).body.job_id);
    expect([succeeded.state, failed.state]).toEqual(['succeeded', 'failed']);

    for (const job of [succeeded, failed]) {
      const r = await cancel(stack, job.job_id);
      expect(r.status, job.state).toBe(409);
      expect(r.body, job.state).toEqual({
        error_code: 'PV3011',
        message: `The job has already ${job.state}; only a queued or running job can be cancelled.`,
        context: { job_id: job.job_id, state: job.state },
      });
      expect((await call(stack, 'GET', `/v1/jobs/${job.job_id}`, { headers: stack.admin })).body).toEqual(job);
      expect((await outboxOf(stack.database.db, job.job_id)).some((e) => e.type === 'command.cancelled')).toBe(false);
    }
  });
});

describe('cancelling a bulk delete whose worker process was killed -9 mid-way', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { DELETE_BATCH_SIZE: String(BATCH) } });
  });
  afterAll(async () => {
    await killChildren();
    await stack?.close();
  });

  it('ends it cancelled with the batches that committed; the batch the dead worker was in is rolled back, and a redelivery runs nothing', async () => {
    const collection = `ck_${uid()}`;
    await createCollection(stack, collection);
    await seedVaultTokens(stack.database.db, { collection, count: 20 * BATCH, tag: 'killed', tagRatio: 1, tenantId: null, objectPrefix: 'o' });
    const keys = await keysOf(stack.database.db, collection);
    // the worker process waits in batch 9, holding the command row, when it is killed
    const holder = await TokenHolder.lock(stack.database.url, [keys[9 * BATCH + 4]!]);
    let answer: Awaited<ReturnType<typeof cancel>>;
    let id: string;
    try {
      const worker = await spawnWorker(stack.config);
      const accepted = await submit(stack, deleteByTag(collection, 'killed'));
      id = accepted.body.job_id as string;
      await holder.untilWorkerWaits(stack.database.db);
      expect((await worker.kill()).signal).toBe('SIGKILL');

      // its backend still holds the row until its statement ends and it finds the client gone
      answer = await cancelWhileHeld(stack, id, holder);
    } finally {
      await holder.release();
    }

    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ state: 'cancelled', result: { deleted: 9 * BATCH }, progress: { processed: 9 * BATCH } });
    const left = await keysOf(stack.database.db, collection);
    expect(left).toEqual(keys.slice(9 * BATCH));
    expect(keys.length - left.length).toBe(answer.body.result.deleted);
    expect(await stack.database.db.selectFrom('command_cancellations').selectAll().execute()).toEqual([]);

    // the dead worker's job comes back (as a stalled job does): the worker that takes it finds the command ended
    const { queue, close } = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
    try {
      await stack.redis.del(`${stack.config.QUEUE_PREFIX}:${COMMAND_QUEUE}:${id}:lock`);
      await (await queue.getJob(id))!.remove();
      await queue.add(COMMAND_JOB_NAME, { command_id: id }, { ...COMMAND_JOB_OPTIONS, jobId: id });
    } finally {
      await close();
    }
    await stack.startWorker();
    expect(await completedJob(stack, id)).toEqual({ state: 'cancelled', result: { deleted: 9 * BATCH } });
    expect(await keysOf(stack.database.db, collection)).toEqual(keys.slice(9 * BATCH));
    const events = await outboxOf(stack.database.db, id);
    expect(events.filter((e) => e.type === 'tokens.deleted').flatMap((e) => (e.data as { token_ids: string[] }).token_ids)).toHaveLength(9 * BATCH);
    expect(events.map((e) => e.type).filter((t) => t.startsWith('command.'))).toEqual(['command.cancelled']);
  }, 90_000);
});
