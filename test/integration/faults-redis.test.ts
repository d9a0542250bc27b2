import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { call, collectionOfTokens, createCollection, tokenize } from '../helpers/api.js';
import { bounded, commandQueue, expectDeletedOnce, streamEvents, tokenIdsOf, waitForTerminal } from '../helpers/faults.js';
import { type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §4.1, accepted means durable, against a Redis of the test's own (never the shared one):
 * commands accepted while Redis is flushed, restarted or down still run, once each, after the
 * reconciler re-enqueues them from Postgres; and events committed while Redis is down wait in
 * the outbox and reach the stream, in order per command, when it is back.
 */

/** The reconciler leaves commands younger than this to the producer's own enqueue (worker/start-worker.ts). */
const RECONCILER_GRACE_MS = 2_000;

/** Submits one `tokens.delete` by token ID per token, 20 in flight; every answer must be 202. */
async function submitSingleDeletes(stack: Stack, collection: string, tokens: readonly string[]): Promise<{ id: string; token: string }[]> {
  return bounded(tokens, 20, async (token) => {
    const r = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection, token_ids: [token], reason: 'AppFunctionality' } });
    if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.job_id as string, token };
  });
}

describe('faults of a Redis of our own', () => {
  let redis: OwnRedis;
  const stacks: Stack[] = [];
  const newStack = async (options: Parameters<typeof startStack>[0]) => {
    const stack = await startStack({ ...options, env: { REDIS_URL: redis.url, ...options?.env } });
    stacks.push(stack);
    // its reading connection sees every outage of ours: expected, not worth a console line
    stack.redis.on('error', () => {});
    return stack;
  };

  beforeAll(async () => {
    redis = await startOwnRedis();
  });

  afterEach(async () => {
    // a stack closes its worker and deletes its keys through Redis: bring it back first
    await redis.start();
    for (const stack of stacks.splice(0)) await stack.close();
  });

  afterAll(async () => {
    await stopOwnRedisServers();
  });

  describe.each([
    { fault: 'FLUSHALL', inject: () => redis.command('FLUSHALL').then((reply) => expect(reply).toBe('+OK')) },
    { fault: 'a restart without persistence', inject: () => redis.restart() },
  ])('1,000 commands accepted and not yet run, then $fault', ({ inject }) => {
    it('all run after reconciliation, each succeeding exactly once with its effect counted once', { timeout: 120_000 }, async () => {
      const stack = await newStack({ worker: false });
      const db = stack.database.db;
      const collection = 'lost_jobs';
      const tokens = await collectionOfTokens(stack, collection, 1_100);
      const targets = tokens.slice(0, 1_000);
      const kept = tokens.slice(1_000);

      const jobs = await submitSingleDeletes(stack, collection, targets);
      const { queue, close } = commandQueue(redis.url, stack.config.QUEUE_PREFIX);
      try {
        expect(await queue.getJobCounts('waiting')).toMatchObject({ waiting: 1_000 });

        await inject();
        expect(await redis.command('DBSIZE')).toBe(':0');
        const queued = await db
          .selectFrom('commands')
          .select('state')
          .where(
            'id',
            'in',
            jobs.map((j) => j.id),
          )
          .execute();
        expect(new Set(queued.map((r) => r.state))).toEqual(new Set(['queued']));

        // past the reconciler's grace period, start a worker: its first round re-enqueues them all
        await sleep(RECONCILER_GRACE_MS + 100);
        const worker = await stack.startWorker();
        const took = await waitForTerminal(
          db,
          jobs.map((j) => j.id),
          90_000,
        );
        console.info(`reconciled and ran 1,000 lost commands in ${took} ms`);
        // at least once each: a round that lists a command just before its job completes (and is
        // removed) enqueues it again, and that run finds the command ended and does nothing
        expect(worker.reconciler.requeued).toBeGreaterThanOrEqual(1_000);

        await expectDeletedOnce(db, collection, jobs, kept);
        // and the relay announced each command's end on the stream
        await expect.poll(async () => (await db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute()).length, { timeout: 10_000, interval: 100 }).toBe(0);
        const streamed = new Set((await streamEvents(redis.url, stack.config.EVENTS_STREAM)).filter((e) => e.type === 'command.succeeded').map((e) => e.job_id));
        expect(jobs.filter((j) => !streamed.has(j.id))).toEqual([]);
      } finally {
        await close();
      }
    });
  });

  it('with Redis down, the producer still accepts (202, committed) and the jobs run once Redis is back', { timeout: 60_000 }, async () => {
    const stack = await newStack({ worker: false });
    const db = stack.database.db;
    const collection = 'redis_down';
    const tokens = await collectionOfTokens(stack, collection, 25);
    const toDelete = tokens.slice(0, 10);
    const toRotate = tokens.slice(10, 20);
    const untouched = tokens.slice(20);

    await redis.stop();
    // real HTTP, each answer within a 5 s client timeout
    const post = async (body: Record<string, unknown>) => {
      const response = await fetch(`${stack.producer.url}/v1/commands`, {
        method: 'POST',
        headers: { ...stack.admin, 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, reason: 'AppFunctionality' }),
        signal: AbortSignal.timeout(5_000),
      });
      return { status: response.status, location: response.headers.get('location'), body: (await response.json()) as Record<string, unknown> };
    };
    const answers = [
      ...(await Promise.all(toDelete.map((token) => post({ type: 'tokens.delete', collection, token_ids: [token] })))),
      ...(await Promise.all([0, 2, 4, 6, 8].map((i) => post({ type: 'tokens.rotate', collection, token_ids: toRotate.slice(i, i + 2) })))),
    ];
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 202));
    for (const a of answers) {
      expect(a.body.state).toBe('queued');
      expect(a.location).toBe(`/v1/jobs/${String(a.body.job_id)}`);
    }
    const ids = answers.map((a) => a.body.job_id as string);
    // committed before the answer, and its status is served from Postgres while Redis is down
    const rows = await db.selectFrom('commands').select(['id', 'state']).where('id', 'in', ids).execute();
    expect(rows.map((r) => r.state)).toEqual(ids.map(() => 'queued'));
    const status = await call(stack, 'GET', `/v1/jobs/${ids[0]}`, { headers: stack.admin });
    expect(status.status).toBe(200);
    expect(status.body.state).toBe('queued');

    await redis.start();
    await sleep(RECONCILER_GRACE_MS + 100);
    const worker = await stack.startWorker();
    await waitForTerminal(db, ids, 30_000);
    // at least once each: a later round may list a command just before its job completes (as above)
    expect(worker.reconciler.requeued).toBeGreaterThanOrEqual(ids.length);

    const done = await db.selectFrom('commands').select(['id', 'type', 'state', 'result']).where('id', 'in', ids).execute();
    expect(done.filter((r) => r.state !== 'succeeded')).toEqual([]);
    const renamed = done.filter((r) => r.type === 'tokens.rotate').flatMap((r) => Object.entries((r.result as { mapping: Record<string, string> }).mapping));
    expect(renamed.map(([old]) => old).sort()).toEqual([...toRotate].sort());
    expect(await tokenIdsOf(db, collection)).toEqual([...untouched, ...renamed.map(([, fresh]) => fresh)].sort());
    const terminalEvents = await db
      .selectFrom('outbox')
      .select('command_id')
      .where('command_id', 'in', ids)
      .where((eb) => eb(eb.ref('event', '->>').key('type'), 'in', ['command.succeeded', 'command.failed']))
      .execute();
    expect(terminalEvents.map((r) => r.command_id).sort()).toEqual([...ids].sort());
  });

  it('with Redis down, /metrics still answers at once: the queue gauge is absent, the rest is there, and the gauge is back with Redis', { timeout: 60_000 }, async () => {
    const stack = await newStack({});
    const metrics = async () => (await fetch(`${stack.producer.url}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
    expect(await metrics()).toMatch(/^revocation_queue_jobs\{state="waiting"\} \d+$/m);

    await redis.stop();
    const started = Date.now();
    const during = await fetch(`${stack.producer.url}/metrics`, { signal: AbortSignal.timeout(10_000) });
    const text = await during.text();
    console.info(`/metrics answered ${during.status} in ${Date.now() - started} ms with Redis down`);

    expect(during.status).toBe(200);
    expect(text).not.toMatch(/^revocation_queue_jobs\{/m);
    expect(text).toMatch(/^revocation_outbox_lag_seconds 0$/m);
    expect(text).toMatch(/^revocation_process_cpu_user_seconds_total [\d.]+$/m);

    await redis.start();
    await expect.poll(metrics, { timeout: 30_000, interval: 500 }).toMatch(/^revocation_queue_jobs\{state="waiting"\} \d+$/m);
  });

  it('events committed while Redis is down wait in the outbox and are published in order per command when it is back', { timeout: 60_000 }, async () => {
    // one transaction per command (no group commit): the test counts the transactions it holds
    const stack = await newStack({ env: { WORKER_CONCURRENCY: '4', GROUP_COMMIT_MAX: '1' } });
    const db = stack.database.db;
    const collection = 'outbox_wait';
    await createCollection(stack, collection);
    // two deletes of 2,500 IDs (three `tokens.deleted` events each, at most 1,000 IDs per event)
    // and two rotates
    const tokens = await tokenize(
      stack,
      collection,
      Array.from({ length: 5_010 }, (_, i) => ({ object: { id: `o${i}` } })),
    );

    // hold the commands inside their transaction: a table lock every delete and rotate waits on
    const holder = new pg.Client({ connectionString: stack.database.url, application_name: 'faults-redis-holder' });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('lock table vault_tokens in exclusive mode');
      const bodies = [
        { type: 'tokens.delete', collection, token_ids: tokens.slice(0, 2_500) },
        { type: 'tokens.delete', collection, token_ids: tokens.slice(2_500, 5_000) },
        { type: 'tokens.rotate', collection, token_ids: tokens.slice(5_000, 5_005) },
        { type: 'tokens.rotate', collection, token_ids: tokens.slice(5_005, 5_010) },
      ];
      const ids: string[] = [];
      for (const body of bodies) {
        const r = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { ...body, reason: 'AppFunctionality' } });
        expect(r.status).toBe(202);
        ids.push(r.body.job_id as string);
      }
      // all four are running, each blocked on the lock inside its transaction (asked on another
      // connection: inside a transaction, pg_stat_activity is a snapshot taken at its first read)
      await expect
        .poll(
          async () => {
            const { rows } = await sql<{
              n: string;
            }>`select count(*) as n from pg_stat_activity where datname = ${stack.database.name} and application_name = 'revocation-worker' and wait_event_type = 'Lock'`.execute(db);
            return Number(rows[0]?.n);
          },
          { timeout: 15_000, interval: 50 },
        )
        .toBe(4);

      // Redis goes away, then the four transactions commit their effects and events
      await redis.stop();
      await holder.query('commit');
      await waitForTerminal(db, ids, 20_000);
      const committed = await db.selectFrom('outbox').select(['id', 'command_id', 'event_id', 'published_at']).where('command_id', 'in', ids).orderBy('id').execute();
      expect(committed.length).toBe(2 * 4 + 2 * 2);
      expect(committed.filter((r) => r.published_at !== null)).toEqual([]);
      const states = await db.selectFrom('commands').select('state').where('id', 'in', ids).execute();
      expect(states.map((r) => r.state)).toEqual(ids.map(() => 'succeeded'));

      // Redis is back (empty): the relay publishes what waited
      await redis.start();
      await expect
        .poll(async () => (await db.selectFrom('outbox').select('id').where('command_id', 'in', ids).where('published_at', 'is', null).execute()).length, { timeout: 20_000, interval: 100 })
        .toBe(0);

      const streamed = await streamEvents(redis.url, stack.config.EVENTS_STREAM);
      for (const id of ids) {
        // at least once on the stream: the first delivery of each event, in stream order
        const seen = new Set<string>();
        const ofCommand = streamed.filter((e) => e.job_id === id && !seen.has(e.event_id) && seen.add(e.event_id));
        const expected = committed.filter((r) => r.command_id === id).map((r) => r.event_id);
        expect(
          ofCommand.map((e) => e.event_id),
          `stream order of ${id}`,
        ).toEqual(expected);
        const types = ofCommand.map((e) => e.type);
        expect(types.at(-1)).toBe('command.succeeded');
        expect(types.slice(0, -1).every((t) => t === 'tokens.deleted' || t === 'tokens.rotated')).toBe(true);
        const batches = ofCommand.slice(0, -1).map((e) => (e.data as { batch: { index: number; last: boolean } }).batch);
        expect(batches.map((b) => b.index)).toEqual(batches.map((_, i) => i));
        expect(batches.map((b) => b.last)).toEqual(batches.map((_, i) => i === batches.length - 1));
      }
    } finally {
      await holder.end().catch(() => {});
    }
  });
});
