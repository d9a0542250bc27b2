import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { type CachedToken, EVENT_FIELD, EventConsumer, type EventConsumerOptions, JobView, RevocationApiError, RevocationClient, RevocationEvent, TokenCacheInvalidator } from '../../index.js';
import { call, createCollection, subjectWithToken, tokenize, uid } from '../helpers/api.js';
import { commandQueue } from '../helpers/faults.js';
import { sleep } from '../helpers/sleep.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

/** The delays the client sleeps between polls: its calls of Node's promise timer, watched (the timer still runs). */
const clientSleeps = vi.hoisted(() => [] as number[]);
vi.mock('node:timers/promises', async (importOriginal) => {
  const timers = await importOriginal<typeof import('node:timers/promises')>();
  const setTimeout: typeof timers.setTimeout = (ms, ...rest) => {
    if (new Error().stack?.includes('revocation-client')) clientSleeps.push(Number(ms));
    return timers.setTimeout(ms, ...rest);
  };
  return { ...timers, setTimeout };
});
const REASON = 'AppFunctionality';
// `archived` defaults to false on the wire, but the client's CommandRequest type (zod output) requires it

describe('the client package against a running service', () => {
  let stack: Stack;
  let client: RevocationClient;
  /** Every Redis connection a test opens; closed after each test. */
  const connections: Redis[] = [];
  /** Row locks a test holds; released after each test even when it fails. */
  const locks: { release(): Promise<void> }[] = [];

  beforeAll(async () => {
    stack = await startStack();
    client = new RevocationClient({ baseUrl: stack.producer.url, token: ADMIN_TOKEN });
  });
  afterEach(async () => {
    for (const lock of locks.splice(0)) await lock.release();
    for (const redis of connections.splice(0)) redis.disconnect();
  });
  afterAll(() => stack?.close());

  function redis(): Redis {
    const connection = new Redis(stack.config.REDIS_URL, { maxRetriesPerRequest: 1 });
    connections.push(connection);
    return connection;
  }

  /** A stream of this stack's own (its keys are removed with the stack). */
  function streamName(name: string): string {
    return `${stack.config.EVENTS_STREAM}:${name}-${randomBytes(4).toString('hex')}`;
  }

  function consumer(options: Partial<EventConsumerOptions> & Pick<EventConsumerOptions, 'group' | 'consumer'>): EventConsumer {
    return new EventConsumer({ redis: redis(), stream: stack.config.EVENTS_STREAM, blockMs: 50, ...options });
  }

  /** Polls until `done` holds for what was received (or gives up after `rounds`). */
  async function consumeUntil(events: EventConsumer, done: (received: RevocationEvent[]) => boolean, handle: (event: RevocationEvent) => void = () => {}, rounds = 200) {
    const received: RevocationEvent[] = [];
    for (let i = 0; i < rounds && !done(received); i++) {
      await events.poll((event) => {
        received.push(event);
        handle(event);
      });
    }
    if (!done(received)) throw new Error(`events did not arrive; have ${received.map((e) => `${e.type}:${e.job_id}`).join(', ')}`);
    return received;
  }

  async function pendingCount(stream: string, group: string): Promise<number> {
    const summary = (await stack.redis.xpending(stream, group)) as [number, ...unknown[]];
    return summary[0];
  }

  /** Locks vault token rows in a transaction of its own, so a delete of them waits. */
  async function lockTokens(collection: string, tokenIds: string[]) {
    const db = new pg.Client({ connectionString: stack.database.url });
    await db.connect();
    await db.query('begin');
    const locked = await db.query('select 1 from vault_tokens where collection = $1 and token_id = any($2) for update', [collection, tokenIds]);
    expect(locked.rowCount).toBe(tokenIds.length);
    let released: Promise<void> | undefined;
    const lock = {
      release: () => (released ??= db.query('rollback').then(() => db.end())),
    };
    locks.push(lock);
    return lock;
  }

  async function collectionWithTokens(prefix: string, items: { object: { id: string }; tags?: string[] }[]) {
    const collection = uid(prefix);
    await createCollection(stack, collection);
    return { collection, ids: await tokenize(stack, collection, items) };
  }

  describe('RevocationClient', () => {
    it('runs a delete end to end: the job succeeds and a consumer group receives its validated events', async () => {
      const { collection, ids } = await collectionWithTokens('roundtrip', [
        { object: { id: 'o1' }, tags: ['breach'] },
        { object: { id: 'o2' }, tags: ['breach'] },
        { object: { id: 'o3' }, tags: ['keep'] },
      ]);
      const job = await client.run({ type: 'tokens.delete', collection, archived: false, tags: ['breach'], reason: REASON });
      expect(job).toMatchObject({ type: 'tokens.delete', state: 'succeeded', result: { deleted: 2 }, error: null });

      const invalid: string[] = [];
      const group = uid('roundtrip');
      const events = consumer({ group, consumer: 'c1', startId: '0', onInvalid: (id) => invalid.push(id) });
      await events.ensureGroup();
      const received = await consumeUntil(events, (es) => es.some((e) => e.type === 'command.succeeded' && e.job_id === job.job_id));
      const mine = received.filter((e) => e.job_id === job.job_id);
      expect(mine.map((e) => e.type)).toEqual(['tokens.deleted', 'command.succeeded']);
      for (const event of mine) {
        expect(RevocationEvent.parse(event)).toEqual(event);
        expect(event.audit).toMatchObject({ reason: REASON, source: 'client' });
      }
      const deleted = mine[0]!;
      if (deleted.type !== 'tokens.deleted') throw new Error('expected tokens.deleted');
      expect(deleted.data.collection).toBe(collection);
      expect(new Set(deleted.data.token_ids)).toEqual(new Set(ids.slice(0, 2)));
      expect(mine[1]!.data).toEqual({ command_type: 'tokens.delete', result: { deleted: 2 } });
      expect(invalid).toEqual([]);
      expect(await pendingCount(events.stream, group)).toBe(0);
    });

    it('replays an idempotent submission: the same key and command give the same job, marked replayed', async () => {
      const { collection } = await collectionWithTokens('idem', [{ object: { id: 'o1' }, tags: ['t'] }]);
      const key = uid('key');
      const command = { type: 'tokens.delete' as const, collection, archived: false, tags: ['t'], reason: REASON };
      const first = await client.submit(command, { idempotencyKey: key });
      const second = await client.submit(command, { idempotencyKey: key });
      expect(first.replayed).toBe(false);
      expect(second.replayed).toBe(true);
      expect(second.job_id).toBe(first.job_id);
      expect(second.idempotency_key).toBe(key);
      expect(await client.waitForJob(first.job_id, { pollMs: 20 })).toMatchObject({ state: 'succeeded', result: { deleted: 1 } });
    });

    it('rejects a reused idempotency key with a different command as RevocationApiError 422 PV3010', async () => {
      const { collection } = await collectionWithTokens('idem2', [{ object: { id: 'o1' }, tags: ['a'] }]);
      const key = uid('key');
      const first = await client.submit({ type: 'tokens.delete', collection, archived: false, tags: ['a'], reason: REASON }, { idempotencyKey: key });
      const error = await client.submit({ type: 'tokens.delete', collection, archived: false, tags: ['b'], reason: REASON }, { idempotencyKey: key }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RevocationApiError);
      expect(error).toMatchObject({ status: 422, errorCode: 'PV3010' });
      await client.waitForJob(first.job_id, { pollMs: 20 });
    });

    it('surfaces a 4xx as RevocationApiError with the status, the error code and the envelope', async () => {
      const unknownCollection = await client.submit({ type: 'tokens.delete', collection: 'no_such_collection', archived: false, tags: ['x'], reason: REASON }).catch((e: unknown) => e);
      expect(unknownCollection).toBeInstanceOf(RevocationApiError);
      expect(unknownCollection).toMatchObject({ name: 'RevocationApiError', status: 404, errorCode: 'PV3001' });
      expect((unknownCollection as RevocationApiError).body).toMatchObject({ error_code: 'PV3001', message: expect.any(String) });
      expect((unknownCollection as RevocationApiError).message).toContain('PV3001');

      await expect(client.job(randomUUID())).rejects.toMatchObject({ status: 404, errorCode: 'PV3005' });
      const stranger = new RevocationClient({ baseUrl: stack.producer.url, token: 'rvk_not-a-real-token' });
      await expect(stranger.job(randomUUID())).rejects.toMatchObject({ status: 401, errorCode: 'PV1005' });
    });

    it('waitForJob polls with doubling delays, capped at maxPollMs, until the job succeeds', async () => {
      const { collection, ids } = await collectionWithTokens('backoff', [{ object: { id: 'o1' }, tags: ['t'] }]);
      const lock = await lockTokens(collection, ids);
      const submitted = await client.submit({ type: 'tokens.delete', collection, archived: false, token_ids: ids, reason: REASON });
      expect(submitted.state).not.toBe('succeeded');

      clientSleeps.length = 0;
      const updates: JobView[] = [];
      const final = await client.waitForJob(submitted.job_id, {
        pollMs: 20,
        maxPollMs: 80,
        timeoutMs: 20_000,
        onUpdate: (job) => {
          updates.push(job);
          // the job is held by the lock; let it go after a few polls
          if (updates.length === 6) void lock.release();
        },
      });
      const delays = [...clientSleeps];
      expect(final).toMatchObject({ job_id: submitted.job_id, state: 'succeeded', result: { deleted: 1 } });
      expect(updates.length).toBeGreaterThanOrEqual(7);
      expect(updates.at(-1)).toEqual(final);
      for (const job of updates.slice(0, -1)) expect(['queued', 'running']).toContain(job.state);
      expect(delays).toHaveLength(updates.length - 1);
      expect(delays.slice(0, 3)).toEqual([20, 40, 80]);
      for (const delay of delays.slice(3)) expect(delay).toBe(80);
    });

    it('waitForJob gives up after timeoutMs while the job is still running, and the job goes on', async () => {
      const { collection, ids } = await collectionWithTokens('timeout', [{ object: { id: 'o1' }, tags: ['t'] }]);
      const lock = await lockTokens(collection, ids);
      const submitted = await client.submit({ type: 'tokens.delete', collection, archived: false, token_ids: ids, reason: REASON });
      await expect(client.waitForJob(submitted.job_id, { pollMs: 20, timeoutMs: 300 })).rejects.toThrow(/did not end in time/);
      await lock.release();
      expect(await client.waitForJob(submitted.job_id, { pollMs: 20 })).toMatchObject({ state: 'succeeded', result: { deleted: 1 } });
    });

    it('preview shows what a command would touch now and records nothing; a refusal is RevocationApiError as for submit', async () => {
      const { collection, ids } = await collectionWithTokens('preview', [{ object: { id: 'o1' }, tags: ['breach'] }, { object: { id: 'o2' }, tags: ['breach'] }, { object: { id: 'o3' } }]);
      const commands = () =>
        stack.database.db
          .selectFrom('commands')
          .select((eb) => eb.fn.countAll<string>().as('n'))
          .executeTakeFirstOrThrow();
      const before = await commands();

      expect(await client.preview({ type: 'tokens.delete', collection, tags: ['breach'], reason: REASON })).toEqual({ type: 'tokens.delete', matches: 2, sample: ids.slice(0, 2) });
      expect(await client.preview({ type: 'tokens.rotate', collection, token_ids: [ids[2]!, 'gone'], reason: REASON })).toEqual({
        type: 'tokens.rotate',
        matches: 1,
        sample: [ids[2]],
        missing: ['gone'],
      });
      const refused = await client.preview({ type: 'tokens.delete', collection: 'no_such_collection', tags: ['x'], reason: REASON }).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(RevocationApiError);
      expect(refused).toMatchObject({ status: 404, errorCode: 'PV3001' });
      expect(await commands()).toEqual(before);
    });

    it('cancel ends a job that has not run and returns its view; cancelling an ended job is RevocationApiError 409 PV3011', async () => {
      const { collection, ids } = await collectionWithTokens('cancel', [{ object: { id: 'o1' } }]);
      // the queue paused: no worker takes the job before it is cancelled
      const commands = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
      await commands.queue.pause();
      let cancelled: JobView;
      let submitted: { job_id: string };
      try {
        submitted = await client.submit({ type: 'tokens.delete', collection, token_ids: ids, reason: REASON });
        cancelled = await client.cancel(submitted.job_id);
        expect(cancelled).toMatchObject({ job_id: submitted.job_id, state: 'cancelled', result: { deleted: 0 } });
        expect(await client.cancel(submitted.job_id)).toEqual(cancelled);
      } finally {
        await commands.queue.resume();
        await commands.close();
      }
      // delivered once the queue resumes, it finds its command cancelled and runs nothing
      expect(await client.waitForJob(submitted.job_id)).toEqual(cancelled);

      const done = await client.run({ type: 'tokens.delete', collection, token_ids: ids, reason: REASON });
      expect(done).toMatchObject({ state: 'succeeded', result: { deleted: 1 } });
      const ended = await client.cancel(done.job_id).catch((e: unknown) => e);
      expect(ended).toBeInstanceOf(RevocationApiError);
      expect(ended).toMatchObject({ status: 409, errorCode: 'PV3011' });
    });

    it('run falls back to polling when the job outlasts Prefer: wait', async () => {
      const { collection, ids } = await collectionWithTokens('run', [{ object: { id: 'o1' }, tags: ['t'] }]);
      const lock = await lockTokens(collection, ids);
      const updates: JobView[] = [];
      const job = await client.run(
        { type: 'tokens.rotate', collection, token_ids: ids, reason: REASON },
        {
          waitSeconds: 1,
          pollMs: 20,
          onUpdate: (view) => {
            updates.push(view);
            void lock.release();
          },
        },
      );
      expect(updates.length).toBeGreaterThanOrEqual(1);
      expect(['queued', 'running']).toContain(updates[0]!.state);
      expect(job).toMatchObject({ type: 'tokens.rotate', state: 'succeeded' });
      const mapping = (job.result as { mapping: Record<string, string> }).mapping;
      expect(Object.keys(mapping)).toEqual(ids);
      expect(mapping[ids[0]!]).not.toBe(ids[0]);
    });
  });

  describe('RevocationClient job list', () => {
    it('listJobs pages through the caller’s own jobs, newest first, with filters; jobs() follows every page', async () => {
      const made = await subjectWithToken(stack, { id: uid('lister'), kind: 'user', capabilities: ['tokens:write'] });
      const own = new RevocationClient({ baseUrl: stack.producer.url, token: made.token });
      const { collection } = await collectionWithTokens('listed', [{ object: { id: 'o1' }, tags: ['a'] }]);
      const ran: JobView[] = [];
      // run() answers the view with `replayed`: the list has the view alone
      for (const tag of ['a', 'b', 'c']) ran.push(JobView.parse(await own.run({ type: 'tokens.delete', collection, archived: false, tags: [tag], reason: REASON })));
      ran.push(JobView.parse(await own.run({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: made.subject.id } })));
      expect(ran.map((j) => j.state)).toEqual(['succeeded', 'failed', 'failed', 'succeeded']);
      const newest = [...ran].reverse();

      const first = await own.listJobs({ limit: 3 });
      expect(first.jobs).toEqual(newest.slice(0, 3));
      const rest = await own.listJobs({ limit: 3, cursor: first.next_cursor! });
      expect(rest).toEqual({ jobs: newest.slice(3), next_cursor: null });

      const all: JobView[] = [];
      for await (const job of own.jobs({ limit: 1 })) all.push(job);
      expect(all).toEqual(newest);

      expect((await own.listJobs({ state: 'failed', type: 'tokens.delete', since: new Date(Date.parse(ran[0]!.created_at)) })).jobs).toEqual(newest.slice(1, 3));
      expect((await own.listJobs({ since: '2999-01-01' })).jobs).toEqual([]);
      // the admin sees them too; the bad limit is the service's 400
      expect((await client.listJobs({ limit: 500 })).jobs.map((j) => j.job_id)).toEqual(expect.arrayContaining(ran.map((j) => j.job_id)));
      const error = await own.listJobs({ limit: 501 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RevocationApiError);
      expect(error).toMatchObject({ status: 400, errorCode: 'PV1002' });
    });
  });

  describe('EventConsumer', () => {
    /** The `event` fields of real events this service published (valid by construction). */
    let realEvents: string[];

    beforeAll(async () => {
      const { collection } = await collectionWithTokens(
        'source',
        [1, 2, 3].map((n) => ({ object: { id: `o${n}` }, tags: [`s${n}`] })),
      );
      const jobs = [];
      for (const n of [1, 2, 3]) jobs.push(await client.run({ type: 'tokens.delete', collection, archived: false, tags: [`s${n}`], reason: REASON }));
      const jobIds = new Set(jobs.map((j) => j.job_id));
      const deadline = Date.now() + 10_000;
      for (;;) {
        const entries = await stack.redis.xrange(stack.config.EVENTS_STREAM, '-', '+');
        realEvents = entries.map(([, fields]) => fields[fields.indexOf(EVENT_FIELD) + 1]!).filter((raw) => jobIds.has((JSON.parse(raw) as { job_id: string }).job_id));
        if (realEvents.length === 6 || Date.now() > deadline) break;
        await sleep(50);
      }
      expect(realEvents).toHaveLength(6);
    });

    /** A stream of its own holding `payloads` as `event` fields; returns its name and entry IDs. */
    async function streamOf(name: string, payloads: string[]) {
      const stream = streamName(name);
      const ids: string[] = [];
      for (const payload of payloads) ids.push((await stack.redis.xadd(stream, '*', EVENT_FIELD, payload))!);
      return { stream, ids };
    }

    it('splits entries between two consumers of one group: together they receive each exactly once', async () => {
      const { stream, ids } = await streamOf('split', realEvents);
      const group = uid('split');
      const a = consumer({ group, consumer: 'a', stream, startId: '0', batchSize: 2 });
      const b = consumer({ group, consumer: 'b', stream, startId: '0', batchSize: 2 });
      await a.ensureGroup();
      await b.ensureGroup(); // the group exists: harmless
      const seenBy: Record<'a' | 'b', string[]> = { a: [], b: [] };
      const eventIds: string[] = [];
      for (let round = 0; round < 20; round++) {
        const handledA = await a.poll((event, entryId) => void (seenBy.a.push(entryId), eventIds.push(event.event_id)));
        const handledB = await b.poll((event, entryId) => void (seenBy.b.push(entryId), eventIds.push(event.event_id)));
        if (handledA + handledB === 0) break;
      }
      expect(seenBy.a.length).toBeGreaterThan(0);
      expect(seenBy.b.length).toBeGreaterThan(0);
      expect(seenBy.a.filter((id) => seenBy.b.includes(id))).toEqual([]);
      expect([...seenBy.a, ...seenBy.b].sort()).toEqual([...ids].sort());
      expect(new Set(eventIds)).toEqual(new Set(realEvents.map((raw) => (JSON.parse(raw) as { event_id: string }).event_id)));
      expect(await pendingCount(stream, group)).toBe(0);
    });

    it('claims an entry another consumer took and never acked, once it has been idle for claimIdleMs', async () => {
      const { stream, ids } = await streamOf('claim', realEvents.slice(0, 3));
      const group = uid('claim');
      const crashing = consumer({ group, consumer: 'crashing', stream, startId: '0', batchSize: 1 });
      await crashing.ensureGroup();
      await expect(
        crashing.poll(() => {
          throw new Error('crashed while handling');
        }),
      ).rejects.toThrow('crashed while handling');
      const pending = (await stack.redis.xpending(stream, group, '-', '+', 10)) as [string, string, number, number][];
      expect(pending.map(([id, owner]) => [id, owner])).toEqual([[ids[0], 'crashing']]);

      const rescuer = consumer({ group, consumer: 'rescuer', stream, claimIdleMs: 100 });
      await sleep(250); // longer than claimIdleMs
      const handled: string[] = [];
      await rescuer.poll((_event, entryId) => void handled.push(entryId));
      expect(handled).toEqual(ids);
      expect(await pendingCount(stream, group)).toBe(0);
    });

    it('reports an entry that is not a valid event via onInvalid and acks it, without calling the handler', async () => {
      const [valid1, valid2] = [realEvents[0]!, realEvents[1]!];
      const { stream, ids } = await streamOf('invalid', [valid1, 'not json {', JSON.stringify({ type: 'tokens.deleted', data: {} }), valid2]);
      const group = uid('invalid');
      const invalid: { id: string; reason: string }[] = [];
      const events = consumer({ group, consumer: 'c1', stream, startId: '0', claimIdleMs: 0, onInvalid: (id, reason) => invalid.push({ id, reason }) });
      await events.ensureGroup();
      const handled: { id: string; event: RevocationEvent }[] = [];
      const count = await events.poll((event, id) => void handled.push({ id, event }));
      expect(count).toBe(4);
      expect(handled.map((h) => h.id)).toEqual([ids[0], ids[3]]);
      expect(handled.map((h) => h.event)).toEqual([RevocationEvent.parse(JSON.parse(valid1)), RevocationEvent.parse(JSON.parse(valid2))]);
      expect(invalid.map((i) => i.id)).toEqual([ids[1], ids[2]]);
      expect(invalid[0]!.reason).toMatch(/not JSON/);
      expect(await pendingCount(stream, group)).toBe(0);
      // acked: not delivered again, even to a consumer that claims everything pending
      expect(await events.poll(() => void handled.push({ id: 'again', event: handled[0]!.event }))).toBe(0);
      expect(handled).toHaveLength(2);
    });
  });

  describe('subjects and lockout', () => {
    it('lockout, unlock, getSubject, updateSubject and listSubjectTokens, each answer validated', async () => {
      const user = await subjectWithToken(stack, { id: uid('locked'), kind: 'user' });
      const id = user.subject.id as string;
      const temporary = await call(stack, 'POST', `/v1/subjects/${id}/tokens`, { headers: stack.admin, body: { temporary: true } });
      expect(temporary.status).toBe(201);

      const page = await client.listSubjectTokens(id, { limit: 1 });
      expect(page.tokens).toHaveLength(1);
      const rest = await client.listSubjectTokens(id, { after: page.next_after! });
      expect([...page.tokens, ...rest.tokens].map((t) => t.kind).sort()).toEqual(['named', 'temporary']);
      expect(rest.next_after).toBeNull();

      const updated = await client.updateSubject(id, { capabilities: ['tokens:read'], tenant_ids: ['t1'] });
      expect(updated).toMatchObject({ id, capabilities: ['tokens:read'], tenant_ids: ['t1'], collections: null, disabled_at: null });

      const locked = await client.lockout({ kind: 'user', id });
      expect(locked).toMatchObject({ type: 'subject.lockout', state: 'succeeded', result: { subject: { kind: 'user', id }, revoked: 2 } });
      expect((await client.getSubject(id)).disabled_at).toEqual(expect.any(String));
      expect((await client.listSubjectTokens(id)).tokens).toEqual([]);

      const unlocked = await client.unlock({ kind: 'user', id });
      expect(unlocked).toMatchObject({ type: 'subject.unlock', state: 'succeeded', result: { subject: { kind: 'user', id } } });
      expect(await client.getSubject(id)).toMatchObject({ id, capabilities: ['tokens:read'], disabled_at: null });

      const missing = await client.getSubject(uid('nobody')).catch((error: unknown) => error);
      expect(missing).toBeInstanceOf(RevocationApiError);
      expect((missing as RevocationApiError).errorCode).toBe('PV3003');
    });
  });

  describe('the example TokenCacheInvalidator', () => {
    it("drops every cached token of a locked-out subject, and no one else's", async () => {
      const user = await subjectWithToken(stack, { id: uid('user'), kind: 'user' });
      const other = await subjectWithToken(stack, { id: uid('user'), kind: 'user' });
      const temporary = await call(stack, 'POST', `/v1/subjects/${user.subject.id}/tokens`, { headers: stack.admin, body: { temporary: true } });
      const invalidator = new TokenCacheInvalidator();
      invalidator.access.set(user.tokenId, { subjectId: user.subject.id, temporary: false, generation: null });
      invalidator.access.set(temporary.body.token_id, { temporary: true, generation: 0 }); // its subject not cached: its own event drops it
      invalidator.access.set(other.tokenId, { subjectId: other.subject.id, temporary: false, generation: null });

      const group = uid('lockout');
      const events = consumer({ group, consumer: 'cache-1' });
      await events.ensureGroup();
      const job = await client.lockout({ kind: 'user', id: user.subject.id });
      expect(job.state).toBe('succeeded');
      const received = await consumeUntil(
        events,
        (es) => es.some((e) => e.type === 'command.succeeded' && e.job_id === job.job_id),
        (event) => invalidator.apply(event),
      );
      expect(received.filter((e) => e.job_id === job.job_id).map((e) => e.type)).toEqual(['subject.locked', 'access_token.revoked', 'command.succeeded']);
      expect([...invalidator.access.keys()]).toEqual([other.tokenId]);
    });

    it('drops exactly the cached tokens that real delete, rotate, access-token revoke and revoke-all events name', async () => {
      const { collection, ids } = await collectionWithTokens('cache', [
        { object: { id: 'a' }, tags: ['gone'] },
        { object: { id: 'b' }, tags: ['gone'] },
        { object: { id: 'c' } },
        { object: { id: 'd' } },
      ]);
      const [gone1, gone2, rotated, kept] = ids as [string, string, string, string];
      const issue = async (subjectId: string, body: Record<string, unknown>) => {
        const r = await call(stack, 'POST', `/v1/subjects/${subjectId}/tokens`, { headers: stack.admin, body });
        expect(r.status).toBe(201);
        return r.body as { token_id: string; generation: number | null; temporary: boolean };
      };
      const cached = (subjectId: string, t: { temporary: boolean; generation: number | null }): CachedToken => ({ subjectId, temporary: t.temporary, generation: t.generation });

      const user = await subjectWithToken(stack, { id: uid('user'), kind: 'user' });
      const otherUser = await subjectWithToken(stack, { id: uid('user'), kind: 'user' });
      const holder = await subjectWithToken(stack, { id: uid('holder'), kind: 'user' });
      const userTemp1 = await issue(user.subject.id, { temporary: true, ttl_seconds: 3600 });
      const userTemp2 = await issue(user.subject.id, { temporary: true, ttl_seconds: 3600 });
      const otherTemp = await issue(otherUser.subject.id, { temporary: true, ttl_seconds: 3600 });

      const invalidator = new TokenCacheInvalidator();
      for (const id of ids) invalidator.vault.set(`${collection}/${id}`, { cachedAt: 1 });
      invalidator.vault.set(`other_collection/${gone1}`, { cachedAt: 1 });
      invalidator.access.set(user.tokenId, { subjectId: user.subject.id, temporary: false, generation: null });
      invalidator.access.set(userTemp1.token_id, cached(user.subject.id, userTemp1));
      invalidator.access.set(userTemp2.token_id, cached(user.subject.id, userTemp2));
      invalidator.access.set(otherTemp.token_id, cached(otherUser.subject.id, otherTemp));
      invalidator.access.set(holder.tokenId, { subjectId: holder.subject.id, temporary: false, generation: null });

      const group = uid('cache');
      const events = consumer({ group, consumer: 'cache-1' });
      await events.ensureGroup(); // from now on: '$'

      const jobs = [
        await client.run({ type: 'tokens.delete', collection, archived: false, tags: ['gone'], reason: REASON }),
        await client.run({ type: 'tokens.rotate', collection, token_ids: [rotated], reason: REASON }),
        await client.run({ type: 'access_token.revoke', token_id: holder.tokenId }),
        await client.run({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: user.subject.id } }),
      ];
      for (const job of jobs) expect(job.state, JSON.stringify(job)).toBe('succeeded');
      // issued after the revoke-all, under the new generation: still valid
      const userTemp3 = await issue(user.subject.id, { temporary: true, ttl_seconds: 3600 });
      expect(userTemp3.generation).toBe((userTemp1.generation ?? 0) + 1);
      invalidator.access.set(userTemp3.token_id, cached(user.subject.id, userTemp3));

      const jobIds = new Set(jobs.map((j) => j.job_id));
      const received = await consumeUntil(
        events,
        (es) => jobs.every((job) => es.some((e) => e.type === 'command.succeeded' && e.job_id === job.job_id)),
        (event) => invalidator.apply(event),
      );
      expect(new Set(received.filter((e) => jobIds.has(e.job_id)).map((e) => e.type))).toEqual(
        new Set(['tokens.deleted', 'tokens.rotated', 'access_token.revoked', 'temporary_tokens.revoked', 'command.succeeded']),
      );

      const expectedVault = [`${collection}/${kept}`, `other_collection/${gone1}`].sort();
      const expectedAccess = [user.tokenId, otherTemp.token_id, userTemp3.token_id].sort();
      expect([...invalidator.vault.keys()].sort()).toEqual(expectedVault);
      expect([...invalidator.access.keys()].sort()).toEqual(expectedAccess);
      expect(invalidator.vault.has(`${collection}/${gone2}`)).toBe(false);

      // applying the same events again changes nothing
      for (const event of received) invalidator.apply(event);
      expect([...invalidator.vault.keys()].sort()).toEqual(expectedVault);
      expect([...invalidator.access.keys()].sort()).toEqual(expectedAccess);
    });
  });
});
