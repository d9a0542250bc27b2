/**
 * bench/bulk: breach-scale revocation against its raw-SQL baseline, in one run on one database.
 *   (a) one raw DELETE … WHERE collection = … AND tags @> … removing M of N tokens;
 *   (b) the same M through the service end to end: HTTP request → job succeeded and its
 *       command.succeeded event on the stream (batched deletes, audit, outbox, relay);
 *   (c) revoke-all for a subject holding T temporary tokens against one holding 10.
 * Usage: npm run bench:bulk [-- --tokens 1000000 --ratio 0.1 --temporary 1000000 --batch-size 5000]
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { EVENT_FIELD } from '../contracts/index.js';
import { createDb } from '../db/create-db.js';
import { migrateToLatest } from '../db/migrate.js';
import { insertCollection } from '../db/repositories/collection.repository.js';
import { seedTemporaryAccessTokens, seedVaultTokens } from '../db/repositories/seed.repository.js';
import { upsertSubject } from '../db/repositories/subject.repository.js';
import { startProducer } from '../producer/server.js';
import { startWorker } from '../worker/runtime.js';
import { benchConfig, dropDatabase, fmt, median, ms, silent } from './support.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '1000000' },
    ratio: { type: 'string', default: '0.1' },
    temporary: { type: 'string', default: '1000000' },
    'batch-size': { type: 'string' },
    repeats: { type: 'string', default: '5' },
  },
});
const N = Number(values.tokens);
const ratio = Number(values.ratio);
const T = Number(values.temporary);
const repeats = Number(values.repeats);
const { config } = benchConfig(values['batch-size'] ? { DELETE_BATCH_SIZE: values['batch-size'] } : {});
const log = (line: string) => process.stdout.write(`${line}\n`);

await migrateToLatest(config.DATABASE_URL);
const db = createDb(config.DATABASE_URL, { max: 2 });
const redis = new Redis(config.REDIS_URL);
let producer: Awaited<ReturnType<typeof startProducer>> | undefined;
let worker: Awaited<ReturnType<typeof startWorker>> | undefined;
try {
  log(`bench:bulk  tokens=${N} per collection, tagged=${ratio}, temporary=${T}, DELETE_BATCH_SIZE=${config.DELETE_BATCH_SIZE}`);
  let t = process.hrtime.bigint();
  let matches = 0;
  for (const collection of ['bench_raw', 'bench_svc']) {
    await insertCollection(db, collection);
    matches = await seedVaultTokens(db, { collection, count: N, tag: 'breach', tagRatio: ratio, tenantId: null, objectPrefix: `${collection}-` });
  }
  await sql`vacuum analyze vault_tokens`.execute(db);
  log(`seeded 2 × ${N} vault tokens (${matches} tagged each) in ${fmt(ms(t) / 1000)} s`);

  // (a) baseline: one raw statement
  t = process.hrtime.bigint();
  const raw = await sql`delete from vault_tokens where collection = 'bench_raw' and tags @> array['breach']`.execute(db);
  const rawMs = ms(t);
  log(`(a) raw DELETE of ${raw.numAffectedRows} tokens: ${fmt(rawMs)} ms`);

  // (b) the service, end to end
  worker = await startWorker(config, silent);
  producer = await startProducer(config, silent);
  const headers = { authorization: `Bearer ${config.BOOTSTRAP_ADMIN_TOKEN}`, prefer: 'wait=30' };
  const lastId = (await redis.xrevrange(config.EVENTS_STREAM, '+', '-', 'COUNT', 1))[0]?.[0] ?? '0';
  t = process.hrtime.bigint();
  const response = await fetch(`${producer.url}/api/pvlt/1.0/data/collections/bench_svc/tokens?tags=breach&reason=FraudPreventionSecurityAndCompliance`, { method: 'DELETE', headers });
  let job = (await response.json()) as { job_id?: string; state?: string };
  const jobId = response.headers.get('location')!.split('/').pop()!;
  while (response.status === 202 && job.state !== 'succeeded' && job.state !== 'failed') {
    await new Promise((resolve) => setTimeout(resolve, 20));
    job = (await (await fetch(`${producer.url}/v1/jobs/${jobId}`, { headers })).json()) as typeof job;
  }
  const jobMs = ms(t);
  let cursor = lastId;
  let found = false;
  while (!found) {
    const reply = await redis.xread('COUNT', 1000, 'BLOCK', 5000, 'STREAMS', config.EVENTS_STREAM, cursor);
    for (const [id, fields] of reply?.[0]?.[1] ?? []) {
      cursor = id;
      const event = JSON.parse(fields[fields.indexOf(EVENT_FIELD) + 1]!) as { type: string; job_id: string };
      if (event.job_id === jobId && event.type === 'command.succeeded') found = true;
    }
  }
  const svcMs = ms(t);
  const left = await sql<{ n: string }>`select count(*) as n from vault_tokens where collection = 'bench_svc' and tags @> array['breach']`.execute(db);
  log(`(b) service delete of ${matches} tokens: ${response.status} … succeeded after ${fmt(jobMs)} ms; last event on the stream after ${fmt(svcMs)} ms (left: ${left.rows[0]?.n})`);
  log(`    ratio (b)/(a) = ${fmt(svcMs / rawMs, 2)}   (target ≤ 2.0)`);

  // (c) revoke-all: T temporary tokens vs 10
  if (T > 0) {
  t = process.hrtime.bigint();
  for (const [id, count] of [['bench-many', T], ['bench-few', 10]] as const) {
    await upsertSubject(db, { id, kind: 'user', domain_id: 'default', capabilities: [], tenant_ids: null, collections: null });
    await seedTemporaryAccessTokens(db, id, count, 7 * 24 * 3600);
  }
  log(`seeded ${T} + 10 temporary access tokens in ${fmt(ms(t) / 1000)} s`);
  const revokeAll = async (user: string) => {
    const start = process.hrtime.bigint();
    const r = await fetch(`${producer!.url}/api/v3/onezone/users/${user}/tokens/temporary`, { method: 'DELETE', headers });
    if (r.status !== 204) throw new Error(`revoke-all answered ${r.status}: ${await r.text()}`);
    return ms(start);
  };
  await revokeAll('bench-few'); // warm-up
  const many: number[] = [];
  const few: number[] = [];
  for (let i = 0; i < repeats; i++) {
    many.push(await revokeAll('bench-many'));
    few.push(await revokeAll('bench-few'));
  }
  log(`(c) revoke-all, request → 204 succeeded (median of ${repeats}): ${T} tokens ${fmt(median(many))} ms, 10 tokens ${fmt(median(few))} ms`);
  log(`    ratio = ${fmt(median(many) / median(few), 2)}   (target ≤ 1.2; ${T} case target < 50 ms)`);
  }

  const plan = await sql<{ 'QUERY PLAN': string }>`
    explain select id from vault_tokens
    where collection = 'bench_svc' and tags @> array['breach'] and archived_at is null
      and (expires_at is null or expires_at > now()) and id > 0 order by id limit ${config.DELETE_BATCH_SIZE}`.execute(db);
  log(`plan of one delete batch:\n${plan.rows.map((r) => `    ${r['QUERY PLAN']}`).join('\n')}`);
} finally {
  await producer?.close();
  await worker?.close();
  await db.destroy();
  const keys = await redis.keys(`${config.QUEUE_PREFIX}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.del(config.EVENTS_STREAM);
  redis.disconnect();
  await dropDatabase(config);
}
