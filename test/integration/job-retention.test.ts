import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JobView } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { deleteFinishedCommands } from '../../db/repositories/command-list.repository.js';
import { Sweeper } from '../../worker/sweeper.js';
import { call, createCollection, subjectWithToken, uid, waitForJob } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Job retention (SPEC §10): a command that ended is kept JOB_RETENTION_DAYS after it ended
 * (finished_at), with its Idempotency-Key, then the sweeper deletes it in small batches; its
 * audit rows stay. A deleted job is 404 like one that never was. Commands that have not ended
 * are never deleted, however old.
 */

const DAYS = 30;
const silent = pino({ level: 'silent' });
type Principal = Awaited<ReturnType<typeof subjectWithToken>>;

const sweeper = (db: Db, batchSize?: number) => new Sweeper(db, silent, { intervalMs: 60_000, graceSeconds: 3600, jobRetentionDays: DAYS, ...(batchSize !== undefined && { batchSize }) });

/** As if the command had been created a minute before it ended, and had ended `days` ago. */
async function endedDaysAgo(db: Db, ids: readonly string[], days: number): Promise<void> {
  await sql`
    update commands set finished_at = now() - make_interval(days => ${days}), started_at = now() - make_interval(days => ${days}, mins => 1),
      created_at = now() - make_interval(days => ${days}, mins => 1)
    where id = any(${[...ids]}::uuid[])`.execute(db);
}

async function present(db: Db, ids: readonly string[]): Promise<string[]> {
  const rows = await db
    .selectFrom('commands')
    .select('id')
    .where('id', 'in', [...ids])
    .execute();
  return rows.map((r) => r.id).sort();
}

async function auditOf(db: Db, ids: readonly string[]): Promise<Record<string, string[]>> {
  const rows = await db
    .selectFrom('audit_log')
    .select(['command_id', 'action'])
    .where('command_id', 'in', [...ids])
    .orderBy('id')
    .execute();
  const byJob: Record<string, string[]> = {};
  for (const row of rows) (byJob[row.command_id!] ??= []).push(row.action);
  return byJob;
}

describe('job retention: jobs run by a worker', () => {
  const collection = 'retained';
  let stack: Stack;
  let db: Db;
  let alice: Principal;

  beforeAll(async () => {
    // the stack's own sweeper stays out of the way: the tests sweep themselves
    stack = await startStack({ env: { SWEEPER_INTERVAL_SECONDS: '86400' } });
    db = stack.database.db;
    await createCollection(stack, collection);
    alice = await subjectWithToken(stack, { id: uid('alice'), kind: 'user', capabilities: ['tokens:write'] });
  });
  afterAll(() => stack?.close());

  // the sweep looks at the whole table: each test starts with no command
  beforeEach(async () => {
    await db.deleteFrom('commands').execute();
  });

  const revokeAll = () => ({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: alice.subject.id } });
  const failingDelete = () => ({ type: 'tokens.delete', collection, tags: [uid('none')], reason: 'AppFunctionality' });

  async function run(body: unknown, idempotencyKey?: string): Promise<JobView> {
    const r = await call(stack, 'POST', '/v1/commands', { headers: { ...alice.headers, ...(idempotencyKey !== undefined && { 'idempotency-key': idempotencyKey }) }, body });
    if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
    const job = await waitForJob(stack, r.body.job_id, alice.headers);
    expect(['succeeded', 'failed']).toContain(job.state);
    return job;
  }

  it('deletes succeeded and failed jobs that ended longer ago than the retention; keeps those that ended since, and every audit row', async () => {
    const old = [await run(revokeAll()), await run(failingDelete()), await run(revokeAll())];
    const recent = [await run(revokeAll()), await run(failingDelete())];
    expect(old.map((j) => j.state)).toEqual(['succeeded', 'failed', 'succeeded']);
    await endedDaysAgo(
      db,
      old.map((j) => j.job_id),
      DAYS + 1,
    );
    await endedDaysAgo(db, [recent[0]!.job_id], DAYS - 1);
    const all = [...old, ...recent].map((j) => j.job_id);
    const auditBefore = await auditOf(db, all);
    expect(Object.keys(auditBefore).sort()).toEqual([...all].sort());

    expect(await sweeper(db).sweepJobsOnce()).toBe(3);

    expect(await present(db, all)).toEqual(recent.map((j) => j.job_id).sort());
    expect(await auditOf(db, all)).toEqual(auditBefore);
    // the trail of a deleted job is still read by its ID
    const trail = await call(stack, 'GET', `/v1/audit?job_id=${old[0]!.job_id}`, { headers: stack.admin });
    expect(trail.status).toBe(200);
    expect(trail.body.entries.map((e: { action: string }) => e.action)).toEqual(auditBefore[old[0]!.job_id]);
    expect(await sweeper(db).sweepJobsOnce()).toBe(0);
  });

  it('a job past its retention is 404 PV3005 like an unknown one, to its submitter and to the admin, and leaves the job list', async () => {
    const [gone, kept] = [await run(revokeAll()), await run(revokeAll())];
    await endedDaysAgo(db, [gone.job_id], DAYS + 1);

    expect(await sweeper(db).sweepJobsOnce()).toBe(1);

    const unknown = await call(stack, 'GET', '/v1/jobs/00000000-0000-4000-8000-000000000000', { headers: stack.admin });
    for (const headers of [alice.headers, stack.admin]) {
      const r = await call(stack, 'GET', `/v1/jobs/${gone.job_id}`, { headers });
      expect(r.status).toBe(404);
      expect(r.body).toEqual({ ...unknown.body, context: { job_id: gone.job_id } });
    }
    expect((await call(stack, 'GET', `/v1/jobs/${kept.job_id}`, { headers: alice.headers })).status).toBe(200);
    const listed = await call(stack, 'GET', '/v1/jobs', { headers: alice.headers });
    expect(listed.body.jobs.map((j: JobView) => j.job_id)).toEqual([kept.job_id]);
  });

  it('its Idempotency-Key goes with it: replayed before the deletion, a new job after it', async () => {
    const key = uid('key');
    const first = await run(revokeAll(), key);
    const replay = await call(stack, 'POST', '/v1/commands', { headers: { ...alice.headers, 'idempotency-key': key }, body: revokeAll() });
    expect(replay.status).toBe(200);
    expect(replay.body.job_id).toBe(first.job_id);
    await endedDaysAgo(db, [first.job_id], DAYS + 1);

    expect(await sweeper(db).sweepJobsOnce()).toBe(1);

    const again = await call(stack, 'POST', '/v1/commands', { headers: { ...alice.headers, 'idempotency-key': key }, body: revokeAll() });
    expect(again.status).toBe(202);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(again.body.job_id).not.toBe(first.job_id);
    expect(again.body.idempotency_key).toBe(key);
  });

  it('works in statements of at most batchSize commands until a batch comes back short', async () => {
    const jobs = [];
    for (let i = 0; i < 5; i++) jobs.push(await run(revokeAll()));
    await endedDaysAgo(
      db,
      jobs.map((j) => j.job_id),
      DAYS + 1,
    );

    expect(await deleteFinishedCommands(db, DAYS, 2)).toBe(2);
    expect(await sweeper(db, 2).sweepJobsOnce()).toBe(3);

    expect(
      await present(
        db,
        jobs.map((j) => j.job_id),
      ),
    ).toEqual([]);
  });
});

describe('job retention: commands that have not ended', () => {
  let stack: Stack;
  let db: Db;
  let bob: Principal;

  beforeAll(async () => {
    // no worker (and so no reconciler): what is submitted stays queued
    stack = await startStack({ worker: false });
    db = stack.database.db;
    bob = await subjectWithToken(stack, { id: uid('bob'), kind: 'user' });
  });
  afterAll(() => stack?.close());

  beforeEach(async () => {
    await db.deleteFrom('commands').execute();
  });

  async function submit(): Promise<string> {
    const r = await call(stack, 'POST', '/v1/commands', { headers: bob.headers, body: { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: bob.subject.id } } });
    if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.job_id;
  }

  it('keeps queued and running commands however old (they have no finished_at), and deletes the old ended ones beside them', async () => {
    const [queued, running, ended] = [await submit(), await submit(), await submit()];
    await sql`
      update commands set created_at = now() - interval '400 days',
        state = case when id = ${running} then 'running' when id = ${ended} then 'succeeded' else state end,
        started_at = case when id = ${queued} then null else now() - interval '399 days' end,
        finished_at = case when id = ${ended} then now() - interval '399 days' end
      where id in (${queued}, ${running}, ${ended})`.execute(db);

    expect(await sweeper(db).sweepJobsOnce()).toBe(1);

    expect(await present(db, [queued, running, ended])).toEqual([queued, running].sort());
    const states = await db.selectFrom('commands').select(['id', 'state']).where('id', 'in', [queued, running]).execute();
    expect(Object.fromEntries(states.map((s) => [s.id, s.state]))).toEqual({ [queued]: 'queued', [running]: 'running' });
  });

  it('skips a command another transaction holds, so that transaction never waits on the sweep; deletes it on a later sweep', async () => {
    const ids = [await submit(), await submit(), await submit()];
    await sql`update commands set state = 'failed', finished_at = now() - interval '40 days' where id = any(${ids}::uuid[])`.execute(db);
    const held = ids[1]!;
    const holder = new pg.Client({ connectionString: stack.database.url, application_name: 'job-retention-test-holder' });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('select id from commands where id = $1 for update', [held]);

      // a statement that waited on the held row would not return until the holder commits
      expect(await sweeper(db).sweepJobsOnce()).toBe(2);
      expect(await present(db, ids)).toEqual([held]);

      await holder.query('update commands set attempts = attempts where id = $1', [held]);
      await holder.query('commit');
    } catch (error) {
      await holder.query('rollback').catch(() => {});
      throw error;
    } finally {
      await holder.end();
    }
    expect(await sweeper(db).sweepJobsOnce()).toBe(1);
    expect(await present(db, ids)).toEqual([]);
  });

  it('without a retention (a Sweeper built without jobRetentionDays) deletes no command', async () => {
    const id = await submit();
    await sql`update commands set state = 'succeeded', finished_at = now() - interval '4000 days' where id = ${id}`.execute(db);

    expect(await new Sweeper(db, silent, { intervalMs: 60_000, graceSeconds: 3600 }).sweepJobsOnce()).toBe(0);
    expect(await present(db, [id])).toEqual([id]);
  });
});

describe('job retention: the worker sweeps on its interval', () => {
  it('with JOB_RETENTION_DAYS=1, a job that ended two days ago is deleted by the running worker; its audit rows stay', async () => {
    const own = await startStack({ env: { SWEEPER_INTERVAL_SECONDS: '1', JOB_RETENTION_DAYS: '1' } });
    try {
      const carol = await subjectWithToken(own, { id: uid('carol'), kind: 'user' });
      const r = await call(own, 'POST', '/v1/commands', {
        headers: { ...carol.headers, prefer: 'wait=10' },
        body: { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: carol.subject.id } },
      });
      expect(r.body.state).toBe('succeeded');
      const jobId: string = r.body.job_id;
      const fresh = await submitFresh(own, carol);
      await endedDaysAgo(own.database.db, [jobId], 2);

      await expect.poll(async () => (await present(own.database.db, [jobId])).length, { timeout: 15_000, interval: 200 }).toBe(0);

      expect((await call(own, 'GET', `/v1/jobs/${jobId}`, { headers: carol.headers })).status).toBe(404);
      expect((await auditOf(own.database.db, [jobId]))[jobId]).toEqual(expect.arrayContaining(['temporary_tokens.revoked']));
      // a job that ended a moment ago stays
      expect(await present(own.database.db, [fresh])).toEqual([fresh]);
    } finally {
      await own.close();
    }
  });
});

async function submitFresh(stack: Stack, who: Principal): Promise<string> {
  const r = await call(stack, 'POST', '/v1/commands', { headers: { ...who.headers, prefer: 'wait=10' }, body: { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: who.subject.id } } });
  expect(r.body.state).toBe('succeeded');
  return r.body.job_id;
}
