import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE } from '../../contracts/index.js';
import { createCollection, tokenize } from '../helpers/api.js';
import { bounded, commandQueue, countInStates, expectDeletedOnce, sleep, streamEvents, waitForTerminal } from '../helpers/faults.js';
import { killChildren, spawnWorker } from '../helpers/processes.js';
import { type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { type Stack, startStack } from '../helpers/stack.js';

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
    await createCollection(stack, collection);
    const tokens = await tokenize(stack, collection, Array.from({ length: 1_100 }, (_, i) => ({ object: { id: `o${i}` } })));
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
    // (lockDuration 30 s, then BullMQ's stalled check): expire them now and drop those jobs, so
    // the reconciler of the next worker enqueues their unfinished commands again
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
      await expect.poll(async () => (await db.selectFrom('outbox').select('id').where('command_id', 'in', ids).where('published_at', 'is', null).execute()).length, { timeout: 20_000, interval: 100 }).toBe(0);
      const streamed = new Set((await streamEvents(redis.url, stack.config.EVENTS_STREAM)).filter((e) => e.type === 'command.succeeded').map((e) => e.job_id));
      expect(ids.filter((id) => !streamed.has(id))).toEqual([]);
    } finally {
      await close();
    }
  });
});
