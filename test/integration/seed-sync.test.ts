import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobView } from '../../contracts/index.js';
import { call, freshCollection, subjectWithToken, tokenize, waitForJob } from '../helpers/api.js';
import { rawRequest } from '../helpers/http.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

const deleteUrl = (collection: string, query: string) => `/api/pvlt/1.0/data/collections/${collection}/tokens?reason=AppFunctionality&${query}`;
const searchUrl = (collection: string) => `/api/pvlt/1.0/data/collections/${collection}/query/tokens?reason=AppFunctionality`;

/** Whether a token is still found, asked over a new socket (not the connection that deleted it). */
async function stillFound(stack: Stack, collection: string, tokenId: string): Promise<boolean> {
  const r = await rawRequest(stack.producer.url, 'POST', searchUrl(collection), { headers: stack.admin, body: { token_ids: [tokenId] } });
  expect(r.status).toBe(200);
  return r.text.includes(tokenId);
}

describe('seed routes answer synchronously (SPEC §5)', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack?.close());

  it('answers a Piiano delete 200 {} only once the tokens are gone for the very next request', async () => {
    const c = await freshCollection(stack);
    const [a, b] = await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['breach'] }, { object: { id: 'o2' } }]);
    const r = await call(stack, 'DELETE', deleteUrl(c, 'tags=breach'), { headers: stack.admin });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({});
    expect(r.headers['preference-applied']).toBeUndefined();
    expect(await stillFound(stack, c, a!)).toBe(false);
    expect(await stillFound(stack, c, b!)).toBe(true);
  });

  it('answers a rotate with the { old: new } mapping, the new ID found at once', async () => {
    const c = await freshCollection(stack);
    const [a] = await tokenize(stack, c, [{ object: { id: 'o1' } }]);
    const r = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${c}/rotate/tokens?reason=AppFunctionality&token_ids=${a}`, { headers: stack.admin });
    expect(r.status).toBe(200);
    const mapping = r.body as Record<string, string>;
    expect(Object.keys(mapping)).toEqual([a]);
    expect(await stillFound(stack, c, a!)).toBe(false);
    expect(await stillFound(stack, c, mapping[a!]!)).toBe(true);
  });

  it('answers a Keystone delete 204, and the token no longer authenticates the next request', async () => {
    const user = await subjectWithToken(stack, { kind: 'user' });
    const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': user.token } });
    expect(r.status).toBe(204);
    const next = await rawRequest(stack.producer.url, 'GET', '/v1/auth/verify', { headers: { 'x-auth-token': user.token, 'x-subject-token': user.token } });
    expect(next.status).toBe(401);
  });

  it('answers an Onezone revoke-all 204, and the temporary token no longer authenticates the next request', async () => {
    const user = await subjectWithToken(stack, { kind: 'user' }, { temporary: true, ttl_seconds: 600 });
    const r = await call(stack, 'DELETE', `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`, { headers: { 'x-auth-token': user.token } });
    expect(r.status).toBe(204);
    const next = await rawRequest(stack.producer.url, 'GET', `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`, { headers: { 'x-auth-token': user.token } });
    expect(next.status).toBe(401);
  });

  it('answers a failed job in the seed envelope: 404 PV3009 when nothing matched', async () => {
    const c = await freshCollection(stack);
    const r = await call(stack, 'DELETE', deleteUrl(c, 'tags=absent'), { headers: stack.admin });
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({ error_code: 'PV3009' });
    expect(r.headers.location).toMatch(/^\/v1\/jobs\//);
  });

  it('with Prefer: respond-async answers 202 with the job and Location at once', async () => {
    const c = await freshCollection(stack);
    await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['t'] }]);
    const r = await call(stack, 'DELETE', deleteUrl(c, 'tags=t'), { headers: { ...stack.admin, prefer: 'respond-async' } });
    expect(r.status).toBe(202);
    expect(JobView.parse(r.body).type).toBe('tokens.delete');
    expect(r.headers.location).toBe(`/v1/jobs/${r.body.job_id}`);
    expect(r.headers['preference-applied']).toBe('respond-async');
    expect(await waitForJob(stack, r.body.job_id)).toMatchObject({ state: 'succeeded', result: { deleted: 1 } });
  });

  it('with Prefer: respond-async, wait=N answers as the seed when the job ends within N seconds', async () => {
    const c = await freshCollection(stack);
    await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['t'] }]);
    const r = await call(stack, 'DELETE', deleteUrl(c, 'tags=t'), { headers: { ...stack.admin, prefer: 'respond-async, wait=10' } });
    expect(r.status).toBe(200);
    expect(r.body).toEqual({});
    expect(r.headers['preference-applied']).toBe('respond-async, wait=10');
  });

  it('keeps the native POST /v1/commands asynchronous: 202 with the job', async () => {
    const c = await freshCollection(stack);
    await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['t'] }]);
    const r = await call(stack, 'POST', '/v1/commands', { headers: stack.admin, body: { type: 'tokens.delete', collection: c, tags: ['t'], reason: 'AppFunctionality' } });
    expect(r.status).toBe(202);
    expect(JobView.parse(r.body).state).not.toBe('succeeded');
  });
});

describe('a synchronous seed call whose job outlives the wait', () => {
  let stack: Stack;

  beforeAll(async () => {
    // no worker: every job stays queued until a test starts one
    stack = await startStack({ worker: false, env: { SYNC_WAIT_SECONDS: '1' } });
  });
  afterAll(() => stack?.close());

  it('answers 503 in each family envelope with the job ID, Location and Retry-After; a resend with the key answers the outcome', async () => {
    const c = await freshCollection(stack);
    await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['slow'] }]);
    const key = { 'idempotency-key': `k-${randomBytes(4).toString('hex')}` };
    const piiano = await call(stack, 'DELETE', deleteUrl(c, 'tags=slow'), { headers: { ...stack.admin, ...key } });
    expect(piiano.status).toBe(503);
    expect(piiano.body).toMatchObject({ error_code: 'PV1009', context: { job_id: expect.any(String) } });
    expect(piiano.body.message).toMatch(/^The job did not end within 1 s; it goes on\./);
    const jobId = piiano.body.context.job_id as string;
    expect(piiano.headers.location).toBe(`/v1/jobs/${jobId}`);
    expect(piiano.headers['retry-after']).toBeDefined();

    const user = await subjectWithToken(stack, { kind: 'user' });
    const keystone = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': user.token } });
    expect(keystone.status).toBe(503);
    expect(keystone.body).toMatchObject({ error: { code: 503 } });
    expect(keystone.headers.location).toMatch(/^\/v1\/jobs\//);

    const onezone = await call(stack, 'DELETE', `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`, { headers: stack.admin });
    expect(onezone.status).toBe(503);
    expect(onezone.body).toMatchObject({ error: { id: expect.any(String) } });
    expect(onezone.headers['retry-after']).toBeDefined();

    const worker = await stack.startWorker();
    expect(worker).toBeDefined();
    const again = await call(stack, 'DELETE', deleteUrl(c, 'tags=slow'), { headers: { ...stack.admin, ...key, prefer: 'wait=20' } });
    expect(again.status).toBe(200);
    expect(again.body).toEqual({});
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers.location).toBe(`/v1/jobs/${jobId}`);
  });
});

describe('Prefer on a seed route while no worker runs', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(() => stack?.close());

  it('Prefer: wait=N alone shortens the synchronous wait to N: 503 after it, Preference-Applied: wait=N', async () => {
    const c = await freshCollection(stack);
    const r = await call(stack, 'DELETE', deleteUrl(c, 'tags=x'), { headers: { ...stack.admin, prefer: 'wait=1' } });
    expect(r.status).toBe(503);
    expect(r.headers['preference-applied']).toBe('wait=1');
  });

  it('Prefer: respond-async, wait=N answers 202 with the job when it has not ended within N', async () => {
    const c = await freshCollection(stack);
    const r = await call(stack, 'DELETE', deleteUrl(c, 'tags=x'), { headers: { ...stack.admin, prefer: 'respond-async, wait=1' } });
    expect(r.status).toBe(202);
    expect(r.body).toMatchObject({ state: 'queued' });
  });

  it('runs the route once per request: a failed job answered to a cached caller whose authorization changed meanwhile records no second command', async () => {
    const c = await freshCollection(stack);
    const writer = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
    // a first command puts the writer in the credential cache
    expect((await call(stack, 'DELETE', deleteUrl(c, 'tags=warm'), { headers: { ...writer.headers, prefer: 'respond-async' } })).status).toBe(202);
    const pending = call(stack, 'DELETE', deleteUrl(c, 'tags=absent'), { headers: { ...writer.headers, prefer: 'wait=20' } });
    const db = stack.database.db;
    // once the command is recorded, change the writer's authorization, then let a worker fail the job
    for (let n = 0; n < 200; n++) {
      const rows = await db.selectFrom('commands').select('id').where('submitter_id', '=', writer.subject.id).execute();
      if (rows.length === 2) break;
      await sleep(25);
    }
    await db
      .updateTable('subjects')
      .set({ capabilities: ['tokens:write', 'tokens:read'] })
      .where('id', '=', writer.subject.id)
      .execute();
    await stack.startWorker();
    const r = await pending;
    expect(r.status).toBe(404);
    expect(r.body).toMatchObject({ error_code: 'PV3009' });
    const commands = await db.selectFrom('commands').select('id').where('submitter_id', '=', writer.subject.id).execute();
    expect(commands).toHaveLength(2);
  });
});
