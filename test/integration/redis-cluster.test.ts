import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUnreachable } from '../../bin/startup.js';
import { pingRedis } from '../../db/redis-connection.js';
import { EventConsumer, type RevocationEvent } from '../../index.js';
import { call, collectionOfTokens, createCollection, tokenize } from '../helpers/api.js';
import { bounded, expectDeletedOnce, waitForTerminal } from '../helpers/faults.js';
import { runCli } from '../helpers/processes.js';
import { type OwnRedisCluster, startOwnRedisCluster } from '../helpers/redis-cluster.js';
import { freePort, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §9, past one machine: the service on a Redis Cluster of three masters of the test's own
 * (REDIS_CLUSTER_NODES). The queue prefix is a hash tag, so BullMQ's keys share one slot, and the
 * events stream lives in that slot too. Commands run end to end with their events on the stream;
 * and when the master serving the queue's slot is killed and started again (its append-only
 * file keeps its keys) in the middle of a load, every accepted command still ends exactly once.
 */

const REASON = 'AppFunctionality';

/** Submits one `tokens.delete` by token ID per token, `inFlight` at a time; every answer must be 202. */
async function submitSingleDeletes(stack: Stack, collection: string, tokens: readonly string[], inFlight = 10): Promise<{ id: string; token: string }[]> {
  return bounded(tokens, inFlight, async (token) => {
    const r = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection, token_ids: [token], reason: REASON } });
    if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
    return { id: r.body.job_id as string, token };
  });
}

describe('on a Redis Cluster of three masters', () => {
  let cluster: OwnRedisCluster;
  let stack: Stack | undefined;
  const clients: Cluster[] = [];

  beforeAll(async () => {
    cluster = await startOwnRedisCluster(3);
  }, 60_000);

  afterAll(async () => {
    try {
      for (const client of clients) client.disconnect();
      // the stack closes its worker and deletes its keys through the cluster: bring every node back first
      await Promise.all(cluster?.nodes.map((n) => n.start()) ?? []);
      await stack?.close();
    } finally {
      await stopOwnRedisServers();
    }
  }, 60_000);

  it('runs commands end to end; their events reach the stream, in the queue’s slot, the client’s consumer and `revoke events`', { timeout: 60_000 }, async () => {
    // the rate limiter on too (its counters in Redis): a limit these requests never reach
    stack = await startStack({ env: { REDIS_CLUSTER_NODES: cluster.setting, DELETE_BATCH_SIZE: '10', RATE_LIMIT_MAX: '100000' } });
    const { config } = stack;
    expect(config.QUEUE_PREFIX).toMatch(/^\{test-[0-9a-f]+\}$/);
    expect(config.EVENTS_STREAM).toBe(`${config.QUEUE_PREFIX}:events`);
    const collection = 'on_cluster';
    await createCollection(stack, collection);
    const tokens = await tokenize(
      stack,
      collection,
      Array.from({ length: 60 }, (_, i) => ({ object: { id: `o${i}` }, tags: i >= 30 ? ['breach'] : [] })),
    );

    const singles = await submitSingleDeletes(stack, collection, tokens.slice(0, 10));
    const rotate = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.rotate', collection, token_ids: tokens.slice(10, 12), reason: REASON } });
    const bulk = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection, tags: ['breach'], reason: REASON } });
    expect([rotate.status, bulk.status]).toEqual([202, 202]);
    const ids = [...singles.map((j) => j.id), rotate.body.job_id as string, bulk.body.job_id as string];
    await waitForTerminal(stack.database.db, ids, 30_000);

    const rows = await stack.database.db.selectFrom('commands').select(['id', 'state', 'result']).where('id', 'in', ids).execute();
    expect(rows.filter((r) => r.state !== 'succeeded')).toEqual([]);
    expect(rows.find((r) => r.id === bulk.body.job_id)?.result).toEqual({ deleted: 30 });

    // the stream and the queue's keys live on one node (one slot): BullMQ's `{test-…}:commands:…` keys and `{test-…}:events`
    const queueNode = await cluster.nodeFor(`${config.QUEUE_PREFIX}:commands:wait`);
    expect((await cluster.nodeFor(config.EVENTS_STREAM)).port).toBe(queueNode.port);
    expect(Number(await queueNode.query('EXISTS', config.EVENTS_STREAM))).toBe(1);
    const [, counters] = (await queueNode.query('SCAN', '0', 'MATCH', `${config.QUEUE_PREFIX}:rate-limit:*`, 'COUNT', '10000')) as [string, string[]];
    // the admin's request counter, in the same slot
    expect(counters).toHaveLength(1);
    expect(counters[0]).toMatch(new RegExp(`^${config.QUEUE_PREFIX.replace(/[{}]/g, '\\$&')}:rate-limit:subject:`));

    // the typed client's consumer reads them through a cluster client
    const client = new Cluster([{ host: '127.0.0.1', port: cluster.nodes[0]!.port }]);
    clients.push(client);
    const consumer = new EventConsumer({ redis: client, stream: config.EVENTS_STREAM, group: 'cache', consumer: 'c1', startId: '0', blockMs: 50 });
    await consumer.ensureGroup();
    const received = new Map<string, RevocationEvent>();
    for (let round = 0; round < 100 && [...received.values()].filter((e) => e.type === 'command.succeeded').length < ids.length; round++) {
      await consumer.poll((event) => void received.set(event.event_id, event));
    }
    const succeeded = [...received.values()].filter((e) => e.type === 'command.succeeded').map((e) => e.job_id);
    expect(succeeded.sort()).toEqual([...ids].sort());
    const deletedByBulk = [...received.values()].filter((e) => e.type === 'tokens.deleted' && e.job_id === bulk.body.job_id).flatMap((e) => (e.type === 'tokens.deleted' ? e.data.token_ids : []));
    expect(deletedByBulk.sort()).toEqual(tokens.slice(30).sort());

    // and `revoke events`, given the nodes: the stream defaults to QUEUE_PREFIX's, `{…}:events`
    const run = await runCli(['events', '--json', '--redis-cluster-nodes', cluster.setting], { env: { QUEUE_PREFIX: config.QUEUE_PREFIX } });
    expect(run.code).toBe(0);
    const printed = run.stdout
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as RevocationEvent).event_id);
    expect(new Set(printed)).toEqual(new Set(received.keys()));
  });

  it('loses nothing accepted when the master serving the queue’s slot is killed and started again mid-load: every command ends exactly once', { timeout: 90_000 }, async () => {
    stack ??= await startStack({ env: { REDIS_CLUSTER_NODES: cluster.setting } });
    const { db } = stack.database;
    const collection = 'node_killed';
    const tokens = await collectionOfTokens(stack, collection, 330);
    const targets = tokens.slice(0, 300);
    const kept = tokens.slice(300);
    const node = await cluster.nodeFor(`${stack.config.QUEUE_PREFIX}:commands:wait`);

    // the node dies once a third of the commands are in, and comes back a second later
    const recorded = async () => (await db.selectFrom('commands').select('id').execute()).length;
    const before = await recorded();
    const fault = (async () => {
      while ((await recorded()) < before + 100) await sleep(20);
      await node.kill();
      // the producer is not ready while the queue's node is away (its probe reads a key of the queue)
      const readiness = await call(stack, 'GET', '/readyz');
      expect([readiness.status, readiness.body.checks.redis]).toEqual([503, expect.stringMatching(/^error: /)]);
      await sleep(500);
      await node.start();
    })();
    const jobs = await submitSingleDeletes(stack, collection, targets);
    await fault;
    await cluster.waitUntilOk();

    const took = await waitForTerminal(
      db,
      jobs.map((j) => j.id),
      60_000,
    );
    console.info(`300 commands, a master killed and restarted mid-load: all ended ${took} ms after the last was accepted`);
    await expectDeletedOnce(db, collection, jobs, kept);
    // every event is published (by the worker that committed it, or by the relay), each command's end on the stream
    await expect.poll(async () => (await db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute()).length, { timeout: 20_000, interval: 200 }).toBe(0);
    const streamed = new Set((await stack.events()).filter((e) => e.type === 'command.succeeded').map((e) => e.job_id));
    expect(jobs.filter((j) => !streamed.has(j.id)).map((j) => j.id)).toEqual([]);
  });

  it('a process started before any node answers is told Redis is unreachable (it retries), not that the cluster is broken', async () => {
    const nowhere = await freePort();
    const error: unknown = await pingRedis({ kind: 'cluster', nodes: [{ host: '127.0.0.1', port: nowhere }], auth: { tls: false } }, 'test-probe').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(isUnreachable(error)).toBe(true);
  });
});
