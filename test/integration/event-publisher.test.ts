import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type AuditContext, EVENT_FIELD, RevocationEvent } from '../../contracts/index.js';
import { type OutboxEvent, outboxRows } from '../../db/repositories/outbox.repository.js';
import { executeCommand } from '../../worker/command-executor.js';
import { toEvents } from '../../worker/event-envelope.js';
import { appendToStream, EventPublisher, NotReplicated } from '../../worker/event-publisher.js';
import { OutboxRelay } from '../../worker/outbox-relay.js';
import { createDb } from '../../db/create-db.js';
import { createCollection, submitCommand, tokenize, waitForEvents } from '../helpers/api.js';
import { TEST_REDIS_URL } from '../helpers/redis.js';
import { type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * EventPublisher (worker/event-publisher.ts): a worker puts the events it commits on the stream
 * itself, right after the commit, in order, and marks them; the relay only takes what is left
 * past its grace period. Nothing overtakes an event that could not be published, and a delivery
 * that resumes a command publishes what an earlier delivery left behind before its own events.
 */

const silent = pino({ level: 'silent' });
const audit: AuditContext = { actor: { id: 'admin', kind: 'service' }, tenant_ids: null, reason: 'AppFunctionality', adhoc_reason: null, custom_audit: null, request_id: 'req-1', source: 'http' };

function eventIdsOf(entries: [string, string[]][]): string[] {
  return entries.map(([, fields]) => RevocationEvent.parse(JSON.parse(fields[fields.indexOf(EVENT_FIELD) + 1]!)).event_id);
}

describe('a worker publishing its own events', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('puts every event it commits on the stream and marks it; the relay publishes none of them', async () => {
    await createCollection(stack, 'own');
    const tokens = await tokenize(
      stack,
      'own',
      Array.from({ length: 6 }, (_, i) => ({ object: { id: `own-${i}` }, tags: i < 3 ? ['own-tag'] : [] })),
    );
    const jobs = [
      await submitCommand(stack, { type: 'tokens.delete', collection: 'own', token_ids: [tokens[3]], reason: 'AppFunctionality' }),
      await submitCommand(stack, { type: 'tokens.delete', collection: 'own', tags: ['own-tag'], reason: 'AppFunctionality' }), // events written by the batch statement
      await submitCommand(stack, { type: 'tokens.rotate', collection: 'own', token_ids: [tokens[4]], reason: 'AppFunctionality' }),
      await submitCommand(stack, { type: 'tokens.delete', collection: 'own', token_ids: ['no-such-token'], reason: 'AppFunctionality' }), // fails
    ];
    const events = await waitForEvents(stack, (es) => jobs.every((id) => es.some((e) => e.job_id === id && (e.type === 'command.succeeded' || e.type === 'command.failed'))));
    const ofJobs = events.filter((e) => jobs.includes(e.job_id));
    expect(ofJobs.map((e) => e.type).sort()).toEqual(['command.failed', 'command.succeeded', 'command.succeeded', 'command.succeeded', 'tokens.deleted', 'tokens.deleted', 'tokens.rotated'].sort());
    const db = stack.database.db;
    await expect.poll(async () => (await db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute()).length, { timeout: 5_000 }).toBe(0);
    const outbox = await db.selectFrom('outbox').select(['event_id']).where('command_id', 'in', jobs).orderBy('id').execute();
    // each once on the stream, in outbox order per command
    const streamed = ofJobs.map((e) => e.event_id);
    expect(new Set(streamed).size).toBe(streamed.length);
    expect(streamed.sort()).toEqual(outbox.map((r) => r.event_id).sort());
    expect(stack.worker!.publisher.published).toBeGreaterThanOrEqual(7);
    expect(stack.worker!.relay.published).toBe(0);
  });
});

describe('EventPublisher', () => {
  let stack: Stack;
  let own: OwnRedis;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
    own = await startOwnRedis();
  });
  afterAll(async () => {
    await stopOwnRedisServers();
    await stack?.close();
  });

  /**
   * Commits `n` events of a command (a new one unless given) to the outbox, the last one its
   * command.succeeded if `terminal`; returns them as the publisher is handed them.
   */
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- widens the default's UUID template type to string
  async function committed(n: number, { commandId = randomUUID() as string, terminal = false } = {}): Promise<OutboxEvent[]> {
    const drafts = Array.from({ length: n }, (_, i) =>
      terminal && i === n - 1
        ? { type: 'command.succeeded' as const, data: { command_type: 'tokens.delete' as const, result: { deleted: n - 1 } } }
        : { type: 'tokens.deleted' as const, data: { collection: 'c', token_ids: [`t${i}`], batch: { index: i, last: false } } },
    );
    const events = toEvents(commandId, audit, drafts);
    const rows = await stack.database.db.insertInto('outbox').values(outboxRows(commandId, events)).returning(['id', 'event_id']).execute();
    return rows.map((row, i) => ({ id: row.id, event: JSON.stringify(events[i]), commandId, terminal: terminal && i === n - 1 }));
  }

  const eventIdOf = (e: OutboxEvent) => (JSON.parse(e.event) as { event_id: string }).event_id;

  const unpublished = async (events: OutboxEvent[]) =>
    (
      await stack.database.db
        .selectFrom('outbox')
        .select('id')
        .where(
          'id',
          'in',
          events.map((e) => e.id),
        )
        .where('published_at', 'is', null)
        .execute()
    ).length;

  it('retries a batch Redis refused before anything handed over after it, and marks events only once they are on the stream', async () => {
    const redis = new Redis(own.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 50 });
    redis.on('error', () => {});
    const stream = `own-${randomUUID()}`;
    const publisher = new EventPublisher(stack.database.db, redis, silent, { stream, maxLen: 1000, markDelayMs: 10 });
    try {
      await own.stop();
      const first = await committed(3);
      const second = await committed(2);
      publisher.publish(first);
      publisher.publish(second);
      await sleep(300); // a few refused tries
      expect(publisher.published).toBe(0);
      expect(await unpublished([...first, ...second])).toBe(5);

      await own.start();
      await expect.poll(() => publisher.published, { timeout: 10_000 }).toBe(5);
      const reader = new Redis(own.url);
      try {
        const ids = eventIdsOf(await reader.xrange(stream, '-', '+'));
        const expected = [...first, ...second].map(eventIdOf);
        expect(ids).toEqual(expected);
      } finally {
        reader.disconnect();
      }
      await expect.poll(() => unpublished([...first, ...second]), { timeout: 5_000 }).toBe(0);
    } finally {
      await publisher.close();
      redis.disconnect();
    }
  });

  it('gives up at close, within its timeout, what Redis still refuses: the events stay unpublished for the relay', async () => {
    const redis = new Redis(own.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 50 });
    redis.on('error', () => {});
    const publisher = new EventPublisher(stack.database.db, redis, silent, { stream: `own-${randomUUID()}`, maxLen: 1000, closeTimeoutMs: 500 });
    try {
      await own.stop();
      const events = await committed(2);
      publisher.publish(events);
      const started = Date.now();
      await publisher.close();
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(await unpublished(events)).toBe(2);
      publisher.publish(await committed(1)); // after close: left to the relay
      expect(publisher.published).toBe(0);
    } finally {
      redis.disconnect();
      await own.start();
    }
  });

  it('leaves events beyond its queue to the relay, and the rest of their command with them, so each command stays in order on the stream', async () => {
    const redis = new Redis(own.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 50 });
    redis.on('error', () => {});
    const stream = `own-${randomUUID()}`;
    const publisher = new EventPublisher(stack.database.db, redis, silent, { stream, maxLen: 1000, markDelayMs: 10, maxWaiting: 3 });
    try {
      await own.stop();
      const a = await committed(3);
      const b = await committed(2);
      publisher.publish(a.slice(0, 2)); // waiting: a0 a1
      publisher.publish(b); // b0 waits (3: full), b1 is left to the relay, and B with it
      publisher.publish(a.slice(2)); // full: a2 left, and A with it
      await own.start();
      await expect.poll(() => publisher.published, { timeout: 10_000 }).toBe(3);
      const bEnd = await committed(1, { commandId: b[0]!.commandId, terminal: true });
      const aEnd = await committed(1, { commandId: a[0]!.commandId, terminal: true });
      const c = await committed(2);
      publisher.publish(bEnd); // B is the relay's until its end
      publisher.publish(aEnd);
      publisher.publish(c); // a command never left to the relay goes out at once
      await expect.poll(() => publisher.published, { timeout: 10_000 }).toBe(5);
      const left = [a[2]!, aEnd[0]!, b[1]!, bEnd[0]!];
      await expect.poll(() => unpublished([...a, ...b, ...c, ...aEnd, ...bEnd]), { timeout: 5_000 }).toBe(left.length);

      // the relay publishes what was left, in outbox order
      const relay = new OutboxRelay(stack.database.db, () => createDb(stack.database.url, { max: 1 }), redis, silent, { stream, maxLen: 1000 });
      expect(await relay.publishPending()).toBeGreaterThanOrEqual(left.length);
      const reader = new Redis(own.url);
      try {
        const ids = eventIdsOf(await reader.xrange(stream, '-', '+'));
        for (const events of [[...a, ...aEnd], [...b, ...bEnd], c]) {
          const mine = new Set(events.map(eventIdOf));
          expect(ids.filter((id) => mine.has(id))).toEqual(events.map(eventIdOf));
        }
      } finally {
        reader.disconnect();
      }
    } finally {
      await publisher.close();
      redis.disconnect();
    }
  });

  it('forgets a command left to the relay once the relay published its events, though this process never sees its end: what it remembers stays bounded', async () => {
    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
    const stream = `own-${randomUUID()}`;
    // no room to wait: every event is left to the relay, and its command with it
    const publisher = new EventPublisher(stack.database.db, redis, silent, { stream, maxLen: 1000, maxWaiting: 0, relayCheckMs: 10 });
    try {
      const commands = await Promise.all(Array.from({ length: 50 }, () => committed(2)));
      for (const events of commands) publisher.publish(events);
      expect(publisher.relayedCommands).toBe(50);
      // their events are still unpublished: each is remembered, so its next events wait behind them
      await publisher.forgetPublished();
      expect(publisher.relayedCommands).toBe(50);

      // the relay publishes them; their terminal events (another process's, say) never come here
      const relay = new OutboxRelay(stack.database.db, () => createDb(stack.database.url, { max: 1 }), redis, silent, { stream, maxLen: 1000 });
      expect(await relay.publishPending()).toBeGreaterThanOrEqual(100);
      await expect.poll(() => publisher.relayedCommands, { timeout: 5_000 }).toBe(0);
    } finally {
      await publisher.close();
      await redis.del(stream);
      redis.disconnect();
    }
  });

  it('a delivery that resumes a command publishes the events an earlier delivery left unpublished first, in order', async () => {
    await createCollection(stack, 'resume');
    await tokenize(
      stack,
      'resume',
      Array.from({ length: 6 }, (_, i) => ({ object: { id: `resume-${i}` }, tags: ['resume-tag'] })),
    );
    const id = await submitCommand(stack, { type: 'tokens.delete', collection: 'resume', tags: ['resume-tag'], reason: 'AppFunctionality' });
    const db = stack.database.db;
    const settings = { deleteBatchSize: 2 };

    // the first delivery commits one batch and "dies" before publishing it (no publisher)
    const stop = new AbortController();
    stop.abort();
    await expect(executeCommand({ db, logger: silent, settings }, id, { finalAttempt: false, stop: stop.signal })).resolves.toEqual({ state: 'released' });
    const left = await db.selectFrom('outbox').select('event_id').where('command_id', '=', id).where('published_at', 'is', null).orderBy('id').execute();
    expect(left).toHaveLength(1);

    // the next delivery hands over that event before its own
    const handed: OutboxEvent[] = [];
    const outcome = await executeCommand({ db, logger: silent, settings, onCommitted: (events) => handed.push(...events) }, id, { finalAttempt: false });
    expect(outcome).toMatchObject({ state: 'succeeded', result: { deleted: 6 } });
    const parsed = handed.map((e) => RevocationEvent.parse(JSON.parse(e.event)));
    expect(parsed[0]!.event_id).toBe(left[0]!.event_id);
    expect(parsed.map((e) => e.type)).toEqual(['tokens.deleted', 'tokens.deleted', 'tokens.deleted', 'command.succeeded']);
    expect(parsed.slice(0, 3).map((e) => (e.data as { batch: { index: number } }).batch.index)).toEqual([0, 1, 2]);
    const outbox = await db.selectFrom('outbox').select(['id', 'event_id']).where('command_id', '=', id).orderBy('id').execute();
    expect(handed.map((e) => e.id)).toEqual(outbox.map((r) => r.id));
  });
});

describe('appendToStream', () => {
  let redis: Redis;
  const stream = `test-append-${randomUUID()}`;
  beforeAll(() => {
    redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    await redis?.del(stream);
    redis?.disconnect();
  });

  it('appends each event as its own entry, in order (no pipeline)', async () => {
    const texts = ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}'];
    await redis.ping();
    const pipeline = vi.spyOn(redis, 'pipeline');
    await appendToStream(redis, { stream, maxLen: 1000 }, texts.slice(0, 1));
    await appendToStream(redis, { stream, maxLen: 1000 }, texts.slice(1));
    await appendToStream(redis, { stream, maxLen: 1000 }, []);
    const entries = await redis.xrange(stream, '-', '+');
    expect(entries.map(([, fields]) => fields)).toEqual(texts.map((text) => [EVENT_FIELD, text]));
    expect(pipeline).not.toHaveBeenCalled();
    pipeline.mockRestore();
  });

  it('with minReplicas, does not count events as published until that many replicas have them (WAIT)', async () => {
    const lone = `${stream}:lone`;
    await redis.ping();
    // the shared Redis has no replica: the events are on it, yet a failover could lose them
    const unreplicated = appendToStream(redis, { stream: lone, maxLen: 1000, minReplicas: 1, replicaTimeoutMs: 50 }, ['{"n":1}', '{"n":2}']);
    await expect(unreplicated).rejects.toBeInstanceOf(NotReplicated);
    await expect(unreplicated).rejects.toThrow('on 0 of the 1 replica(s) asked for after 50 ms');
    expect(await redis.xlen(lone)).toBe(2);
    await redis.del(lone);
  });
});
