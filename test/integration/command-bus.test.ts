import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { type AuditContext, type Command, COMMAND_JOB_OPTIONS, COMMAND_QUEUE, type CommandJobData } from '../../contracts/index.js';
import { type AccessTokenWithSubject, findAccessTokensByHashes } from '../../db/repositories/access-token.repository.js';
import type { CommandRecord } from '../../db/repositories/command.repository.js';
import { upsertSubject } from '../../db/repositories/subject.repository.js';
import { hashSecret } from '../../producer/secrets.js';
import { CommandBus } from '../../producer/services/command-bus.js';
import { RecordBatch } from '../../producer/services/record-batch.js';
import { call, createCollection, subjectWithToken } from '../helpers/api.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

/**
 * The producer records the commands submitted in one turn of the event loop with ONE statement
 * (RecordBatch, up to RECORD_BATCH_MAX); CommandBus adds each one's job. Each command must keep
 * what it has alone: its own credential check, its own idempotency key, its own failure.
 */
describe('RecordBatch and CommandBus: commands submitted together', () => {
  let stack: Stack;
  let redis: Redis;
  let queue: Queue<CommandJobData>;
  let bus: CommandBus;
  let batch: RecordBatch;
  let admin: AccessTokenWithSubject;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    redis = new Redis(stack.config.REDIS_URL, { maxRetriesPerRequest: 1 });
    queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection: redis, prefix: stack.config.QUEUE_PREFIX });
    bus = new CommandBus(stack.database.db, queue, pino({ level: 'silent' }), 64);
    batch = new RecordBatch(stack.database.db, 64);
    admin = await credentialOf(ADMIN_TOKEN);
  });
  afterAll(async () => {
    await queue?.close();
    redis?.disconnect();
    await stack?.close();
  });

  async function credentialOf(secret: string): Promise<AccessTokenWithSubject> {
    const [found] = await findAccessTokensByHashes(stack.database.db, [hashSecret(secret)]);
    if (!found) throw new Error('no such credential');
    return found;
  }
  const audit: AuditContext = { actor: { id: 'admin', kind: 'service' }, tenant_ids: null, reason: null, adhoc_reason: null, custom_audit: null, request_id: 'req-1', source: 'http' };
  function record(credential: AccessTokenWithSubject, overrides: Partial<CommandRecord['command']> = {}): CommandRecord {
    const payload: Command = { type: 'tokens.delete', collection: 'bus', archived: false, token_ids: [randomUUID()] };
    return {
      command: { id: randomUUID(), type: payload.type, payload, payload_hash: 'h', submitter_id: credential.subject.id, idempotency_key: null, audit, ...overrides },
      credential,
    };
  }
  const transactionsOf = async (ids: string[]) =>
    Number((await sql<{ n: string }>`select count(distinct xmin::text) as n from commands where id = any(${ids}::uuid[])`.execute(stack.database.db)).rows[0]!.n);

  it('records commands submitted in one turn in one transaction, each with its own row', async () => {
    const records = Array.from({ length: 10 }, () => record(admin));
    const outcomes = await Promise.all(records.map((r) => batch.record(r)));
    outcomes.forEach((o, i) => {
      expect(o).toMatchObject({ credentialHolds: true, inserted: true, row: { id: records[i]!.command.id, state: 'queued', payload: records[i]!.command.payload, audit } });
    });
    expect(await transactionsOf(records.map((r) => r.command.id))).toBe(1);
  });

  it('records at most `max` commands per statement; with 1, each command is its own', async () => {
    const tenOf = async (recorder: RecordBatch) => {
      const ten = Array.from({ length: 10 }, () => record(admin));
      const outcomes = await Promise.all(ten.map((r) => recorder.record(r)));
      expect(outcomes.every((o) => o.credentialHolds && o.inserted)).toBe(true);
      return transactionsOf(ten.map((r) => r.command.id));
    };
    expect(await tenOf(new RecordBatch(stack.database.db, 4))).toBe(3);
    expect(await tenOf(new RecordBatch(stack.database.db, 1))).toBe(10);
  });

  it('records nothing for the one credential that no longer holds, and the others', async () => {
    const other = await subjectWithToken(stack, { id: `bus-${randomUUID().slice(0, 8)}`, kind: 'service', capabilities: ['tokens:write'] });
    const stale = await credentialOf(other.token);
    await upsertSubject(stack.database.db, { id: stale.subject.id, kind: 'service', domain_id: 'default', capabilities: ['tokens:read'] });
    const records = [record(admin), record(stale), record(admin)];
    const outcomes = await Promise.all(records.map((r) => batch.record(r)));
    expect(outcomes.map((o) => o.credentialHolds)).toEqual([true, false, true]);
    const stored = await sql<{ id: string }>`select id from commands where id = any(${records.map((r) => r.command.id)}::uuid[])`.execute(stack.database.db);
    expect(stored.rows.map((r) => r.id).sort()).toEqual([records[0]!.command.id, records[2]!.command.id].sort());
  });

  it('gives one idempotency key used twice in one batch one command', async () => {
    const key = `key-${randomUUID()}`;
    const [first, second] = [record(admin, { idempotency_key: key }), record(admin, { idempotency_key: key })];
    const outcomes = await Promise.all([batch.record(first), batch.record(second)]);
    expect(outcomes.map((o) => o.credentialHolds && o.inserted)).toEqual([true, false]);
    const ids = outcomes.map((o) => (o.credentialHolds ? o.row.id : undefined));
    expect(ids).toEqual([first.command.id, first.command.id]);
  });

  it('fails only the item that breaks the batch; the others are recorded', async () => {
    const [taken] = await Promise.all([batch.record(record(admin))]);
    const takenId = taken.credentialHolds ? taken.row.id : '';
    const records = [record(admin), record(admin, { id: takenId }), record(admin)];
    const settled = await Promise.allSettled(records.map((r) => batch.record(r)));
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((settled[1] as PromiseRejectedResult).reason)).toMatch(/duplicate key/);
    expect(await transactionsOf([records[0]!.command.id, records[2]!.command.id])).toBe(2);
  });

  it('adds the jobs of one turn each with its command ID, without a pipeline', async () => {
    const ids = Array.from({ length: 20 }, () => randomUUID());
    const pipeline = vi.spyOn(redis, 'pipeline');
    onTestFinished(() => pipeline.mockRestore());
    await Promise.all(ids.map((id) => bus.addJob({ command_id: id, short: true })));
    expect(pipeline).not.toHaveBeenCalled();
    const jobs = await Promise.all(ids.map((id) => queue.getJob(id)));
    expect(jobs.map((job) => job?.data)).toEqual(ids.map((id) => ({ command_id: id, short: true })));
  });

  it('gives a job alone the same name, ID and options as in a batch; adding it again changes nothing', async () => {
    const [alone, inBatch] = [randomUUID(), randomUUID()];
    await bus.addJob({ command_id: alone, short: true });
    await Promise.all([bus.addJob({ command_id: inBatch, short: false }), bus.addJob({ command_id: randomUUID(), short: true })]);
    const [one, other] = await Promise.all([queue.getJob(alone), queue.getJob(inBatch)]);
    expect(one?.id).toBe(alone);
    expect(one?.data).toEqual({ command_id: alone, short: true });
    expect(one?.name).toBe(other?.name);
    const { jobId: _a, ...optsAlone } = one!.opts;
    const { jobId: _b, ...optsInBatch } = other!.opts;
    expect(optsAlone).toEqual(optsInBatch);
    expect(optsAlone).toMatchObject({ ...COMMAND_JOB_OPTIONS });
    // added again alone: the same job, nothing new
    const before = await queue.getJobCounts('waiting');
    await bus.addJob({ command_id: alone, short: true });
    expect(await queue.getJobCounts('waiting')).toEqual(before);
    expect((await queue.getJob(alone))?.timestamp).toBe(one?.timestamp);
  });

  it('fails only the job that Redis refuses; the others of its batch are added', async () => {
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const add = queue.add.bind(queue);
    const refuse = vi.spyOn(queue, 'add').mockImplementation((name, data, opts) => (data.command_id === ids[1] ? Promise.reject(new Error('refused')) : add(name, data, opts)));
    onTestFinished(() => refuse.mockRestore());
    const settled = await Promise.allSettled(ids.map((id) => bus.addJob({ command_id: id, short: true })));
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    const jobs = await Promise.all(ids.map((id) => queue.getJob(id)));
    expect(jobs.map((job) => job?.id)).toEqual([ids[0], undefined, ids[2]]);
  });
});

describe('RECORD_BATCH_MAX=1: batching off', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { RECORD_BATCH_MAX: '1' } });
    await createCollection(stack, 'unbatched');
  });
  afterAll(() => stack?.close());

  it('records and answers each of many concurrent submissions, each by a statement of its own', async () => {
    const body = () => ({ type: 'tokens.delete', collection: 'unbatched', token_ids: [randomUUID()], reason: 'AppFunctionality' });
    const answers = await Promise.all(Array.from({ length: 12 }, () => call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: body() })));
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(202));
    const ids = answers.map((a) => a.body.job_id as string);
    expect(new Set(ids).size).toBe(12);
    const rows = await sql<{ n: string; transactions: string }>`select count(*) as n, count(distinct xmin::text) as transactions from commands where id = any(${ids}::uuid[])`.execute(
      stack.database.db,
    );
    expect(rows.rows[0]).toEqual({ n: '12', transactions: '12' });
  });
});
