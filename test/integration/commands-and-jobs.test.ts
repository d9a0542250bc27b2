import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobView } from '../../contracts/index.js';
import { call, freshCollection, subjectWithToken, tokenize, waitForJob } from '../helpers/api.js';
import { piianoError } from '../helpers/envelopes.js';
import { type Stack, startStack } from '../helpers/stack.js';

const JOB_VIEW_KEYS = ['attempts', 'created_at', 'error', 'finished_at', 'idempotency_key', 'job_id', 'progress', 'result', 'started_at', 'state', 'type'];

describe('POST /v1/commands and GET /v1/jobs/{id}', () => {
  let stack: Stack;
  /** A writer with tokens:write only: submits vault commands. */
  let writer: Awaited<ReturnType<typeof subjectWithToken>>;

  beforeAll(async () => {
    stack = await startStack();
    writer = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
  });
  afterAll(() => stack?.close());

  function submit(body: unknown, headers: Record<string, string> = writer.headers) {
    return call(stack, 'POST', '/v1/commands', { headers, body });
  }

  /** A 202 with exactly the job view of SPEC §5 and its Location. */
  function expectAccepted(r: Awaited<ReturnType<typeof submit>>, type: string) {
    expect(r.status).toBe(202);
    expect(Object.keys(r.body).sort()).toEqual(JOB_VIEW_KEYS);
    const view = JobView.parse(r.body);
    expect(view.type).toBe(type);
    expect(['queued', 'running', 'succeeded']).toContain(view.state);
    expect(view.idempotency_key).toBeNull();
    expect(r.headers.location).toBe(`/v1/jobs/${view.job_id}`);
    return view;
  }

  describe('each command type', () => {
    it('tokens.delete: 202 with the job view, then the job deletes the matching tokens', async () => {
      const c = await freshCollection(stack);
      await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['breach-1'] }, { object: { id: 'o2' }, tags: ['breach-1'] }, { object: { id: 'o3' } }]);
      const r = await submit({ type: 'tokens.delete', collection: c, tags: ['breach-1'], reason: 'AppFunctionality' });
      const view = expectAccepted(r, 'tokens.delete');
      const job = await waitForJob(stack, view.job_id, writer.headers);
      expect(job).toMatchObject({ job_id: view.job_id, type: 'tokens.delete', state: 'succeeded', result: { deleted: 2 }, error: null, progress: { processed: 2, total: 2 } });
      expect(job.attempts).toBeGreaterThanOrEqual(1);
      expect(job.started_at).not.toBeNull();
      expect(job.finished_at).not.toBeNull();
      expect(Date.parse(job.finished_at)).toBeGreaterThanOrEqual(Date.parse(job.created_at));
    });

    it('tokens.rotate: 202 with the job view, then the job result holds the mapping', async () => {
      const c = await freshCollection(stack);
      const [a, b] = await tokenize(stack, c, [{ object: { id: 'o1' } }, { object: { id: 'o2' } }]);
      const r = await submit({ type: 'tokens.rotate', collection: c, token_ids: [a, b], reason: 'Maintenance' });
      const view = expectAccepted(r, 'tokens.rotate');
      const job = await waitForJob(stack, view.job_id, writer.headers);
      expect(job.state).toBe('succeeded');
      expect(Object.keys(job.result.mapping).sort()).toEqual([a, b].sort());
    });

    it('access_token.revoke: 202 with the job view, then the access token no longer authenticates', async () => {
      const user = await subjectWithToken(stack, { kind: 'user' });
      const r = await submit({ type: 'access_token.revoke', token_id: user.tokenId }, user.headers);
      const view = expectAccepted(r, 'access_token.revoke');
      const job = await waitForJob(stack, view.job_id, stack.admin);
      expect(job).toMatchObject({ state: 'succeeded', result: { token_id: user.tokenId } });
      expect((await call(stack, 'GET', `/v1/jobs/${view.job_id}`, { headers: user.headers })).status).toBe(401);
    });

    it('temporary_tokens.revoke_all: 202 with the job view, then the generation is bumped', async () => {
      const user = await subjectWithToken(stack, { kind: 'user' });
      const manager = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:manage'] });
      const r = await submit({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: user.subject.id } }, manager.headers);
      const view = expectAccepted(r, 'temporary_tokens.revoke_all');
      const job = await waitForJob(stack, view.job_id, manager.headers);
      expect(job).toMatchObject({ state: 'succeeded', result: { subject: { kind: 'user', id: user.subject.id }, generation: 1 } });
      const generation = await call(stack, 'GET', `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`, { headers: user.headers });
      expect(generation.body).toEqual({ generation: 1 });
    });
  });

  describe('invalid bodies', () => {
    const cases: [string, unknown][] = [
      ['an unknown type', { type: 'tokens.explode', collection: 'c', token_ids: ['a'], reason: 'AppFunctionality' }],
      ['no type', { collection: 'c', token_ids: ['a'], reason: 'AppFunctionality' }],
      ['an extra field', { type: 'tokens.rotate', collection: 'c', token_ids: ['a'], reason: 'AppFunctionality', priority: 'high' }],
      ['an extra field in the subject', { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: 'u', domain: 'x' } }],
      ['token_ids of the wrong type', { type: 'tokens.rotate', collection: 'c', token_ids: 'a,b', reason: 'AppFunctionality' }],
      ['archived of the wrong type', { type: 'tokens.delete', collection: 'c', tags: ['t'], archived: 'yes', reason: 'AppFunctionality' }],
      ['an empty token_ids list', { type: 'tokens.rotate', collection: 'c', token_ids: [], reason: 'AppFunctionality' }],
      ['a delete without criteria', { type: 'tokens.delete', collection: 'c', reason: 'AppFunctionality' }],
      ['a service subject kind', { type: 'temporary_tokens.revoke_all', subject: { kind: 'service', id: 'svc' } }],
      ['a missing token_id', { type: 'access_token.revoke' }],
      ['an array body', [{ type: 'tokens.rotate', collection: 'c', token_ids: ['a'] }]],
    ];
    it.each(cases)('rejects %s with 400 PV1002', async (_name, body) => {
      const r = await submit(body, stack.admin);
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject(piianoError('PV1002'));
      expect(r.headers.location).toBeUndefined();
    });

    it('rejects 10,001 token_ids with 400 PV1002', async () => {
      const c = await freshCollection(stack);
      const r = await submit({ type: 'tokens.rotate', collection: c, token_ids: Array.from({ length: 10_001 }, (_, i) => `t${i}`), reason: 'AppFunctionality' });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
    });

    it('requires an access reason on a vault command: 400 PV1001', async () => {
      const c = await freshCollection(stack);
      const r = await submit({ type: 'tokens.delete', collection: c, tags: ['t'] });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1001');
    });
  });

  describe('GET /v1/jobs/{id}', () => {
    it('shows the job to its submitter and to subjects:admin, and answers 404 PV3005 to anyone else', async () => {
      const c = await freshCollection(stack);
      await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['t'] }]);
      const r = await submit({ type: 'tokens.delete', collection: c, tags: ['t'], reason: 'AppFunctionality' });
      expect(r.status).toBe(202);
      const id = r.body.job_id as string;
      await waitForJob(stack, id, writer.headers);

      const own = await call(stack, 'GET', `/v1/jobs/${id}`, { headers: writer.headers });
      expect(own.status).toBe(200);
      expect(Object.keys(own.body).sort()).toEqual(JOB_VIEW_KEYS);
      expect(own.body).toMatchObject({ job_id: id, state: 'succeeded' });

      const jobAdmin = await subjectWithToken(stack, { kind: 'service', capabilities: ['subjects:admin'] });
      const asAdmin = await call(stack, 'GET', `/v1/jobs/${id}`, { headers: jobAdmin.headers });
      expect(asAdmin.status).toBe(200);
      expect(asAdmin.body).toEqual(own.body);

      const stranger = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write', 'tokens:read', 'tokens:manage', 'security_admin'] });
      const asStranger = await call(stack, 'GET', `/v1/jobs/${id}`, { headers: stranger.headers });
      expect(asStranger.status).toBe(404);
      expect(asStranger.body).toMatchObject({ error_code: 'PV3005', message: expect.any(String) });
    });

    it('answers 404 PV3005 for an unknown UUID, the same as for a hidden job', async () => {
      const r = await call(stack, 'GET', `/v1/jobs/${randomUUID()}`, { headers: stack.admin });
      expect(r.status).toBe(404);
      expect(r.body.error_code).toBe('PV3005');
    });

    it('answers 400 PV1002 for an ID that is not a UUID', async () => {
      const r = await call(stack, 'GET', '/v1/jobs/not-a-uuid', { headers: stack.admin });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
    });

    it('shows a failed job with state failed and error {error_code, message, context}', async () => {
      const c = await freshCollection(stack);
      const [a] = await tokenize(stack, c, [{ object: { id: 'o1' } }]);
      const r = await submit({ type: 'tokens.rotate', collection: c, token_ids: [a, 'does-not-exist'], reason: 'AppFunctionality' });
      expect(r.status).toBe(202);
      const job = await waitForJob(stack, r.body.job_id, writer.headers);
      expect(job.state).toBe('failed');
      expect(job.result).toBeNull();
      expect(Object.keys(job.error).sort()).toEqual(['context', 'error_code', 'message']);
      expect(job.error.error_code).toBe('PV3087');
      expect(typeof job.error.message).toBe('string');
      expect(String(job.error.context.token_ids).split(',')).toEqual(['does-not-exist']);
      expect(job.finished_at).not.toBeNull();
    });
  });

  describe('Prefer: wait on the native route', () => {
    it('answers 200 with the finished job view', async () => {
      const c = await freshCollection(stack);
      await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['w'] }]);
      const r = await call(stack, 'POST', '/v1/commands', {
        headers: { ...writer.headers, prefer: 'wait=10' },
        body: { type: 'tokens.delete', collection: c, tags: ['w'], reason: 'AppFunctionality' },
      });
      expect(r.status).toBe(200);
      expect(Object.keys(r.body).sort()).toEqual(JOB_VIEW_KEYS);
      expect(r.body).toMatchObject({ type: 'tokens.delete', state: 'succeeded', result: { deleted: 1 }, error: null });
      expect(r.body.finished_at).not.toBeNull();
      expect(r.headers.location).toBe(`/v1/jobs/${r.body.job_id}`);
    });

    it('answers 200 with the failed job view when the command fails', async () => {
      const c = await freshCollection(stack);
      const r = await call(stack, 'POST', '/v1/commands', {
        headers: { ...writer.headers, prefer: 'wait=10' },
        body: { type: 'tokens.delete', collection: c, tags: ['nothing-here'], reason: 'AppFunctionality' },
      });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ state: 'failed', result: null, error: { error_code: 'PV3009' } });
    });
  });
});
