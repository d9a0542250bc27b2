import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUnreachable } from '../../bin/startup.js';
import { pingRedis } from '../../db/redis-connection.js';
import { call, createCollection, tokenize } from '../helpers/api.js';
import { bounded, duplicates, expectDeletedOnce, waitForTerminal } from '../helpers/faults.js';
import { type OwnSentinelGroup, startOwnSentinelGroup } from '../helpers/redis-sentinel.js';
import { freePort, stopOwnRedisServers } from '../helpers/redis-server.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §9, past one machine: the service on a Redis primary watched by Sentinel, of the test's
 * own (REDIS_SENTINELS, REDIS_SENTINEL_MASTER). A failover in the middle of a load of single
 * deletes and a bulk delete loses nothing accepted: every command ends exactly once, and every
 * event committed reaches the stream (at least once: consumers dedupe on event_id), with no
 * process restarted by hand.
 */

const REASON = 'AppFunctionality';

describe('on a Redis primary watched by Sentinel', () => {
  let group: OwnSentinelGroup;
  let stack: Stack | undefined;

  beforeAll(async () => {
    group = await startOwnSentinelGroup();
  }, 60_000);

  afterAll(async () => {
    try {
      await stack?.close();
    } finally {
      await stopOwnRedisServers();
    }
  }, 60_000);

  it('a failover mid-load loses nothing accepted: every command ends exactly once, every event reaches the stream', { timeout: 90_000 }, async () => {
    stack = await startStack({ env: { REDIS_SENTINELS: group.setting, REDIS_SENTINEL_MASTER: group.master, DELETE_BATCH_SIZE: '10', WORKER_CONCURRENCY: '8' } });
    const { db } = stack.database;
    const collection = 'failover';
    await createCollection(stack, collection);
    const tokens = await tokenize(
      stack,
      collection,
      Array.from({ length: 550 }, (_, i) => ({ object: { id: `o${i}` }, tags: i < 200 ? ['breach'] : [] })),
    );
    const breached = tokens.slice(0, 200);
    const targets = tokens.slice(200, 500);
    const kept = tokens.slice(500);
    const before = await group.primaryPort();

    const bulk = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection, tags: ['breach'], reason: REASON } });
    expect(bulk.status).toBe(202);
    const bulkId = bulk.body.job_id as string;
    let accepted = 0;
    let failover: Promise<void> | undefined;
    const jobs = await bounded(targets, 10, async (token) => {
      const r = await call(stack!, 'POST', '/v1/commands', { headers: stack!.admin, body: { type: 'tokens.delete', collection, token_ids: [token], reason: REASON } });
      if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
      // the primary changes once a third of the single deletes are in, the bulk delete under way
      if (++accepted === 100) failover = group.failover();
      return { id: r.body.job_id as string, token };
    });
    await failover;
    expect(await group.primaryPort()).not.toBe(before);

    const ids = [...jobs.map((j) => j.id), bulkId];
    const took = await waitForTerminal(db, ids, 60_000);
    console.info(`300 single deletes and a bulk delete of 200, a Sentinel failover mid-load: all ended ${took} ms after the last was accepted`);
    await expectDeletedOnce(db, collection, jobs, kept);
    const bulkRow = await db.selectFrom('commands').select(['state', 'result']).where('id', '=', bulkId).executeTakeFirstOrThrow();
    expect(bulkRow).toEqual({ state: 'succeeded', result: { deleted: 200 } });
    // each breached token deleted by exactly one batch of the bulk delete
    const audited = (await db.selectFrom('audit_log').select('data').where('command_id', '=', bulkId).execute()).flatMap((r) => r.data.token_ids as string[]);
    expect(duplicates(audited)).toEqual([]);
    expect(audited.sort()).toEqual([...breached].sort());

    // every event committed is on the stream of the new primary (some twice: consumers dedupe on event_id)
    await expect.poll(async () => (await db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute()).length, { timeout: 30_000, interval: 200 }).toBe(0);
    const committed = (await db.selectFrom('outbox').select('event_id').where('command_id', 'in', ids).execute()).map((r) => r.event_id);
    const streamed = new Set((await stack.events()).map((e) => e.event_id));
    expect(committed.filter((id) => !streamed.has(id))).toEqual([]);
  });

  it('a process started before a sentinel answers, or knows the primary, is told Redis is unreachable (it retries)', async () => {
    const nowhere = await freePort();
    const probe = (sentinelPort: number, master: string) =>
      pingRedis({ kind: 'sentinel', sentinels: [{ host: '127.0.0.1', port: sentinelPort }], master, auth: { tls: false } }, 'test-probe').catch((e: unknown) => e);
    for (const error of [await probe(nowhere, group.master), await probe(group.sentinels[0]!.port, 'not-monitored')]) {
      expect(error).toBeInstanceOf(Error);
      expect(isUnreachable(error)).toBe(true);
    }
  });
});
