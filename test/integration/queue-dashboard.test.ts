import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE } from '../../contracts/index.js';
import { bearer, call, createCollection, subjectWithToken, tokenize, waitForJob } from '../helpers/api.js';
import { piianoError } from '../helpers/envelopes.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

const basic = (password: string, user = 'admin') => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

interface QueuesAnswer {
  queues: { name: string; type: string; counts: Record<string, number> }[];
}

describe('the queue dashboard at /admin/queues', () => {
  let stack: Stack;
  /** A subject that can do plenty, but not subjects:admin. */
  let nonAdmin: Awaited<ReturnType<typeof subjectWithToken>>;

  beforeAll(async () => {
    stack = await startStack();
    nonAdmin = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write', 'tokens:read', 'tokens:tokenize', 'tokens:manage', 'security_admin'] });
  });
  afterAll(() => stack?.close());

  function get(path: string, headers: Record<string, string> = {}) {
    return fetch(`${stack.producer.url}${path}`, { headers });
  }

  async function expectChallenge(response: Response, code = 'PV1005') {
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toMatch(/^Basic realm="[^"]+"/);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await response.json()) as Record<string, unknown>;
    expect(body).toEqual(piianoError(code));
  }

  async function expectForbidden(response: Response) {
    expect(response.status).toBe(403);
    expect(response.headers.get('www-authenticate')).toBeNull();
    expect(await response.json()).toEqual(piianoError('PV1007'));
  }

  async function expectDashboardPage(response: Response) {
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await response.text();
    expect(html).toMatch(/<html/i);
    expect(html).toContain('<base href="/admin/queues/"');
  }

  it('answers a browser without a credential 401 with a Basic challenge, in the native envelope', async () => {
    await expectChallenge(await get('/admin/queues'));
    await expectChallenge(await get('/admin/queues/'));
  });

  it('challenges the dashboard API without a credential too', async () => {
    await expectChallenge(await get('/admin/queues/api/queues'));
  });

  it('challenges again when the Basic password is not a valid access token', async () => {
    await expectChallenge(await get('/admin/queues', basic('not-a-token')));
    await expectChallenge(await get('/admin/queues', basic('')));
  });

  it('opens for HTTP Basic with the admin access token as password, whatever the user name', async () => {
    await expectDashboardPage(await get('/admin/queues', basic(ADMIN_TOKEN)));
    await expectDashboardPage(await get('/admin/queues', basic(ADMIN_TOKEN, 'someone-else')));
  });

  it('opens for the admin token as Bearer or X-Auth-Token', async () => {
    await expectDashboardPage(await get('/admin/queues', bearer(ADMIN_TOKEN)));
    await expectDashboardPage(await get('/admin/queues', { 'x-auth-token': ADMIN_TOKEN }));
  });

  it('opens for any subject holding subjects:admin', async () => {
    const operator = await subjectWithToken(stack, { kind: 'user', capabilities: ['subjects:admin'] });
    await expectDashboardPage(await get('/admin/queues', basic(operator.token)));
  });

  it('refuses a subject without subjects:admin with 403 PV1007, page and API alike', async () => {
    await expectForbidden(await get('/admin/queues', basic(nonAdmin.token)));
    await expectForbidden(await get('/admin/queues', nonAdmin.headers));
    await expectForbidden(await get('/admin/queues/api/queues', nonAdmin.headers));
  });

  it('does not let a percent-encoded path around the admin check', async () => {
    // `/%61dmin/queues` routes to the dashboard just like `/admin/queues`
    await expectForbidden(await get('/%61dmin/queues/api/queues', nonAdmin.headers));
    await expectForbidden(await get('/%61dmin/queues', nonAdmin.headers));
    await expectChallenge(await get('/%61dmin/queues/api/queues'));
  });

  it('lists the command queue in its API, with the jobs the worker completed', async () => {
    await createCollection(stack, 'dash');
    await tokenize(stack, 'dash', [{ object: { id: 'd1' }, tags: ['dash'] }]);
    const accepted = await call(stack, 'DELETE', '/api/pvlt/1.0/data/collections/dash/tokens?tags=dash&reason=AppFunctionality', { headers: { ...stack.admin, prefer: 'respond-async' } });
    expect(await waitForJob(stack, accepted.body.job_id)).toMatchObject({ state: 'succeeded' });

    const response = await get('/admin/queues/api/queues', basic(ADMIN_TOKEN));
    expect(response.status).toBe(200);
    const answer = (await response.json()) as QueuesAnswer;
    expect(answer.queues.map((q) => q.name)).toEqual([COMMAND_QUEUE]);
    const queue = answer.queues[0]!;
    expect(queue.type).toBe('bullmq');
    expect(queue.counts.completed).toBeGreaterThanOrEqual(1);
  });
});
