import { randomUUID } from 'node:crypto';
import { type KyselyPlugin, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryResult, type RootOperationNode, type UnknownRow, sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AuditContext } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { countAccessTokensOf } from '../../db/repositories/access-token-revocation.repository.js';
import { outboxRows } from '../../db/repositories/outbox.repository.js';
import { seedTemporaryAccessTokens } from '../../db/repositories/seed.repository.js';
import { BOOTSTRAP_ADMIN_ID } from '../../producer/services/subjects.service.js';
import { toEvents } from '../../worker/event-envelope.js';
import { Sweeper } from '../../worker/sweeper.js';
import { call, createCollection, issueToken, tokenize, waitForEvents } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * The sweeper (worker/sweeper.ts) reclaims dead access tokens: temporary tokens revoked by a
 * generation bump, once the bump is older than the grace, and tokens expired longer than the
 * grace. Live tokens, named tokens, and anything dead for less than the grace stay (so verify
 * can still say why a token is refused). It works in small batches and skips rows another
 * transaction holds, so it never waits on a revocation.
 */

const HOUR = 3600;
const silent = pino({ level: 'silent' });

/** Records how many rows each DELETE statement run through it removed. */
class AffectedRows implements KyselyPlugin {
  readonly deletes: number[] = [];

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return args.node;
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    if (args.result.numAffectedRows !== undefined) this.deletes.push(Number(args.result.numAffectedRows));
    return args.result;
  }
}

/** `promise`, or a rejection naming what hung if it has not settled after `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe('the sweeper', () => {
  let stack: Stack;
  let db: Db;

  beforeAll(async () => {
    // the stack's own sweeper stays out of the way: these tests call sweepOnce themselves
    stack = await startStack({ env: { SWEEPER_INTERVAL_SECONDS: '86400' } });
    db = stack.database.db;
  });
  afterAll(() => stack?.close());

  // the sweeper looks at the whole table: each test starts with no subject but the admin
  beforeEach(async () => {
    await db.deleteFrom('subjects').where('id', '<>', BOOTSTRAP_ADMIN_ID).execute();
  });

  const sweeper = (graceSeconds: number, batchSize?: number, on: Db = db) => new Sweeper(on, silent, { intervalMs: 60_000, graceSeconds, ...(batchSize !== undefined && { batchSize }) });

  async function user(): Promise<string> {
    const r = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user' } });
    if (r.status !== 201) throw new Error(`subject: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.id as string;
  }

  const temporary = (subjectId: string) => issueToken(stack, subjectId, { temporary: true, ttl_seconds: 2 * HOUR });
  const named = (subjectId: string) => issueToken(stack, subjectId, { temporary: false, name: 'kept' });

  /** Revokes every temporary token of the user (Onezone route, synchronous). */
  async function revokeAll(subjectId: string): Promise<void> {
    const r = await call(stack, 'DELETE', `/api/v3/onezone/users/${subjectId}/tokens/temporary`, { headers: { ...stack.admin, prefer: 'wait=10' } });
    if (r.status !== 204) throw new Error(`revoke-all: ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** As if the subject's last generation bump had happened `seconds` ago. */
  async function bumpedAgo(subjectId: string, seconds: number): Promise<void> {
    await sql`update subjects set updated_at = now() - make_interval(secs => ${seconds}) where id = ${subjectId}`.execute(db);
  }

  /** As if the token had expired `seconds` ago. */
  async function expiredAgo(tokenId: string, seconds: number): Promise<void> {
    await sql`update access_tokens set expires_at = now() - make_interval(secs => ${seconds}) where id = ${tokenId}`.execute(db);
  }

  async function present(ids: string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const rows = await db.selectFrom('access_tokens').select('id').where('id', 'in', ids).execute();
    return rows.map((r) => r.id).sort();
  }

  function verify(secret: string) {
    return call(stack, 'GET', '/v1/auth/verify', { headers: { ...stack.admin, 'x-subject-token': secret } });
  }

  it('deletes temporary tokens of older generations once the bump is older than the grace; keeps the current generation and named tokens', async () => {
    const alice = await user();
    const revoked = await Promise.all([temporary(alice), temporary(alice), temporary(alice)]);
    const name = await named(alice);
    await revokeAll(alice);
    const current = await Promise.all([temporary(alice), temporary(alice)]);
    await bumpedAgo(alice, 2 * HOUR);

    expect(await sweeper(HOUR).sweepOnce()).toBe(revoked.length);

    expect(await present(revoked.map((t) => t.tokenId))).toEqual([]);
    expect(await present([...current, name].map((t) => t.tokenId))).toEqual([...current, name].map((t) => t.tokenId).sort());
    for (const t of [...current, name]) expect((await verify(t.token)).status).toBe(200);
    const gone = await verify(revoked[0].token);
    expect(gone.status).toBe(404);
    expect(gone.body.context).toEqual({ reason: 'not_found' });
  });

  it('with a grace of an hour deletes nothing just revoked or just expired: verify still answers revoked or expired', async () => {
    const bob = await user();
    const revoked = await Promise.all([temporary(bob), temporary(bob), temporary(bob)]);
    const name = await named(bob);
    await revokeAll(bob);
    const expired = await temporary(bob);
    await expiredAgo(expired.tokenId, 600);

    expect(await sweeper(HOUR).sweepOnce()).toBe(0);

    expect(await countAccessTokensOf(db, bob)).toBe(5);
    for (const t of revoked) {
      const r = await verify(t.token);
      expect(r.status).toBe(404);
      expect(r.body).toMatchObject({ error_code: 'PV3006', context: { reason: 'revoked' } });
    }
    const r = await verify(expired.token);
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({ error_code: 'PV3006', context: { reason: 'expired' } });
    expect((await verify(name.token)).status).toBe(200);
  });

  it('deletes tokens expired longer than the grace and keeps the ones expired more recently or still valid', async () => {
    const carol = await user();
    const [old1, old2, recent, valid] = await Promise.all([temporary(carol), temporary(carol), temporary(carol), temporary(carol)]);
    const name = await named(carol);
    await expiredAgo(old1.tokenId, 2 * HOUR);
    await expiredAgo(old2.tokenId, HOUR + 60);
    await expiredAgo(recent.tokenId, HOUR - 60);

    expect(await sweeper(HOUR).sweepOnce()).toBe(2);

    expect(await present([old1.tokenId, old2.tokenId])).toEqual([]);
    expect(await present([recent.tokenId, valid.tokenId, name.tokenId])).toEqual([recent.tokenId, valid.tokenId, name.tokenId].sort());
    expect((await verify(recent.token)).body.context).toEqual({ reason: 'expired' });
    expect((await verify(valid.token)).status).toBe(200);
  });

  it('with no grace deletes what was revoked a moment ago', async () => {
    const dave = await user();
    const revoked = await Promise.all([temporary(dave), temporary(dave)]);
    await revokeAll(dave);
    const current = await temporary(dave);

    expect(await sweeper(0).sweepOnce()).toBe(2);

    expect(await present(revoked.map((t) => t.tokenId))).toEqual([]);
    expect(await present([current.tokenId])).toEqual([current.tokenId]);
  });

  it('works through a thousand revoked tokens in statements of at most batchSize rows', async () => {
    const erin = await user();
    await seedTemporaryAccessTokens(db, erin, 1000, 2 * HOUR);
    await revokeAll(erin);
    const kept = await temporary(erin);
    await bumpedAgo(erin, 2 * HOUR);
    const observer = new AffectedRows();

    const deleted = await sweeper(HOUR, 100, db.withPlugin(observer)).sweepOnce();

    expect(deleted).toBe(1000);
    expect(await countAccessTokensOf(db, erin)).toBe(1);
    expect(await present([kept.tokenId])).toEqual([kept.tokenId]);
    expect(observer.deletes.every((n) => n <= 100)).toBe(true);
    expect(observer.deletes.filter((n) => n > 0)).toHaveLength(10);
    expect(observer.deletes.reduce((a, b) => a + b, 0)).toBe(1000);
  });

  it('sweeps while a revoke-all on the same subject is in flight, skipping the rows it holds, and does not block it', async () => {
    const frank = await user();
    await seedTemporaryAccessTokens(db, frank, 200, 2 * HOUR);
    await revokeAll(frank);
    await bumpedAgo(frank, 2 * HOUR);

    // a second revoke-all, not committed: it holds the subject row and 50 of its tokens
    const inFlight = new pg.Client({ connectionString: stack.database.url, application_name: 'sweeper-test-revoke-all' });
    await inFlight.connect();
    let held: string[];
    try {
      await inFlight.query('begin');
      await inFlight.query("set local lock_timeout = '5s'");
      await inFlight.query('update subjects set temporary_generation = temporary_generation + 1, updated_at = now() where id = $1', [frank]);
      held = (await inFlight.query<{ id: string }>('select id from access_tokens where subject_id = $1 order by id limit 50 for update', [frank])).rows.map((r) => r.id).sort();
      expect(held).toHaveLength(50);

      const deleted = await within(15_000, sweeper(HOUR, 30).sweepOnce(), 'sweepOnce waited on the revoke-all in flight');

      expect(deleted).toBe(150);
      expect(await present(held)).toEqual(held);
      expect(await countAccessTokensOf(db, frank)).toBe(50);
      // the revoke-all goes on and commits: the sweep left it nothing to wait for
      await inFlight.query('update access_tokens set expires_at = expires_at where id = any($1)', [held]);
      await inFlight.query('commit');
    } catch (error) {
      await inFlight.query('rollback').catch(() => {});
      throw error;
    } finally {
      await inFlight.end();
    }
    const after = await call(stack, 'GET', `/api/v3/onezone/users/${frank}/tokens/temporary`, { headers: stack.admin });
    expect(after.body).toEqual({ generation: 2 });

    // once that bump is past the grace too, the rows it held go as well
    await bumpedAgo(frank, 2 * HOUR);
    expect(await sweeper(HOUR, 30).sweepOnce()).toBe(50);
    expect(await countAccessTokensOf(db, frank)).toBe(0);
  });

  /**
   * The outbox sweep: published events are kept OUTBOX_RETENTION_SECONDS after they were published,
   * then deleted, so the outbox holds what is still to go out plus a window of what went out,
   * instead of every event ever published. Unpublished events are never deleted, however old.
   */
  describe('the outbox sweep', () => {
    // the sweep looks at the whole table: each test starts with an empty outbox
    beforeEach(async () => {
      await db.deleteFrom('outbox').execute();
    });

    const sweeper = (batchSize?: number, on: Db = db) =>
      new Sweeper(on, silent, { intervalMs: 60_000, graceSeconds: HOUR, outboxRetentionSeconds: HOUR, ...(batchSize !== undefined && { batchSize }) });

    /**
     * Writes `n` events of a new command to the outbox, published `publishedAgo` seconds ago
     * (null: not published), created a minute before that; returns their outbox IDs.
     */
    async function events(n: number, publishedAgo: number | null): Promise<string[]> {
      const commandId = randomUUID();
      const drafts = Array.from({ length: n }, (_, i) => ({ type: 'tokens.deleted' as const, data: { collection: 'c', token_ids: [`t${i}`], batch: { index: i, last: i === n - 1 } } }));
      const audit: AuditContext = { actor: { id: 'admin', kind: 'service' }, tenant_ids: null, reason: 'AppFunctionality', adhoc_reason: null, custom_audit: null, request_id: 'r', source: 'http' };
      const ago = (publishedAgo ?? 0) + 60;
      const rows = await db
        .insertInto('outbox')
        .values(
          outboxRows(commandId, toEvents(commandId, audit, drafts)).map((row) => ({
            ...row,
            created_at: sql<Date>`now() - make_interval(secs => ${ago})`,
            published_at: publishedAgo === null ? null : sql<Date>`now() - make_interval(secs => ${publishedAgo})`,
          })),
        )
        .returning('id')
        .execute();
      return rows.map((r) => r.id);
    }

    async function left(): Promise<string[]> {
      return (await db.selectFrom('outbox').select('id').orderBy('id').execute()).map((r) => r.id);
    }

    it('deletes events published longer ago than the retention; keeps those published since, and every unpublished one however old', async () => {
      const oldUnpublished = await events(2, null);
      const expired = await events(3, 2 * HOUR);
      const recent = await events(2, HOUR - 60);
      const expiredToo = await events(1, HOUR + 60);
      const unpublished = await events(2, null);

      expect(await sweeper().sweepOnce()).toBe(0); // the access-token rounds: nothing of theirs here
      expect(await sweeper().sweepOutboxOnce()).toBe(4);

      expect(await left()).toEqual([...oldUnpublished, ...recent, ...unpublished]);
      expect(await left()).not.toEqual(expect.arrayContaining([...expired, ...expiredToo]));
    });

    it('works through the table in statements of at most batchSize rows, each looking at the oldest rows only, and stops when none is left to delete', async () => {
      await events(250, 2 * HOUR);
      const kept = await events(20, 60);
      const observer = new AffectedRows();

      const deleted = await sweeper(100, db.withPlugin(observer)).sweepOutboxOnce();

      expect(deleted).toBe(250);
      expect(await left()).toEqual(kept);
      expect(observer.deletes).toEqual([100, 100, 50, 0]);
    });

    it('gets past unpublished events at the front of the outbox (fewer than a batch) to the published ones behind them', async () => {
      const stuck = await events(30, null);
      await events(150, 2 * HOUR);
      const observer = new AffectedRows();

      expect(await sweeper(100, db.withPlugin(observer)).sweepOutboxOnce()).toBe(150);

      expect(await left()).toEqual(stuck);
      expect(observer.deletes).toEqual([70, 70, 10, 0]);
    });

    it('a worker sweeps its outbox on the sweeper interval: a command’s events are on the stream, then gone from the outbox after the retention', async () => {
      const own = await startStack({ env: { SWEEPER_INTERVAL_SECONDS: '1', OUTBOX_RETENTION_SECONDS: '0' } });
      try {
        await createCollection(own, 'swept');
        const [token] = await tokenize(own, 'swept', [{ object: { id: 'o1' } }]);
        const r = await call(own, 'DELETE', `/api/pvlt/1.0/data/collections/swept/tokens?token_ids=${token}&reason=AppFunctionality`, { headers: { ...own.admin, prefer: 'wait=10' } });
        expect(r.status).toBe(200);
        const jobId = String(r.headers.location).split('/').pop()!;
        const onStream = await waitForEvents(own, (all) => all.some((e) => e.job_id === jobId && e.type === 'command.succeeded'));
        expect(onStream.filter((e) => e.job_id === jobId).map((e) => e.type)).toEqual(['tokens.deleted', 'command.succeeded']);
        await expect.poll(async () => (await own.database.db.selectFrom('outbox').select('id').where('command_id', '=', jobId).execute()).length, { timeout: 10_000, interval: 200 }).toBe(0);
        // the facts stay in the audit log
        expect((await own.database.db.selectFrom('audit_log').select('action').where('command_id', '=', jobId).execute()).map((a) => a.action)).toContain('tokens.deleted');
      } finally {
        await own.close();
      }
    });
  });
});
