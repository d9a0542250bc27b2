import { Redis } from 'ioredis';
import pino from 'pino';
import { UnrecoverableError, Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE } from '../../contracts/index.js';
import { Reconciler } from '../../worker/reconciler.js';
import { collectionOfTokens, submitCommand, uid } from '../helpers/api.js';
import { commandQueue } from '../helpers/faults.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * The reconciler (worker/reconciler.ts) against a real queue, with no worker running: a command
 * that has not ended gets a job again only when its job is gone or dead, never a second live one.
 */
describe('the reconciler', () => {
  let stack: Stack;
  let commands: ReturnType<typeof commandQueue>;
  let reconciler: Reconciler;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    commands = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
    reconciler = new Reconciler(stack.database.db, commands.queue, pino({ level: 'silent' }), { intervalMs: 60_000, graceMs: 0 });
  });
  afterAll(async () => {
    await commands?.close();
    await stack?.close();
  });

  /** A delete of one token, recorded and enqueued by the producer; nothing runs it. */
  async function queuedCommand(): Promise<string> {
    const collection = uid('c');
    const [token] = await collectionOfTokens(stack, collection, 1);
    return submitCommand(stack, { type: 'tokens.delete', collection, token_ids: [token], reason: 'AppFunctionality' });
  }

  it('leaves a command whose job is waiting alone', async () => {
    const id = await queuedCommand();
    const before = await commands.queue.getJob(id);
    expect(await reconciler.reconcileOnce()).toBe(0);
    const after = await commands.queue.getJob(id);
    expect(await after?.getState()).toBe('waiting');
    expect(after?.timestamp).toBe(before?.timestamp);
    // ended, without its job: the next test's rounds leave it
    await commands.queue.remove(id);
    await stack.database.db.updateTable('commands').set({ state: 'cancelled', finished_at: new Date() }).where('id', '=', id).execute();
  });

  it('enqueues a command whose job is gone, and one whose job failed before the command ended', async () => {
    const gone = await queuedCommand();
    await commands.queue.remove(gone);

    const dead = await queuedCommand();
    // the job taken and failed by hand, as a worker would on its last attempt with the database out of reach
    const connection = new Redis(stack.config.REDIS_URL, { maxRetriesPerRequest: null });
    const taker = new Worker(COMMAND_QUEUE, null, { connection, prefix: stack.config.QUEUE_PREFIX, autorun: false });
    try {
      // the only job waiting: the first test's was removed, and so was `gone`'s
      const job = await taker.getNextJob('by-hand');
      expect(job?.id).toBe(dead);
      await job.moveToFailed(new UnrecoverableError('out of attempts'), 'by-hand');
    } finally {
      await taker.close();
      connection.disconnect();
    }
    expect(await commands.queue.getJobState(dead)).toBe('failed');

    expect(await reconciler.reconcileOnce()).toBe(2);
    for (const id of [gone, dead]) {
      const job = await commands.queue.getJob(id);
      expect(await job?.getState()).toBe('waiting');
      expect(job?.data).toEqual({ command_id: id });
      expect(job?.attemptsMade).toBe(0);
    }
    // a second round finds both live
    expect(await reconciler.reconcileOnce()).toBe(0);
  });
});
