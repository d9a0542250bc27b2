import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type AuditContext, EVENT_FIELD, RevocationEvent } from '../../contracts/index.js';
import { createDb } from '../../db/create-db.js';
import { outboxRows, RELAY_LOCK_KEY } from '../../db/repositories/outbox.repository.js';
import { toEvents } from '../../worker/event-envelope.js';
import { OutboxRelay } from '../../worker/outbox-relay.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * The relay on its own (no worker running): one relay at a time publishes (the relay lock, an
 * advisory lock), in outbox order, and marks what it published; a leading relay publishes only
 * what the committing worker's publisher left past the grace period.
 */
describe('the outbox relay', () => {
  let stack: Stack;
  const audit: AuditContext = {
    actor: { id: 'admin', kind: 'service' },
    tenant_ids: null,
    reason: 'AppFunctionality',
    adhoc_reason: null,
    custom_audit: null,
    request_id: 'req-1',
    source: 'http',
  };

  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const relay = () =>
    new OutboxRelay(stack.database.db, () => createDb(stack.database.url, { max: 1 }), stack.redis, pino({ level: 'silent' }), { stream: stack.config.EVENTS_STREAM, maxLen: 10_000, batchSize: 4 });

  /** Commits `n` events of one command, as written `ageMs` ago (as if no publisher had put them on the stream since). */
  async function commitEvents(n: number, ageMs = 0): Promise<string[]> {
    const commandId = randomUUID();
    const events = toEvents(
      commandId,
      audit,
      Array.from({ length: n }, (_, i) => ({ type: 'tokens.deleted' as const, data: { collection: 'c', token_ids: [`t${i}`], batch: { index: i, last: i === n - 1 } } })),
    );
    const createdAt = new Date(Date.now() - ageMs);
    await stack.database.db
      .insertInto('outbox')
      .values(outboxRows(commandId, events).map((row) => ({ ...row, created_at: createdAt })))
      .execute();
    return events.map((e) => e.event_id);
  }

  async function streamed(): Promise<string[]> {
    const entries = await stack.redis.xrange(stack.config.EVENTS_STREAM, '-', '+');
    return entries.map(([, fields]) => RevocationEvent.parse(JSON.parse(fields[fields.indexOf(EVENT_FIELD) + 1]!)).event_id);
  }

  it('dates an outbox row when it is written, not when its transaction began: a long step is not already past the grace period at its commit', async () => {
    const commandId = randomUUID();
    const [event] = toEvents(commandId, audit, [{ type: 'tokens.deleted', data: { collection: 'c', token_ids: ['t'], batch: { index: 0, last: true } } }]);
    const { written, began } = await stack.database.db.transaction().execute(async (trx) => {
      await sql`select pg_sleep(0.3)`.execute(trx);
      const row = await trx
        .insertInto('outbox')
        .values(outboxRows(commandId, [event!]))
        .returning(['created_at'])
        .executeTakeFirstOrThrow();
      const { rows } = await sql<{ began: Date }>`select now() as began`.execute(trx);
      return { written: row.created_at, began: rows[0]!.began };
    });
    expect(written.getTime() - began.getTime()).toBeGreaterThanOrEqual(300);
    await stack.database.db.deleteFrom('outbox').where('command_id', '=', commandId).execute(); // the later tests count what is unpublished
  });

  it('publishes nothing while another relay holds the lock, then everything, in order, once', async () => {
    const ids = await commitEvents(10);
    const holder = new pg.Client({ connectionString: stack.database.url });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('select pg_advisory_xact_lock($1)', [RELAY_LOCK_KEY]);
      expect(await relay().publishPending()).toBe(0);
      expect(await streamed()).toEqual([]);
      const waiting = await stack.database.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute();
      expect(waiting).toHaveLength(10);
    } finally {
      await holder.query('rollback').catch(() => {});
      await holder.end();
    }

    // batches of 4: 4 + 4 + 2
    expect(await relay().publishPending()).toBe(10);
    expect(await streamed()).toEqual(ids);
    expect(await stack.database.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute()).toEqual([]);
    // nothing left: a second round publishes nothing more
    expect(await relay().publishPending()).toBe(0);
    expect(await streamed()).toHaveLength(10);
  });

  it('two relays racing publish each event once', async () => {
    const before = (await streamed()).length;
    const ids = await commitEvents(40);
    const [a, b] = [relay(), relay()];
    let published = 0;
    for (let round = 0; round < 50 && published < 40; round++) {
      const [x, y] = await Promise.all([a.publishPending(), b.publishPending()]);
      published += x + y;
    }
    expect(published).toBe(40);
    expect((await streamed()).slice(before)).toEqual(ids);
  });

  describe('leading (started)', () => {
    const started: OutboxRelay[] = [];
    const GRACE_MS = 60_000;
    const leader = (name: string, pollIntervalMs: number) => {
      const r = new OutboxRelay(stack.database.db, () => createDb(stack.database.url, { max: 1, applicationName: name }), stack.redis, pino({ level: 'silent' }), {
        stream: stack.config.EVENTS_STREAM,
        maxLen: 10_000,
        batchSize: 4,
        pollIntervalMs,
        graceMs: GRACE_MS,
      });
      started.push(r);
      r.start();
      return r;
    };
    const unpublished = async () => (await stack.database.db.selectFrom('outbox').select('id').where('published_at', 'is', null).execute()).length;
    const leads = async (name: string) => {
      const { rows } = await sql<{ n: number }>`
        select count(*)::int as n from pg_locks l join pg_stat_activity a using (pid)
        where l.locktype = 'advisory' and l.objid = ${RELAY_LOCK_KEY} and l.granted and a.application_name = ${name}`.execute(stack.database.db);
      return rows[0]!.n === 1;
    };

    afterEach(async () => {
      for (const r of started.splice(0)) await r.stop();
    });

    it('publishes, each poll interval, the events left unpublished past its grace period, and only those, while no other relay can publish', async () => {
      const a = leader('relay-a', 100);
      await expect.poll(() => leads('relay-a'), { timeout: 5_000 }).toBe(true);
      const before = (await streamed()).length;
      const fresh = await commitEvents(3); // a live worker's publisher is putting these on the stream
      const left = await commitEvents(6, 2 * GRACE_MS); // a worker died before publishing these
      expect(await relay().publishPending()).toBe(0); // it leads: another relay publishes nothing
      await expect.poll(async () => (await streamed()).slice(before), { timeout: 5_000 }).toEqual(left);
      await expect.poll(unpublished, { timeout: 5_000 }).toBe(3);
      expect(a.published).toBe(6);

      await a.stop(); // lets the lead go, and leaves the fresh events alone at its last round too
      expect(await leads('relay-a')).toBe(false);
      expect(await unpublished()).toBe(3);
      const more = await commitEvents(2);
      expect(await relay().publishPending()).toBe(5); // a one-off call takes every event
      expect((await streamed()).slice(before)).toEqual([...left, ...fresh, ...more]);
    });

    it('a leader whose connection the server closed takes the lock again on its new one, and publishes', async () => {
      leader('relay-alone', 200);
      await expect.poll(() => leads('relay-alone'), { timeout: 5_000 }).toBe(true);
      const before = (await streamed()).length;
      await sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'relay-alone'`.execute(stack.database.db);
      // its pool opens a new connection without the lock: it must notice, not lead lockless
      await expect.poll(() => leads('relay-alone'), { timeout: 5_000 }).toBe(true);
      const ids = await commitEvents(5, 2 * GRACE_MS);
      await expect.poll(async () => (await streamed()).slice(before), { timeout: 10_000 }).toEqual(ids);
    });

    it("another relay takes over within its poll interval when the leader's connection dies, and each event goes out once", async () => {
      const first = leader('relay-first', 200);
      await expect.poll(() => leads('relay-first'), { timeout: 5_000 }).toBe(true);
      const second = leader('relay-second', 200);
      const before = (await streamed()).length;
      await sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'relay-first'`.execute(stack.database.db);
      const ids = await commitEvents(9, 2 * GRACE_MS);
      await expect.poll(async () => (await streamed()).slice(before), { timeout: 10_000 }).toEqual(ids);
      await expect.poll(unpublished, { timeout: 5_000 }).toBe(0);
      // the old leader finds its lock gone with its connection: one relay leads, and it is the one holding the lock
      const leading = (r: OutboxRelay) => (r as unknown as { leading: boolean }).leading;
      await expect
        .poll(async () => [leading(first), leading(second), await leads('relay-first'), await leads('relay-second')], { timeout: 5_000 })
        .toSatisfy(([a, b, aHolds, bHolds]) => a !== b && a === aHolds && b === bHolds);
      const later = await commitEvents(3, 2 * GRACE_MS);
      await expect.poll(async () => (await streamed()).slice(before), { timeout: 10_000 }).toEqual([...ids, ...later]);
    });
  });
});
