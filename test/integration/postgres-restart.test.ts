import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Config, loadConfig } from '../../contracts/index.js';
import { createDb } from '../../db/create-db.js';
import type { Db } from '../../db/database.js';
import { migrateToLatest } from '../../db/migrate.js';
import { Reconciler } from '../../worker/reconciler.js';
import { commandQueue, duplicates, expectDeletedOnce, streamEvents, tally, waitForTerminal } from '../helpers/faults.js';
import { killChildren, producerEnv, type ServiceProcess, spawnProducer, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { type OwnPostgres, postgresBinaries, startOwnPostgres, stopOwnPostgresServers } from '../helpers/postgres-server.js';
import { freePort, type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { ADMIN_TOKEN } from '../helpers/stack.js';

/**
 * SPEC §4.1, §4.2 and §7 against a Postgres that goes away under load and comes back: two
 * producer and two worker processes on a Postgres of the test's own, which is stopped
 * (`pg_ctl stop -m fast`: every session ended) for a few seconds while single-token deletes
 * arrive over HTTP, half on `POST /v1/commands` and half on Piiano's synchronous DELETE. While
 * it is down, producers answer 503 with Retry-After (never 500, never past the client's timeout)
 * and /readyz says so; once it is back, the same processes serve again, and every command that
 * was recorded (accepted or not) ends exactly once, its effect, audit row and events once.
 * Redis is one of the test's own.
 */

const SYNC_WAIT_SECONDS = 10;
/** The test client's timeout: every answer must come before it (a synchronous call waits up to SYNC_WAIT_SECONDS). */
const CLIENT_TIMEOUT_MS = SYNC_WAIT_SECONDS * 1000 + 10_000;
const TOKENS = 3_000;
const CLIENTS_PER_PRODUCER = 6;
const COLLECTION = 'restart';
/**
 * How long Postgres stays down at least: past the 7.5 s of BullMQ's retries (COMMAND_JOB_OPTIONS),
 * so that jobs that failed first at the stop use up their attempts and the reconciler runs them.
 */
const DOWN_MS = 9_000;

type Kind = 'native' | 'seed';

interface Answer {
  kind: Kind;
  token: string;
  producer: number;
  sentAt: number;
  answeredAt: number;
  /** 0: no answer (the client timed out, or the connection failed). */
  status: number;
  body: any;
  retryAfter: string | null;
  location: string | null;
  failure?: string;
}

/** Sum of a counter's samples in a Prometheus text exposition. */
function counterTotal(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  return total;
}

/** How often each value occurs, as JSON (for the log). */
const counts = (values: readonly string[]) => JSON.stringify(Object.fromEntries(tally(values)));

const bin = postgresBinaries();

describe.skipIf(bin === undefined)('Postgres stopped under load and started again, with two producer and two worker processes', () => {
  let postgres: OwnPostgres;
  let redis: OwnRedis;
  let config: Config;
  let db: Db;

  beforeAll(async () => {
    postgres = await startOwnPostgres(bin!);
    redis = await startOwnRedis();
    const url = postgres.url('revocation');
    await migrateToLatest(url);
    config = loadConfig({
      DATABASE_URL: url,
      REDIS_URL: redis.url,
      PORT: '0',
      LOG_LEVEL: 'warn',
      QUEUE_PREFIX: 'pg-restart',
      EVENTS_STREAM: 'pg-restart:events',
      WORKER_CONCURRENCY: '4',
      BOOTSTRAP_ADMIN_TOKEN: ADMIN_TOKEN,
      RATE_LIMIT_MAX: '0',
    });
    db = createDb(url, { max: 2, applicationName: 'restart-test' });
  });

  afterAll(async () => {
    await killChildren();
    await db?.destroy();
    await stopOwnRedisServers();
    await stopOwnPostgresServers();
  });

  it('503 with Retry-After while it is down, not ready, then the same processes serve again and every recorded command ends once', { timeout: 150_000 }, async () => {
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const producers: ServiceProcess[] = [];
    for (let i = 0; i < 2; i++) producers.push(await spawnProducer(producerEnv(config, await freePort(), 'warn', { SYNC_WAIT_SECONDS: String(SYNC_WAIT_SECONDS) })));
    const metricsPorts = [await freePort(), await freePort()];
    const workers: WorkerProcess[] = await Promise.all(metricsPorts.map((port) => spawnWorker(config, { logLevel: 'warn', env: { METRICS_PORT: String(port) } })));
    const pids = [...producers, ...workers].map((p) => p.pid);
    const finishedBy = async (port: number) => counterTotal(await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5_000) })).text(), 'revocation_commands_total');

    const base = producers[0]!.url;
    const post = async (path: string, body: unknown) => {
      const r = await fetch(`${base}${path}`, { method: 'POST', headers: { ...admin, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (r.status >= 300) throw new Error(`${path}: ${r.status} ${await r.text()}`);
      return (await r.json()) as any;
    };
    await post('/v1/collections', { name: COLLECTION });
    const tokens: string[] = [];
    for (let from = 0; from < TOKENS; from += 1_000) {
      const items = Array.from({ length: 1_000 }, (_, k) => ({ object: { id: `o${from + k}` } }));
      tokens.push(...((await post(`/api/pvlt/1.0/data/collections/${COLLECTION}/tokens?reason=AppFunctionality`, items)) as { token_id: string }[]).map((t) => t.token_id));
    }

    // the load: each request names a token of its own; a 503 is retried later with another token
    // (the refused command may have been recorded all the same: its token is not reused)
    const answers: Answer[] = [];
    let next = 0;
    let stopped = false;
    const send = async (producer: number, kind: Kind, token: string): Promise<Answer> => {
      const sentAt = Date.now();
      const url = producers[producer]!.url;
      const request =
        kind === 'native'
          ? fetch(`${url}/v1/commands`, {
              method: 'POST',
              headers: { ...admin, 'content-type': 'application/json' },
              body: JSON.stringify({ type: 'tokens.delete', collection: COLLECTION, token_ids: [token], reason: 'AppFunctionality' }),
              signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS),
            })
          : fetch(`${url}/api/pvlt/1.0/data/collections/${COLLECTION}/tokens?token_ids=${token}&reason=AppFunctionality`, {
              method: 'DELETE',
              headers: admin,
              signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS),
            });
      try {
        const response = await request;
        const text = await response.text();
        let body: any = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON
        }
        return { kind, token, producer, sentAt, answeredAt: Date.now(), status: response.status, body, retryAfter: response.headers.get('retry-after'), location: response.headers.get('location') };
      } catch (error) {
        return { kind, token, producer, sentAt, answeredAt: Date.now(), status: 0, body: undefined, retryAfter: null, location: null, failure: String(error) };
      }
    };
    const clients = Array.from({ length: 2 * CLIENTS_PER_PRODUCER }, async (_, c) => {
      const producer = c % 2;
      for (let n = 0; !stopped && next < tokens.length; n++) {
        const answer = await send(producer, (c + n) % 2 === 0 ? 'native' : 'seed', tokens[next++]!);
        answers.push(answer);
        if (answer.status !== 200 && answer.status !== 202) await sleep(200);
      }
    });
    const accepted = () => answers.filter((a) => a.status === 200 || a.status === 202);

    // under way: some commands accepted on each route; then Postgres goes away
    await expect.poll(() => accepted().length, { timeout: 60_000, interval: 50 }).toBeGreaterThanOrEqual(150);
    const acceptedBefore = accepted().length;
    const unfinishedAtStop = (await db.selectFrom('commands').select('id').where('state', 'in', ['queued', 'running']).execute()).length;
    const downAt = Date.now();
    await postgres.stop();
    const stoppedAt = Date.now();

    // while it is down: /readyz is 503 on both producers, and requests are refused with 503
    const readyWhileDown: number[] = [];
    while (Date.now() - stoppedAt < DOWN_MS || answers.filter((a) => a.sentAt > stoppedAt && a.status === 503).length < 20) {
      for (const p of producers) readyWhileDown.push((await fetch(`${p.url}/readyz`, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) })).status);
      await sleep(250);
      if (Date.now() - stoppedAt > 30_000) break;
    }
    await postgres.start();
    const upAt = Date.now();
    console.info(`Postgres down ${upAt - downAt} ms (stop took ${stoppedAt - downAt} ms), ${acceptedBefore} commands accepted before, ${unfinishedAtStop} of them unfinished just before the stop`);
    expect(readyWhileDown.length).toBeGreaterThan(0);
    expect(readyWhileDown.filter((s) => s !== 503)).toEqual([]);

    // back: both producers ready again, and both serve requests
    for (const p of producers) await expect.poll(async () => (await fetch(`${p.url}/readyz`, { signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS) })).status, { timeout: 30_000, interval: 100 }).toBe(200);
    const readyAt = Date.now();
    const finishedAtReady = await Promise.all(metricsPorts.map(finishedBy));
    await expect
      .poll(() => [0, 1].map((p) => accepted().filter((a) => a.producer === p && a.sentAt > readyAt).length), { timeout: 60_000, interval: 100 })
      .toSatisfy((counts: number[]) => counts.every((n) => n >= 75));
    stopped = true;
    await Promise.all(clients);
    console.info(`ready again ${readyAt - upAt} ms after the start; ${answers.length} requests, ${accepted().length} accepted`);

    // no process logged an unhandled error (each would be a 500); the error, if one did
    const unhandled = (p: WorkerProcess) =>
      p
        .stdout()
        .split('\n')
        .filter((line) => line.includes('"unhandled error"'))
        .map((line) => JSON.stringify((JSON.parse(line) as { err?: unknown }).err));
    expect([...producers, ...workers].flatMap(unhandled)).toEqual([]);

    // every request answered, before the client's timeout: 2xx, or 503 with Retry-After
    expect(answers.filter((a) => a.status === 0).map((a) => `${a.kind} ${a.failure}`)).toEqual([]);
    const odd = answers.filter((a) => {
      if (a.kind === 'native' && a.status === 202) return a.body?.job_id === undefined;
      if (a.kind === 'seed' && a.status === 200) return JSON.stringify(a.body) !== '{}' || a.location === null;
      if (a.status !== 503) return true;
      return !['PV1010', 'PV1009'].includes(a.body?.error_code) || !(Number(a.retryAfter) > 0);
    });
    expect(odd.map((a) => `${a.kind} ${a.status} ${JSON.stringify(a.body)} retry-after ${a.retryAfter}`)).toEqual([]);
    const refusedWhileDown = answers.filter((a) => a.sentAt >= stoppedAt && a.answeredAt <= upAt && a.status === 503 && a.body?.error_code === 'PV1010');
    expect(refusedWhileDown.filter((a) => a.kind === 'native').length).toBeGreaterThan(0);
    expect(refusedWhileDown.filter((a) => a.kind === 'seed').length).toBeGreaterThan(0);
    console.info(`answers ${counts(answers.map((a) => `${a.kind} ${a.status} ${a.body?.error_code ?? ''}`))}; slowest ${Math.max(...answers.map((a) => a.answeredAt - a.sentAt))} ms`);

    // the same processes, still running
    expect([...producers, ...workers].map((p) => p.pid)).toEqual(pids);
    expect([...producers, ...workers].filter((p) => !p.running()).map((p) => `${p.pid}\n${p.stdout()}\n${p.stderr()}`)).toEqual([]);

    // every command recorded (a refused one too, when its commit got through) ends, exactly once
    const recorded = await db.selectFrom('commands').select(['id', 'payload']).execute();
    const ids = recorded.map((r) => r.id);
    const acceptedIds = accepted().map((a) => (a.kind === 'native' ? (a.body.job_id as string) : a.location!.replace('/v1/jobs/', '')));
    expect(duplicates(acceptedIds)).toEqual([]);
    expect(acceptedIds.filter((id) => !ids.includes(id))).toEqual([]);
    const took = await waitForTerminal(db, ids, 60_000);
    console.info(`${ids.length} commands recorded (${ids.length - acceptedIds.length} of them answered 503); all ended ${took} ms after the load`);
    const tokenOf = new Map(recorded.map((r) => [r.id, (r.payload as { token_ids: string[] }).token_ids[0]!]));
    for (const a of accepted()) expect(tokenOf.get(a.kind === 'native' ? a.body.job_id : a.location!.replace('/v1/jobs/', ''))).toBe(a.token);
    const named = new Set(tokenOf.values());
    await expectDeletedOnce(
      db,
      COLLECTION,
      ids.map((id) => ({ id, token: tokenOf.get(id)! })),
      tokens.filter((t) => !named.has(t)),
    );

    // the stream: once every outbox row is published, one command.succeeded and one tokens.deleted
    // per command (a row published twice carries the same event_id)
    await expect.poll(async () => (await db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute()).length, { timeout: 30_000, interval: 200 }).toBe(0);
    const events = await streamEvents(redis.url, config.EVENTS_STREAM);
    const distinct = new Map(events.map((e) => [e.event_id, e]));
    const perCommand = (type: string) => {
      const counts = new Map<string, number>();
      for (const e of distinct.values()) if (e.type === type) counts.set(e.job_id, (counts.get(e.job_id) ?? 0) + 1);
      return ids.filter((id) => counts.get(id) !== 1);
    };
    expect(perCommand('command.succeeded')).toEqual([]);
    expect(perCommand('tokens.deleted')).toEqual([]);
    console.info(`${events.length} stream entries, ${events.length - distinct.size} of them published twice`);

    // both workers ran commands after the restart
    const finishedAtEnd = await Promise.all(metricsPorts.map(finishedBy));
    expect(finishedAtEnd.map((n, i) => n > finishedAtReady[i]!)).toEqual([true, true]);
    const requeued = await Promise.all(metricsPorts.map(async (port) => counterTotal(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'revocation_reconciler_requeued_total')));
    for (const p of [...producers, ...workers]) console.info(`${p.pid} logged ${counts(p.messages())}`);
    console.info(`the reconcilers enqueued ${requeued.reduce((a, b) => a + b, 0)} commands again`);
  });
});

describe.skipIf(bin === undefined)('the reconciler when Postgres comes back', () => {
  let postgres: OwnPostgres;
  let redis: OwnRedis;
  let db: Db;
  let queue: ReturnType<typeof commandQueue>;

  beforeAll(async () => {
    postgres = await startOwnPostgres(bin!);
    redis = await startOwnRedis();
    const url = postgres.url('reconciler');
    await migrateToLatest(url);
    db = createDb(url, { max: 2, applicationName: 'restart-test', connectionTimeoutMillis: 1000 });
    queue = commandQueue(redis.url, 'pg-restart-reconciler');
  });

  afterAll(async () => {
    await queue?.close();
    await db?.destroy();
    await stopOwnRedisServers();
    await stopOwnPostgresServers();
  });

  it('a round that failed while it was down is tried again soon, not a whole interval later: a command whose job is gone runs again', { timeout: 60_000 }, async () => {
    // an unfinished command with no job (its attempts ran out during the outage, say)
    const id = randomUUID();
    const command = { type: 'tokens.delete', collection: 'c', token_ids: ['t1'], archived: false } as const;
    await db
      .insertInto('commands')
      .values({
        id,
        type: command.type,
        payload: JSON.stringify(command),
        payload_hash: 'h',
        submitter_id: 'admin',
        idempotency_key: null,
        audit: JSON.stringify({ reason: 'AppFunctionality' }),
        progress: null,
        checkpoint: null,
        result: null,
        error: null,
        started_at: null,
        finished_at: null,
      })
      .execute();
    await postgres.stop();

    const failed: unknown[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => failed.push(JSON.parse(line)) });
    // an interval far longer than the test: only a retry of the failed round can enqueue the command
    const reconciler = new Reconciler(db, queue.queue, logger, { intervalMs: 10 * 60_000, graceMs: 0 });
    reconciler.start();
    try {
      await expect.poll(() => failed.length, { timeout: 20_000, interval: 50 }).toBeGreaterThan(0);
      expect(failed[0]).toMatchObject({ msg: 'reconciler round failed; will try again' });
      await postgres.start();
      await expect.poll(async () => (await queue.queue.getJob(id))?.data, { timeout: 30_000, interval: 100 }).toEqual({ command_id: id });
      expect(reconciler.requeued).toBe(1);
    } finally {
      await reconciler.stop();
    }
  });
});
