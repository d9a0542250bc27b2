import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE, COMMAND_WORKER_OPTIONS, loadConfig } from '../../contracts/index.js';
import { migrateToLatest } from '../../db/migrate.js';
import { seedVaultTokens } from '../../db/repositories/seed.repository.js';
import { startProducer } from '../../producer/server.js';
import { call, collectionOfTokens, createCollection, tokenize, waitForJob } from '../helpers/api.js';
import { backendsWaitingOnLocks, bounded, commandQueue, countInStates, duplicates, expectDeletedOnce, StepLog, streamEvents, tally, tokenIdsOf, waitForTerminal } from '../helpers/faults.js';
import { killChildren, launchWorker, producerEnv, type ServiceProcess, spawnProducer, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { prng } from '../helpers/prng.js';
import { type OwnPostgres, postgresBinaries, startOwnPostgres, stopOwnPostgresServers } from '../helpers/postgres-server.js';
import { freePort, type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §4.1 and §4.2 against a worker process killed -9 (no drain, no cleanup, BullMQ locks left
 * behind) in the middle of a burst of single-token deletes submitted over HTTP: every command
 * still ends succeeded exactly once, with its effect, audit row and events counted once. Redis
 * is one of the test's own.
 */

describe('a worker process killed -9 during a burst of 1,000 single-token deletes', () => {
  let redis: OwnRedis;
  let stack: Stack;

  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await startStack({ worker: false, env: { REDIS_URL: redis.url, WORKER_CONCURRENCY: '4' } });
  });

  afterAll(async () => {
    await killChildren();
    await stack?.close();
    await stopOwnRedisServers();
  });

  it('every command ends succeeded exactly once: one audit row, one tokens.deleted and one command.succeeded each, exactly the named tokens gone', { timeout: 120_000 }, async () => {
    const db = stack.database.db;
    const collection = 'burst';
    const tokens = await collectionOfTokens(stack, collection, 1_100);
    const targets = tokens.slice(0, 1_000);
    const kept = tokens.slice(1_000);

    const first = await spawnWorker(stack.config);

    // the burst: real HTTP, 20 requests in flight; every answer must be 202
    const submitted: string[] = [];
    const burst = bounded(targets, 20, async (token) => {
      const response = await fetch(`${stack.producer.url}/v1/commands`, {
        method: 'POST',
        headers: { ...stack.admin, 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'tokens.delete', collection, token_ids: [token], reason: 'AppFunctionality' }),
        signal: AbortSignal.timeout(10_000),
      });
      const body = (await response.json()) as { job_id: string };
      if (response.status !== 202) throw new Error(`submit: ${response.status} ${JSON.stringify(body)}`);
      submitted.push(body.job_id);
      return { id: body.job_id, token };
    });

    // kill -9 once the worker has finished a hundred of them, with the burst still coming in
    for (;;) {
      if ((await countInStates(db, submitted, ['succeeded'])) >= 100) break;
      if (!first.running()) throw new Error(`worker exited early\n${first.stderr()}`);
      await sleep(10);
    }
    const killed = await first.kill();
    expect(killed.signal).toBe('SIGKILL');
    const submittedAtKill = submitted.length;
    const jobs = await burst;
    const ids = jobs.map((j) => j.id);
    const terminalAtKill = await countInStates(db, ids, ['succeeded', 'failed']);
    console.info(`kill -9 after ${submittedAtKill} of 1,000 submitted, ${terminalAtKill} ended`);
    expect(terminalAtKill).toBeGreaterThanOrEqual(100);
    expect(terminalAtKill).toBeLessThan(ids.length);

    // the dead worker's jobs are still 'active' under locks that would expire on their own
    // (COMMAND_WORKER_OPTIONS; the test below waits for that): expire them now and drop those
    // jobs, so the reconciler of the next worker enqueues their unfinished commands again
    const { queue, close } = commandQueue(redis.url, stack.config.QUEUE_PREFIX);
    try {
      const orphans = await queue.getJobs(['active']);
      console.info(`${orphans.length} jobs were active in the killed worker`);
      for (const job of orphans) {
        await stack.redis.del(`${stack.config.QUEUE_PREFIX}:${COMMAND_QUEUE}:${job.id}:lock`);
        await job.remove();
      }
      const orphanIds = orphans.map((j) => j.id as string);

      const second = await stack.startWorker();
      // rounds until every orphan whose command had not ended has a job again (the reconciler
      // leaves commands younger than its grace period to the producer's own enqueue)
      // (none active at the kill, when the worker was between jobs: nothing to wait for)
      for (let round = 0; orphanIds.length > 0; round++) {
        const unfinished = (await db.selectFrom('commands').select('id').where('id', 'in', orphanIds).where('state', 'in', ['queued', 'running']).execute()).map((r) => r.id);
        const missing: string[] = [];
        for (const id of unfinished) if (!(await queue.getJob(id))) missing.push(id);
        if (missing.length === 0) break;
        if (round > 100) throw new Error(`the reconciler did not re-enqueue ${missing.length} unfinished commands`);
        await second.reconciler.reconcileOnce();
        await sleep(100);
      }

      await waitForTerminal(db, ids, 60_000);
      await expectDeletedOnce(db, collection, jobs, kept);

      // and the relays announced each command's end on the stream (at least once)
      await expect
        .poll(async () => (await db.selectFrom('outbox').select('id').where('command_id', 'in', ids).where('published_at', 'is', null).execute()).length, { timeout: 20_000, interval: 100 })
        .toBe(0);
      const streamed = new Set((await streamEvents(redis.url, stack.config.EVENTS_STREAM)).filter((e) => e.type === 'command.succeeded').map((e) => e.job_id));
      expect(ids.filter((id) => !streamed.has(id))).toEqual([]);
    } finally {
      await close();
    }
  });
});

describe('a bulk delete whose worker process is killed -9 while another worker runs', () => {
  const BATCH = 100;
  let redis: OwnRedis;
  let stack: Stack;
  let steps: StepLog;
  /** Holds the command row, so that the first worker is in the middle of the command when it dies. */
  let holder: pg.Client;

  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await startStack({ worker: false, env: { REDIS_URL: redis.url, DELETE_BATCH_SIZE: String(BATCH) } });
    steps = await StepLog.listen(stack.database.url);
    holder = new pg.Client({ connectionString: stack.database.url, application_name: 'fault-test-holder' });
    await holder.connect();
  });

  afterAll(async () => {
    await killChildren();
    await holder?.end();
    await steps?.close();
    await stack?.close();
    await stopOwnRedisServers();
  });

  it('the other worker takes it over once the lock of the dead one expires (lockDuration + stalledInterval) and finishes it: every token deleted once', { timeout: 90_000 }, async () => {
    const db = stack.database.db;
    const collection = 'killed_mid_bulk';
    const tag = 'breach';
    await createCollection(stack, collection);
    // 5,000 tagged tokens: 50 batches of 100
    await seedVaultTokens(db, { collection, count: 10_000, tag, tagRatio: 0.5, tenantId: null, objectPrefix: 'o' });
    const tagged = await tokenIdsOf(db, collection, tag);
    expect(tagged).toHaveLength(5_000);

    const first = await spawnWorker(stack.config);
    const accepted = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection, tags: [tag], reason: 'FraudPreventionSecurityAndCompliance' } });
    expect(accepted.status).toBe(202);
    const id = accepted.body.job_id as string;

    // three batches in, take the command row: the first worker's next step waits for it
    await steps.steps(id, 3);
    await holder.query('begin');
    await holder.query('select id from commands where id = $1 for update', [id]);
    await expect.poll(() => backendsWaitingOnLocks(db, stack.database.name, 'revocation-worker'), { timeout: 10_000, interval: 20 }).toBe(1);
    const second = await spawnWorker(stack.config);

    const before = await db.selectFrom('commands').select(['state', 'progress']).where('id', '=', id).executeTakeFirstOrThrow();
    expect(before.state).toBe('running');
    const committed = before.progress!.processed / BATCH;
    const killedAt = Date.now();
    expect((await first.kill()).signal).toBe('SIGKILL');
    // the dead worker's session ends when Postgres hands it the row and finds its client gone
    await holder.query('commit');

    // its job stays active until its lock expires and a stalled check moves it back to wait
    const bound = COMMAND_WORKER_OPTIONS.lockDuration + COMMAND_WORKER_OPTIONS.stalledInterval + 6_000;
    await steps.steps(id, committed + 1, bound);
    console.info(
      `kill -9 after ${committed} batches; the other worker committed the next one ${Date.now() - killedAt} ms after the kill (lockDuration ${COMMAND_WORKER_OPTIONS.lockDuration} ms, stalledInterval ${COMMAND_WORKER_OPTIONS.stalledInterval} ms)`,
    );

    const done = await waitForJob(stack, id, stack.admin, 60_000);
    console.info(`the command ended ${Date.now() - killedAt} ms after the kill`);
    expect(done).toMatchObject({ state: 'succeeded', result: { deleted: 5_000 }, error: null });
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(second.running()).toBe(true);
    expect(await tokenIdsOf(db, collection, tag)).toEqual([]);
    const audited = (await db.selectFrom('audit_log').select('data').where('command_id', '=', id).execute()).flatMap((r) => r.data.token_ids as string[]);
    expect(duplicates(audited)).toEqual([]);
    expect(audited.sort()).toEqual(tagged);
  });
});

describe('a worker started before Postgres or Redis is up', () => {
  const RETRYING = 'Postgres or Redis cannot be reached yet; retrying';

  afterAll(async () => {
    await killChildren();
    await stopOwnRedisServers();
    await stopOwnPostgresServers();
  });

  /** The worker's start-up retry warnings so far, as logged. */
  const retries = (worker: WorkerProcess) =>
    worker
      .stdout()
      .split('\n')
      .flatMap((line) => {
        try {
          const entry = JSON.parse(line) as Record<string, any>;
          return entry.msg === RETRYING ? [entry] : [];
        } catch {
          return [];
        }
      });

  /** Waits until the worker has said twice that it retries (so it waited between), still running. */
  const retriedTwice = async (worker: WorkerProcess) => {
    const deadline = Date.now() + 30_000;
    while (retries(worker).length < 2) {
      if (!worker.running()) throw new Error(`the worker exited instead of retrying (${JSON.stringify(await worker.exited)})\nstdout: ${worker.stdout()}\nstderr: ${worker.stderr()}`);
      if (Date.now() > deadline) throw new Error(`the worker did not say it retries\nstdout: ${worker.stdout()}\nstderr: ${worker.stderr()}`);
      await sleep(50);
    }
    const [first, second] = retries(worker);
    expect(first).toMatchObject({ level: 40, attempt: 1, retry_in_ms: expect.any(Number), err: { code: 'ECONNREFUSED' } });
    expect(second).toMatchObject({ attempt: 2 });
  };

  it('Redis not up yet: it retries with backoff, saying so, starts once Redis is up, and runs a command', { timeout: 90_000 }, async () => {
    const redis = await startOwnRedis();
    const stack = await startStack({ worker: false, env: { REDIS_URL: redis.url } });
    stack.redis.on('error', () => {}); // it reconnects once Redis is back
    try {
      await createCollection(stack, 'late_redis');
      const [token] = await tokenize(stack, 'late_redis', [{ object: { id: 'o1' } }]);
      await redis.stop();

      const worker = launchWorker(stack.config);
      await retriedTwice(worker);
      await redis.start();
      await worker.waitForLog('worker ready', 30_000);

      // the producer's own connection is back too (it answers 503 until then)
      await expect.poll(async () => (await call(stack, 'GET', '/readyz')).status, { timeout: 20_000, interval: 100 }).toBe(200);
      const accepted = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection: 'late_redis', token_ids: [token], reason: 'AppFunctionality' } });
      expect(accepted.status).toBe(202);
      expect(await waitForJob(stack, accepted.body.job_id as string, stack.admin, 30_000)).toMatchObject({ state: 'succeeded', result: { deleted: 1 } });
    } finally {
      await killChildren();
      await stack.close();
    }
  });

  const bin = postgresBinaries();
  it.skipIf(bin === undefined)(
    'Postgres not up yet (a server of its own, stopped): it retries with backoff, saying so, starts once Postgres is up, and runs the command queued for it',
    { timeout: 120_000 },
    async () => {
      const postgres: OwnPostgres = await startOwnPostgres(bin!);
      const redis = await startOwnRedis();
      const url = postgres.url('revocation');
      await migrateToLatest(url);
      const config = loadConfig({
        DATABASE_URL: url,
        REDIS_URL: redis.url,
        PORT: '0',
        LOG_LEVEL: 'silent',
        QUEUE_PREFIX: 'late-postgres',
        WORKER_CONCURRENCY: '4',
        BOOTSTRAP_ADMIN_TOKEN: ADMIN_TOKEN,
        RATE_LIMIT_MAX: '0',
      });
      const producer = await startProducer(config, pino({ level: 'silent' }));
      const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
      const send = async (method: string, path: string, body?: unknown) => {
        const response = await fetch(`${producer.url}${path}`, { method, headers: admin, ...(body === undefined ? {} : { body: JSON.stringify(body) }), signal: AbortSignal.timeout(10_000) });
        return { status: response.status, body: (await response.json()) as any };
      };
      try {
        // a command accepted and queued while no worker runs; then Postgres goes down
        expect((await send('POST', '/v1/collections', { name: 'late_postgres' })).status).toBe(201);
        const tokenized = await send('POST', '/api/pvlt/1.0/data/collections/late_postgres/tokens?reason=AppFunctionality', [{ object: { id: 'o1' } }]);
        expect(tokenized.status).toBe(200);
        const accepted = await send('POST', '/v1/commands', { type: 'tokens.delete', collection: 'late_postgres', token_ids: [tokenized.body[0].token_id], reason: 'AppFunctionality' });
        expect(accepted.status).toBe(202);
        await postgres.stop();

        const worker = launchWorker(config);
        await retriedTwice(worker);
        await postgres.start();
        await worker.waitForLog('worker ready', 30_000);

        // the producer reads the job on fresh connections (503 while its pool notices the restart)
        let job: any;
        await expect.poll(async () => (job = (await send('GET', `/v1/jobs/${accepted.body.job_id}`)).body).state, { timeout: 30_000, interval: 100 }).toBe('succeeded');
        expect(job).toMatchObject({ result: { deleted: 1 } });
      } finally {
        await killChildren();
        await producer.close();
      }
    },
  );
});

/**
 * Many processes, each killed once: two producers and three workers on one database and queue
 * take a mixed load over HTTP (single deletes, rotates, revoke-alls, and one bulk delete by tag
 * of 100 batches), and each of the five is killed -9 at a moment drawn from a seeded PRNG
 * (KILL_SEED replays a run), then started again. Clients send each command with an
 * Idempotency-Key and, when their connection fails (their producer died), send it again to the
 * other producer. At the end every command is accounted for: one per key, one terminal state,
 * its effect once (tokens deleted once, generations bumped once, audit rows once), and its
 * events complete on the stream (deduplicated by event_id).
 */
describe('two producer and three worker processes, each killed -9 once under a mixed load and started again', () => {
  const BATCH = 100;
  let redis: OwnRedis;
  let stack: Stack;

  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await startStack({ worker: false, env: { REDIS_URL: redis.url, DELETE_BATCH_SIZE: String(BATCH) } });
  });

  afterAll(async () => {
    await killChildren();
    await stack?.close();
    await stopOwnRedisServers();
  });

  type Spec =
    | { type: 'tokens.delete'; token_ids: [string] }
    | { type: 'tokens.delete'; tags: ['breach'] }
    | { type: 'tokens.rotate'; token_ids: [string, string] }
    | { type: 'temporary_tokens.revoke_all'; subject: { kind: 'user'; id: string } };

  it('every command accounted for: one per Idempotency-Key, one terminal state, each effect, audit row and event once', { timeout: 150_000 }, async () => {
    const db = stack.database.db;
    const collection = 'killed_all';
    await createCollection(stack, collection);
    // the bulk delete: 10,000 tagged tokens, 100 batches (seconds: a worker may die under it)
    await seedVaultTokens(db, { collection, count: 10_000, tag: 'breach', tagRatio: 1, tenantId: null, objectPrefix: 'b' });
    const breach = await tokenIdsOf(db, collection, 'breach');
    const singles = await tokenize(
      stack,
      collection,
      Array.from({ length: 300 }, (_, i) => ({ object: { id: `s${i}` } })),
    );
    const rotated = await tokenize(
      stack,
      collection,
      Array.from({ length: 200 }, (_, i) => ({ object: { id: `r${i}` } })),
    );
    const users: string[] = [];
    for (let i = 0; i < 8; i++) {
      const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user' } });
      expect(created.status).toBe(201);
      users.push(created.body.id as string);
    }

    const seed = Number(process.env.KILL_SEED ?? Date.now() % 1_000_000);
    console.info(`kill seed ${seed} (KILL_SEED=${seed} replays it)`);
    const random = prng(seed);
    const specs: Spec[] = [
      ...singles.map((t): Spec => ({ type: 'tokens.delete', token_ids: [t] })),
      ...Array.from({ length: 100 }, (_, i): Spec => ({ type: 'tokens.rotate', token_ids: [rotated[2 * i]!, rotated[2 * i + 1]!] })),
      ...Array.from({ length: 120 }, (_, i): Spec => ({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: users[i % users.length]! } })),
    ];
    for (let i = specs.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [specs[i], specs[j]] = [specs[j]!, specs[i]!];
    }
    // the bulk delete goes first, so that it is under way when workers die
    specs.unshift({ type: 'tokens.delete', tags: ['breach'] });

    // the five processes; a producer comes back on its own port
    const ports = [await freePort(), await freePort()];
    const producerOn = (port: number) => spawnProducer(producerEnv(stack.config, port, 'warn'), { readyTimeoutMs: 60_000 });
    const producers: (ServiceProcess | undefined)[] = await Promise.all(ports.map(producerOn));
    const workers: (WorkerProcess | undefined)[] = [];
    for (let i = 0; i < 3; i++) workers.push(await spawnWorker(stack.config));

    // each process killed once, when this many commands have been accepted (a fraction of the load)
    const kills = [...['producer 0', 'producer 1', 'worker 0', 'worker 1', 'worker 2'].map((name) => ({ name, at: Math.floor((0.05 + 0.75 * random()) * specs.length) }))].sort((a, b) => a.at - b.at);
    console.info(`kills: ${kills.map((k) => `${k.name} at ${k.at}`).join(', ')}`);
    // started again in the background (slowly, on a loaded machine: several may start at once)
    const restarts: Promise<unknown>[] = [];
    const killedWith: string[] = [];
    const killNow = async (name: string) => {
      const [kind, n] = name.split(' ') as ['producer' | 'worker', string];
      const i = Number(n);
      const list = kind === 'producer' ? producers : workers;
      const victim = list[i]!;
      list[i] = undefined;
      expect((await victim.kill()).signal).toBe('SIGKILL');
      killedWith.push(`${name}: ${(await db.selectFrom('commands').select('id').where('state', 'in', ['queued', 'running']).execute()).length} commands unfinished`);
      const restart = kind === 'producer' ? producerOn(ports[i]!).then((p) => (producers[i] = p)) : spawnWorker(stack.config, { readyTimeoutMs: 60_000 }).then((w) => (workers[i] = w));
      restart.catch(() => {}); // awaited after the load
      restarts.push(restart);
    };

    // the load: 16 clients; a request whose connection fails goes again, same key, to the other producer
    let accepted = 0;
    let killed = 0;
    const connectionFailures: string[] = [];
    const unexpected: string[] = [];
    const answers = await bounded(specs, 16, async (spec, index) => {
      for (let attempt = 0; ; attempt++) {
        while (killed < kills.length && accepted >= kills[killed]!.at) await killNow(kills[killed++]!.name);
        const port = ports[(index + attempt) % 2]!;
        try {
          const response = await fetch(`http://127.0.0.1:${port}/v1/commands`, {
            method: 'POST',
            headers: { ...stack.admin, 'content-type': 'application/json', 'idempotency-key': `kill-${index}` },
            body: JSON.stringify({ ...spec, ...(spec.type.startsWith('tokens.') ? { collection, reason: 'AppFunctionality' } : {}) }),
            signal: AbortSignal.timeout(30_000),
          });
          const body = (await response.json()) as { job_id?: string };
          if (response.status === 202 || response.status === 200) {
            accepted++;
            return { spec, id: body.job_id!, replayed: response.status === 200 };
          }
          unexpected.push(`${response.status} ${JSON.stringify(body)}`);
          return undefined;
        } catch (error) {
          connectionFailures.push(String((error as Error).cause ?? error));
          await sleep(50 + attempt * 50);
        }
      }
    });
    await Promise.all(restarts);
    expect(killed).toBe(kills.length);
    console.info(`killed: ${killedWith.join('; ')}`);
    console.info(`${specs.length} commands accepted; ${connectionFailures.length} requests sent again after a connection failure; ${answers.filter((a) => a?.replayed).length} answered as replays`);
    expect(unexpected).toEqual([]);
    const jobs = answers.map((a) => a!);
    const ids = jobs.map((j) => j.id);
    expect(duplicates(ids)).toEqual([]);

    // one command per key, no other
    const recorded = await db.selectFrom('commands').select(['id', 'idempotency_key']).where('idempotency_key', 'like', 'kill-%').execute();
    expect(recorded).toHaveLength(specs.length);
    expect(new Map(recorded.map((r) => [r.idempotency_key, r.id]))).toEqual(new Map(ids.map((id, i) => [`kill-${i}`, id])));

    await waitForTerminal(db, ids, 90_000);
    const rows = await db.selectFrom('commands').select(['id', 'state', 'result', 'error', 'attempts']).where('id', 'in', ids).execute();
    expect(rows.filter((r) => r.state !== 'succeeded').map((r) => `${r.id} ${r.state} ${JSON.stringify(r.error)}`)).toEqual([]);
    const resultOf = new Map(rows.map((r) => [r.id, r.result as Record<string, any>]));
    const { queue, close } = commandQueue(redis.url, stack.config.QUEUE_PREFIX);
    const stalled = (await queue.getJobs(['completed'])).filter((j) => j.stalledCounter > 0 || j.attemptsMade > 1).length;
    await close();
    const bulkRow = await db.selectFrom('commands').select(['attempts', 'started_at', 'finished_at']).where('id', '=', ids[0]!).executeTakeFirstOrThrow();
    console.info(
      `${stalled} jobs ran again after their worker died or failed; the bulk delete took ${bulkRow.finished_at!.getTime() - bulkRow.started_at!.getTime()} ms in ${bulkRow.attempts} attempts`,
    );

    // effects once: the tokens left, the results, the generations
    const of = <T extends Spec['type']>(type: T) => jobs.filter((j) => j.spec.type === type);
    const bulk = jobs[0]!;
    expect(resultOf.get(bulk.id)).toEqual({ deleted: breach.length });
    const deletes = of('tokens.delete').filter((j) => j !== bulk);
    expect(deletes.filter((j) => resultOf.get(j.id)?.deleted !== 1).map((j) => j.id)).toEqual([]);
    const mapping: Record<string, string> = Object.assign({}, ...of('tokens.rotate').map((j) => resultOf.get(j.id)?.mapping));
    expect(Object.keys(mapping).sort()).toEqual([...rotated].sort());
    expect(await tokenIdsOf(db, collection)).toEqual(Object.values(mapping).sort());
    const revokes = of('temporary_tokens.revoke_all');
    const generations = new Map((await db.selectFrom('subjects').select(['id', 'temporary_generation']).where('id', 'in', users).execute()).map((r) => [r.id, r.temporary_generation]));
    const expectedGenerations = new Map(users.map((u) => [u, revokes.filter((j) => j.spec.type === 'temporary_tokens.revoke_all' && j.spec.subject.id === u).length]));
    expect(generations).toEqual(expectedGenerations);
    expect(revokes.map((j) => resultOf.get(j.id)!.generation as number).sort((a, b) => a - b)).toEqual(
      [...expectedGenerations.values()].flatMap((n) => Array.from({ length: n }, (_, k) => k + 1)).sort((a, b) => a - b),
    );

    // audit rows once: one per single command, the bulk's batches naming each tagged token once
    const audit = await db.selectFrom('audit_log').select(['command_id', 'action', 'data']).where('command_id', 'in', ids).execute();
    const bulkAudited = audit.filter((r) => r.command_id === bulk.id).flatMap((r) => r.data.token_ids as string[]);
    expect(duplicates(bulkAudited)).toEqual([]);
    expect(bulkAudited.sort()).toEqual(breach);
    const auditCount = tally(audit.filter((r) => r.command_id !== bulk.id).map((r) => r.command_id));
    expect(ids.slice(1).filter((id) => auditCount.get(id) !== 1)).toEqual([]);
    const expectedAction = { 'tokens.delete': 'tokens.deleted', 'tokens.rotate': 'tokens.rotated', 'temporary_tokens.revoke_all': 'temporary_tokens.revoked' } as const;
    const actionOf = new Map(audit.map((r) => [r.command_id, r.action]));
    expect(jobs.filter((j) => actionOf.get(j.id) !== expectedAction[j.spec.type]).map((j) => j.id)).toEqual([]);

    // events: every outbox row of these commands on the stream (deduplicated by event_id), one
    // terminal event each, each token's deletion announced once
    await expect
      .poll(async () => (await db.selectFrom('outbox').select('id').where('command_id', 'in', ids).where('published_at', 'is', null).execute()).length, { timeout: 30_000, interval: 100 })
      .toBe(0);
    const outbox = await db.selectFrom('outbox').select(['command_id', 'event']).where('command_id', 'in', ids).execute();
    const streamed = new Map((await streamEvents(redis.url, stack.config.EVENTS_STREAM)).map((e) => [e.event_id, e]));
    expect(outbox.filter((r) => !streamed.has(r.event.event_id)).map((r) => `${r.command_id} ${r.event.type}`)).toEqual([]);
    const events = [...streamed.values()].filter((e) => ids.includes(e.job_id));
    expect(events).toHaveLength(outbox.length);
    const terminal = tally(events.filter((e) => e.type === 'command.succeeded' || e.type === 'command.failed').map((e) => e.job_id));
    expect(ids.filter((id) => terminal.get(id) !== 1)).toEqual([]);
    const announced = events.flatMap((e) => (e.type === 'tokens.deleted' ? e.data.token_ids : []));
    expect(duplicates(announced)).toEqual([]);
    expect(announced.length).toBe(breach.length + singles.length);

    // the restarted processes run, and the producers serve
    expect([...producers, ...workers].filter((p) => !p?.running())).toEqual([]);
    for (const p of producers) expect((await fetch(`${p!.url}/readyz`, { signal: AbortSignal.timeout(10_000) })).status).toBe(200);
  });
});
