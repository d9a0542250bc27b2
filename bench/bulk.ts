/**
 * bench/bulk: breach-scale revocation against its raw-SQL baseline, in one run on one database.
 *   (a) one raw DELETE … WHERE collection = … AND tags @> … removing M of N tokens;
 *   (b) the same M through the service end to end: HTTP request → job succeeded and its
 *       command.succeeded event on the stream (batched deletes, audit, outbox, relay);
 *   (c) revoke-all for a subject holding T temporary tokens against one holding 10;
 *   (d) a lockout (subject.lockout) of a subject holding L access tokens, half named, half
 *       temporary, end to end (request → command.succeeded on the stream), against one raw
 *       DELETE FROM access_tokens WHERE subject_id = … of another subject's L tokens.
 * The data is seeded once into a template database; each repeat runs on a fresh copy of it
 * (CREATE DATABASE … TEMPLATE), so every repeat starts from the same state, and the ratios
 * reported are the medians over the repeats. `--lockout-only` seeds and runs (d) alone.
 * Usage: npm run bench:bulk [-- --tokens 1000000 --ratio 0.1 --temporary 1000000 --lockout-tokens 100000 --batch-size 5000 --repeats 3 --lockout-only]
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import pg from 'pg';
import { EVENT_FIELD } from '../contracts/index.js';
import { createDb } from '../db/create-db.js';
import type { Db } from '../db/database.js';
import { migrateToLatest } from '../db/migrate.js';
import { insertCollection } from '../db/repositories/collection.repository.js';
import { seedNamedAccessTokens, seedTemporaryAccessTokens, seedVaultTokens } from '../db/repositories/seed.repository.js';
import { upsertSubject } from '../db/repositories/subject.repository.js';
import { type RunningProducer, startProducer } from '../producer/server.js';
import { startWorker } from '../worker/start-worker.js';
import { benchConfig, fmt, median, ms, silent } from './support.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '1000000' },
    ratio: { type: 'string', default: '0.1' },
    temporary: { type: 'string', default: '1000000' },
    'lockout-tokens': { type: 'string', default: '100000' },
    'lockout-only': { type: 'boolean', default: false },
    'batch-size': { type: 'string' },
    repeats: { type: 'string', default: '3' },
  },
});
const lockoutOnly = values['lockout-only'];
const N = lockoutOnly ? 0 : Number(values.tokens);
const ratio = Number(values.ratio);
const T = lockoutOnly ? 0 : Number(values.temporary);
const L = Number(values['lockout-tokens']);
const repeats = Number(values.repeats);
const { config, databaseName } = benchConfig(values['batch-size'] ? { DELETE_BATCH_SIZE: values['batch-size'] } : {});
const log = (line: string) => process.stdout.write(`${line}\n`);

const templateName = `${databaseName}_template`;
const serverUrl = new URL(config.DATABASE_URL);
serverUrl.pathname = '/postgres';
const server = new pg.Client({ connectionString: serverUrl.toString() });
await server.connect();
const urlOf = (name: string) => Object.assign(new URL(config.DATABASE_URL), { pathname: `/${name}` }).toString();
const drop = (name: string) => server.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
/** A fresh copy of the seeded template, under the name the service is configured with. */
const cloneTemplate = async () => {
  await drop(databaseName);
  await server.query(`create database ${pg.escapeIdentifier(databaseName)} template ${pg.escapeIdentifier(templateName)} strategy file_copy`);
};
const redis = new Redis(config.REDIS_URL);

/** Resolves once the job's command.succeeded event is on the stream (read from after `cursor`). */
async function commandSucceeded(jobId: string, cursor: string): Promise<void> {
  for (;;) {
    const reply = await redis.xread('COUNT', 1000, 'BLOCK', 30_000, 'STREAMS', config.EVENTS_STREAM, cursor);
    if (!reply) throw new Error('no event on the stream for 30 s');
    for (const [id, fields] of reply[0]![1]) {
      cursor = id;
      const event = JSON.parse(fields[fields.indexOf(EVENT_FIELD) + 1]!) as { type: string; job_id: string };
      if (event.job_id === jobId && event.type === 'command.succeeded') return;
    }
  }
}

/**
 * (d) on this copy: one raw DELETE of bench-lockout-raw's L tokens, after a checkpoint; a VACUUM
 * (the lockout must not pay for cleaning up after it); then, after a warm-up lockout of a subject
 * holding none and a checkpoint, the lockout of bench-lockout-svc through the service: request →
 * its command.succeeded event on the stream. Returns service ÷ raw.
 */
async function lockoutRow(r: number, db: Db, service: RunningProducer): Promise<number> {
  await sql`select count(*) from access_tokens`.execute(db); // same cache state for both
  await sql`checkpoint`.execute(db);
  let t = process.hrtime.bigint();
  const raw = await sql`delete from access_tokens where subject_id = 'bench-lockout-raw'`.execute(db);
  const rawMs = ms(t);
  await sql`vacuum access_tokens`.execute(db);

  const headers = { authorization: `Bearer ${config.BOOTSTRAP_ADMIN_TOKEN}`, 'content-type': 'application/json' };
  const lockout = (id: string, prefer?: string) =>
    fetch(`${service.url}/v1/commands`, { method: 'POST', headers: { ...headers, ...(prefer && { prefer }) }, body: JSON.stringify({ type: 'subject.lockout', subject: { kind: 'user', id } }) });
  const warm = await lockout('bench-lockout-warm', 'wait=10');
  if (warm.status !== 200) throw new Error(`the warm-up lockout answered ${warm.status}: ${await warm.text()}`);
  await sql`checkpoint`.execute(db);
  const lastId = (await redis.xrevrange(config.EVENTS_STREAM, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0';
  t = process.hrtime.bigint();
  const response = await lockout('bench-lockout-svc');
  const acceptedMs = ms(t);
  if (response.status !== 202) throw new Error(`the lockout answered ${response.status}: ${await response.text()}`);
  const jobId = ((await response.json()) as { job_id: string }).job_id;
  await commandSucceeded(jobId, lastId);
  const svcMs = ms(t);
  const job = (await (await fetch(`${service.url}/v1/jobs/${jobId}`, { headers })).json()) as { state: string; started_at: string; finished_at: string; result: { revoked?: number } | null };
  const left = await sql<{ n: string }>`select count(*) as n from access_tokens where subject_id = 'bench-lockout-svc'`.execute(db);
  if (job.state !== 'succeeded' || job.result?.revoked !== L || left.rows[0]?.n !== '0') throw new Error(`the lockout did not finish: ${JSON.stringify(job)}, ${left.rows[0]?.n} left`);
  const runMs = Date.parse(job.finished_at) - Date.parse(job.started_at);
  log(
    `#${r} (d) raw DELETE of ${raw.numAffectedRows} access tokens: ${fmt(rawMs)} ms | lockout: 202 after ${fmt(acceptedMs)} ms, job ran ${runMs} ms, last event after ${fmt(svcMs)} ms | (d) ratio ${fmt(svcMs / rawMs, 2)}`,
  );
  return svcMs / rawMs;
}

let producer: Awaited<ReturnType<typeof startProducer>> | undefined;
let worker: Awaited<ReturnType<typeof startWorker>> | undefined;
let db: Db | undefined;
/** Stops the service and closes the repeat's pool (each repeat starts them on a fresh copy). */
async function closeService(): Promise<void> {
  await producer?.close();
  await worker?.close();
  await db?.destroy();
  producer = undefined;
  worker = undefined;
  db = undefined;
}
try {
  log(
    `bench:bulk  ${lockoutOnly ? 'lockout only' : `tokens=${N} per collection, tagged=${ratio}, temporary=${T}`}, lockout-tokens=${L}, DELETE_BATCH_SIZE=${config.DELETE_BATCH_SIZE}, repeats=${repeats}`,
  );
  let t = process.hrtime.bigint();
  await migrateToLatest(urlOf(templateName));
  const template = createDb(urlOf(templateName), { max: 2 });
  let matches = 0;
  for (const collection of lockoutOnly ? [] : ['bench_raw', 'bench_svc']) {
    await insertCollection(template, collection);
    matches = await seedVaultTokens(template, { collection, count: N, tag: 'breach', tagRatio: ratio, tenantId: null, objectPrefix: `${collection}-` });
  }
  for (const [id, count] of T > 0
    ? ([
        ['bench-many', T],
        ['bench-few', 10],
      ] as const)
    : []) {
    await upsertSubject(template, { id, kind: 'user', domain_id: 'default', capabilities: [], tenant_ids: null, collections: null });
    await seedTemporaryAccessTokens(template, id, count, 7 * 24 * 3600);
  }
  // (d): the raw DELETE's subject and the lockout's, each holding L tokens (half named, half temporary), and one holding none (the warm-up)
  for (const [id, count] of L > 0
    ? ([
        ['bench-lockout-raw', L],
        ['bench-lockout-svc', L],
        ['bench-lockout-warm', 0],
      ] as const)
    : []) {
    await upsertSubject(template, { id, kind: 'user', domain_id: 'default', capabilities: [], tenant_ids: null, collections: null });
    await seedNamedAccessTokens(template, id, Math.ceil(count / 2));
    await seedTemporaryAccessTokens(template, id, Math.floor(count / 2), 7 * 24 * 3600);
  }
  await sql`vacuum analyze`.execute(template);
  await template.destroy();
  log(
    `seeded ${lockoutOnly ? '' : `2 × ${N} vault tokens (${matches} tagged each)${T > 0 ? ` and ${T} + 10 temporary access tokens` : ''}, `}${L > 0 ? `2 × ${L} access tokens for (d)` : ''} in ${fmt(ms(t) / 1000)} s`,
  );

  const ratios: number[] = [];
  const lockoutRatios: number[] = [];
  for (let r = 1; r <= repeats; r++) {
    await cloneTemplate();
    db = createDb(config.DATABASE_URL, { max: 2 });
    if (lockoutOnly) {
      worker = await startWorker(config, silent);
      producer = await startProducer(config, silent);
      lockoutRatios.push(await lockoutRow(r, db, producer));
      await closeService();
      continue;
    }
    await sql`select count(*) from vault_tokens`.execute(db); // same cache state for both

    // (a) baseline: one raw statement, after a checkpoint (so it pays its full-page writes)
    await sql`checkpoint`.execute(db);
    t = process.hrtime.bigint();
    const raw = await sql`delete from vault_tokens where collection = 'bench_raw' and tags @> array['breach']`.execute(db);
    const rawMs = ms(t);
    // (b) must not pay for cleaning up after (a): its 100k dead rows share the table and the
    // tags index with (b)'s collection. Then a checkpoint, as before (a).
    await sql`vacuum vault_tokens`.execute(db);

    // (b) the service, end to end, warmed up by one request that matches nothing
    worker = await startWorker(config, silent);
    producer = await startProducer(config, silent);
    const headers = { authorization: `Bearer ${config.BOOTSTRAP_ADMIN_TOKEN}` };
    const warm = await fetch(`${producer.url}/api/pvlt/1.0/data/collections/bench_svc/tokens?tags=nothing&reason=FraudPreventionSecurityAndCompliance`, {
      method: 'DELETE',
      headers: { ...headers, prefer: 'wait=10' },
    });
    if (warm.status !== 404) throw new Error(`warm-up answered ${warm.status}: ${await warm.text()}`);
    await sql`checkpoint`.execute(db);
    const lastId = (await redis.xrevrange(config.EVENTS_STREAM, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0';
    t = process.hrtime.bigint();
    const response = await fetch(`${producer.url}/api/pvlt/1.0/data/collections/bench_svc/tokens?tags=breach&reason=FraudPreventionSecurityAndCompliance`, {
      method: 'DELETE',
      headers: { ...headers, prefer: 'respond-async' },
    });
    const acceptedMs = ms(t);
    if (response.status !== 202) throw new Error(`the delete answered ${response.status}: ${await response.text()}`);
    const jobId = response.headers.get('location')!.split('/').pop()!;
    await commandSucceeded(jobId, lastId);
    const svcMs = ms(t);
    const job = (await (await fetch(`${producer.url}/v1/jobs/${jobId}`, { headers })).json()) as { state: string; started_at: string; finished_at: string; result: unknown };
    const left = await sql<{ n: string }>`select count(*) as n from vault_tokens where collection = 'bench_svc' and tags @> array['breach']`.execute(db);
    if (job.state !== 'succeeded' || left.rows[0]?.n !== '0') throw new Error(`the delete did not finish: ${JSON.stringify(job)}, ${left.rows[0]?.n} left`);
    const runMs = Date.parse(job.finished_at) - Date.parse(job.started_at);
    ratios.push(svcMs / rawMs);
    log(
      `#${r} (a) raw DELETE of ${raw.numAffectedRows}: ${fmt(rawMs)} ms | (b) service: 202 after ${fmt(acceptedMs)} ms, job ran ${runMs} ms, last event after ${fmt(svcMs)} ms | (b)/(a) = ${fmt(svcMs / rawMs, 2)}`,
    );

    // (c) revoke-all: T temporary tokens vs 10, on the first copy
    if (T > 0 && r === 1) {
      const revokeAll = async (user: string) => {
        const start = process.hrtime.bigint();
        const reply = await fetch(`${producer!.url}/api/v3/onezone/users/${user}/tokens/temporary`, { method: 'DELETE', headers: { ...headers, prefer: 'wait=30' } });
        if (reply.status !== 204) throw new Error(`revoke-all answered ${reply.status}: ${await reply.text()}`);
        return ms(start);
      };
      await revokeAll('bench-few'); // warm-up
      const many: number[] = [];
      const few: number[] = [];
      for (let i = 0; i < 5; i++) {
        many.push(await revokeAll('bench-many'));
        few.push(await revokeAll('bench-few'));
      }
      log(
        `(c) revoke-all, request → 204 succeeded (median of 5): ${T} tokens ${fmt(median(many))} ms, 10 tokens ${fmt(median(few))} ms; ratio ${fmt(median(many) / median(few), 2)}   (target ≤ 1.2; ${T} case < 50 ms)`,
      );
    }
    if (L > 0) lockoutRatios.push(await lockoutRow(r, db, producer));
    await closeService();
  }
  if (!lockoutOnly) log(`(b)/(a) median of ${repeats}: ${fmt(median(ratios), 2)}   (target ≤ 2.0)   [${ratios.map((x) => fmt(x, 2)).join(', ')}]`);
  if (L > 0) log(`(d) lockout ÷ raw DELETE, median of ${repeats}: ${fmt(median(lockoutRatios), 2)}   (target ≤ 2.0)   [${lockoutRatios.map((x) => fmt(x, 2)).join(', ')}]`);
  if (!lockoutOnly) {
    // the plan of one delete batch: an index walk from the checkpoint, never a scan of the table
    await cloneTemplate();
    db = createDb(config.DATABASE_URL, { max: 2 });
    const plan = await sql<{ 'QUERY PLAN': string }>`
      explain select id from vault_tokens
      where collection = 'bench_svc' and tags @> array['breach'] and archived_at is null
        and (expires_at is null or expires_at > now()) and id > 0 order by id limit ${config.DELETE_BATCH_SIZE}`.execute(db);
    log(`plan of one delete batch:\n${plan.rows.map((r) => `    ${r['QUERY PLAN']}`).join('\n')}`);
  }
} finally {
  await closeService();
  const keys = await redis.keys(`${config.QUEUE_PREFIX}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.del(config.EVENTS_STREAM);
  redis.disconnect();
  await drop(databaseName);
  await drop(templateName);
  await server.end();
}
