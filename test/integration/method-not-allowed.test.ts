import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keystoneError, onezoneError, piianoError } from '../helpers/envelopes.js';
import { servedRoutes } from '../helpers/routes.js';
import { type Stack, startStack } from '../helpers/stack.js';

const VAULT = '/api/pvlt/1.0/data/collections';

/** SPEC §6: a method a seed path does not have is 405 with `Allow`, in the path family's envelope. */
describe('405 Method Not Allowed', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(() => stack?.close());

  async function send(method: string, url: string, headers: Record<string, string> = stack.admin) {
    const r = await stack.producer.app.inject({ method: method as 'GET', url, headers });
    return { status: r.statusCode, allow: r.headers.allow, body: r.body ? JSON.parse(r.body) : undefined };
  }

  it('Keystone: PUT, PATCH and POST on /v3/auth/tokens are 405 with Allow: DELETE, GET, HEAD in the Keystone envelope', async () => {
    for (const method of ['PUT', 'PATCH', 'POST']) {
      const r = await send(method, '/v3/auth/tokens', { 'X-Auth-Token': 'anything', 'X-Subject-Token': 'anything' });
      expect(r.status, method).toBe(405);
      expect(r.allow).toBe('DELETE, GET, HEAD');
      expect(r.body).toEqual(keystoneError(405, expect.stringContaining(method)));
    }
  });

  it('Onezone: POST and PUT on the temporary-token paths are 405 with Allow: DELETE, GET, HEAD in the Onezone envelope', async () => {
    for (const url of ['/api/v3/onezone/provider/tokens/temporary', '/api/v3/onezone/users/some-user/tokens/temporary']) {
      for (const method of ['POST', 'PUT']) {
        const r = await send(method, url, { 'x-auth-token': 'anything' });
        expect(r.status, `${method} ${url}`).toBe(405);
        expect(r.allow).toBe('DELETE, GET, HEAD');
        expect(r.body).toEqual(onezoneError('notSupported', 'PV1013', {}, expect.stringContaining(method)));
      }
    }
  });

  it('Piiano: a method the vault path lacks is 405 PV1013 with the methods it has', async () => {
    const cases = [
      { method: 'GET', url: `${VAULT}/cards/rotate/tokens?token_ids=a&reason=AppFunctionality`, allow: 'POST' },
      { method: 'DELETE', url: `${VAULT}/cards/rotate/tokens`, allow: 'POST' },
      { method: 'PUT', url: `${VAULT}/cards/tokens?token_ids=a`, allow: 'DELETE, POST' },
      { method: 'GET', url: `${VAULT}/cards/query/tokens`, allow: 'POST' },
      { method: 'POST', url: `${VAULT}/cards/count/tokens`, allow: 'GET, HEAD' },
    ];
    for (const c of cases) {
      const r = await send(c.method, c.url);
      expect(r.status, `${c.method} ${c.url}`).toBe(405);
      expect(r.allow).toBe(c.allow);
      expect(r.body).toEqual(piianoError('PV1013', { method: c.method, allowed: c.allow }));
    }
  });

  it('a path no method has is still 404 in its family envelope', async () => {
    expect(await send('PUT', '/v3/auth/nothing')).toMatchObject({ status: 404, allow: undefined, body: { error: { code: 404, title: 'Not Found' } } });
    expect(await send('GET', '/api/v3/onezone/nothing')).toMatchObject({ status: 404, allow: undefined, body: { error: { id: 'notFound', details: { error_code: 'PV1008' } } } });
    expect(await send('GET', `${VAULT}/cards/nothing`)).toMatchObject({ status: 404, allow: undefined, body: { error_code: 'PV1008' } });
  });

  it('takes Allow from the registered routes: for every served API path, a method it lacks lists exactly the methods it serves', async () => {
    const byPath = new Map<string, Set<string>>();
    for (const { method, path } of servedRoutes(stack.producer.app)) {
      // the dashboard and the docs have wildcard routes, so their URLs also match other paths
      if (path.includes('*') || path.startsWith('/admin/') || path.startsWith('/docs')) continue;
      byPath.set(path, (byPath.get(path) ?? new Set()).add(method));
    }
    expect(byPath.size).toBeGreaterThan(15);
    for (const [path, methods] of byPath) {
      const url = path.replace(/:\w+/g, 'x1');
      const missing = ['PATCH', 'PUT', 'DELETE', 'POST', 'GET'].find((m) => !methods.has(m))!;
      const r = await send(missing, url);
      expect(r.status, `${missing} ${url}`).toBe(405);
      expect(r.allow, `${missing} ${url}`).toBe([...methods].sort().join(', '));
    }
  });
});
