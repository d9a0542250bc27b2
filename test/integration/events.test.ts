import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RevocationEvent } from '../../contracts/index.js';
import { call, freshCollection, subjectWithToken, tokenize, uid, waitForEvents, waitForJob } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

type EventOfType<T extends RevocationEvent['type']> = Extract<RevocationEvent, { type: T }>;

describe('completion events and the audit log', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack?.close());

  /** Waits until the command's terminal event is on the stream; returns the command's events. */
  async function eventsOf(jobId: string): Promise<RevocationEvent[]> {
    const events = await waitForEvents(stack, (es) => es.some((e) => e.job_id === jobId && (e.type === 'command.succeeded' || e.type === 'command.failed')));
    return events.filter((e) => e.job_id === jobId);
  }

  function ofType<T extends RevocationEvent['type']>(events: RevocationEvent[], type: T): EventOfType<T>[] {
    return events.filter((e): e is EventOfType<T> => e.type === type);
  }

  function auditRows(jobId: string) {
    return stack.database.db.selectFrom('audit_log').selectAll().where('command_id', '=', jobId).orderBy('id').execute();
  }

  /**
   * One responder (a tenant-scoped user acting for tenant-a) runs a delete, a rotate, an
   * access-token revoke, a revoke-all and a failing delete; each test checks one facet.
   */
  describe('one of each command, by a tenant-scoped responder', () => {
    const jobs: Record<'delete' | 'rotate' | 'revoke' | 'revokeAll' | 'failing', string> = { delete: '', rotate: '', revoke: '', revokeAll: '', failing: '' };
    const requestIds = { delete: uid('req-del'), rotate: uid('req-rot'), revoke: uid('req-rev'), revokeAll: uid('req-all'), failing: uid('req-fail') };
    let collection: string;
    let responderId: string;
    let deletedIds: string[];
    let rotatedIds: string[];
    let revokedTokenId: string;

    beforeAll(async () => {
      collection = await freshCollection(stack);
      const responder = await subjectWithToken(stack, {
        id: uid('responder'),
        kind: 'user',
        capabilities: ['tokens:write', 'tokens:tokenize'],
        tenant_ids: ['tenant-a', 'tenant-b'],
      });
      responderId = responder.subject.id;
      const as = (requestId: string) => ({ ...responder.headers, 'x-tenant-id': 'tenant-a', 'x-request-id': requestId, prefer: 'wait=10' });

      deletedIds = await tokenize(
        stack,
        collection,
        [
          { object: { id: 'o1' }, tags: ['breach'] },
          { object: { id: 'o2' }, tags: ['breach'] },
        ],
        { ...responder.headers, 'x-tenant-id': 'tenant-a' },
      );
      rotatedIds = await tokenize(stack, collection, [{ object: { id: 'o3' } }, { object: { id: 'o4' } }], { ...responder.headers, 'x-tenant-id': 'tenant-a' });

      const del = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${collection}/tokens?tags=breach&reason=Other&adhoc_reason=${encodeURIComponent('incident 7')}&custom_audit=ticket-7`, {
        headers: as(requestIds.delete),
      });
      expect(del.status).toBe(200);
      jobs.delete = jobIdOf(del.headers.location);

      const rot = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${collection}/rotate/tokens?token_ids=${rotatedIds.join(',')}&reason=DataSubjectRequest&custom_audit=ticket-8`, {
        headers: as(requestIds.rotate),
      });
      expect(rot.status).toBe(200);
      jobs.rotate = jobIdOf(rot.headers.location);

      const spare = await call(stack, 'POST', `/v1/subjects/${responderId}/tokens`, { headers: stack.admin, body: { temporary: false } });
      revokedTokenId = spare.body.token_id;
      const rev = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { ...as(requestIds.revoke), 'x-subject-token': spare.body.token } });
      expect(rev.status).toBe(204);
      jobs.revoke = jobIdOf(rev.headers.location);

      const all = await call(stack, 'DELETE', `/api/v3/onezone/users/${responderId}/tokens/temporary`, { headers: as(requestIds.revokeAll) });
      expect(all.status).toBe(204);
      jobs.revokeAll = jobIdOf(all.headers.location);

      const failing = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${collection}/tokens?tags=nothing-has-this&reason=Maintenance`, { headers: as(requestIds.failing) });
      expect(failing.status).toBe(404);
      jobs.failing = jobIdOf(failing.headers.location);
    });

    function jobIdOf(location: unknown): string {
      const match = /^\/v1\/jobs\/([0-9a-f-]{36})$/.exec(String(location));
      if (!match?.[1]) throw new Error(`no job Location: ${String(location)}`);
      return match[1];
    }

    it('publishes tokens.deleted with the deleted token IDs and batch {index 0, last true}', async () => {
      const events = await eventsOf(jobs.delete);
      const deleted = ofType(events, 'tokens.deleted');
      expect(deleted).toHaveLength(1);
      expect(deleted[0]!.data.collection).toBe(collection);
      expect(new Set(deleted[0]!.data.token_ids)).toEqual(new Set(deletedIds));
      expect(deleted[0]!.data.batch).toEqual({ index: 0, last: true });
    });

    it('publishes tokens.rotated with the mapping the job returned', async () => {
      const events = await eventsOf(jobs.rotate);
      const rotated = ofType(events, 'tokens.rotated');
      expect(rotated).toHaveLength(1);
      const job = await waitForJob(stack, jobs.rotate);
      expect(rotated[0]!.data.mapping).toEqual(job.result.mapping);
      expect(Object.keys(rotated[0]!.data.mapping).sort()).toEqual([...rotatedIds].sort());
      expect(rotated[0]!.data.collection).toBe(collection);
    });

    it('publishes access_token.revoked with the token ID and its subject', async () => {
      const events = await eventsOf(jobs.revoke);
      const revoked = ofType(events, 'access_token.revoked');
      expect(revoked).toHaveLength(1);
      expect(revoked[0]!.data).toEqual({ token_id: revokedTokenId, subject: { id: responderId, kind: 'user', domain_id: 'default' } });
    });

    it('publishes temporary_tokens.revoked with the subject and the new generation', async () => {
      const events = await eventsOf(jobs.revokeAll);
      const revoked = ofType(events, 'temporary_tokens.revoked');
      expect(revoked).toHaveLength(1);
      expect(revoked[0]!.data).toEqual({ subject: { kind: 'user', id: responderId }, generation: 1 });
    });

    it('publishes exactly one command.succeeded per successful command, with its type and result', async () => {
      const expected = { delete: 'tokens.delete', rotate: 'tokens.rotate', revoke: 'access_token.revoke', revokeAll: 'temporary_tokens.revoke_all' } as const;
      for (const [name, type] of Object.entries(expected) as [keyof typeof expected, string][]) {
        const events = await eventsOf(jobs[name]);
        const succeeded = ofType(events, 'command.succeeded');
        expect(succeeded, name).toHaveLength(1);
        expect(ofType(events, 'command.failed'), name).toHaveLength(0);
        const job = await waitForJob(stack, jobs[name]);
        expect(succeeded[0]!.data).toEqual({ command_type: type, result: job.result });
      }
    });

    it('publishes one command.failed, with the error, for a failing command and nothing else', async () => {
      const events = await eventsOf(jobs.failing);
      expect(events.map((e) => e.type)).toEqual(['command.failed']);
      const failed = ofType(events, 'command.failed')[0]!;
      expect(failed.data.command_type).toBe('tokens.delete');
      expect(failed.data.error).toMatchObject({ error_code: 'PV3009', message: expect.any(String), context: expect.any(Object) });
      const job = await waitForJob(stack, jobs.failing);
      expect(failed.data.error).toEqual(job.error);
    });

    it('gives every event a unique event_id, schema_version 1 and the job_id of its command', async () => {
      const all: RevocationEvent[] = [];
      for (const id of Object.values(jobs)) all.push(...(await eventsOf(id)));
      expect(all.length).toBeGreaterThanOrEqual(9);
      expect(new Set(all.map((e) => e.event_id)).size).toBe(all.length);
      for (const e of all) {
        expect(e.schema_version).toBe(1);
        expect(Object.values(jobs)).toContain(e.job_id);
        expect(Number.isNaN(Date.parse(e.occurred_at))).toBe(false);
      }
      // and the stream as a whole has no duplicate event_id
      const stream = await stack.events();
      expect(new Set(stream.map((e) => e.event_id)).size).toBe(stream.length);
    });

    it('carries the audit payload as sent: actor, reason, adhoc_reason, custom_audit, request_id, source http', async () => {
      const expected = {
        delete: { reason: 'Other', adhoc_reason: 'incident 7', custom_audit: 'ticket-7' },
        rotate: { reason: 'DataSubjectRequest', adhoc_reason: null, custom_audit: 'ticket-8' },
        revoke: { reason: null, adhoc_reason: null, custom_audit: null },
        revokeAll: { reason: null, adhoc_reason: null, custom_audit: null },
        failing: { reason: 'Maintenance', adhoc_reason: null, custom_audit: null },
      } as const;
      for (const name of Object.keys(expected) as (keyof typeof expected)[]) {
        for (const e of await eventsOf(jobs[name])) {
          expect(e.audit, `${name} ${e.type}`).toEqual({ actor: { id: responderId, kind: 'user' }, ...expected[name], request_id: requestIds[name], source: 'http' });
        }
      }
    });

    it("sets tenant_ids to the caller's effective tenant scope on vault-token command events", async () => {
      for (const name of ['delete', 'rotate', 'failing'] as const) {
        for (const e of await eventsOf(jobs[name])) expect(e.tenant_ids, `${name} ${e.type}`).toEqual(['tenant-a']);
      }
    });

    it("sets tenant_ids to the caller's effective tenant scope on access-token command events too", async () => {
      // SPEC §3: every command carries the effective tenant ids of its caller, fixed at acceptance.
      for (const name of ['revoke', 'revokeAll'] as const) {
        for (const e of await eventsOf(jobs[name])) expect(e.tenant_ids, `${name} ${e.type}`).toEqual(['tenant-a']);
      }
    });

    it('keeps audit_log rows in Postgres for each command, with the same audit facts', async () => {
      const actions = { delete: 'tokens.deleted', rotate: 'tokens.rotated', revoke: 'access_token.revoked', revokeAll: 'temporary_tokens.revoked', failing: 'command.failed' } as const;
      for (const name of Object.keys(actions) as (keyof typeof actions)[]) {
        await eventsOf(jobs[name]);
        const rows = await auditRows(jobs[name]);
        expect(rows.length, name).toBeGreaterThanOrEqual(1);
        expect(
          rows.map((r) => r.action),
          name,
        ).toContain(actions[name]);
        for (const row of rows) {
          expect(row).toMatchObject({ actor_id: responderId, actor_kind: 'user', request_id: requestIds[name], source: 'http' });
        }
      }
      const [del] = await auditRows(jobs.delete);
      expect(del).toMatchObject({ reason: 'Other', adhoc_reason: 'incident 7', custom_audit: 'ticket-7', collection, tenant_ids: ['tenant-a'] });
      expect(new Set((del!.data as { token_ids: string[] }).token_ids)).toEqual(new Set(deletedIds));
    });
  });

  it('splits a delete of more than 1,000 tokens into tokens.deleted events of at most 1,000 IDs, indexed 0..n-1, only the last marked last', async () => {
    const c = await freshCollection(stack);
    const items = Array.from({ length: 2500 }, (_, i) => ({ object: { id: `obj-${i}` }, tags: ['mass-breach'] }));
    const ids = await tokenize(stack, c, items);
    expect(ids).toHaveLength(2500);

    const accepted = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${c}/tokens?tags=mass-breach&reason=FraudPreventionSecurityAndCompliance`, {
      headers: { ...stack.admin, prefer: 'respond-async' },
    });
    expect(accepted.status).toBe(202);
    const jobId = accepted.body.job_id as string;
    const job = await waitForJob(stack, jobId);
    expect(job).toMatchObject({ state: 'succeeded', result: { deleted: 2500 }, progress: { processed: 2500, total: 2500 } });

    const events = await eventsOf(jobId);
    const deleted = ofType(events, 'tokens.deleted').sort((a, b) => a.data.batch.index - b.data.batch.index);
    expect(deleted.length).toBeGreaterThanOrEqual(3);
    expect(deleted.map((e) => e.data.batch.index)).toEqual(deleted.map((_, i) => i));
    expect(deleted.map((e) => e.data.batch.last)).toEqual(deleted.map((_, i) => i === deleted.length - 1));
    for (const e of deleted) {
      expect(e.data.token_ids.length).toBeGreaterThan(0);
      expect(e.data.token_ids.length).toBeLessThanOrEqual(1000);
    }
    const all = deleted.flatMap((e) => e.data.token_ids);
    expect(all).toHaveLength(2500);
    expect(new Set(all)).toEqual(new Set(ids));
    expect(ofType(events, 'command.succeeded')).toHaveLength(1);
    expect(ofType(events, 'command.succeeded')[0]!.data.result).toEqual({ deleted: 2500 });
  });
});
