/**
 * The baselines of bench/pipeline, run as a child process (forked with IPC) so that they sit in
 * their own process exactly like the service's producer and worker:
 *   BARE_MODE=http    a bare Fastify app: POST /bare/commands INSERTs one row and calls queue.add
 *                     (the limit of durable acceptance); GET /bare/verify runs the access-token
 *                     SELECT of GET /v1/auth/verify (access_tokens join subjects by secret_hash).
 *                     POST /bare/pipeline does the same on the bare pipeline queue, for the bare
 *                     worker to run.
 *   BARE_MODE=worker  a bare BullMQ worker whose processor runs BEGIN; DELETE one vault token;
 *                     COMMIT (the limit of execution); reports when BARE_JOBS jobs have ended.
 *                     With BARE_EVENTS_STREAM it then XADDs a command.succeeded event there: with
 *                     /bare/pipeline, the floor of request → event latency on this machine.
 * Environment: DATABASE_URL, REDIS_URL (or REDIS_CLUSTER_NODES), QUEUE_PREFIX, PORT, WORKER_CONCURRENCY, BARE_JOBS,
 * BARE_QUEUE (default the execution queue), BARE_EVENTS_STREAM.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import Fastify from 'fastify';
import pg from 'pg';
import { COMMAND_JOB_NAME, COMMAND_JOB_OPTIONS, EVENT_FIELD, loadRedisSettings, redisTopology } from '../contracts/index.js';
import { connectRedis } from '../db/redis-connection.js';
import { BARE_ACCEPT_QUEUE, BARE_EXEC_QUEUE, BARE_PIPELINE_QUEUE } from './pipeline-kit.js';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
};
const tell = (message: Record<string, unknown>) => process.send?.(message);
const closers: (() => Promise<unknown>)[] = [];
process.on('SIGTERM', () => {
  void Promise.allSettled(closers.map((close) => close())).then(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0)); // the bench went away

const prefix = env('QUEUE_PREFIX');
// the service's own connections (db/redis-connection.ts), to the same Redis
const topology = redisTopology(loadRedisSettings(process.env));

if (env('BARE_MODE') === 'http') {
  // Same pool size and Redis options as the producer (producer/server.ts); like every pool of the
  // service's (db/create-db.ts), it keeps its idle connections.
  const pool = new pg.Pool({ connectionString: env('DATABASE_URL'), max: 10, application_name: 'bench-bare-http', idleTimeoutMillis: 0 });
  const redis = connectRedis(topology, { name: 'bench-bare-http', whenDown: 'fail' });
  await new Promise((resolve) => redis.once('ready', resolve));
  const queue = new Queue(BARE_ACCEPT_QUEUE, { connection: redis, prefix });
  const app = Fastify({ logger: false });

  app.post('/bare/commands', async (request, reply) => {
    const id = randomUUID();
    await pool.query('insert into bench_accept (id, body) values ($1, $2)', [id, JSON.stringify(request.body)]);
    await queue.add(COMMAND_JOB_NAME, { command_id: id }, { ...COMMAND_JOB_OPTIONS, jobId: id });
    return reply.code(202).send({ job_id: id, state: 'queued' });
  });

  const pipelineQueue = new Queue(BARE_PIPELINE_QUEUE, { connection: redis, prefix });
  app.post('/bare/pipeline', async (request, reply) => {
    const id = randomUUID();
    const body = request.body as { collection: string; token_ids: string[] };
    await pool.query('insert into bench_accept (id, body) values ($1, $2)', [id, JSON.stringify(body)]);
    await pipelineQueue.add(COMMAND_JOB_NAME, { command_id: id, collection: body.collection, token_id: body.token_ids[0] }, { ...COMMAND_JOB_OPTIONS, jobId: id });
    return reply.code(202).send({ job_id: id, state: 'queued' });
  });

  app.get('/bare/verify', async (request, reply) => {
    const secret = request.headers['x-subject-token'];
    if (typeof secret !== 'string') return reply.code(400).send({ error: 'X-Subject-Token' });
    const hash = createHash('sha256').update(secret.trim(), 'utf8').digest();
    const { rows } = await pool.query(
      `select t.*, s.kind as s_kind, s.domain_id as s_domain_id, s.capabilities as s_capabilities, s.tenant_ids as s_tenant_ids,
              s.collections as s_collections, s.temporary_generation as s_temporary_generation,
              s.created_at as s_created_at, s.updated_at as s_updated_at
         from access_tokens t inner join subjects s on s.id = t.subject_id
        where t.secret_hash = $1`,
      [hash],
    );
    const row = rows[0] as { id: string; subject_id: string; s_kind: string; s_domain_id: string; temporary: boolean; generation: number | null; expires_at: Date | null } | undefined;
    if (!row) return reply.code(404).send({ reason: 'not_found' });
    return {
      token_id: row.id,
      subject: { id: row.subject_id, kind: row.s_kind, domain_id: row.s_domain_id },
      temporary: row.temporary,
      generation: row.generation,
      expires_at: row.expires_at?.toISOString() ?? null,
    };
  });

  const url = await app.listen({ host: '127.0.0.1', port: Number(env('PORT')) });
  closers.push(
    () => app.close(),
    () => queue.close(),
    () => pipelineQueue.close(),
    async () => redis.disconnect(),
    () => pool.end(),
  );
  tell({ type: 'ready', url });
} else {
  // Same pool sizing as the service worker (worker/start-worker.ts).
  const concurrency = Number(env('WORKER_CONCURRENCY'));
  const expected = Number(env('BARE_JOBS'));
  const pool = new pg.Pool({ connectionString: env('DATABASE_URL'), max: Math.min(50, concurrency + 4), application_name: 'bench-bare-worker', idleTimeoutMillis: 0 });
  const connection = connectRedis(topology, { name: 'bench-bare-worker', whenDown: 'wait' });
  const stream = process.env.BARE_EVENTS_STREAM;
  const events = stream ? connectRedis(topology, { name: 'bench-bare-events', whenDown: 'wait' }) : undefined;
  let completed = 0;
  let failed = 0;
  let firstError: string | undefined;
  const worker = new Worker<{ command_id: string; collection: string; token_id: string }>(
    process.env.BARE_QUEUE ?? BARE_EXEC_QUEUE,
    async (job) => {
      const client = await pool.connect();
      try {
        await client.query('begin');
        const result = await client.query('delete from vault_tokens where collection = $1 and token_id = $2 and tenant_id is null', [job.data.collection, job.data.token_id]);
        await client.query('commit');
        if (result.rowCount !== 1) throw new Error(`token ${job.data.token_id} not found`);
        if (events) await events.xadd(stream!, 'MAXLEN', '~', '100000', '*', EVENT_FIELD, JSON.stringify({ type: 'command.succeeded', job_id: job.data.command_id }));
      } catch (error) {
        await client.query('rollback').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    },
    { connection, prefix, concurrency },
  );
  const check = () => {
    if (completed + failed === expected) tell({ type: 'drained', completed, failed, firstError });
  };
  worker.on('completed', () => {
    completed++;
    check();
  });
  worker.on('failed', (_job, error) => {
    failed++;
    firstError ??= error.message;
    check();
  });
  worker.on('error', (error) => {
    firstError ??= error.message;
  });
  await worker.waitUntilReady();
  closers.push(
    () => worker.close(),
    async () => connection.disconnect(),
    async () => events?.disconnect(),
    () => pool.end(),
  );
  tell({ type: 'ready' });
}
