import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE, type JobProgress } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { seedVaultTokens } from '../../db/repositories/seed.repository.js';
import { call, collectionOfTokens, createCollection, tokenize } from '../helpers/api.js';
import { backendsWaitingOnLocks, bounded, commandQueue, countInStates, duplicates, expectDeletedOnce, StepLog, streamEvents, tokenIdsOf, waitForTerminal } from '../helpers/faults.js';
import { RawConnection, type RawResponse } from '../helpers/http.js';
import { killChildren, producerEnv, spawnProducer, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { freePort, type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';
import { outboxEventsOf } from '../../db/repositories/outbox.repository.js';

/**
 * SPEC §9 and the README's "SIGTERM drains": the real entry points (bin/producer.ts,
 * bin/worker.ts) are spawned and signalled. The producer stops accepting (new connections
 * refused; a request arriving on an open connection gets 503 PV1010 with Retry-After), answers
 * its in-flight requests (a `Prefer: wait` one at once, 202) with `Connection: close`, and exits
 * 0; a worker finishes its one-step jobs, releases a bulk delete after its current batch (another
 * worker takes it from the queue and resumes it, each token deleted once), publishes its outbox
 * and exits 0; a second signal exits non-zero at once. Redis is one of the test's own.
 */

const BATCH = 500;
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
/** Bound on a drain once nothing holds it any more (a check that it ends, not of speed). */
const EXIT_BOUND_MS = 30_000;
/** Bound on an exit forced by a second signal. */
const FORCED_EXIT_BOUND_MS = 5_000;

/** Resolves with how the process ended, or rejects if it has not within `ms`. */
function exitWithin(child: WorkerProcess, ms: number) {
  return Promise.race([
    child.exited,
    sleep(ms).then(() => {
      throw new Error(`process ${child.pid} still running ${ms} ms later\nstdout: ${child.stdout().slice(-4000)}\nstderr: ${child.stderr().slice(-4000)}`);
    }),
  ]);
}

async function commandsOf(db: Db, collection: string) {
  return db
    .selectFrom('commands')
    .select(['id', 'state', 'progress', 'attempts'])
    .where(sql<string>`payload->>'collection'`, '=', collection)
    .execute();
}

async function progressOf(db: Db, id: string): Promise<JobProgress> {
  const row = await db.selectFrom('commands').select('progress').where('id', '=', id).executeTakeFirstOrThrow();
  return row.progress ?? { processed: 0, total: 0 };
}

function expectUnavailable(response: RawResponse): void {
  expect(response.status).toBe(503);
  expect(response.body).toMatchObject({ error_code: 'PV1010', message: expect.any(String) });
  expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
}

describe('graceful shutdown of producer and worker processes', () => {
  let redis: OwnRedis;
  let stack: Stack;
  let holder: pg.Client;
  let steps: StepLog;

  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await startStack({ worker: false, env: { REDIS_URL: redis.url, DELETE_BATCH_SIZE: String(BATCH) } });
    holder = new pg.Client({ connectionString: stack.database.url, application_name: 'graceful-shutdown-holder' });
    await holder.connect();
    steps = await StepLog.listen(stack.database.url);
  });

  afterAll(async () => {
    await killChildren();
    await holder?.end().catch(() => {});
    await steps?.close();
    await stack?.close();
    await stopOwnRedisServers();
  });

  /** Deletes one vault token by ID (native route). */
  const deleteOne = (collection: string, token: string) => ({ type: 'tokens.delete', collection, token_ids: [token], reason: 'AppFunctionality' });

  it(
    'producer, SIGTERM: in-flight requests finish, new connections are refused, a request arriving on an open one gets 503 PV1010, it exits 0, and every accepted command runs',
    { timeout: 90_000 },
    async () => {
      const db = stack.database.db;
      const collection = 'drain_producer';
      const tokens = await collectionOfTokens(stack, collection, 6);
      const port = await freePort();
      const producer = await spawnProducer(producerEnv(stack.config, port));
      const connections: RawConnection[] = [];
      try {
        // a `Prefer: wait=30` request, waiting for a job no worker runs yet
        const waiting = await RawConnection.open(port);
        connections.push(waiting);
        waiting.send('POST', '/v1/commands', { ...admin, prefer: 'wait=30' }, deleteOne(collection, tokens[0]!));
        await expect.poll(async () => (await commandsOf(db, collection)).length, { timeout: 10_000, interval: 20 }).toBe(1);

        // three requests in flight: the commands table is held, so each waits on its INSERT (sent
        // one after another, so that each is its own INSERT rather than one batch of three)
        await holder.query('begin');
        await holder.query('lock table commands in exclusive mode');
        const inFlight = await Promise.all([1, 2, 3].map(() => RawConnection.open(port)));
        connections.push(...inFlight);
        for (const [i, c] of inFlight.entries()) {
          c.send('POST', '/v1/commands', admin, deleteOne(collection, tokens[i + 1]!));
          await expect.poll(() => backendsWaitingOnLocks(db, stack.database.name, 'revocation-producer'), { timeout: 10_000, interval: 20 }).toBe(i + 1);
        }

        // a request that is arriving, its headers half sent, on a connection of its own
        const arriving = await RawConnection.open(port);
        connections.push(arriving);
        const late = RawConnection.request('POST', '/v1/commands', admin, deleteOne(collection, tokens[4]!));
        const split = late.indexOf('\r\n') + 2;
        arriving.write(late.slice(0, split));

        producer.signal('SIGTERM');
        await producer.waitForLog('draining', 10_000);

        // the waiting request does not hold the drain: it is answered now, 202 with its job
        const waited = await waiting.response(0, 10_000);
        expect(waited.status).toBe(202);
        expect(waited.body).toMatchObject({ state: 'queued', job_id: expect.any(String) });
        expect(waited.headers.location).toBe(`/v1/jobs/${waited.body.job_id}`);
        expect(waited.headers.connection).toBe('close');

        // new connections: refused once the listener is closed (a 503 PV1010 before that)
        const early: RawResponse[] = [];
        let refused: unknown;
        for (const deadline = Date.now() + 10_000; refused === undefined && Date.now() < deadline;) {
          try {
            const fresh = await RawConnection.open(port);
            fresh.send('POST', '/v1/commands', admin, deleteOne(collection, tokens[5]!));
            early.push(await fresh.response(0, 5_000));
            fresh.destroy();
            await sleep(20);
          } catch (error) {
            refused = error;
          }
        }
        expect((refused as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNREFUSED');
        for (const response of early) expectUnavailable(response);

        // the request arriving on an open connection now: 503 PV1010, and the connection closes
        arriving.write(late.slice(split));
        const turnedAway = await arriving.response(0, 10_000);
        expectUnavailable(turnedAway);
        expect(turnedAway.headers.connection).toBe('close');
        await arriving.closed(10_000);

        // the in-flight requests hold the drain
        await sleep(300);
        expect(producer.running()).toBe(true);

        // let them through: each finishes with its 202, and its connection is closed after it
        await holder.query('commit');
        const answers = await Promise.all(inFlight.map((c) => c.response(0)));
        for (const a of answers) {
          expect(a.status).toBe(202);
          expect(a.body.state).toBe('queued');
          expect(a.headers.connection).toBe('close');
        }
        await Promise.all([waiting, ...inFlight].map((c) => c.closed(10_000)));

        const exit = await exitWithin(producer, EXIT_BOUND_MS);
        expect(exit).toEqual({ code: 0, signal: null });
        expect(producer.messages()).toContain('stopped');

        // exactly the four answered commands were recorded, and each was enqueued before the exit
        const accepted = [waited, ...answers].map((a) => a.body.job_id as string);
        expect(duplicates(accepted)).toEqual([]);
        expect((await commandsOf(db, collection)).map((r) => r.id).sort()).toEqual([...accepted].sort());
        const { queue, close } = commandQueue(redis.url, stack.config.QUEUE_PREFIX);
        try {
          for (const id of accepted) expect(await (await queue.getJob(id))?.getState()).toBe('waiting');
        } finally {
          await close();
        }

        // another worker runs them: nothing accepted is lost, nothing refused ran
        const worker = await spawnWorker(stack.config);
        await waitForTerminal(db, accepted, 30_000);
        await expectDeletedOnce(
          db,
          collection,
          accepted.map((id, i) => ({ id, token: tokens[i]! })),
          tokens.slice(4),
        );
        worker.signal('SIGTERM');
        expect(await exitWithin(worker, EXIT_BOUND_MS)).toEqual({ code: 0, signal: null });
      } finally {
        await holder.query('rollback').catch(() => {});
        for (const c of connections) c.destroy();
        await producer.kill();
      }
    },
  );

  it('producer, a second signal while draining: exits non-zero at once', { timeout: 60_000 }, async () => {
    const db = stack.database.db;
    const collection = 'drain_producer_forced';
    await createCollection(stack, collection);
    const [token] = await tokenize(stack, collection, [{ object: { id: 'o1' } }]);
    const port = await freePort();
    const producer = await spawnProducer(producerEnv(stack.config, port));
    let connection: RawConnection | undefined;
    try {
      await holder.query('begin');
      await holder.query('lock table commands in exclusive mode');
      connection = await RawConnection.open(port);
      connection.send('POST', '/v1/commands', admin, deleteOne(collection, token!));
      await expect.poll(() => backendsWaitingOnLocks(db, stack.database.name, 'revocation-producer'), { timeout: 10_000, interval: 20 }).toBe(1);

      producer.signal('SIGTERM');
      await producer.waitForLog('draining', 10_000);
      await sleep(300);
      expect(producer.running()).toBe(true); // the drain waits for the request held in Postgres

      producer.signal('SIGINT');
      const exit = await exitWithin(producer, FORCED_EXIT_BOUND_MS);
      expect(exit.code).not.toBe(0);
      expect(exit.code).not.toBeNull();
      expect(producer.messages()).toContain('second signal: exiting now');
      expect(producer.messages()).not.toContain('stopped');
      // the request in flight got no answer at all (never a 202 it could not keep)
      await expect(connection.response(0, 5_000)).rejects.toThrow();
    } finally {
      await holder.query('rollback').catch(() => {});
      connection?.destroy();
      await producer.kill();
    }
  });

  it('worker, SIGTERM with one-step jobs running: it finishes those, leaves the rest queued, exits 0; another worker runs the rest once', { timeout: 90_000 }, async () => {
    const db = stack.database.db;
    const collection = 'drain_worker_singles';
    const tokens = await collectionOfTokens(stack, collection, 420);
    const targets = tokens.slice(0, 400);

    const first = await spawnWorker(stack.config);
    const jobs = await bounded(targets, 20, async (token) => {
      const r = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: deleteOne(collection, token) });
      if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
      return { id: r.body.job_id as string, token };
    });
    const ids = jobs.map((j) => j.id);
    await expect.poll(() => countInStates(db, ids, ['succeeded']), { timeout: 30_000, interval: 10 }).toBeGreaterThanOrEqual(50);

    first.signal('SIGTERM');
    const exit = await exitWithin(first, EXIT_BOUND_MS);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(first.messages()).toEqual(expect.arrayContaining(['draining', 'stopped']));

    // every job it had started ended: none is left running, none failed, none active in BullMQ
    const done = await countInStates(db, ids, ['succeeded']);
    console.info(`worker drained after ${done} of ${ids.length} single deletes`);
    expect(await countInStates(db, ids, ['running', 'failed'])).toBe(0);
    const { queue, close } = commandQueue(redis.url, stack.config.QUEUE_PREFIX);
    try {
      expect(await queue.getJobCounts('active', 'failed')).toEqual({ active: 0, failed: 0 });
      // and its relay published everything committed before it exited
      expect((await db.selectFrom('outbox').select('id').where('command_id', 'in', ids).where('published_at', 'is', null).execute()).length).toBe(0);

      const second = await spawnWorker(stack.config);
      await waitForTerminal(db, ids, 60_000);
      await expectDeletedOnce(db, collection, jobs, tokens.slice(400));
      second.signal('SIGTERM');
      expect(await exitWithin(second, EXIT_BOUND_MS)).toEqual({ code: 0, signal: null });
    } finally {
      await close();
    }
  });

  it(
    'worker, SIGTERM in the middle of a long bulk delete: it exits 0 after the current batch, the job goes back to the queue, another worker finishes it, each token deleted once',
    { timeout: 120_000 },
    async () => {
      const db = stack.database.db;
      const collection = 'drain_worker_bulk';
      const tag = 'breach-drain';
      await createCollection(stack, collection);
      const seeded = 60_000;
      expect(await seedVaultTokens(db, { collection, count: seeded, tag, tagRatio: 0.5, tenantId: null, objectPrefix: 'obj-' })).toBe(seeded / 2);
      const tagged = await tokenIdsOf(db, collection, tag);
      const untagged = await tokenIdsOf(db, collection, 'bulk');
      const total = tagged.length;

      const first = await spawnWorker(stack.config);
      const accepted = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection, tags: [tag], reason: 'FraudPreventionSecurityAndCompliance' } });
      expect(accepted.status).toBe(202);
      const id = accepted.body.job_id as string;

      // three batches in, hold the command row: the next batch waits on it, mid-transaction
      await steps.steps(id, 3);
      await holder.query('begin');
      await holder.query('select id from commands where id = $1 for update', [id]);
      await expect.poll(() => backendsWaitingOnLocks(db, stack.database.name, 'revocation-worker'), { timeout: 10_000, interval: 20 }).toBeGreaterThanOrEqual(1);
      const before = await progressOf(db, id);
      expect(before.processed).toBeGreaterThanOrEqual(3 * BATCH);

      first.signal('SIGTERM');
      await first.waitForLog('draining', 10_000);
      await sleep(300);
      expect(first.running()).toBe(true); // it waits for the batch in its transaction
      await holder.query('commit');

      const exit = await exitWithin(first, EXIT_BOUND_MS);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(first.messages()).toEqual(expect.arrayContaining(['draining', 'stopped']));
      expect(first.messages().some((m) => m.includes('released'))).toBe(true);

      // exactly one more batch committed, then it stopped: far from done, not failed
      const after = await progressOf(db, id);
      expect(after).toEqual({ processed: before.processed + BATCH, total });
      const row = await db.selectFrom('commands').select(['state', 'result', 'error']).where('id', '=', id).executeTakeFirstOrThrow();
      expect(row).toEqual({ state: 'running', result: null, error: null });
      expect((await tokenIdsOf(db, collection, tag)).length).toBe(total - after.processed);

      const { queue, close } = commandQueue(redis.url, stack.config.QUEUE_PREFIX);
      try {
        // the job was handed back: waiting, no lock left, no attempt spent
        const job = await queue.getJob(id);
        expect(await job?.getState()).toBe('waiting');
        expect(job?.attemptsMade).toBe(0);
        expect(await stack.redis.exists(`${stack.config.QUEUE_PREFIX}:${COMMAND_QUEUE}:${id}:lock`)).toBe(0);
      } finally {
        await close();
      }

      // its relay published every event it committed before it exited
      const committed = await db.selectFrom('outbox').select(['event_id', 'published_at']).where('command_id', '=', id).orderBy('id').execute();
      expect(committed.length).toBe(after.processed / BATCH);
      expect(committed.filter((r) => r.published_at === null)).toEqual([]);
      const published = new Set((await streamEvents(redis.url, stack.config.EVENTS_STREAM)).filter((e) => e.job_id === id).map((e) => e.event_id));
      expect(committed.filter((r) => !published.has(r.event_id))).toEqual([]);

      // another worker takes the job from the queue (no reconciler needed) and resumes it
      const second = await spawnWorker(stack.config);
      await waitForTerminal(db, [id], 90_000);
      const done = (await call(stack, 'GET', `/v1/jobs/${id}`, { headers: stack.admin })).body;
      expect(done).toMatchObject({ state: 'succeeded', result: { deleted: total }, progress: { processed: total, total }, error: null, attempts: 2 });
      expect(second.messages()).not.toContain('reconciler enqueued commands again');

      // effect, audit and events: each tagged token exactly once, the others kept
      expect(await tokenIdsOf(db, collection, tag)).toEqual([]);
      expect(await tokenIdsOf(db, collection)).toEqual(untagged);
      const audit = await db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', id).execute();
      expect(new Set(audit.map((r) => r.action))).toEqual(new Set(['tokens.deleted']));
      const audited = audit.flatMap((r) => r.data.token_ids as string[]);
      expect(duplicates(audited)).toEqual([]);
      expect(audited.sort()).toEqual(tagged);
      const outbox = await outboxEventsOf(db, id);
      const announced = outbox.filter((e) => e.type === 'tokens.deleted').flatMap((e) => (e.data as { token_ids: string[] }).token_ids);
      expect(duplicates(announced)).toEqual([]);
      expect(announced.sort()).toEqual(tagged);
      const indexes = outbox.filter((e) => e.type === 'tokens.deleted').map((e) => (e.data as { batch: { index: number } }).batch.index);
      expect(indexes).toEqual(indexes.map((_, i) => i));
      expect(outbox.filter((e) => e.type === 'command.succeeded')).toHaveLength(1);

      second.signal('SIGTERM');
      expect(await exitWithin(second, EXIT_BOUND_MS)).toEqual({ code: 0, signal: null });
    },
  );

  it('worker, a second signal while draining: exits non-zero at once; the batch it was in rolls back', { timeout: 60_000 }, async () => {
    const db = stack.database.db;
    const collection = 'drain_worker_forced';
    const tag = 'breach-forced';
    await createCollection(stack, collection);
    await seedVaultTokens(db, { collection, count: 10_000, tag, tagRatio: 0.5, tenantId: null, objectPrefix: 'obj-' });
    const total = (await tokenIdsOf(db, collection, tag)).length;

    const worker = await spawnWorker(stack.config);
    try {
      const accepted = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection, tags: [tag], reason: 'FraudPreventionSecurityAndCompliance' } });
      expect(accepted.status).toBe(202);
      const id = accepted.body.job_id as string;
      await steps.steps(id, 1);
      await holder.query('begin');
      await holder.query('select id from commands where id = $1 for update', [id]);
      await expect.poll(() => backendsWaitingOnLocks(db, stack.database.name, 'revocation-worker'), { timeout: 10_000, interval: 20 }).toBeGreaterThanOrEqual(1);
      const before = await progressOf(db, id);

      worker.signal('SIGTERM');
      await worker.waitForLog('draining', 10_000);
      await sleep(300);
      expect(worker.running()).toBe(true);

      worker.signal('SIGINT');
      const exit = await exitWithin(worker, FORCED_EXIT_BOUND_MS);
      expect(exit.code).not.toBe(0);
      expect(exit.code).not.toBeNull();
      expect(worker.messages()).toContain('second signal: exiting now');
      expect(worker.messages()).not.toContain('stopped');

      // its connection is gone: the batch it was waiting to run never commits
      await holder.query('commit');
      await expect
        .poll(
          async () => (await sql<{ n: string }>`select count(*) as n from pg_stat_activity where datname = ${stack.database.name} and application_name = 'revocation-worker'`.execute(db)).rows[0]?.n,
          { timeout: 10_000, interval: 50 },
        )
        .toBe('0');
      expect(await progressOf(db, id)).toEqual(before);
      expect((await tokenIdsOf(db, collection, tag)).length).toBe(total - before.processed);
      const row = await db.selectFrom('commands').select('state').where('id', '=', id).executeTakeFirstOrThrow();
      expect(row.state).toBe('running');
    } finally {
      await holder.query('rollback').catch(() => {});
      await worker.kill();
    }
  });
});
