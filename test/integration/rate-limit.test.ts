import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { insertAccessToken } from '../../db/repositories/access-token.repository.js';
import { insertSubject } from '../../db/repositories/subject.repository.js';
import { hashSecret, newSecret } from '../../producer/secrets.js';
import { bearer, call } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

describe('per-subject rate limiting and security headers', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_SECONDS: '60' } });
  });
  afterAll(() => stack?.close());

  /** A user and its named token, written straight to the database: the admin's calls count too. */
  async function user(id: string, capabilities: 'tokens:read'[] = []) {
    await insertSubject(stack.database.db, { id, kind: 'user', domain_id: 'default', capabilities, tenant_ids: null, collections: null });
    const secret = newSecret();
    await insertAccessToken(stack.database.db, { id: randomUUID(), subject_id: id, secret_hash: hashSecret(secret), name: null, temporary: false, generation: null, expires_at: null });
    return { headers: bearer(secret) };
  }

  it("answers 429 PV1011 with Retry-After once a subject's budget is spent, in the route's envelope", async () => {
    const busy = await user('busy', ['tokens:read']);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await call(stack, 'GET', '/api/v3/onezone/users/busy/tokens/temporary', { headers: busy.headers })).status);
    expect(statuses).toEqual([200, 200, 200]);
    const limited = await call(stack, 'GET', '/api/v3/onezone/users/busy/tokens/temporary', { headers: busy.headers });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.body.error).toMatchObject({ id: 'limitReached', details: { error_code: 'PV1011', limit: 3 } });
    const piiano = await call(stack, 'GET', '/api/pvlt/1.0/data/collections/none/count/tokens?reason=AppFunctionality', { headers: busy.headers });
    expect(piiano.status).toBe(429);
    expect(piiano.body).toMatchObject({ error_code: 'PV1011', context: { limit: '3', window_seconds: '60' } });
  });

  it('counts each subject on its own', async () => {
    const a = await user('calm-a');
    const b = await user('calm-b');
    for (let i = 0; i < 4; i++) await call(stack, 'GET', '/api/v3/onezone/users/calm-a/tokens/temporary', { headers: a.headers });
    expect((await call(stack, 'GET', '/api/v3/onezone/users/calm-a/tokens/temporary', { headers: a.headers })).status).toBe(429);
    expect((await call(stack, 'GET', '/api/v3/onezone/users/calm-b/tokens/temporary', { headers: b.headers })).status).toBe(200);
  });

  it('never limits the health checks', async () => {
    for (let i = 0; i < 6; i++) {
      expect((await call(stack, 'GET', '/healthz')).status).toBe(200);
      expect((await call(stack, 'GET', '/readyz')).status).toBe(200);
    }
  });

  it("sends helmet's security headers on every answer: success, refusal, not found, documentation", async () => {
    const answers = await Promise.all([
      call(stack, 'GET', '/healthz'),
      call(stack, 'POST', '/v1/commands', { body: { type: 'tokens.delete', collection: 'c', token_ids: [randomUUID()] } }),
      call(stack, 'GET', '/no/such/route'),
      call(stack, 'GET', '/docs/json'),
    ]);
    expect(answers.map((r) => r.status)).toEqual([200, 401, 404, 200]);
    for (const r of answers) {
      expect(r.headers).toMatchObject({
        'x-content-type-options': 'nosniff',
        'x-frame-options': 'SAMEORIGIN',
        'strict-transport-security': 'max-age=31536000; includeSubDomains',
        'referrer-policy': 'no-referrer',
        'cross-origin-opener-policy': 'same-origin',
        'cross-origin-resource-policy': 'same-origin',
        'origin-agent-cluster': '?1',
        'x-dns-prefetch-control': 'off',
        'x-download-options': 'noopen',
        'x-permitted-cross-domain-policies': 'none',
        'x-xss-protection': '0',
      });
      // the Swagger UI and the dashboard need their inline scripts: no CSP, no COEP
      expect(r.headers['content-security-policy']).toBeUndefined();
      expect(r.headers['cross-origin-embedder-policy']).toBeUndefined();
    }
  });
});
