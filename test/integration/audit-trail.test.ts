import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, createCollection, subjectWithToken, tokenize, waitForJob } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

const reason = 'reason=FraudPreventionSecurityAndCompliance';

describe('the audit trail', () => {
  let stack: Stack;
  let tenantA: Awaited<ReturnType<typeof subjectWithToken>>;
  let tenantB: Awaited<ReturnType<typeof subjectWithToken>>;
  let jobA: string;
  let jobB: string;

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, 'audited');
    const caps = ['tokens:tokenize', 'tokens:write', 'tokens:read'];
    tenantA = await subjectWithToken(stack, { id: 'svc-a', kind: 'service', capabilities: caps, tenant_ids: ['a'] });
    tenantB = await subjectWithToken(stack, { id: 'svc-b', kind: 'service', capabilities: caps, tenant_ids: ['b'] });
    await tokenize(stack, 'audited', [{ object: { id: 'x' }, tags: ['t'] }], tenantA.headers);
    await tokenize(stack, 'audited', [{ object: { id: 'y' }, tags: ['t'] }], tenantB.headers);
    const a = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/audited/tokens?tags=t&${reason}&custom_audit=incident-7`, { headers: { ...tenantA.headers, prefer: 'respond-async' } });
    const b = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/audited/tokens?tags=t&${reason}`, { headers: { ...tenantB.headers, prefer: 'respond-async' } });
    jobA = a.body.job_id;
    jobB = b.body.job_id;
    expect((await waitForJob(stack, jobA)).state).toBe('succeeded');
    expect((await waitForJob(stack, jobB)).state).toBe('succeeded');
  });
  afterAll(() => stack?.close());

  it('shows the admin every entry, with the audit context of each command', async () => {
    const r = await call(stack, 'GET', '/v1/audit?collection=audited', { headers: stack.admin });
    expect(r.status).toBe(200);
    const deleted = r.body.entries.filter((e: { action: string }) => e.action === 'tokens.deleted');
    expect(deleted.map((e: { job_id: string }) => e.job_id).sort()).toEqual([jobA, jobB].sort());
    const mine = deleted.find((e: { job_id: string }) => e.job_id === jobA);
    expect(mine).toMatchObject({
      actor: { id: 'svc-a', kind: 'service' },
      tenant_ids: ['a'],
      reason: 'FraudPreventionSecurityAndCompliance',
      custom_audit: 'incident-7',
      source: 'http',
      collection: 'audited',
    });
    expect(mine.data.token_ids).toHaveLength(1);
  });

  it('filters by job', async () => {
    const r = await call(stack, 'GET', `/v1/audit?job_id=${jobB}`, { headers: stack.admin });
    expect(r.body.entries.length).toBeGreaterThan(0);
    expect(r.body.entries.every((e: { job_id: string }) => e.job_id === jobB)).toBe(true);
  });

  it("shows a tenant-scoped caller its own tenant's entries and never another tenant's", async () => {
    const r = await call(stack, 'GET', '/v1/audit?collection=audited', { headers: tenantA.headers });
    expect(r.status).toBe(200);
    const jobs = new Set(r.body.entries.map((e: { job_id: string }) => e.job_id));
    expect(jobs.has(jobA)).toBe(true);
    expect(jobs.has(jobB)).toBe(false);
    const other = await call(stack, 'GET', `/v1/audit?job_id=${jobB}`, { headers: tenantA.headers });
    expect(other.body.entries).toEqual([]);
  });

  it('pages with after_id and limit', async () => {
    const first = await call(stack, 'GET', '/v1/audit?limit=1', { headers: stack.admin });
    expect(first.body.entries).toHaveLength(1);
    expect(first.body.next_after_id).toBe(first.body.entries[0].id);
    const second = await call(stack, 'GET', `/v1/audit?limit=1&after_id=${first.body.next_after_id}`, { headers: stack.admin });
    expect(BigInt(second.body.entries[0].id)).toBeGreaterThan(BigInt(first.body.entries[0].id));
  });

  it('filters by since, a date-time with an offset or a date (its midnight UTC), as GET /v1/jobs does', async () => {
    const entries = async (since: string) => {
      const r = await call(stack, 'GET', `/v1/audit?job_id=${jobA}&since=${encodeURIComponent(since)}`, { headers: stack.admin });
      expect(r.status, since).toBe(200);
      return r.body.entries as { id: string; occurred_at: string }[];
    };
    const ids = async (since: string) => (await entries(since)).map((e) => e.id);
    const all = await entries('2000-01-01');
    expect(all.length).toBeGreaterThan(0);
    const first = all.map((e) => e.occurred_at).sort()[0]!;
    expect(await ids(first.slice(0, 10))).toEqual(all.map((e) => e.id));
    expect(await ids(first.replace('Z', '+00:00'))).toEqual(all.map((e) => e.id));
    expect(await ids('2999-01-01')).toEqual([]);
    expect(await ids('2999-01-01T00:00:00Z')).toEqual([]);
  });

  it('rejects bad filters with 400 in the native envelope', async () => {
    for (const q of ['job_id=nope', 'since=yesterday', 'since=0000-01-01', 'since=2024-05-01T12:00:00', 'limit=0', 'limit=5000', 'after_id=x', 'bogus=1']) {
      const r = await call(stack, 'GET', `/v1/audit?${q}`, { headers: stack.admin });
      expect(r.status, q).toBe(400);
      expect(r.body.error_code, q).toBe('PV1002');
    }
  });

  it('needs a credential', async () => {
    expect((await call(stack, 'GET', '/v1/audit')).status).toBe(401);
  });

  it('is append-only in the database: UPDATE, DELETE and TRUNCATE are refused', async () => {
    const { db } = stack.database;
    await expect(sql`update audit_log set action = 'x'`.execute(db)).rejects.toThrow(/append-only/);
    await expect(sql`delete from audit_log`.execute(db)).rejects.toThrow(/append-only/);
    await expect(sql`truncate audit_log`.execute(db)).rejects.toThrow(/append-only/);
    const count = await sql<{ n: string }>`select count(*) as n from audit_log`.execute(db);
    expect(Number(count.rows[0]?.n)).toBeGreaterThanOrEqual(2);
  });
});
