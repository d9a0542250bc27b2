import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../db/database.js';
import type { RunningWorker } from '../../worker/start-worker.js';
import { call, createCollection, tokenize, waitForJob } from '../helpers/api.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';
import { prng } from '../helpers/prng.js';

/**
 * SPEC §4.4: commands on overlapping tokens, run by several worker processes at once, give a
 * result equal to some serial order; conflicts (40001 / 40P01) are retried, and a breach delete
 * by tag never misses a token that a concurrent rotate renamed.
 *
 * The serial order checked is the order in which the effects committed, read back from the
 * audit log (one row per committed transaction, in identity order: a transaction that depends
 * on another one's effect only commits, and takes its audit ID, after that one committed).
 */

const BUSINESS_ERRORS = new Set(['PV3087', 'PV3009']);

function sample<T>(items: readonly T[], n: number, random: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy.slice(0, n);
}

function totalRetries(workers: readonly RunningWorker[]): number {
  return workers.reduce((sum, w) => sum + Object.values(w.stats.conflictRetries).reduce((a, b) => a + b, 0), 0);
}

type Body = { type: 'tokens.rotate'; collection: string; token_ids: string[] } | { type: 'tokens.delete'; collection: string; token_ids?: string[]; tags?: string[] };

async function submitAll(stack: Stack, bodies: readonly Body[]): Promise<{ id: string; body: Body }[]> {
  return Promise.all(
    bodies.map(async (body) => {
      const r = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { ...body, reason: 'AppFunctionality' } });
      if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
      return { id: r.body.job_id as string, body };
    }),
  );
}

async function currentTokenIds(db: Db, collection: string): Promise<string[]> {
  return (await db.selectFrom('vault_tokens').select('token_id').where('collection', '=', collection).execute()).map((r) => r.token_id);
}

/** Waits until at least `n` of these commands are terminal (so the next wave sees some effects). */
async function waitForTerminal(db: Db, ids: readonly string[], n: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = await db
      .selectFrom('commands')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('id', 'in', [...ids])
      .where('state', 'in', ['succeeded', 'failed'])
      .executeTakeFirstOrThrow();
    if (Number(row.n) >= n || Date.now() > deadline) return;
    await sleep(20);
  }
}

describe('overlapping rotates and deletes on two worker processes', () => {
  let stack: Stack;
  let second: RunningWorker;
  let workers: RunningWorker[];
  beforeAll(async () => {
    stack = await startStack({ env: { WORKER_CONCURRENCY: '8', DELETE_BATCH_SIZE: '6' } });
    second = await stack.startWorker();
    workers = [stack.worker as RunningWorker, second];
  });
  afterAll(() => stack?.close());

  it('ends every command, retries conflicts, and leaves the state of some serial order of the effects', { timeout: 180_000 }, async () => {
    const collection = 'hot';
    await createCollection(stack, collection);
    const seed = Number(process.env.CONCURRENCY_SEED ?? Date.now() % 1_000_000);
    console.info(`concurrency seed ${seed} (CONCURRENCY_SEED=${seed} replays it)`);
    const random = prng(seed);
    const note = `seed ${seed}`;
    const TOKENS = 200;
    // rotates of 20 IDs mostly lose their race; smaller ones win more often and rename more tokens
    const ROTATE_SIZES = [20, 2, 5, 3, 10, 2, 4];
    // three in four tokens are in the breach; every token has a tag of its own, to follow it across renames
    const isBreach = (i: number) => i % 4 !== 0;
    const initial = await tokenize(
      stack,
      collection,
      Array.from({ length: TOKENS }, (_, i) => ({ object: { id: `o${i}` }, tags: [isBreach(i) ? 'breach' : 'kept', `t-${i}`] })),
    );
    const retriesBefore = totalRetries(workers);

    // three waves, each drawing its IDs from the tokens as they are when it is sent (so later
    // waves name renamed tokens too), sent once half the commands so far have ended, while the
    // rest still run; the breach delete goes in the middle of the second wave
    const submitted: { id: string; body: Body }[] = [];
    let breachId = '';
    for (let wave = 0; wave < 3; wave++) {
      const live = await currentTokenIds(stack.database.db, collection);
      const bodies: Body[] = [];
      for (let i = 0; i < 14; i++) bodies.push({ type: 'tokens.rotate', collection, token_ids: sample(live, ROTATE_SIZES[i % ROTATE_SIZES.length] as number, random) });
      for (let i = 0; i < 4; i++) bodies.push({ type: 'tokens.delete', collection, token_ids: sample(live, 4, random) });
      const shuffled = sample(bodies, bodies.length, random);
      if (wave === 1) {
        const half = shuffled.length / 2;
        const before = await submitAll(stack, shuffled.slice(0, half));
        const [breach] = await submitAll(stack, [{ type: 'tokens.delete', collection, tags: ['breach'] }]);
        breachId = (breach as { id: string }).id;
        const after = await submitAll(stack, shuffled.slice(half));
        submitted.push(...before, breach as { id: string; body: Body }, ...after);
      } else {
        submitted.push(...(await submitAll(stack, shuffled)));
      }
      if (wave < 2)
        await waitForTerminal(
          stack.database.db,
          submitted.map((s) => s.id),
          Math.ceil(submitted.length / 2),
        );
    }

    // every command ends, succeeded or failed with a business error
    const views = await Promise.all(submitted.map((s) => waitForJob(stack, s.id, stack.admin, 90_000)));
    const stuck = views.filter((v) => v.state !== 'succeeded' && v.state !== 'failed');
    expect(
      stuck.map((v) => `${v.job_id} ${v.state}`),
      note,
    ).toEqual([]);
    const badFailures = views.filter((v) => v.state === 'failed' && !BUSINESS_ERRORS.has(v.error?.error_code));
    expect(
      badFailures.map((v) => `${v.job_id} ${JSON.stringify(v.error)}`),
      note,
    ).toEqual([]);
    const viewOf = new Map(views.map((v) => [v.job_id as string, v]));
    const bodyOf = new Map(submitted.map((s) => [s.id, s.body]));
    expect(viewOf.get(breachId)?.state, note).toBe('succeeded');

    // concurrency was real: conflicting transactions were retried
    const retries = totalRetries(workers) - retriesBefore;
    expect(retries, `${note}: conflict retries`).toBeGreaterThan(0);

    // replay the committed effects, in commit order, on a model of the collection
    const model = new Map(initial.map((id, i) => [id, i]));
    const audit = await stack.database.db
      .selectFrom('audit_log')
      .select(['id', 'command_id', 'action', 'data'])
      .where(
        'command_id',
        'in',
        submitted.map((s) => s.id),
      )
      .orderBy('id')
      .execute();
    const deletedBy = new Map<string, number>();
    let breachDeletedRenamed = 0;
    const renamedBy = new Map<string, Record<string, string>>();
    for (const row of audit) {
      const commandId = row.command_id as string;
      const body = bodyOf.get(commandId) as Body;
      const at = `${note}: audit row ${row.id} (${row.action}) of ${commandId}`;
      if (row.action === 'tokens.rotated') {
        expect(body.type, at).toBe('tokens.rotate');
        const mapping = row.data.mapping as Record<string, string>;
        expect(Object.keys(mapping).sort(), at).toEqual([...new Set(body.token_ids)].sort());
        // (i) every old ID was there at its turn
        for (const [old, fresh] of Object.entries(mapping)) {
          expect(model.has(old), `${at}: rotated ${old}, absent at its turn`).toBe(true);
          expect(model.has(fresh), `${at}: new ID ${fresh} already taken`).toBe(false);
          model.set(fresh, model.get(old) as number);
          model.delete(old);
        }
        renamedBy.set(commandId, mapping);
      } else if (row.action === 'tokens.deleted') {
        expect(body.type, at).toBe('tokens.delete');
        const ids = row.data.token_ids as string[];
        for (const id of ids) {
          expect(model.has(id), `${at}: deleted ${id}, absent at its turn`).toBe(true);
          if (body.type === 'tokens.delete' && body.tags) expect(isBreach(model.get(id) as number), `${at}: ${id} is not in the breach`).toBe(true);
        }
        if (body.type === 'tokens.delete' && body.token_ids) {
          // a delete by IDs deletes every named ID present at its turn, and nothing else
          expect(new Set(ids), at).toEqual(new Set(body.token_ids.filter((id) => model.has(id))));
        }
        if (commandId === breachId) breachDeletedRenamed += ids.filter((id) => !initial.includes(id)).length;
        for (const id of ids) model.delete(id);
        deletedBy.set(commandId, (deletedBy.get(commandId) ?? 0) + ids.length);
        if (commandId === breachId && deletedBy.get(breachId) === viewOf.get(breachId)?.result?.deleted) {
          // the breach delete's last batch: no breach token is left, renamed or not
          const left = [...model.values()].filter(isBreach);
          expect(left, `${at}: breach tokens left after the breach delete`).toEqual([]);
        }
      } else if (row.action === 'command.failed') {
        const error = (row.data as { error: { error_code: string; context: Record<string, unknown> } }).error;
        if (body.type === 'tokens.rotate') {
          // (ii) a failed rotate named IDs that were gone at its turn (IDs never come back)
          expect(error.error_code, at).toBe('PV3087');
          const missing = String(error.context.token_ids).split(',');
          expect(missing.length, at).toBeGreaterThan(0);
          for (const id of missing) {
            expect(body.token_ids, at).toContain(id);
            expect(model.has(id), `${at}: ${id} reported missing but present`).toBe(false);
          }
        } else {
          expect(error.error_code, at).toBe('PV3009');
          for (const id of body.token_ids ?? []) expect(model.has(id), `${at}: PV3009 but ${id} present`).toBe(false);
        }
      } else {
        throw new Error(`${at}: unexpected audit action`);
      }
    }

    // each command's stored outcome is what its audit rows say it did, once
    for (const s of submitted) {
      const view = viewOf.get(s.id);
      const audited = audit.filter((r) => r.command_id === s.id);
      if (view.state === 'failed') {
        expect(
          audited.map((r) => r.action),
          `${note}: ${s.id}`,
        ).toEqual(['command.failed']);
      } else if (s.body.type === 'tokens.rotate') {
        expect(
          audited.map((r) => r.action),
          `${note}: ${s.id}`,
        ).toEqual(['tokens.rotated']);
        expect(view.result.mapping, `${note}: ${s.id}`).toEqual(renamedBy.get(s.id));
      } else {
        expect(new Set(audited.map((r) => r.action)), `${note}: ${s.id}`).toEqual(new Set(['tokens.deleted']));
        expect(view.result.deleted, `${note}: ${s.id}`).toBe(deletedBy.get(s.id));
      }
    }
    const succeededOutbox = await stack.database.db
      .selectFrom('outbox')
      .select('command_id')
      .where(
        'command_id',
        'in',
        submitted.map((s) => s.id),
      )
      .where((eb) => eb(eb.ref('event', '->>').key('type'), '=', 'command.succeeded'))
      .execute();
    const succeededIds = views.filter((v) => v.state === 'succeeded').map((v) => v.job_id as string);
    expect(succeededOutbox.map((r) => r.command_id).sort(), note).toEqual(succeededIds.sort());

    // (iii) the tokens left in Postgres are the model's, each still itself (object and tags kept)
    const rows = await stack.database.db.selectFrom('vault_tokens').select(['token_id', 'object_id', 'tags']).where('collection', '=', collection).execute();
    expect(new Set(rows.map((r) => r.token_id)), note).toEqual(new Set(model.keys()));
    for (const row of rows) {
      const i = model.get(row.token_id) as number;
      expect({ object_id: row.object_id, tags: row.tags }, `${note}: ${row.token_id}`).toEqual({ object_id: `o${i}`, tags: [isBreach(i) ? 'breach' : 'kept', `t-${i}`] });
    }
    // the breach delete missed nothing: every token of the breach existed before it ran
    expect(
      rows.filter((r) => r.tags.includes('breach')),
      note,
    ).toEqual([]);
    expect(rows.length, note).toBeGreaterThan(0);
    expect(breachDeletedRenamed, `${note}: renamed tokens the breach delete found`).toBeGreaterThan(0);
    // the test meant something: several rotates and deletes took effect, and some lost their race
    expect(views.filter((v) => v.state === 'succeeded' && bodyOf.get(v.job_id)?.type === 'tokens.rotate').length, note).toBeGreaterThan(1);
    expect(views.filter((v) => v.state === 'failed').length, note).toBeGreaterThan(0);
  });

  it('of two rotates of the same tokens sent at once, one wins and the other fails PV3087', { timeout: 60_000 }, async () => {
    const collection = 'pair';
    await createCollection(stack, collection);
    const ids = await tokenize(
      stack,
      collection,
      Array.from({ length: 10 }, (_, i) => ({ object: { id: `p${i}` } })),
    );
    const bystander = await tokenize(stack, collection, [{ object: { id: 'bystander' } }]);

    const submitted = await submitAll(stack, [
      { type: 'tokens.rotate', collection, token_ids: ids },
      { type: 'tokens.rotate', collection, token_ids: [...ids].reverse() },
    ]);
    const views = await Promise.all(submitted.map((s) => waitForJob(stack, s.id, stack.admin, 30_000)));

    const winners = views.filter((v) => v.state === 'succeeded');
    const losers = views.filter((v) => v.state === 'failed');
    expect(winners).toHaveLength(1);
    expect(losers).toHaveLength(1);
    expect(losers[0]?.error?.error_code).toBe('PV3087');
    expect(new Set(String(losers[0]?.error?.context?.token_ids).split(','))).toEqual(new Set(ids));
    const mapping = winners[0]?.result?.mapping as Record<string, string>;
    expect(Object.keys(mapping).sort()).toEqual([...ids].sort());
    const left = await currentTokenIds(stack.database.db, collection);
    expect(left.sort()).toEqual([...Object.values(mapping), ...bystander].sort());
    const audit = await stack.database.db
      .selectFrom('audit_log')
      .select('action')
      .where(
        'command_id',
        'in',
        submitted.map((s) => s.id),
      )
      .execute();
    expect(audit.map((r) => r.action).sort()).toEqual(['command.failed', 'tokens.rotated']);
  });
});
