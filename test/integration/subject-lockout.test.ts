import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RevocationEvent } from '../../contracts/index.js';
import { outboxEventsOf } from '../../db/repositories/outbox.repository.js';
import { seedNamedAccessTokens, seedTemporaryAccessTokens } from '../../db/repositories/seed.repository.js';
import { type ExecutionOutcome, executeCommand } from '../../worker/command-executor.js';
import { subjectLockoutHandler } from '../../worker/handlers/subject-lockout.handler.js';
import { subjectUnlockHandler } from '../../worker/handlers/subject-unlock.handler.js';
import { bearer, call, createCollection, subjectWithToken, uid, waitForEvents, waitForJob } from '../helpers/api.js';
import { commandQueue, resumeOnAnotherWorker, StepLog } from '../helpers/faults.js';
import { killChildren, spawnWorker } from '../helpers/processes.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Account lockout (SPEC §10, ASVS 7.4.2): `subject.lockout` disables the subject at the commit
 * of its first step (nothing it holds authenticates from then on, at every producer, the
 * credential cache included; no token is issued to it) and then revokes every access token it
 * holds in batches, with events and audit rows; `subject.unlock` enables it again.
 */

const COLLECTION = 'lockout_cards';
type Headers = Record<string, string>;
type EventOfType<T extends RevocationEvent['type']> = Extract<RevocationEvent, { type: T }>;

const sorted = (ids: Iterable<string>) => [...ids].sort();

describe('account lockout', () => {
  let stack: Stack;
  let steps: StepLog;

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, COLLECTION);
    steps = await StepLog.listen(stack.database.url);
  });
  afterAll(async () => {
    await steps?.close();
    await stack?.close();
  });

  const submit = (headers: Headers, body: unknown, extra: Headers = {}) => call(stack, 'POST', '/v1/commands', { headers: { ...headers, ...extra }, body });
  const lockout = (headers: Headers, subject: { kind: string; id: string }, extra: Headers = {}) => submit(headers, { type: 'subject.lockout', subject }, extra);
  const unlock = (headers: Headers, subject: { kind: string; id: string }) => submit(headers, { type: 'subject.unlock', subject });
  const authenticates = async (secret: string) => (await call(stack, 'GET', '/v1/audit?limit=1', { headers: bearer(secret) })).status === 200;
  const tokenIdsOf = async (subjectId: string) => (await stack.database.db.selectFrom('access_tokens').select('id').where('subject_id', '=', subjectId).execute()).map((r) => r.id);
  const commandsOf = async (subjectId: string) => Number((await sql<{ n: string }>`select count(*) as n from commands where submitter_id = ${subjectId}`.execute(stack.database.db)).rows[0]!.n);
  const cacheHits = async () => Number(/^revocation_credential_cache_lookups_total\{outcome="hit"\} (\d+)/m.exec(await (await fetch(`${stack.producer.url}/metrics`)).text())?.[1] ?? 0);
  const issue = (subjectId: string, body: { temporary: boolean; name?: string }, headers: Headers = stack.admin) => call(stack, 'POST', `/v1/subjects/${subjectId}/tokens`, { headers, body });

  async function eventsOf(jobId: string): Promise<RevocationEvent[]> {
    const events = await waitForEvents(stack, (es) => es.some((e) => e.job_id === jobId && (e.type === 'command.succeeded' || e.type === 'command.failed')));
    return events.filter((e) => e.job_id === jobId);
  }
  const ofType = <T extends RevocationEvent['type']>(events: RevocationEvent[], type: T) => events.filter((e): e is EventOfType<T> => e.type === type);

  /** A user holding two named and three temporary tokens; returns their secrets and IDs. */
  async function userWithTokens(spec: { domain_id?: string; capabilities?: string[] } = {}) {
    const made = await subjectWithToken(stack, { id: uid('alice'), kind: 'user', capabilities: ['tokens:write'], ...spec });
    const id = made.subject.id as string;
    const secrets = [made.token];
    const tokenIds = [made.tokenId];
    for (const body of [{ temporary: false, name: 'laptop' }, { temporary: true }, { temporary: true }, { temporary: true }]) {
      const r = await issue(id, body);
      expect(r.status).toBe(201);
      secrets.push(r.body.token);
      tokenIds.push(r.body.token_id);
    }
    return { id, subject: { kind: 'user', id }, headers: made.headers, secrets, tokenIds };
  }

  it('disables the subject at the commit of its first step: no token of it authenticates (a cached one on a command route neither), none is issued; then every token is revoked, with events and audit rows', async () => {
    const alice = await userWithTokens();
    for (const secret of alice.secrets) expect(await authenticates(secret)).toBe(true);
    // alice's first token enters the credential cache of the command routes
    const first = await submit(alice.headers, { type: 'tokens.delete', collection: COLLECTION, tags: ['nothing'], reason: 'AppFunctionality' });
    expect(first.status).toBe(202);
    expect(await commandsOf(alice.id)).toBe(1);

    // a token row held by another transaction: the first revocation batch waits for it, the disabling step does not
    const holder = new pg.Client({ connectionString: stack.database.url, application_name: 'lockout-holder' });
    await holder.connect();
    await holder.query('begin');
    await holder.query('select id from access_tokens where id = $1 for update', [alice.tokenIds[1]]);
    let jobId: string;
    try {
      const accepted = await lockout(stack.admin, alice.subject, { 'x-request-id': 'lockout-req-1' });
      expect(accepted.status).toBe(202);
      jobId = accepted.body.job_id;
      await steps.steps(jobId, 1);

      // disabled, every token still stored, none authenticates
      const view = await call(stack, 'GET', `/v1/subjects/${alice.id}`, { headers: stack.admin });
      expect(view.status).toBe(200);
      expect(view.body.disabled_at).toEqual(expect.any(String));
      expect(sorted(await tokenIdsOf(alice.id))).toEqual(sorted(alice.tokenIds));
      // first the cached token, on the command route (a refused lookup elsewhere would drop it from the cache)
      const hits = await cacheHits();
      const cached = await submit(alice.headers, { type: 'tokens.delete', collection: COLLECTION, tags: ['nothing'], reason: 'AppFunctionality' });
      expect(cached.status).toBe(401);
      expect(cached.body.error_code).toBe('PV1005');
      expect(await cacheHits()).toBe(hits + 1); // served from the cache, refused by the recording statement's re-check
      expect(await commandsOf(alice.id)).toBe(1);
      for (const secret of alice.secrets) expect(await authenticates(secret)).toBe(false);
      const verified = await call(stack, 'GET', '/v1/auth/verify', { headers: { ...stack.admin, 'x-subject-token': alice.secrets[2]! } });
      expect(verified.status).toBe(404);
      expect(verified.body.context).toEqual({ reason: 'revoked' });
      const keystone = await call(stack, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': stack.admin.authorization!.slice('Bearer '.length), 'x-subject-token': alice.secrets[0]! } });
      expect(keystone.status).toBe(404);

      // no token is issued to it, named or temporary
      for (const body of [{ temporary: false }, { temporary: true }]) {
        const refused = await issue(alice.id, body);
        expect(refused.status).toBe(409);
        expect(refused.body).toMatchObject({ error_code: 'PV3015', context: { subject_id: alice.id } });
      }
      // an unlock now would leave old tokens alive: refused until the lockout has ended
      const early = await unlock(stack.admin, alice.subject);
      expect(early.status).toBe(409);
      expect(early.body).toMatchObject({ error_code: 'PV3016', context: { subject_id: alice.id, job_id: jobId } });
      expect((await call(stack, 'GET', `/v1/jobs/${jobId}`, { headers: stack.admin })).body).toMatchObject({ state: 'running', progress: { processed: 0 } });
    } finally {
      await holder.query('commit');
      await holder.end();
    }

    const done = await waitForJob(stack, jobId);
    expect(done).toMatchObject({ state: 'succeeded', result: { subject: alice.subject, revoked: 5 }, progress: { processed: 5, total: 5 }, error: null });
    expect(await tokenIdsOf(alice.id)).toEqual([]);
    expect(await issue(alice.id, { temporary: false }).then((r) => r.status)).toBe(409);

    // events: locked first, then the revoked token IDs (one batch), then the command's end
    const events = await eventsOf(jobId);
    expect(events.map((e) => e.type)).toEqual(['subject.locked', 'access_token.revoked', 'command.succeeded']);
    const subject = { id: alice.id, kind: 'user', domain_id: 'default' };
    const disabledAt = (await call(stack, 'GET', `/v1/subjects/${alice.id}`, { headers: stack.admin })).body.disabled_at;
    expect(ofType(events, 'subject.locked')[0]!.data).toEqual({ subject, disabled_at: disabledAt });
    const revoked = ofType(events, 'access_token.revoked')[0]!.data as { token_ids: string[] };
    expect({ ...revoked, token_ids: sorted(revoked.token_ids) }).toEqual({ token_ids: sorted(alice.tokenIds), subject, batch: { index: 0, last: true } });
    expect(ofType(events, 'command.succeeded')[0]!.data).toEqual({ command_type: 'subject.lockout', result: { subject: alice.subject, revoked: 5 } });
    for (const event of events) expect(event.audit).toMatchObject({ actor: { id: 'admin', kind: 'service' }, request_id: 'lockout-req-1', source: 'http' });

    // audit: the lockout, then the batch with every token ID
    const audit = await stack.database.db.selectFrom('audit_log').selectAll().where('command_id', '=', jobId).orderBy('id').execute();
    expect(audit.map((r) => r.action)).toEqual(['subject.locked', 'access_token.revoked']);
    expect(audit[0]).toMatchObject({ actor_id: 'admin', data: { subject, disabled_at: disabledAt } });
    expect(audit[1]).toMatchObject({ actor_id: 'admin', collection: null, data: { subject, batch: { index: 0, size: 5 } } });
    expect(sorted(audit[1]!.data.token_ids as string[])).toEqual(sorted(alice.tokenIds));
  });

  it('unlock enables the subject again: its old tokens stay dead, a new one authenticates', async () => {
    const bob = await userWithTokens();
    const locked = await lockout(stack.admin, bob.subject, { prefer: 'wait=10' });
    expect(locked.body).toMatchObject({ state: 'succeeded', result: { revoked: 5 } });

    const unlocked = await unlock(stack.admin, bob.subject);
    expect(unlocked.status).toBe(202);
    const done = await waitForJob(stack, unlocked.body.job_id);
    expect(done).toMatchObject({ state: 'succeeded', result: { subject: bob.subject } });
    expect((await call(stack, 'GET', `/v1/subjects/${bob.id}`, { headers: stack.admin })).body.disabled_at).toBeNull();
    for (const secret of bob.secrets) expect(await authenticates(secret)).toBe(false);
    expect(await tokenIdsOf(bob.id)).toEqual([]);

    const fresh = await issue(bob.id, { temporary: false });
    expect(fresh.status).toBe(201);
    expect(await authenticates(fresh.body.token)).toBe(true);

    const events = await eventsOf(unlocked.body.job_id);
    expect(events.map((e) => e.type)).toEqual(['subject.unlocked', 'command.succeeded']);
    expect(ofType(events, 'subject.unlocked')[0]!.data).toEqual({ subject: { id: bob.id, kind: 'user', domain_id: 'default' } });
    const audit = await stack.database.db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', unlocked.body.job_id).execute();
    expect(audit).toEqual([{ action: 'subject.unlocked', data: { subject: { id: bob.id, kind: 'user', domain_id: 'default' } } }]);
  });

  it('a subject holding no token is locked out with revoked: 0; a repeated lockout keeps the first instant', async () => {
    const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { id: uid('svc'), kind: 'service' } });
    const subject = { kind: 'service', id: created.body.id as string };
    const first = await lockout(stack.admin, subject, { prefer: 'wait=10' });
    expect(first.body).toMatchObject({ state: 'succeeded', result: { subject, revoked: 0 } });
    const at = (await call(stack, 'GET', `/v1/subjects/${subject.id}`, { headers: stack.admin })).body.disabled_at;
    expect((await eventsOf(first.body.job_id)).map((e) => e.type)).toEqual(['subject.locked', 'command.succeeded']);
    const again = await lockout(stack.admin, subject, { prefer: 'wait=10' });
    expect(again.body).toMatchObject({ state: 'succeeded', result: { subject, revoked: 0 } });
    expect((await call(stack, 'GET', `/v1/subjects/${subject.id}`, { headers: stack.admin })).body.disabled_at).toBe(at);
  });

  describe('who may lock a subject out or unlock it', () => {
    let secAdmin: Headers;
    let otherDomainSecAdmin: Headers;
    let plain: Awaited<ReturnType<typeof subjectWithToken>>;

    beforeAll(async () => {
      secAdmin = (await subjectWithToken(stack, { id: uid('sec'), kind: 'user', capabilities: ['security_admin'] })).headers;
      otherDomainSecAdmin = (await subjectWithToken(stack, { id: uid('sec-other'), kind: 'user', domain_id: 'elsewhere', capabilities: ['security_admin', 'tokens:manage', 'tokens:write'] })).headers;
      plain = await subjectWithToken(stack, { id: uid('plain'), kind: 'user' });
    });

    it('subjects:admin: any subject', async () => {
      const target = await userWithTokens({ domain_id: 'elsewhere' });
      const r = await lockout(stack.admin, target.subject, { prefer: 'wait=10' });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ state: 'succeeded', result: { revoked: 5 } });
      expect((await unlock(stack.admin, target.subject)).status).toBe(202);
    });

    it('security_admin: a subject of its own domain, lockout and unlock', async () => {
      const target = await userWithTokens();
      const r = await lockout(secAdmin, target.subject, { prefer: 'wait=10' });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ state: 'succeeded', result: { subject: target.subject, revoked: 5 } });
      const u = await unlock(secAdmin, target.subject);
      expect(u.status).toBe(202);
      expect(await waitForJob(stack, u.body.job_id, secAdmin)).toMatchObject({ state: 'succeeded' });
    });

    it('security_admin of another domain: 403, nothing recorded, the subject untouched', async () => {
      const target = await userWithTokens();
      for (const send of [lockout, unlock]) {
        const r = await send(otherDomainSecAdmin, target.subject);
        expect(r.status).toBe(403);
        expect(r.body).toMatchObject({ error_code: 'PV1007', message: 'The subject belongs to another domain.' });
      }
      expect(await authenticates(target.secrets[0]!)).toBe(true);
      expect(await tokenIdsOf(target.id)).toHaveLength(5);
    });

    it('a user without subjects:admin or security_admin: 403, even on itself or an unknown subject', async () => {
      const target = await userWithTokens();
      for (const subject of [target.subject, { kind: 'user', id: plain.subject.id as string }, { kind: 'user', id: uid('nobody') }]) {
        for (const send of [lockout, unlock]) {
          const r = await send(plain.headers, subject);
          expect(r.status).toBe(403);
          expect(r.body).toMatchObject({ error_code: 'PV1007', context: { capability: 'security_admin' } });
        }
      }
      expect(await commandsOf(plain.subject.id)).toBe(0);
      expect(await authenticates(target.secrets[0]!)).toBe(true);
    });

    it('an unknown subject, or a subject of another kind: 404', async () => {
      const target = await userWithTokens();
      for (const [headers, subject] of [
        [stack.admin, { kind: 'user', id: uid('nobody') }],
        [stack.admin, { kind: 'provider', id: target.id }],
        [secAdmin, { kind: 'user', id: uid('nobody') }],
      ] as const) {
        for (const send of [lockout, unlock]) {
          const r = await send(headers, subject);
          expect(r.status).toBe(404);
          expect(r.body).toMatchObject({ error_code: 'PV3003', context: { subject_id: subject.id } });
        }
      }
    });
  });

  it('the same Idempotency-Key replays the lockout: one job, counted once', async () => {
    const carol = await userWithTokens();
    const key = uid('key');
    const a = await lockout(stack.admin, carol.subject, { 'idempotency-key': key, prefer: 'wait=10' });
    expect(a.body).toMatchObject({ state: 'succeeded', result: { revoked: 5 } });
    const b = await lockout(stack.admin, carol.subject, { 'idempotency-key': key });
    expect(b.status).toBe(200);
    expect(b.headers['idempotent-replayed']).toBe('true');
    expect(b.body).toMatchObject({ job_id: a.body.job_id, result: { revoked: 5 } });
    const c = await lockout(stack.admin, carol.subject, { 'idempotency-key': key, 'x-tenant-id': 'x' });
    expect(c.status).toBe(422); // the same key for another command (another scope)
  });
});

describe('a lockout delivered again and again', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(() => stack?.close());

  it('resumes from each committed batch without counting or announcing a token twice, and a delivery of the ended command changes nothing', async () => {
    const dave = await subjectWithToken(stack, { id: uid('dave'), kind: 'user' });
    for (let i = 0; i < 4; i++) expect((await call(stack, 'POST', `/v1/subjects/${dave.subject.id}/tokens`, { headers: stack.admin, body: { temporary: i % 2 === 0 } })).status).toBe(201);
    const db = stack.database.db;
    const tokenIds = (await db.selectFrom('access_tokens').select('id').where('subject_id', '=', dave.subject.id).execute()).map((r) => r.id);
    expect(tokenIds).toHaveLength(5);
    const accepted = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'subject.lockout', subject: { kind: 'user', id: dave.subject.id } } });
    expect(accepted.status).toBe(202);
    const id = accepted.body.job_id as string;

    // each delivery is released after its first committed step (as at a shutdown), as if the job were redelivered every time
    const deps = { db, logger: pino({ level: 'silent' }), settings: { deleteBatchSize: 2 } };
    let outcome: ExecutionOutcome | undefined;
    let deliveries = 0;
    while (!outcome) {
      deliveries++;
      const stop = new AbortController();
      stop.abort();
      const delivered = await executeCommand(deps, id, { finalAttempt: false, stop: stop.signal });
      if (delivered.state !== 'released') outcome = delivered;
    }
    // disable, then batches of 2, 2 and 1
    expect(deliveries).toBe(4);
    expect(outcome).toEqual({ state: 'succeeded', result: { subject: { kind: 'user', id: dave.subject.id }, revoked: 5 } });

    const outbox = () => outboxEventsOf(db, id);
    const events = await outbox();
    const revoked = events
      .filter((e): e is EventOfType<'access_token.revoked'> => e.type === 'access_token.revoked')
      .map((e) => e.data as { token_ids: string[]; batch: { index: number; last: boolean } });
    // token-ID ranges, one after the other (not sorted within a batch)
    expect(revoked.map((d) => d.token_ids.length)).toEqual([2, 2, 1]);
    expect(revoked.flatMap((d) => sorted(d.token_ids))).toEqual(sorted(tokenIds));
    for (let i = 1; i < revoked.length; i++) expect(sorted(revoked[i - 1]!.token_ids).at(-1)! < sorted(revoked[i]!.token_ids)[0]!).toBe(true);
    expect(revoked.map((d) => d.batch)).toEqual([
      { index: 0, last: false },
      { index: 1, last: false },
      { index: 2, last: true },
    ]);
    const audit = await db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', id).orderBy('id').execute();
    expect(audit.map((r) => r.action)).toEqual(['subject.locked', 'access_token.revoked', 'access_token.revoked', 'access_token.revoked']);
    expect(audit.slice(1).map((r) => r.data.token_ids)).toEqual(revoked.map((d) => d.token_ids));
    const job = (await call(stack, 'GET', `/v1/jobs/${id}`, { headers: stack.admin })).body;
    expect(job).toMatchObject({ state: 'succeeded', attempts: 4, progress: { processed: 5, total: 5 } });

    // the ended command delivered again: its stored result, nothing written
    const again = await executeCommand(deps, id, { finalAttempt: false });
    expect(again).toEqual(outcome);
    expect(await outbox()).toEqual(events);
    expect((await call(stack, 'GET', `/v1/jobs/${id}`, { headers: stack.admin })).body.attempts).toBe(4);
  });
});

describe('an unlock while a lockout of the subject has not ended', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(() => stack?.close());

  it('is refused with PV3016 naming the lockout job, at acceptance and again when it runs', async () => {
    const gina = await subjectWithToken(stack, { id: uid('gina'), kind: 'user' });
    const subject = { kind: 'user' as const, id: gina.subject.id as string };
    const queued = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'subject.lockout', subject } });
    expect(queued.status).toBe(202); // no worker: it stays queued

    const refused = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'subject.unlock', subject } });
    expect(refused.status).toBe(409);
    expect(refused.body).toEqual({ error_code: 'PV3016', message: expect.stringMatching(/lockout/), context: { subject_id: subject.id, job_id: queued.body.job_id } });

    // an unlock accepted before the lockout was: its worker finds the lockout unfinished
    const audit = { actor: { id: 'admin', kind: 'service' as const }, tenant_ids: null, reason: null, adhoc_reason: null, custom_audit: null, request_id: 'r', source: 'http' as const };
    const run = stack.database.db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute((trx) =>
        subjectUnlockHandler.step({
          trx,
          commandId: randomUUID(),
          command: { type: 'subject.unlock', subject },
          audit,
          checkpoint: null,
          progress: null,
          total: null,
          settings: { deleteBatchSize: 10 },
        }),
      );
    await expect(run).rejects.toMatchObject({ code: 'PV3016', context: { subject_id: subject.id, job_id: queued.body.job_id } });
  });
});

describe('a lockout whose remaining tokens a concurrent revoke took between two batches', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(() => stack?.close());

  it('ends with an access_token.revoked event marked last (with no token IDs), and counts only what it revoked', async () => {
    const frank = await subjectWithToken(stack, { id: uid('frank'), kind: 'user' });
    for (let i = 0; i < 2; i++) expect((await call(stack, 'POST', `/v1/subjects/${frank.subject.id}/tokens`, { headers: stack.admin, body: { temporary: false } })).status).toBe(201);
    const db = stack.database.db;
    const audit = { actor: { id: 'admin', kind: 'service' as const }, tenant_ids: null, reason: null, adhoc_reason: null, custom_audit: null, request_id: 'r', source: 'http' as const };
    const command = { type: 'subject.lockout' as const, subject: { kind: 'user' as const, id: frank.subject.id as string } };
    const commandId = randomUUID();
    await db
      .insertInto('commands')
      .values({ id: commandId, type: command.type, payload: JSON.stringify(command), payload_hash: 'h', submitter_id: 'admin', audit: JSON.stringify(audit) })
      .execute();
    const step = (checkpoint: Record<string, unknown> | null) =>
      db
        .transaction()
        .setIsolationLevel('repeatable read')
        .execute((trx) => subjectLockoutHandler.step({ trx, commandId, command, audit, checkpoint, progress: null, total: null, settings: { deleteBatchSize: 2 } }));
    const eventsOf = (outcome: Awaited<ReturnType<typeof step>>) => (outcome.outbox ?? []).map((e) => (JSON.parse(e.event) as { data: unknown }).data);

    const disabled = await step(null);
    expect(disabled).toMatchObject({ done: false, progress: { processed: 0, total: null } });
    const first = await step(disabled.done ? null : disabled.checkpoint);
    expect(first).toMatchObject({ done: false, progress: { processed: 2 } });
    expect(eventsOf(first)).toEqual([expect.objectContaining({ batch: { index: 0, last: false } })]);
    // the third token goes another way before the second batch
    await db.deleteFrom('access_tokens').where('subject_id', '=', frank.subject.id).execute();

    const second = await step(first.done ? null : first.checkpoint);
    expect(second).toMatchObject({ done: true, result: { subject: command.subject, revoked: 2 } });
    expect(eventsOf(second)).toEqual([{ token_ids: [], subject: { id: frank.subject.id, kind: 'user', domain_id: 'default' }, batch: { index: 1, last: true } }]);
  });
});

describe('a lockout whose worker process is killed -9 in the middle', () => {
  const BATCH = 500;
  const NAMED = 10_000;
  const TEMPORARY = 10_000;
  let stack: Stack;
  let steps: StepLog;
  let commands: ReturnType<typeof commandQueue>;

  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { DELETE_BATCH_SIZE: String(BATCH) } });
    steps = await StepLog.listen(stack.database.url);
    commands = commandQueue(stack.config.REDIS_URL, stack.config.QUEUE_PREFIX);
  });
  afterAll(async () => {
    await killChildren();
    await steps?.close();
    await commands?.close();
    await stack?.close();
  });

  it('is disabled from its first commit and resumes after the last committed batch: every token revoked once, counted once, announced once', async () => {
    const db = stack.database.db;
    const victim = await subjectWithToken(stack, { id: uid('erin'), kind: 'user' });
    const id = victim.subject.id as string;
    await seedNamedAccessTokens(db, id, NAMED - 1);
    await seedTemporaryAccessTokens(db, id, TEMPORARY, 3600);
    const all = (await db.selectFrom('access_tokens').select('id').where('subject_id', '=', id).execute()).map((r) => r.id);
    expect(all).toHaveLength(NAMED + TEMPORARY);

    const first = await spawnWorker(stack.config);
    const accepted = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'subject.lockout', subject: { kind: 'user', id } } });
    expect(accepted.status).toBe(202);
    const jobId = accepted.body.job_id as string;
    await steps.steps(jobId, 6); // disabled, then five batches
    expect((await first.kill()).signal).toBe('SIGKILL');

    // mid-way: running, disabled, part of the tokens revoked, and the database agrees
    const midway = (await call(stack, 'GET', `/v1/jobs/${jobId}`, { headers: stack.admin })).body;
    expect(midway).toMatchObject({ state: 'running', result: null });
    const processed = midway.progress.processed as number;
    expect(processed).toBeGreaterThanOrEqual(5 * BATCH);
    expect(processed).toBeLessThan(all.length);
    expect(processed % BATCH).toBe(0);
    const left = (await db.selectFrom('access_tokens').select('id').where('subject_id', '=', id).execute()).length;
    expect(left).toBe(all.length - processed);
    expect(await call(stack, 'GET', '/v1/audit?limit=1', { headers: victim.headers }).then((r) => r.status)).toBe(401);

    await resumeOnAnotherWorker(stack, commands.queue, jobId);

    const done = await waitForJob(stack, jobId, stack.admin, 60_000);
    expect(done).toMatchObject({ state: 'succeeded', result: { subject: { kind: 'user', id }, revoked: all.length }, progress: { processed: all.length, total: all.length } });
    expect(done.attempts).toBeGreaterThanOrEqual(2);
    expect(await db.selectFrom('access_tokens').select('id').where('subject_id', '=', id).execute()).toEqual([]);

    // audit and outbox: every token ID exactly once, batch indexes 0..n-1, one last
    const audit = await db.selectFrom('audit_log').select(['action', 'data']).where('command_id', '=', jobId).orderBy('id').execute();
    expect(audit.filter((r) => r.action === 'subject.locked')).toHaveLength(1);
    const audited = audit.flatMap((r) => (r.data.token_ids as string[] | undefined) ?? []);
    expect(audited).toHaveLength(all.length);
    expect(new Set(audited)).toEqual(new Set(all));
    const outbox = await outboxEventsOf(db, jobId);
    expect(outbox.filter((e) => e.type === 'subject.locked')).toHaveLength(1);
    const batches = outbox.filter((e) => e.type === 'access_token.revoked').map((e) => e.data as { token_ids: string[]; batch: { index: number; last: boolean } });
    const announced = batches.flatMap((d) => d.token_ids);
    expect(announced).toHaveLength(all.length);
    expect(new Set(announced)).toEqual(new Set(all));
    expect(batches.map((d) => d.batch.index)).toEqual(batches.map((_, i) => i));
    expect(batches.filter((d) => d.batch.last).map((d) => d.batch.index)).toEqual([batches.length - 1]);
    expect(outbox.filter((e) => e.type === 'command.succeeded').map((e) => e.data)).toEqual([{ command_type: 'subject.lockout', result: { subject: { kind: 'user', id }, revoked: all.length } }]);
  }, 120_000);
});
