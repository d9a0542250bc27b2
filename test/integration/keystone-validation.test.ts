import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeystoneTokenBody } from '../../contracts/index.js';
import { newSecret } from '../../producer/secrets.js';
import { call, insertExpiredToken, issueToken, type SubjectSpec, subjectWithToken, uid } from '../helpers/api.js';
import { keystoneError } from '../helpers/envelopes.js';
import { type Stack, startStack } from '../helpers/stack.js';

/** A JavaScript ISO time in Keystone's format: microseconds and Z. */
const keystoneTime = (iso: string) => iso.replace(/Z$/, '000Z');

describe('Keystone token validation: GET and HEAD /v3/auth/tokens', () => {
  let stack: Stack;
  /** A gateway: may validate anyone's token (tokens:verify). */
  let gateway: Awaited<ReturnType<typeof subjectWithToken>>;

  beforeAll(async () => {
    stack = await startStack();
    gateway = await subjectWithToken(stack, { id: uid('gateway'), kind: 'service', capabilities: ['tokens:verify'] });
  });
  afterAll(() => stack?.close());

  async function subject(spec: SubjectSpec) {
    return subjectWithToken(stack, { id: uid(spec.kind), ...spec });
  }

  /** Revokes every temporary token of the user, through the native route, and waits for it. */
  async function revokeTemporaryTokens(userId: string) {
    const r = await call(stack, 'POST', '/v1/commands', { headers: { ...stack.admin, prefer: 'wait=10' }, body: { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: userId } } });
    expect(r.body).toMatchObject({ state: 'succeeded' });
  }

  /** As the Keystone document's curl sends it: -H "X-Auth-Token:$token" -H "X-Subject-Token:$token". */
  function validate(authToken: string, subjectToken: string | undefined, query = '') {
    return call(stack, 'GET', `/v3/auth/tokens${query}`, { headers: { 'X-Auth-Token': authToken, ...(subjectToken !== undefined && { 'X-Subject-Token': subjectToken }) } });
  }

  function check(authToken: string, subjectToken: string) {
    return stack.producer.app.inject({ method: 'HEAD', url: '/v3/auth/tokens', headers: { 'X-Auth-Token': authToken, 'X-Subject-Token': subjectToken } });
  }

  it("validates the caller's own named token: 200, X-Subject-Token, the token body; a named token ends at Keystone's last instant", async () => {
    const user = await subject({ kind: 'user', domain_id: 'dom-a' });
    const r = await validate(user.token, user.token);
    expect(r.status).toBe(200);
    expect(r.headers['x-subject-token']).toBe(user.token);
    expect(r.headers['cache-control']).toBe('no-store');
    expect(KeystoneTokenBody.parse(r.body)).toEqual(r.body);
    expect(r.body).toEqual({
      token: {
        methods: ['token'],
        user: { id: user.subject.id, name: user.subject.id, domain: { id: 'dom-a', name: 'dom-a' } },
        audit_ids: [user.tokenId],
        issued_at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/),
        expires_at: '9999-12-31T23:59:59.000000Z',
      },
    });
  });

  it('gives a temporary token its expiry in microseconds, and takes ?nocatalog as keystoneclient sends it', async () => {
    const user = await subject({ kind: 'user' });
    const temp = await issueToken(stack, user.subject.id);
    const r = await validate(user.token, temp.token, '?nocatalog');
    expect(r.status).toBe(200);
    expect(r.body.token).toMatchObject({ audit_ids: [temp.tokenId], expires_at: keystoneTime(temp.expiresAt!) });
    expect(Date.parse(r.body.token.issued_at)).toBeLessThan(Date.parse(r.body.token.expires_at));
  });

  it("lets a caller with tokens:verify validate anyone's token", async () => {
    const user = await subject({ kind: 'user', domain_id: uid('dom') });
    const r = await validate(gateway.token, user.token);
    expect(r.status).toBe(200);
    expect(r.body.token.user.id).toBe(user.subject.id);
  });

  it("refuses another subject's token, or an unknown one, to a caller without tokens:verify with 403", async () => {
    const domain = uid('dom');
    const user = await subject({ kind: 'user', domain_id: domain });
    const other = await subject({ kind: 'user', domain_id: domain, capabilities: ['security_admin', 'tokens:manage'] });
    for (const secret of [user.token, newSecret()]) {
      const r = await validate(other.token, secret);
      expect(r.status).toBe(403);
      expect(r.body).toEqual(keystoneError(403));
      expect(r.headers['x-subject-token']).toBeUndefined();
    }
  });

  it('answers 404 in the Keystone envelope for an unknown token', async () => {
    const r = await validate(gateway.token, newSecret());
    expect(r.status).toBe(404);
    expect(r.body).toEqual(keystoneError(404));
    expect(r.headers['x-subject-token']).toBeUndefined();
  });

  it('answers 404 for a deleted token and for a revoked temporary token', async () => {
    const user = await subject({ kind: 'user' });
    const deleted = await issueToken(stack, user.subject.id);
    const del = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'X-Auth-Token': user.token, 'X-Subject-Token': deleted.token, prefer: 'wait=10' } });
    expect(del.status).toBe(204);
    const revoked = await issueToken(stack, user.subject.id);
    expect((await validate(gateway.token, revoked.token)).status).toBe(200);
    await revokeTemporaryTokens(user.subject.id);
    for (const secret of [deleted.token, revoked.token]) {
      const r = await validate(gateway.token, secret);
      expect(r.status).toBe(404);
      expect(r.body).toEqual(keystoneError(404));
    }
    // the named token is not temporary: it still validates
    expect((await validate(gateway.token, user.token)).status).toBe(200);
  });

  it('answers 404 for an expired token; ?allow_expired=1 or true validates it, other values do not', async () => {
    const user = await subject({ kind: 'user' });
    const expired = await insertExpiredToken(stack, user.subject.id);
    const refused = await validate(user.token, expired.token);
    expect(refused.status).toBe(404);
    expect(refused.body).toEqual(keystoneError(404));
    for (const value of ['1', 'true', 'True']) {
      const r = await validate(user.token, expired.token, `?allow_expired=${value}`);
      expect(r.status, value).toBe(200);
      expect(r.body.token).toMatchObject({ audit_ids: [expired.tokenId], expires_at: keystoneTime(expired.expiresAt) });
      expect(r.headers['x-subject-token']).toBe(expired.token);
    }
    for (const query of ['?allow_expired=0', '?allow_expired=false', '?allow_expired', '?allow_expired=maybe']) {
      expect((await validate(user.token, expired.token, query)).status, query).toBe(404);
    }
  });

  it('does not let allow_expired validate a revoked token, expired or not', async () => {
    const user = await subject({ kind: 'user' });
    const expired = await insertExpiredToken(stack, user.subject.id);
    const live = await issueToken(stack, user.subject.id);
    await revokeTemporaryTokens(user.subject.id);
    for (const secret of [expired.token, live.token]) {
      const r = await validate(gateway.token, secret, '?allow_expired=1');
      expect(r.status).toBe(404);
      expect(r.body).toEqual(keystoneError(404));
    }
  });

  it('answers HEAD with the status and headers of GET and no body', async () => {
    const user = await subject({ kind: 'user' });
    const get = await validate(gateway.token, user.token);
    const head = await check(gateway.token, user.token);
    expect(head.statusCode).toBe(200);
    expect(head.body).toBe('');
    const comparable = (headers: Record<string, unknown>) => {
      const { date: _date, 'x-request-id': _id, ...rest } = headers;
      return rest;
    };
    expect(comparable(head.headers)).toEqual(comparable(get.headers));
    expect(head.headers['x-subject-token']).toBe(user.token);

    const unknown = await check(gateway.token, newSecret());
    expect(unknown.statusCode).toBe(404);
    expect(unknown.body).toBe('');
    const forbidden = await check(user.token, gateway.token);
    expect(forbidden.statusCode).toBe(403);
  });

  it('answers 400 without X-Subject-Token and 401 without a valid X-Auth-Token, in the Keystone envelope', async () => {
    const user = await subject({ kind: 'user' });
    const missing = await validate(user.token, undefined);
    expect(missing.status).toBe(400);
    expect(missing.body).toEqual(keystoneError(400));
    const anonymous = await call(stack, 'GET', '/v3/auth/tokens', { headers: { 'X-Subject-Token': user.token } });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body).toEqual(keystoneError(401));
    const expiredCaller = await insertExpiredToken(stack, user.subject.id);
    const stale = await validate(expiredCaller.token, user.token);
    expect(stale.status).toBe(401);
    expect(stale.body).toEqual(keystoneError(401));
  });
});
