import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AuditContext, COMMAND_QUEUE } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { outboxEventsOf } from '../../db/repositories/outbox.repository.js';
import { seedVaultTokens } from '../../db/repositories/seed.repository.js';
import { deleteTokensHandler } from '../../worker/handlers/delete-tokens.handler.js';
import { call, createCollection, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { commandQueue, resumeOnAnotherWorker, StepLog, tokenIdsOf } from '../helpers/faults.js';
import { killChildren, spawnWorker } from '../helpers/processes.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §4.5, breach scale: a delete matching many tokens runs in bounded batches, each its own
 * transaction with its audit row and events; killed -9 in the middle, it resumes after the
 * last committed batch on another worker, and the count carries over.
 */

const BATCH = 1_000;

async function countTagged(db: Db, collection: string, tag: string): Promise<number> {
  const row = await db
    .selectFrom('vault_tokens')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('collection', '=', collection)
    .where('tags', '@>', sql<string[]>`array[${tag}]::text[]`)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Every ID exactly once: returns the IDs that appear more than once. */
function duplicates(ids: readonly string[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const id of ids) (seen.has(id) ? twice : seen).add(id);
  return [...twice];
}

function sorted(ids: Iterable<string>): string[] {
  return [...ids].sort();
}

describe('a bulk delete whose worker process is killed -9 in the middle', () => {
  const collection = 'breach';
  const tag = 'breach-1';
  const total = 40_000; // half of them tagged: a breach of 20,000 tokens, 20 batches
  let stack: Stack;
  let steps: StepLog;
  let commands: ReturnType<typeof commandQueue>;
  let tagged: string[];
  let untagged: string[];

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { DELETE_BATCH_SIZE: String(BATCH) } });
    await createCollection(stack, collection);
    const n = await seedVaultTokens(stack.database.db, { collection, count: total, tag, tagRatio: 0.5, tenantId: null, objectPrefix: 'obj-' });
    expect(n).toBe(total / 2);
    const all = new Set(await tokenIdsOf(stack.database.db, collection));
    tagged = await tokenIdsOf(stack.database.db, collection, tag);
    for (const id of tagged) all.delete(id);
    untagged = [...all];
    steps = await StepLog.listen(stack.database.url);
    commands = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
  });

  afterAll(async () => {
    await killChildren();
    await steps?.close();
    await commands?.close();
    await stack?.close();
  });

  it('resumes after the last committed batch on another worker: every tagged token deleted once, counted once, announced once', async () => {
    expect(tagged).toHaveLength(total / 2);
    expect(untagged).toHaveLength(total / 2);
    const db = stack.database.db;

    // a worker process, then the breach delete by tag
    const first = await spawnWorker(stack.config);
    const accepted = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${collection}/tokens?tags=${tag}&reason=FraudPreventionSecurityAndCompliance`, {
      headers: { ...stack.admin, prefer: 'respond-async' },
    });
    expect(accepted.status).toBe(202);
    const id = accepted.body.job_id as string;

    // kill -9 once five batches have committed
    await steps.steps(id, 5);
    const exit = await first.kill();
    expect(exit.signal).toBe('SIGKILL');

    // mid-way: not terminal, progress strictly between 0 and the total, and the database agrees
    const midway = (await call(stack, 'GET', `/v1/jobs/${id}`, { headers: stack.admin })).body;
    expect(midway.state).toBe('running');
    expect(midway.result).toBeNull();
    const processed = midway.progress.processed as number;
    expect(midway.progress.total).toBe(total / 2);
    expect(processed).toBeGreaterThanOrEqual(5 * BATCH);
    expect(processed).toBeLessThan(total / 2);
    expect(processed % BATCH).toBe(0);
    expect(await countTagged(db, collection, tag)).toBe(total / 2 - processed);
    expect(await countTagged(db, collection, 'bulk')).toBe(total / 2);
    const committedSoFar = (await outboxEventsOf(db, id)).filter((e) => e.type === 'tokens.deleted');
    expect(committedSoFar.flatMap((e) => e.data.token_ids)).toHaveLength(processed);
    expect((await outboxEventsOf(db, id)).some((e) => e.type === 'command.succeeded' || e.type === 'command.failed')).toBe(false);

    // the dead worker's BullMQ job is still 'active' under a lock that would expire on its own
    // (COMMAND_WORKER_OPTIONS.lockDuration); expire it now, drop the stalled job, and let a reconciler re-enqueue it
    expect(await (await commands.queue.getJob(id))?.getState()).toBe('active');
    expect(await stack.redis.pttl(`${stack.config.QUEUE_PREFIX}:${COMMAND_QUEUE}:${id}:lock`)).toBeGreaterThan(0);
    await resumeOnAnotherWorker(stack, commands.queue, id);

    const done = await waitForJob(stack, id, stack.admin, 90_000);
    expect(done).toMatchObject({ state: 'succeeded', result: { deleted: total / 2 }, progress: { processed: total / 2, total: total / 2 }, error: null });
    expect(done.attempts).toBeGreaterThanOrEqual(2);

    // effect: every tagged token gone, every other one kept
    expect(await countTagged(db, collection, tag)).toBe(0);
    expect(sorted(await tokenIdsOf(db, collection))).toEqual(sorted(untagged));

    // audit: one row per batch (a batch of BATCH IDs makes one event), each deleted token in exactly one of them
    const audit = await db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', id).orderBy('id').execute();
    expect(new Set(audit.map((r) => r.action))).toEqual(new Set(['tokens.deleted']));
    expect(audit).toHaveLength(total / 2 / BATCH);
    const audited = audit.flatMap((r) => r.data.token_ids as string[]);
    expect(duplicates(audited)).toEqual([]);
    expect(sorted(audited)).toEqual(sorted(tagged));

    // outbox: each token ID in exactly one committed event; batch indexes 0..n-1, one last
    const outbox = await outboxEventsOf(db, id);
    const deletedEvents = outbox.filter((e) => e.type === 'tokens.deleted').map((e) => e.data);
    const announced = deletedEvents.flatMap((d) => d.token_ids);
    expect(duplicates(announced)).toEqual([]);
    expect(sorted(announced)).toEqual(sorted(tagged));
    const indexes = deletedEvents.map((d) => d.batch.index).sort((a, b) => a - b);
    expect(indexes).toEqual(Array.from({ length: deletedEvents.length }, (_, i) => i));
    const last = deletedEvents.filter((d) => d.batch.last);
    expect(last).toHaveLength(1);
    expect(last[0]?.batch.index).toBe(deletedEvents.length - 1);
    expect(outbox.filter((e) => e.type === 'command.succeeded').map((e) => e.data)).toEqual([{ command_type: 'tokens.delete', result: { deleted: total / 2 } }]);

    // stream: at least once, so deduplicated by event_id it is exactly the outbox
    const events = await waitForEvents(stack, (es) => es.some((e) => e.job_id === id && e.type === 'command.succeeded'), 30_000);
    const unique = new Map(events.filter((e) => e.job_id === id).map((e) => [e.event_id, e]));
    const streamed = [...unique.values()].filter((e) => e.type === 'tokens.deleted').flatMap((e) => e.data.token_ids);
    expect(duplicates(streamed)).toEqual([]);
    expect(sorted(streamed)).toEqual(sorted(tagged));
  }, 150_000);
});

describe('matching tokens created after a bulk delete was accepted', () => {
  const collection = 'leak';
  const tag = 'leak-1';
  const seeded = 10_000;
  let stack: Stack;
  let steps: StepLog;
  let holder: pg.Client;

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { DELETE_BATCH_SIZE: String(BATCH) } });
    await createCollection(stack, collection);
    await seedVaultTokens(stack.database.db, { collection, count: 2 * seeded, tag, tagRatio: 0.5, tenantId: null, objectPrefix: 'obj-' });
    steps = await StepLog.listen(stack.database.url);
    holder = new pg.Client({ connectionString: stack.database.url, application_name: 'breach-resume-holder' });
    await holder.connect();
  });

  afterAll(async () => {
    await holder?.end();
    await steps?.close();
    await stack?.close();
  });

  it('are deleted too, whether created before the first batch or between two batches', async () => {
    const db = stack.database.db;
    const accepted = await call(stack, 'POST', '/v1/commands', {
      headers: stack.admin,
      body: { type: 'tokens.delete', collection, tags: [tag], reason: 'FraudPreventionSecurityAndCompliance' },
    });
    expect(accepted.status).toBe(202);
    const id = accepted.body.job_id as string;

    // accepted, not started yet (no worker): five more matching tokens
    const early = await tokenize(
      stack,
      collection,
      Array.from({ length: 5 }, (_, i) => ({ object: { id: `early-${i}` }, tags: [tag] })),
    );

    // start a worker; once a batch has committed, hold the command row so the next batch waits
    await stack.startWorker();
    await steps.steps(id, 1);
    await holder.query('begin');
    await holder.query('select id from commands where id = $1 for update', [id]);
    // enough left that the delete cannot end in the batch already waiting for the row
    expect(await countTagged(db, collection, tag)).toBeGreaterThan(2 * BATCH);

    // while it runs: five more matching tokens, committed between two batches
    const late = await tokenize(
      stack,
      collection,
      Array.from({ length: 5 }, (_, i) => ({ object: { id: `late-${i}` }, tags: [tag] })),
    );
    await holder.query('commit');

    const done = await waitForJob(stack, id, stack.admin, 30_000);
    const deleted = seeded + early.length + late.length;
    expect(done).toMatchObject({ state: 'succeeded', result: { deleted }, progress: { processed: deleted, total: deleted } });
    expect(await countTagged(db, collection, tag)).toBe(0);
    expect(
      await db
        .selectFrom('vault_tokens')
        .select('token_id')
        .where('token_id', 'in', [...early, ...late])
        .execute(),
    ).toEqual([]);
    expect(await countTagged(db, collection, 'bulk')).toBe(seeded);
    const audited = (await db.selectFrom('audit_log').select('data').where('command_id', '=', id).execute()).flatMap((r) => r.data.token_ids as string[]);
    expect(audited).toHaveLength(deleted);
    expect(audited).toEqual(expect.arrayContaining([...early, ...late]));
  }, 60_000);
});

describe('a bulk delete whose remaining matches a concurrent delete took between two batches', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(() => stack?.close());

  it("still ends with a tokens.deleted event marked last (one with no token IDs), as a named delete's last batch does", async () => {
    const collection = `lastbatch_${randomUUID().slice(0, 8)}`;
    await createCollection(stack, collection);
    await tokenize(
      stack,
      collection,
      [1, 2, 3].map((i) => ({ object: { id: `o${i}` }, tags: ['gone'] })),
    );
    const audit: AuditContext = { actor: { id: 'admin', kind: 'service' }, tenant_ids: null, reason: 'AppFunctionality', adhoc_reason: null, custom_audit: null, request_id: 'r', source: 'http' };
    const command = { type: 'tokens.delete' as const, collection, tags: ['gone'], archived: false };
    const commandId = randomUUID();
    await stack.database.db
      .insertInto('commands')
      .values({ id: commandId, type: command.type, payload: JSON.stringify(command), payload_hash: 'h', submitter_id: 'admin', audit: JSON.stringify(audit) })
      .execute();
    const step = (checkpoint: Record<string, unknown> | null) =>
      stack.database.db.transaction().execute((trx) => deleteTokensHandler.step({ trx, commandId, command, audit, checkpoint, progress: null, total: null, settings: { deleteBatchSize: 2 } }));

    const first = await step(null);
    expect(first.done).toBe(false);
    expect(first.outbox?.map((e) => JSON.parse(e.event).data.batch)).toEqual([{ index: 0, last: false }]);
    // the third token goes another way before the second batch
    await stack.database.db.deleteFrom('vault_tokens').where('collection', '=', collection).execute();

    const second = await step(first.done ? null : first.checkpoint);
    expect(second).toMatchObject({ done: true, result: { deleted: 2 } });
    const events = second.outbox!.map((e) => JSON.parse(e.event).data);
    expect(events).toEqual([{ collection, token_ids: [], batch: { index: 1, last: true } }]);
  });
});
