import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeJobCursor, JobPage, type JobView } from '../../contracts/index.js';
import { call, createCollection, subjectWithToken, uid, waitForJob } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * GET /v1/jobs (SPEC §10): the jobs the caller may see (its own; every job for subjects:admin),
 * newest first, a page at a time behind an opaque cursor, filtered by state, type and since.
 */

type Principal = Awaited<ReturnType<typeof subjectWithToken>>;

const AUDIT = { actor: { id: 'seed', kind: 'service' }, tenant_ids: null, reason: 'AppFunctionality', adhoc_reason: null, custom_audit: null, request_id: 'seed', source: 'http' };

describe('GET /v1/jobs', () => {
  const collection = 'jobs_list';
  let stack: Stack;
  /** A user with tokens:write: two failed deletes and a revoke-all of its own tokens. */
  let alice: Principal;
  /** A user with one revoke-all of its own tokens. */
  let bob: Principal;
  /** A user who submitted nothing. */
  let carol: Principal;
  const aliceJobs: JobView[] = [];
  let bobJob: JobView;

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, collection);
    [alice, bob, carol] = await Promise.all([
      subjectWithToken(stack, { id: uid('alice'), kind: 'user', capabilities: ['tokens:write'] }),
      subjectWithToken(stack, { id: uid('bob'), kind: 'user' }),
      subjectWithToken(stack, { id: uid('carol'), kind: 'user' }),
    ]);
    // one at a time: each job is newer than the one before
    for (const body of [failingDelete(), revokeAllOf(alice.subject.id), failingDelete()]) aliceJobs.push(await submitAndWait(alice, body));
    bobJob = await submitAndWait(bob, revokeAllOf(bob.subject.id));
    expect(aliceJobs.map((j) => j.state)).toEqual(['failed', 'succeeded', 'failed']);
    // the first job of alice's at midnight UTC, 2021-06-01: the `since` boundary
    await sql`update commands set created_at = '2021-06-01T00:00:00Z' where id = ${aliceJobs[0]!.job_id}`.execute(stack.database.db);
    aliceJobs[0] = (await call(stack, 'GET', `/v1/jobs/${aliceJobs[0]!.job_id}`, { headers: alice.headers })).body;
  });
  afterAll(() => stack?.close());

  const failingDelete = () => ({ type: 'tokens.delete', collection, tags: [uid('nothing')], reason: 'AppFunctionality' });
  const revokeAllOf = (id: string) => ({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id } });

  async function submit(who: Principal, body: unknown): Promise<JobView> {
    const r = await call(stack, 'POST', '/v1/commands', { headers: who.headers, body });
    if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  async function submitAndWait(who: Principal, body: unknown): Promise<JobView> {
    return waitForJob(stack, (await submit(who, body)).job_id, who.headers);
  }

  /** One page, checked against the contract. */
  async function list(headers: Record<string, string>, query = ''): Promise<JobPage> {
    const r = await call(stack, 'GET', `/v1/jobs${query}`, { headers });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return JobPage.parse(r.body);
  }

  /** Every page, following next_cursor; `between` runs before each next page is asked for. */
  async function listAll(headers: Record<string, string>, query: Record<string, string>, between?: () => Promise<void>): Promise<{ jobs: JobView[]; pages: number }> {
    const jobs: JobView[] = [];
    let pages = 0;
    let cursor: string | null = null;
    do {
      if (cursor !== null) await between?.();
      const page = await list(headers, `?${new URLSearchParams({ ...query, ...(cursor !== null && { cursor }) }).toString()}`);
      pages += 1;
      jobs.push(...page.jobs);
      cursor = page.next_cursor;
    } while (cursor !== null);
    return { jobs, pages };
  }

  const ids = (jobs: readonly JobView[]) => jobs.map((j) => j.job_id);
  const newestFirst = (jobs: readonly JobView[]) => [...jobs].reverse();

  /** `n` finished commands of `submitterId`, written straight to the table, one a second from `from` on. */
  async function seedCommands(submitterId: string, n: number, from: string): Promise<void> {
    await sql`
      insert into commands (id, type, payload, payload_hash, submitter_id, audit, state, attempts, result, created_at, started_at, finished_at)
      select gen_random_uuid(), 'temporary_tokens.revoke_all', ${JSON.stringify(revokeAllOf(submitterId))}::jsonb, 'seeded', ${submitterId}, ${JSON.stringify(AUDIT)}::jsonb,
        'succeeded', 1, '{}'::jsonb, t, t, t
      from generate_series(1, ${n}) g, lateral (select ${from}::timestamptz + make_interval(secs => g) as t) s`.execute(stack.database.db);
  }

  describe('who sees what', () => {
    it('a subject sees exactly the jobs it submitted, newest first, as GET /v1/jobs/{id} shows them', async () => {
      const page = await list(alice.headers);

      expect(page).toEqual({ jobs: newestFirst(aliceJobs), next_cursor: null });
      for (const job of page.jobs) expect((await call(stack, 'GET', `/v1/jobs/${job.job_id}`, { headers: alice.headers })).body).toEqual(job);
      expect(await list(bob.headers)).toEqual({ jobs: [bobJob], next_cursor: null });
    });

    it('a subject that submitted nothing gets an empty page: it learns of nobody else’s jobs', async () => {
      expect(await list(carol.headers)).toEqual({ jobs: [], next_cursor: null });
      expect(await list(carol.headers, '?state=failed')).toEqual({ jobs: [], next_cursor: null });
    });

    it('subjects:admin sees every subject’s jobs', async () => {
      const { jobs } = await listAll(stack.admin, { limit: '500' });

      expect(ids(jobs)).toEqual(expect.arrayContaining([...ids(aliceJobs), bobJob.job_id]));
      const created = jobs.map((j) => Date.parse(j.created_at));
      expect(created).toEqual([...created].sort((a, b) => b - a));
    });

    it('a subject holding subjects:admin sees every job too; tokens:manage (over other users’ tokens) does not widen the list', async () => {
      const otherAdmin = await subjectWithToken(stack, { id: uid('admin2'), kind: 'service', capabilities: ['subjects:admin'] });
      const manager = await subjectWithToken(stack, { id: uid('manager'), kind: 'service', capabilities: ['tokens:manage', 'tokens:write', 'security_admin'] });

      expect(ids((await listAll(otherAdmin.headers, { limit: '500' })).jobs)).toEqual(expect.arrayContaining([...ids(aliceJobs), bobJob.job_id]));
      expect(await list(manager.headers)).toEqual({ jobs: [], next_cursor: null });
    });
  });

  describe('filters', () => {
    it('state: only jobs in that state, for a subject and for the admin', async () => {
      expect(ids((await list(alice.headers, '?state=failed')).jobs)).toEqual([aliceJobs[2]!.job_id, aliceJobs[0]!.job_id]);
      expect(ids((await list(alice.headers, '?state=succeeded')).jobs)).toEqual([aliceJobs[1]!.job_id]);
      expect((await list(alice.headers, '?state=queued')).jobs).toEqual([]);

      const failed = (await listAll(stack.admin, { state: 'failed', limit: '500' })).jobs;
      expect(failed.every((j) => j.state === 'failed')).toBe(true);
      expect(ids(failed)).toEqual(expect.arrayContaining([aliceJobs[0]!.job_id, aliceJobs[2]!.job_id]));
      expect(ids(failed)).not.toContain(bobJob.job_id);
    });

    it('type: only commands of that type; combined with state, both hold', async () => {
      expect(ids((await list(alice.headers, '?type=temporary_tokens.revoke_all')).jobs)).toEqual([aliceJobs[1]!.job_id]);
      expect(ids((await list(alice.headers, '?type=tokens.delete')).jobs)).toEqual([aliceJobs[2]!.job_id, aliceJobs[0]!.job_id]);
      expect((await list(alice.headers, '?type=tokens.delete&state=succeeded')).jobs).toEqual([]);
      expect((await list(alice.headers, '?type=tokens.rotate')).jobs).toEqual([]);
    });

    it('since: jobs created at or after it, a date-time with any offset or a date (midnight UTC)', async () => {
      const all = ids(newestFirst(aliceJobs));
      const recent = all.slice(0, 2);
      // the first job was created at 2021-06-01T00:00:00Z exactly
      expect(ids((await list(alice.headers, '?since=2021-06-01T00:00:00Z')).jobs)).toEqual(all);
      expect(ids((await list(alice.headers, `?since=${encodeURIComponent('2021-06-01T02:00:00+02:00')}`)).jobs)).toEqual(all);
      expect(ids((await list(alice.headers, '?since=2021-06-01')).jobs)).toEqual(all);
      expect(ids((await list(alice.headers, '?since=2021-06-01T00:00:00.000001Z')).jobs)).toEqual(recent);
      expect(ids((await list(alice.headers, '?since=2021-06-02')).jobs)).toEqual(recent);
      expect((await list(alice.headers, '?since=2999-01-01')).jobs).toEqual([]);
    });
  });

  describe('pages', () => {
    it('limit defaults to 50 and may be 500; next_cursor leads through every job once, null on the last page (even a full one)', async () => {
      const bulk = await subjectWithToken(stack, { id: uid('bulk'), kind: 'service' });
      await seedCommands(bulk.subject.id, 520, '2022-01-01T00:00:00Z');

      const first = await list(bulk.headers);
      expect(first.jobs).toHaveLength(50);
      expect(first.next_cursor).toEqual(expect.any(String));
      const big = await list(bulk.headers, '?limit=500');
      expect(big.jobs).toHaveLength(500);
      expect(ids(big.jobs.slice(0, 50))).toEqual(ids(first.jobs));
      const rest = await list(bulk.headers, `?limit=500&cursor=${big.next_cursor}`);
      expect(rest).toMatchObject({ next_cursor: null });
      expect(rest.jobs).toHaveLength(20);
      const all = [...big.jobs, ...rest.jobs];
      expect(new Set(ids(all)).size).toBe(520);
      expect(all.map((j) => j.created_at)).toEqual(
        all
          .map((j) => j.created_at)
          .sort()
          .reverse(),
      );

      // exactly a page left: the page says it is the last
      const last20 = await list(bulk.headers, `?limit=20&cursor=${big.next_cursor}`);
      expect(last20.next_cursor).toBeNull();
      expect(ids(last20.jobs)).toEqual(ids(rest.jobs));
    });

    it('pages through jobs created in the same microsecond and a microsecond apart without a duplicate or a gap, while new jobs are submitted', async () => {
      const dave = await subjectWithToken(stack, { id: uid('dave'), kind: 'user' });
      const made: JobView[] = [];
      for (let i = 0; i < 15; i++) made.push(await submit(dave, revokeAllOf(dave.subject.id)));
      // in threes: three jobs share each microsecond, the next three are one microsecond younger
      await sql`
        update commands c set created_at = '2023-03-01T10:00:00Z'::timestamptz + make_interval(secs => (n.i / 3) * 0.000001)
        from (select id, (row_number() over (order by id) - 1)::int as i from commands where submitter_id = ${dave.subject.id}) n
        where c.id = n.id`.execute(stack.database.db);
      const before = (await list(dave.headers, '?limit=500')).jobs;
      expect(before).toHaveLength(15);
      // five microseconds in one millisecond: the views (JS dates) show one created_at for all fifteen
      expect(new Set(before.map((j) => j.created_at)).size).toBe(1);
      let submittedBetween = 0;

      const paged = await listAll(dave.headers, { limit: '4' }, async () => {
        await submit(dave, revokeAllOf(dave.subject.id));
        submittedBetween += 1;
      });

      expect(paged.pages).toBe(4);
      expect(submittedBetween).toBe(3);
      expect(ids(paged.jobs)).toEqual(ids(before));
      expect(new Set(ids(paged.jobs)).size).toBe(15);
      // the jobs submitted meanwhile are newer than the first page: they lead the next listing
      const after = (await list(dave.headers, '?limit=500')).jobs;
      expect(after).toHaveLength(18);
      expect(ids(after.slice(3))).toEqual(ids(before));
    });

    it('with a filter, the cursor carries on within the filter', async () => {
      const erin = await subjectWithToken(stack, { id: uid('erin'), kind: 'user', capabilities: ['tokens:write'] });
      const failed: string[] = [];
      for (let i = 0; i < 5; i++) {
        failed.push((await submitAndWait(erin, failingDelete())).job_id);
        await submitAndWait(erin, revokeAllOf(erin.subject.id));
      }

      const paged = await listAll(erin.headers, { state: 'failed', limit: '2' });

      expect(paged.pages).toBe(3);
      expect(ids(paged.jobs)).toEqual(failed.reverse());
    });
  });

  describe('bad input: 400 PV1002 naming the parameter', () => {
    const valid = encodeJobCursor({ createdAt: '2024-01-01T00:00:00.000000Z', id: '00000000-0000-4000-8000-000000000000' });
    const forged = (text: string) => Buffer.from(text).toString('base64url');

    it.each([
      ['state=done', 'state'],
      ['state=', 'state'],
      ['state=failed&state=queued', 'state'],
      ['type=tokens.explode', 'type'],
      ['since=yesterday', 'since'],
      ['since=2021-02-30', 'since'],
      ['since=2021-06-01T00:00:00', 'since'],
      ['since=1622505600', 'since'],
      ['since=0000-01-01T00:00:00Z', 'since'],
      ['limit=0', 'limit'],
      ['limit=501', 'limit'],
      ['limit=1.5', 'limit'],
      ['limit=-1', 'limit'],
      ['limit=ten', 'limit'],
      ['limit=', 'limit'],
      ['cursor=not%20a%20cursor', 'cursor'],
      ['cursor=', 'cursor'],
      [`cursor=${valid}x`, 'cursor'],
      [`cursor=${forged('2024-01-01T00:00:00.000000Z not-a-uuid')}`, 'cursor'],
      [`cursor=${forged('2021-02-30T00:00:00.000000Z 00000000-0000-4000-8000-000000000000')}`, 'cursor'],
      [`cursor=${forged('0000-01-01T00:00:00.000000Z 00000000-0000-4000-8000-000000000000')}`, 'cursor'],
      [`cursor=${forged('2024-01-01T00:00:00Z 00000000-0000-4000-8000-000000000000')}`, 'cursor'],
      [`cursor=${valid}&cursor=${valid}`, 'cursor'],
      ['submitter=admin', 'submitter'],
    ])('?%s', async (query, name) => {
      const r = await call(stack, 'GET', `/v1/jobs?${query}`, { headers: alice.headers });

      expect(r.status).toBe(400);
      expect(r.body).toMatchObject({ error_code: 'PV1002', context: { querystring: expect.stringContaining(name) } });
      expect(r.body.message).toMatch(new RegExp(`^Invalid querystring: .*${name}`));
    });

    it('a well-formed cursor of no job is a position like any other', async () => {
      const early = encodeJobCursor({ createdAt: '2000-01-01T00:00:00.000000Z', id: '00000000-0000-4000-8000-000000000000' });
      expect(await list(alice.headers, `?cursor=${early}`)).toEqual({ jobs: [], next_cursor: null });
      // alice's oldest job was created 2021-06-01, before this one: the only one after it
      expect(ids((await list(alice.headers, `?cursor=${valid}`)).jobs)).toEqual([aliceJobs[0]!.job_id]);
      const late = encodeJobCursor({ createdAt: '2999-01-01T00:00:00.000000Z', id: '00000000-0000-4000-8000-000000000000' });
      expect(ids((await list(alice.headers, `?cursor=${late}`)).jobs)).toEqual(ids(newestFirst(aliceJobs)));
    });
  });
});
