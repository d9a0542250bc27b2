import { Queue } from 'bullmq';
import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { COMMAND_QUEUE, type CommandJobData } from '../../contracts/index.js';
import { createDb } from '../../db/create-db.js';
import type { Db } from '../../db/database.js';
import { type ExecutionOutcome, executeCommand } from '../../worker/command-executor.js';
import { outboxEventsOf } from '../../db/repositories/outbox.repository.js';
import { deleteTokensHandler } from '../../worker/handlers/delete-tokens.handler.js';
import { GroupCommit } from '../../worker/group-commit.js';
import { createCollection, submitCommand, tokenize } from '../helpers/api.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Group commit (worker/group-commit.ts): the first steps of short commands delivered together run
 * in one shared transaction. Each command must keep what it has alone: its own effect, audit
 * rows, events and state, committed together; its own failure; a conflict retried; a long
 * command running in transactions of its own.
 */

const silent = pino({ level: 'silent' });

const deleteOne = (collection: string, tokenId: string) => ({ type: 'tokens.delete', collection, token_ids: [tokenId], reason: 'AppFunctionality' });

/** Submits one single-token delete per token; returns the job IDs in order. */
async function deleteEachOf(stack: Stack, collection: string, tokens: readonly string[]): Promise<string[]> {
  const ids: string[] = [];
  for (const token of tokens) ids.push(await submitCommand(stack, deleteOne(collection, token)));
  return ids;
}

describe('group commit of short command steps', () => {
  let stack: Stack;
  let db: Db;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
    db = createDb(stack.database.url, { max: 8, applicationName: 'group-commit-test' });
  });
  afterAll(async () => {
    await db?.destroy();
    await stack?.close();
  });

  const collections = new Set<string>();
  /** `n` new tokens in `collection` (created on first use), tagged with `tags` if given; returns their token IDs. */
  async function collectionWith(collection: string, n: number, tags?: string[]): Promise<string[]> {
    if (!collections.has(collection)) await createCollection(stack, collection);
    collections.add(collection);
    return tokenize(
      stack,
      collection,
      Array.from({ length: n }, (_, i) => ({ object: { id: `${collection}-${tags ? 'tagged-' : ''}${i}` }, ...(tags ? { tags } : {}) })),
    );
  }

  /** Submits one single-token delete per token; returns the job IDs in order. */
  const deleteEach = (collection: string, tokens: readonly string[]) => deleteEachOf(stack, collection, tokens);

  /** Runs the commands at once (each as a job saying it is short) through one group with a single lane: all but the first wait and group. */
  async function runTogether(ids: string[], options: { maxSize?: number; deleteBatchSize?: number } = {}) {
    const retries: string[] = [];
    const group = new GroupCommit(db, { lanes: 1, maxSize: options.maxSize ?? 32, onConflictRetry: (state) => retries.push(state) });
    const deps = { db, logger: silent, settings: { deleteBatchSize: options.deleteBatchSize ?? 100 }, group, onConflictRetry: (state: string) => retries.push(state) };
    const outcomes = await Promise.all(ids.map((id) => executeCommand(deps, id, { finalAttempt: false, short: true })));
    return { outcomes, group, retries };
  }

  async function commandsOf(ids: string[]) {
    // xmin: the transaction that wrote the row last (rows one transaction wrote share it)
    const rows = await db
      .selectFrom('commands')
      .select(['id', 'state', 'attempts', 'result', 'error', sql<string>`xmin::text`.as('xmin')])
      .where('id', 'in', ids)
      .execute();
    return new Map(rows.map((r) => [r.id, r]));
  }

  async function eventsOf(id: string) {
    return (await outboxEventsOf(db, id)) as unknown as { type: string; data: Record<string, unknown> }[];
  }

  async function auditOf(id: string) {
    return db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', id).orderBy('id').execute();
  }

  it('commits short commands delivered together in shared transactions, each with its own effect, audit rows and events', async () => {
    const tokens = await collectionWith('grouped', 12);
    const ids = await deleteEach('grouped', tokens);

    const { outcomes, group } = await runTogether(ids, { maxSize: 8 });

    expect(outcomes).toEqual(ids.map(() => ({ state: 'succeeded', result: { deleted: 1 } })));
    // the first ran alone, the rest waited and shared transactions of at most 8
    expect(group.stats.groups).toBeGreaterThanOrEqual(2);
    expect(group.stats.steps).toBe(11);
    const rows = await commandsOf(ids);
    const transactions = new Set([...rows.values()].map((r) => r.xmin));
    expect(transactions.size).toBeLessThan(ids.length);
    expect(transactions.size).toBeGreaterThanOrEqual(3);
    for (const [i, id] of ids.entries()) {
      expect(rows.get(id)).toMatchObject({ state: 'succeeded', attempts: 1, result: { deleted: 1 }, error: null });
      const events = await eventsOf(id);
      expect(events.map((e) => e.type)).toEqual(['tokens.deleted', 'command.succeeded']);
      expect(events[0]!.data).toMatchObject({ collection: 'grouped', token_ids: [tokens[i]], batch: { index: 0, last: true } });
      const audit = await auditOf(id);
      expect(audit.map((r) => r.action)).toEqual(['tokens.deleted']);
      expect(audit[0]!.data).toMatchObject({ token_ids: [tokens[i]] });
    }
    const left = await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', 'grouped').execute();
    expect(left).toEqual([]);
  });

  it('fails a command of a group alone, with nothing of it kept, and commits the others', async () => {
    const tokens = await collectionWith('one_fails', 6);
    const ids = await deleteEach('one_fails', tokens.slice(0, 3));
    const missing = await submitCommand(stack, deleteOne('one_fails', 'no-such-token'));
    ids.push(missing);
    // a rotate naming a real token and a missing one: all or nothing (PV3087)
    const halfRotate = await submitCommand(stack, { type: 'tokens.rotate', collection: 'one_fails', token_ids: [tokens[3], 'also-missing'], reason: 'AppFunctionality' });
    ids.push(halfRotate);
    ids.push(...(await deleteEach('one_fails', tokens.slice(4))));

    const { outcomes } = await runTogether(ids);

    const byId = new Map(ids.map((id, i) => [id, outcomes[i]!]));
    expect(byId.get(missing)).toMatchObject({ state: 'failed', error: { error_code: 'PV3009' } });
    expect(byId.get(halfRotate)).toMatchObject({ state: 'failed', error: { error_code: 'PV3087' } });
    const rows = await commandsOf(ids);
    for (const id of ids.filter((id) => id !== missing && id !== halfRotate)) {
      expect(byId.get(id)).toEqual({ state: 'succeeded', result: { deleted: 1 } });
      expect(rows.get(id)).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect((await eventsOf(id)).map((e) => e.type)).toEqual(['tokens.deleted', 'command.succeeded']);
    }
    for (const id of [missing, halfRotate]) {
      expect(rows.get(id)).toMatchObject({ state: 'failed', attempts: 1 });
      expect((await eventsOf(id)).map((e) => e.type)).toEqual(['command.failed']);
      expect((await auditOf(id)).map((r) => r.action)).toEqual(['command.failed']);
    }
    // the failed rotate renamed nothing: its real token keeps its ID
    const left = await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', 'one_fails').execute();
    expect(left.map((r) => r.token_id)).toEqual([tokens[3]]);
  });

  it('runs a long command (a delete by tag) alone, in its batches, even when its job says it is short', async () => {
    const tagged = await collectionWith('mixed', 5, ['long']);
    const single = await collectionWith('mixed', 4);
    const ids = [await submitCommand(stack, deleteOne('mixed', single[0]!))];
    const long = await submitCommand(stack, { type: 'tokens.delete', collection: 'mixed', tags: ['long'], reason: 'AppFunctionality' });
    ids.push(long);
    ids.push(...(await deleteEach('mixed', single.slice(1))));

    const { outcomes } = await runTogether(ids, { deleteBatchSize: 2 });

    expect(outcomes[1]).toEqual({ state: 'succeeded', result: { deleted: 5 } } satisfies ExecutionOutcome);
    for (const i of [0, 2, 3, 4]) expect(outcomes[i]).toEqual({ state: 'succeeded', result: { deleted: 1 } });
    // three batches of at most 2, each its own transaction with its audit row
    const audit = await auditOf(long);
    expect(audit.map((r) => r.action)).toEqual(['tokens.deleted', 'tokens.deleted', 'tokens.deleted']);
    const rows = await commandsOf(ids);
    expect(rows.get(long)).toMatchObject({ state: 'succeeded', attempts: 1 });
    const events = await eventsOf(long);
    expect(events.map((e) => e.type)).toEqual(['tokens.deleted', 'tokens.deleted', 'tokens.deleted', 'command.succeeded']);
    expect(events.flatMap((e) => (e.data.token_ids as string[] | undefined) ?? []).sort()).toEqual([...tagged].sort());
  });

  it('retries a step that conflicts with a concurrent update alone, and commits the group', async () => {
    const tokens = await collectionWith('conflict', 5);
    const ids = await deleteEach('conflict', tokens);
    // another transaction holds an update of the third token until the group waits on it
    const blocker = new pg.Client({ connectionString: stack.database.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query(`update vault_tokens set tags = array['touched'] where collection = 'conflict' and token_id = $1`, [tokens[2]]);
      const running = runTogether(ids);
      for (let i = 0; ; i++) {
        const { rows } = await blocker.query<{ n: number }>(`select count(*)::int as n from pg_locks l join pg_stat_activity a using (pid) where not l.granted and a.datname = current_database()`);
        if (rows[0]!.n > 0) break;
        if (i > 500) throw new Error('the group never waited for the blocked row');
        await sleep(10);
      }
      await blocker.query('commit');
      const { outcomes, retries } = await running;

      expect(outcomes).toEqual(ids.map(() => ({ state: 'succeeded', result: { deleted: 1 } })));
      expect(retries).toContain('40001');
    } finally {
      await blocker.end();
    }
    const rows = await commandsOf(ids);
    for (const id of ids) {
      expect(rows.get(id)).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect((await eventsOf(id)).map((e) => e.type)).toEqual(['tokens.deleted', 'command.succeeded']);
      expect((await auditOf(id)).map((r) => r.action)).toEqual(['tokens.deleted']);
    }
  });

  it('runs a command delivered twice at once in two turns: one effect, the same outcome twice', async () => {
    const tokens = await collectionWith('twice', 4);
    const ids = await deleteEach('twice', tokens);
    const twice = ids[2]!;

    const { outcomes } = await runTogether([...ids, twice, twice]);

    expect(outcomes).toEqual([...ids, twice, twice].map(() => ({ state: 'succeeded', result: { deleted: 1 } })));
    expect((await eventsOf(twice)).map((e) => e.type)).toEqual(['tokens.deleted', 'command.succeeded']);
    expect((await auditOf(twice)).map((r) => r.action)).toEqual(['tokens.deleted']);
    expect((await commandsOf([twice])).get(twice)).toMatchObject({ state: 'succeeded', attempts: 1 });
  });

  const deleteSome = (collection: string, tokenIds: readonly (string | undefined)[]) => ({ type: 'tokens.delete', collection, token_ids: tokenIds, reason: 'AppFunctionality' });

  it('deletes the named tokens of a group in one statement, as if the deletes ran one after another in group order', async () => {
    const [filler, x, y, z, w] = await collectionWith('together', 5);
    // the filler runs alone (the lane is free); the three others wait and share one group
    const ids = [await submitCommand(stack, deleteOne('together', filler!))];
    ids.push(await submitCommand(stack, deleteSome('together', [x, y])));
    ids.push(await submitCommand(stack, deleteSome('together', [y, z])));
    ids.push(await submitCommand(stack, deleteSome('together', [w, 'no-such-token'])));
    const many = vi.spyOn(deleteTokensHandler, 'stepMany');
    try {
      const { outcomes, group } = await runTogether(ids);

      expect(outcomes).toEqual([1, 2, 1, 1].map((deleted) => ({ state: 'succeeded', result: { deleted } })));
      expect(group.stats).toMatchObject({ groups: 1, steps: 3 });
      expect(many).toHaveBeenCalledTimes(1);
      expect(many.mock.calls[0]![1].map((context) => context.commandId)).toEqual(ids.slice(1));
    } finally {
      many.mockRestore();
    }
    // y went to the first delete that named it; each event and audit row names what its command deleted
    const deletedBy = async (id: string) => ({
      events: (await eventsOf(id)).filter((e) => e.type === 'tokens.deleted').flatMap((e) => e.data.token_ids as string[]),
      audit: (await auditOf(id)).flatMap((r) => (r.data as { token_ids: string[] }).token_ids),
    });
    expect(await deletedBy(ids[1]!)).toEqual({ events: [x, y], audit: [x, y] }); // in key order
    expect(await deletedBy(ids[2]!)).toEqual({ events: [z], audit: [z] });
    expect(await deletedBy(ids[3]!)).toEqual({ events: [w], audit: [w] });
    expect(await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', 'together').execute()).toEqual([]);
  });

  it('two deletes of a group naming the same tokens: one deletes them all, the other finds none (never a share each)', async () => {
    const [filler, x, y] = await collectionWith('same_tokens', 3);
    const ids = [await submitCommand(stack, deleteOne('same_tokens', filler!))];
    const first = await submitCommand(stack, deleteSome('same_tokens', [x, y]));
    const second = await submitCommand(stack, deleteSome('same_tokens', [y, x]));

    const { outcomes } = await runTogether([...ids, first, second]);

    const both = [outcomes[1], outcomes[2]];
    expect(both).toContainEqual({ state: 'succeeded', result: { deleted: 2 } });
    expect(both).toContainEqual(expect.objectContaining({ state: 'failed', error: expect.objectContaining({ error_code: 'PV3009' }) }));
  });

  it('a delete and a rotate of the same token in one group: the result of one of the two orders', async () => {
    const [filler, x] = await collectionWith('delete_rotate', 2);
    const ids = [await submitCommand(stack, deleteOne('delete_rotate', filler!))];
    const remove = await submitCommand(stack, deleteOne('delete_rotate', x!));
    const rotate = await submitCommand(stack, { type: 'tokens.rotate', collection: 'delete_rotate', token_ids: [x], reason: 'AppFunctionality' });

    const { outcomes } = await runTogether([...ids, remove, rotate]);

    const left = await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', 'delete_rotate').execute();
    if (outcomes[1]!.state === 'succeeded') {
      // delete first: the rotate finds its token gone
      expect(outcomes[1]).toEqual({ state: 'succeeded', result: { deleted: 1 } });
      expect(outcomes[2]).toMatchObject({ state: 'failed', error: { error_code: 'PV3087' } });
      expect(left).toEqual([]);
    } else {
      // rotate first: the delete finds the old ID gone
      expect(outcomes[1]).toMatchObject({ state: 'failed', error: { error_code: 'PV3009' } });
      expect(outcomes[2]).toMatchObject({ state: 'succeeded' });
      expect(left).toHaveLength(1);
    }
  });

  it('keeps each grouped delete inside its own tenant scope, criteria and state', async () => {
    await createCollection(stack, 'scoped_group');
    const [filler, t1, t2, byObject, archived] = await tokenize(stack, 'scoped_group', [
      { object: { id: 'filler' } },
      { object: { id: 'o1' }, tenant_id: 't1' },
      { object: { id: 'o2' }, tenant_id: 't2' },
      { object: { id: 'shared-object' } },
      { object: { id: 'o4' } },
    ]);
    await db.updateTable('vault_tokens').set({ archived_at: new Date() }).where('collection', '=', 'scoped_group').where('token_id', '=', archived!).execute();
    const ids = [await submitCommand(stack, deleteOne('scoped_group', filler!))];
    // scope t1: the t2 token is as if it did not exist
    const scoped = await submitCommand(stack, deleteSome('scoped_group', [t1, t2]), { 'x-tenant-id': 't1' });
    const objects = await submitCommand(stack, { type: 'tokens.delete', collection: 'scoped_group', object_ids: ['shared-object'], reason: 'AppFunctionality' });
    // active tokens only: the archived one is not deleted, so this one matches nothing
    const activeOnly = await submitCommand(stack, deleteOne('scoped_group', archived!));
    const archivedOnly = await submitCommand(stack, { ...deleteOne('scoped_group', archived!), archived: true });

    const many = vi.spyOn(deleteTokensHandler, 'stepMany');
    try {
      const { outcomes } = await runTogether([...ids, scoped, objects, activeOnly, archivedOnly]);

      expect(many).toHaveBeenCalled();
      expect(outcomes.slice(1)).toEqual([
        { state: 'succeeded', result: { deleted: 1 } },
        { state: 'succeeded', result: { deleted: 1 } },
        expect.objectContaining({ state: 'failed', error: expect.objectContaining({ error_code: 'PV3009' }) }),
        { state: 'succeeded', result: { deleted: 1 } },
      ]);
    } finally {
      many.mockRestore();
    }
    expect((await eventsOf(scoped)).find((e) => e.type === 'tokens.deleted')!.data.token_ids).toEqual([t1]);
    expect((await eventsOf(objects)).find((e) => e.type === 'tokens.deleted')!.data.token_ids).toEqual([byObject]);
    const left = await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', 'scoped_group').execute();
    expect(left.map((r) => r.token_id)).toEqual([t2]);
  });

  it('a grouped delete matching more than a batch leaves the group and deletes in batches of its own', async () => {
    const [filler, ...named] = await collectionWith('over_batch', 7);
    const ids = [await submitCommand(stack, deleteOne('over_batch', filler!))];
    const big = await submitCommand(stack, deleteSome('over_batch', named.slice(0, 3)));
    const small = await submitCommand(stack, deleteSome('over_batch', named.slice(3, 5)));

    const { outcomes } = await runTogether([...ids, big, small], { deleteBatchSize: 2 });

    expect(outcomes.slice(1)).toEqual([
      { state: 'succeeded', result: { deleted: 3 } },
      { state: 'succeeded', result: { deleted: 2 } },
    ]);
    expect((await auditOf(big)).map((r) => r.action)).toEqual(['tokens.deleted', 'tokens.deleted']);
    expect((await eventsOf(big)).map((e) => e.type)).toEqual(['tokens.deleted', 'tokens.deleted', 'command.succeeded']);
    expect((await auditOf(small)).map((r) => r.action)).toEqual(['tokens.deleted']);
    const left = await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', 'over_batch').execute();
    expect(left.map((r) => r.token_id)).toEqual([named[5]]);
  });

  it.each([
    { spareLaneAfterMs: 50, opens: true },
    { spareLaneAfterMs: 60_000, opens: false },
  ])('a second lane opens for steps that waited $spareLaneAfterMs ms behind a lane stuck on a lock: $opens', async ({ spareLaneAfterMs, opens }) => {
    const collection = `spare_lane_${opens}`;
    const [stuck, ...others] = await collectionWith(collection, 4);
    const stuckId = await submitCommand(stack, deleteOne(collection, stuck!));
    const otherIds = await deleteEach(collection, others);
    const group = new GroupCommit(db, { lanes: 2, spareLaneAfterMs, maxSize: 32 });
    const deps = { db, logger: silent, settings: { deleteBatchSize: 100 }, group };
    const blocker = new pg.Client({ connectionString: stack.database.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query(`update vault_tokens set tags = array['held'] where collection = $1 and token_id = $2`, [collection, stuck]);
      // the first lane takes the stuck delete and waits on the row lock
      const first = executeCommand(deps, stuckId, { finalAttempt: false, short: true });
      for (let i = 0; ; i++) {
        const { rows } = await blocker.query<{ n: number }>(`select count(*)::int as n from pg_locks l join pg_stat_activity a using (pid) where not l.granted and a.datname = current_database()`);
        if (rows[0]!.n > 0) break;
        if (i > 500) throw new Error('the first lane never waited for the held row');
        await sleep(10);
      }
      const rest = Promise.all(otherIds.map((id) => executeCommand(deps, id, { finalAttempt: false, short: true })));
      await sleep(400);
      const states = [...(await commandsOf(otherIds)).values()].map((r) => r.state);
      expect(states).toEqual(otherIds.map(() => (opens ? 'succeeded' : 'queued')));
      expect(group.stats.maxLanes).toBe(opens ? 2 : 1);
      await blocker.query('commit');
      expect(await first).toEqual({ state: 'succeeded', result: { deleted: 1 } });
      expect(await rest).toEqual(otherIds.map(() => ({ state: 'succeeded', result: { deleted: 1 } })));
    } finally {
      await blocker.end();
    }
  });

  it('the producer marks the jobs of short commands short, and only those', async () => {
    const [token] = await collectionWith('hints', 1);
    const shortId = await submitCommand(stack, deleteOne('hints', token!));
    const longId = await submitCommand(stack, { type: 'tokens.delete', collection: 'hints', tags: ['any'], reason: 'AppFunctionality' });
    const queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection: stack.redis, prefix: stack.config.QUEUE_PREFIX });
    try {
      expect((await queue.getJob(shortId))?.data).toEqual({ command_id: shortId, short: true });
      expect((await queue.getJob(longId))?.data).toEqual({ command_id: longId, short: false });
    } finally {
      await queue.close();
    }
  });
});
