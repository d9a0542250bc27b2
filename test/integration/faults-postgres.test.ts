import { createServer, type Server, type Socket } from 'node:net';
import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { seedVaultTokens } from '../../db/repositories/seed.repository.js';
import { type RunningProducer, startProducer } from '../../producer/server.js';
import { call, collectionOfTokens, createCollection, subjectWithToken, tokenize, waitForJob } from '../helpers/api.js';
import { backendsWaitingOnLocks, bounded, countInStates, duplicates, tokenIdsOf } from '../helpers/faults.js';
import { killChildren, runScript } from '../helpers/processes.js';
import { freePort, type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';
import { outboxEventsOf } from '../../db/repositories/outbox.repository.js';

/**
 * Postgres faults. Connections cut under running jobs (pg_terminate_backend, only on backends
 * of the test's own database): jobs retry and finish, each effect once (SPEC §4.1, §4.2); cut
 * under a request's read, before anything was written: the read runs again, no 503. An
 * unreachable Postgres: the producer answers 503 with Retry-After, in the route family's
 * envelope, quickly (SPEC §7). Redis is one of the test's own.
 */

/** Terminates the backends of `applicationNames` on this database only; returns how many. */
async function terminateBackends(db: Db, database: string, applicationNames: readonly string[]): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    select count(*) filter (where pg_terminate_backend(pid)) as n
    from pg_stat_activity
    where datname = ${database} and application_name in (${sql.join([...applicationNames])}) and pid <> pg_backend_pid()`.execute(db);
  return Number(rows[0]?.n ?? 0);
}

describe('Postgres connections cut while jobs run', () => {
  let redis: OwnRedis;
  let stack: Stack;
  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await startStack({ worker: false, env: { REDIS_URL: redis.url, DELETE_BATCH_SIZE: '100', WORKER_CONCURRENCY: '4' } });
  });
  afterAll(async () => {
    await stack?.close();
    await stopOwnRedisServers();
  });

  it('jobs retry and finish: every command succeeds once, every effect counted once', { timeout: 150_000 }, async () => {
    const db = stack.database.db;
    const collection = 'cut';
    await createCollection(stack, collection);
    // a breach of 2,000 tokens (20 batches of 100), 100 single deletes, 20 rotates of two
    await seedVaultTokens(db, { collection, count: 4_000, tag: 'breach', tagRatio: 0.5, tenantId: null, objectPrefix: 'seed-' });
    const breach = (
      await db
        .selectFrom('vault_tokens')
        .select('token_id')
        .where('collection', '=', collection)
        .where('tags', '@>', sql<string[]>`array['breach']::text[]`)
        .execute()
    ).map((r) => r.token_id);
    expect(breach).toHaveLength(2_000);
    const seededKept = (await tokenIdsOf(db, collection)).filter((id) => !new Set(breach).has(id));
    const singles = await tokenize(
      stack,
      collection,
      Array.from({ length: 100 }, (_, i) => ({ object: { id: `single-${i}` } })),
    );
    const rotated = await tokenize(
      stack,
      collection,
      Array.from({ length: 40 }, (_, i) => ({ object: { id: `rotate-${i}` } })),
    );

    const submit = async (body: Record<string, unknown>) => {
      const r = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { ...body, reason: 'AppFunctionality' } });
      if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.job_id as string;
    };
    const bulkId = await submit({ type: 'tokens.delete', collection, tags: ['breach'] });
    const singleIds = await bounded(singles, 20, (token) => submit({ type: 'tokens.delete', collection, token_ids: [token] }));
    const rotateIds = await bounded(
      Array.from({ length: 20 }, (_, i) => rotated.slice(2 * i, 2 * i + 2)),
      20,
      (pair) => submit({ type: 'tokens.rotate', collection, token_ids: pair }),
    );
    const all = [bulkId, ...singleIds, ...rotateIds];

    const worker = await stack.startWorker();
    // once the breach delete is under way, cut every connection of the worker, again and again,
    // until several commands needed another attempt (and at least five rounds)
    await expect
      .poll(async () => (await db.selectFrom('commands').select('progress').where('id', '=', bulkId).executeTakeFirstOrThrow()).progress?.processed ?? 0, { timeout: 20_000, interval: 20 })
      .toBeGreaterThan(0);
    let terminated = 0;
    let rounds = 0;
    let retried = 0;
    for (; rounds < 60; rounds++) {
      terminated += await terminateBackends(db, stack.database.name, ['revocation-worker']);
      await sleep(150);
      retried = Number(
        (
          await db
            .selectFrom('commands')
            .select((eb) => eb.fn.countAll<string>().as('n'))
            .where('attempts', '>', 1)
            .executeTakeFirstOrThrow()
        ).n,
      );
      if ((rounds >= 5 && retried >= 3) || (await countInStates(db, all, ['succeeded', 'failed'])) === all.length) break;
    }
    console.info(`pg_terminate_backend: ${terminated} worker backends in ${rounds + 1} rounds; ${retried} commands retried`);
    expect(terminated).toBeGreaterThan(0);

    // BullMQ retries with backoff (and the reconciler re-enqueues a job whose attempts ran out)
    const deadline = Date.now() + 100_000;
    while ((await countInStates(db, all, ['succeeded', 'failed'])) < all.length) {
      if (Date.now() > deadline) throw new Error(`${await countInStates(db, all, ['succeeded', 'failed'])} of ${all.length} commands ended`);
      await sleep(200);
    }
    // a command that needed another attempt after a committed step counts it in Postgres (the bulk
    // delete, cut between its batches); on a slow machine its retry may come after the last cut
    retried = Number(
      (
        await db
          .selectFrom('commands')
          .select((eb) => eb.fn.countAll<string>().as('n'))
          .where('id', 'in', all)
          .where('attempts', '>', 1)
          .executeTakeFirstOrThrow()
      ).n,
    );
    expect(retried).toBeGreaterThan(0);

    const rows = await db.selectFrom('commands').select(['id', 'type', 'state', 'result', 'error', 'attempts']).where('id', 'in', all).execute();
    expect(rows.filter((r) => r.state !== 'succeeded').map((r) => `${r.id} ${r.state} ${JSON.stringify(r.error)}`)).toEqual([]);
    const resultOf = new Map(rows.map((r) => [r.id, r.result as Record<string, unknown>]));
    expect(resultOf.get(bulkId)).toEqual({ deleted: 2_000 });
    for (const id of singleIds) expect(resultOf.get(id)).toEqual({ deleted: 1 });
    const mapping = Object.assign({}, ...rotateIds.map((id) => resultOf.get(id)?.mapping as Record<string, string>)) as Record<string, string>;
    expect(Object.keys(mapping).sort()).toEqual([...rotated].sort());

    // the tokens left: the seeded ones outside the breach, and the rotated ones under their new IDs
    expect(await tokenIdsOf(db, collection)).toEqual([...seededKept, ...Object.values(mapping)].sort());

    // audit: each effect once
    const audit = await db.selectFrom('audit_log').select(['command_id', 'action', 'data']).where('command_id', 'in', all).execute();
    const bulkAudited = audit.filter((r) => r.command_id === bulkId).flatMap((r) => r.data.token_ids as string[]);
    expect(duplicates(bulkAudited)).toEqual([]);
    expect(bulkAudited.sort()).toEqual([...breach].sort());
    const singleAudit = audit.filter((r) => singleIds.includes(r.command_id as string));
    expect(singleAudit.map((r) => (r.data.token_ids as string[]).join()).sort()).toEqual([...singles].sort());
    const rotateAudit = audit.filter((r) => rotateIds.includes(r.command_id as string));
    expect(rotateAudit).toHaveLength(rotateIds.length);
    expect(rotateAudit.map((r) => r.action)).toEqual(rotateIds.map(() => 'tokens.rotated'));
    expect(audit.filter((r) => r.action === 'command.failed')).toEqual([]);

    // outbox: one terminal event per command, and each deleted token announced once
    const outbox = await db.selectFrom('outbox').select(['command_id', 'event']).where('command_id', 'in', all).execute();
    const succeeded = outbox.filter((r) => r.event.type === 'command.succeeded').map((r) => r.command_id);
    expect(duplicates(succeeded)).toEqual([]);
    expect(succeeded.sort()).toEqual([...all].sort());
    expect(outbox.filter((r) => r.event.type === 'command.failed')).toEqual([]);
    const whole = (await Promise.all(all.map((id) => outboxEventsOf(db, id)))).flat();
    const announced = whole.filter((e) => e.type === 'tokens.deleted').flatMap((e) => (e.data as { token_ids: string[] }).token_ids);
    expect(duplicates(announced)).toEqual([]);
    expect(announced.length).toBe(breach.length + singles.length);
    expect(worker.stats).toBeDefined();
  });

  it('the producer answers normally after its own connections were cut', { timeout: 30_000 }, async () => {
    const db = stack.database.db;
    const collection = 'cut_producer';
    const tokens = await collectionOfTokens(stack, collection, 5);
    await stack.startWorker();

    const cut = await terminateBackends(db, stack.database.name, ['revocation-producer', 'revocation-waiter']);
    expect(cut).toBeGreaterThan(0);
    await sleep(200);
    const answers = await Promise.all(
      tokens.map((token) =>
        call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${collection}/tokens?token_ids=${token}&reason=AppFunctionality`, { headers: { ...stack.admin, prefer: 'wait=10' } }),
      ),
    );
    // done within the wait: the seed's own answer (the waiter LISTENs again or polls)
    expect(answers.map((a) => a.status)).toEqual(tokens.map(() => 200));
    expect(await tokenIdsOf(db, collection)).toEqual([]);
  });
});

describe('a read in flight when its connection is cut', () => {
  let redis: OwnRedis;
  let stack: Stack;
  /** Holds a table lock, so that the producer's read waits on it when its backend is terminated. */
  let holder: pg.Client;
  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await startStack({ env: { REDIS_URL: redis.url } });
    holder = new pg.Client({ connectionString: stack.database.url, application_name: 'fault-test-holder' });
    await holder.connect();
  });
  afterAll(async () => {
    await holder?.end();
    await stack?.close();
    await stopOwnRedisServers();
  });

  /**
   * Sends a request while `table` is locked, waits until the producer's read of it waits on the
   * lock, terminates the producer's backends, then lets the lock go; resolves with the answer.
   */
  const cutWhileReading = async <T>(table: 'access_tokens' | 'commands' | 'vault_tokens', send: () => Promise<T>): Promise<T> => {
    const db = stack.database.db;
    await holder.query('begin');
    await holder.query(`lock table ${table} in access exclusive mode`);
    try {
      const answer = send();
      await expect.poll(() => backendsWaitingOnLocks(db, stack.database.name, 'revocation-producer'), { timeout: 10_000, interval: 20 }).toBe(1);
      expect(await terminateBackends(db, stack.database.name, ['revocation-producer'])).toBeGreaterThan(0);
      await holder.query('commit');
      return await answer;
    } finally {
      await holder.query('rollback').catch(() => {});
    }
  };

  it('the credential lookup: read again on a fresh connection, the request is answered as usual', { timeout: 30_000 }, async () => {
    await createCollection(stack, 'cut_lookup');
    // a token the producer has not seen: its credential is looked up, not taken from the cache
    const { headers } = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
    const answer = await cutWhileReading('access_tokens', () =>
      call(stack, 'POST', '/v1/commands', { headers, body: { type: 'tokens.delete', collection: 'cut_lookup', token_ids: ['t1'], reason: 'AppFunctionality' } }),
    );
    expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  });

  it('the idempotency lookup: read again on a fresh connection, the replay is answered as usual', { timeout: 30_000 }, async () => {
    const { tokenId } = await subjectWithToken(stack, { kind: 'user' });
    const revoke = () => call(stack, 'POST', '/v1/commands', { headers: { ...stack.admin, 'idempotency-key': 'cut-replay' }, body: { type: 'access_token.revoke', token_id: tokenId } });
    const first = await revoke();
    expect(first.status).toBe(202);
    expect(await waitForJob(stack, first.body.job_id as string)).toMatchObject({ state: 'succeeded' });
    // the token is gone: the retry finds the key's earlier command (a read of the commands table)
    const replay = await cutWhileReading('commands', revoke);
    expect(replay.status, JSON.stringify(replay.body)).toBe(200);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.job_id).toBe(first.body.job_id);
  });

  it('a transaction cut under its write: 503 PV1010 with Retry-After (the ROLLBACK on the ended client fails too), not 500', { timeout: 30_000 }, async () => {
    await createCollection(stack, 'cut_write');
    // the tokenize route writes in a transaction; its INSERT waits on the lock, and is cut there
    const answer = await cutWhileReading('vault_tokens', () =>
      call(stack, 'POST', '/api/pvlt/1.0/data/collections/cut_write/tokens?reason=AppFunctionality', { headers: stack.admin, body: [{ object: { id: 'o1' } }] }),
    );
    expect(answer.status, JSON.stringify(answer.body)).toBe(503);
    expect(answer.body).toMatchObject({ error_code: 'PV1010' });
    expect(Number(answer.headers['retry-after'])).toBeGreaterThan(0);
  });
});

describe('Postgres unreachable', () => {
  let redis: OwnRedis;
  let producer: RunningProducer | undefined;
  /** A TCP listener that accepts and never answers: a Postgres that hangs. */
  let silent: Server | undefined;
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    redis = await startOwnRedis();
  });
  afterEach(async () => {
    await producer?.close();
    producer = undefined;
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => (silent ? silent.close(() => resolve()) : resolve()));
    silent = undefined;
  });
  afterAll(async () => {
    await killChildren();
    await stopOwnRedisServers();
  });

  const producerOn = async (databaseUrl: string) => {
    const config = loadConfig({ DATABASE_URL: databaseUrl, REDIS_URL: redis.url, PORT: '0', LOG_LEVEL: 'silent', QUEUE_PREFIX: `pg-down-${process.pid}` });
    // no BOOTSTRAP_ADMIN_TOKEN: making the admin needs Postgres (see the start-up test below)
    producer = await startProducer(config, pino({ level: 'silent' }));
    return producer;
  };

  /** Real HTTP; the answer must come before a 5 s client timeout. */
  const request = async (url: string, method: string, headers: Record<string, string> = {}, body?: unknown) => {
    const response = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(5_000),
    });
    return { status: response.status, retryAfter: response.headers.get('retry-after'), body: (await response.json()) as any };
  };

  const expectUnavailableEverywhere = async (base: string) => {
    const native = await request(`${base}/v1/commands`, 'POST', {}, { type: 'tokens.delete', collection: 'c', token_ids: ['t1'], reason: 'AppFunctionality' });
    expect(native).toMatchObject({ status: 503, body: { error_code: 'PV1010', message: expect.any(String), context: expect.any(Object) } });
    expect(Number(native.retryAfter)).toBeGreaterThan(0);

    const job = await request(`${base}/v1/jobs/00000000-0000-4000-8000-000000000000`, 'GET');
    expect(job).toMatchObject({ status: 503, body: { error_code: 'PV1010' } });
    expect(Number(job.retryAfter)).toBeGreaterThan(0);

    const piiano = await request(`${base}/api/pvlt/1.0/data/collections/c/tokens?token_ids=t1&reason=AppFunctionality`, 'DELETE');
    expect(piiano).toMatchObject({ status: 503, body: { error_code: 'PV1010', message: expect.any(String), context: expect.any(Object) } });
    expect(Number(piiano.retryAfter)).toBeGreaterThan(0);

    const keystone = await request(`${base}/v3/auth/tokens`, 'DELETE', { 'x-subject-token': 'some-subject-token-secret' });
    expect(keystone).toMatchObject({ status: 503, body: { error: { code: 503, title: 'Service Unavailable', message: expect.any(String) } } });
    expect(Number(keystone.retryAfter)).toBeGreaterThan(0);

    const onezone = await request(`${base}/api/v3/onezone/users/u1/tokens/temporary`, 'DELETE');
    expect(onezone).toMatchObject({ status: 503, body: { error: { id: expect.any(String), details: { error_code: 'PV1010' }, description: expect.any(String) } } });
    expect(Number(onezone.retryAfter)).toBeGreaterThan(0);

    const ready = await request(`${base}/readyz`, 'GET');
    expect(ready.status).toBe(503);
    expect(ready.body.status).toBe('unavailable');
    expect(ready.body.checks.postgres).toMatch(/^error/);
  };

  it('refusing connections: every route family answers 503 with Retry-After in its own envelope, before a 5 s client timeout', { timeout: 30_000 }, async () => {
    const running = await producerOn('postgres://postgres@127.0.0.1:1/unreachable');
    await expectUnavailableEverywhere(running.url);
  });

  it('accepting connections and never answering: the same 503s, before a 5 s client timeout', { timeout: 60_000 }, async () => {
    silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    const port = await freePort();
    await new Promise<void>((resolve) => silent!.listen(port, '127.0.0.1', resolve));
    const running = await producerOn(`postgres://postgres@127.0.0.1:${port}/hanging`);
    await expectUnavailableEverywhere(running.url);
  });

  it('start-up that must make the bootstrap admin fails fast, exiting non-zero, instead of hanging', { timeout: 40_000 }, async () => {
    const result = await runScript('bin/producer.ts', [], {
      env: {
        DATABASE_URL: 'postgres://postgres@127.0.0.1:1/unreachable',
        REDIS_URL: redis.url,
        PORT: '0',
        LOG_LEVEL: 'info',
        QUEUE_PREFIX: `pg-down-cli-${process.pid}`,
        BOOTSTRAP_ADMIN_TOKEN: ADMIN_TOKEN,
      },
      timeoutMs: 30_000,
    });
    expect(result.timedOut, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(false);
    expect(result.code).not.toBe(0);
    expect(result.stdout).not.toContain('producer ready');
    expect(`${result.stdout}${result.stderr}`).toMatch(/ECONNREFUSED/);
  });
});
