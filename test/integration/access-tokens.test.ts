import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IssuedAccessToken, MAX_TEMPORARY_TTL_SECONDS, SubjectView, VerifiedAccessToken } from '../../contracts/index.js';
import { ensureBootstrapAdmin } from '../../producer/services/subjects.service.js';
import { bearer, call, type SubjectSpec, subjectWithToken, uid } from '../helpers/api.js';
import { sleep } from '../helpers/sleep.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

const WAIT = { prefer: 'wait=10' };

describe('subjects and access tokens', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack?.close());

  function issue(subjectId: string, body: Record<string, unknown>, headers: Record<string, string> = stack.admin) {
    return call(stack, 'POST', `/v1/subjects/${subjectId}/tokens`, { headers, body });
  }

  function verify(secret: string, headers: Record<string, string> = stack.admin) {
    return call(stack, 'GET', '/v1/auth/verify', { headers: { ...headers, 'x-subject-token': secret } });
  }

  /** Whether `secret` authenticates (any authenticated route will do). */
  async function authStatus(secret: string): Promise<number> {
    return (await call(stack, 'GET', '/v1/jobs/00000000-0000-4000-8000-000000000000', { headers: bearer(secret) })).status;
  }

  function subject(spec: SubjectSpec) {
    return subjectWithToken(stack, { id: uid(spec.kind), ...spec });
  }

  describe('POST /v1/subjects', () => {
    it('creates a subject and answers 201 with its view', async () => {
      const id = uid('alice');
      const r = await call(stack, 'POST', '/v1/subjects', {
        headers: stack.admin,
        body: { id, kind: 'user', domain_id: 'acme', capabilities: ['tokens:read', 'tokens:read'], tenant_ids: ['t1'], collections: ['cards'] },
      });
      expect(r.status).toBe(201);
      expect(SubjectView.parse(r.body)).toEqual({
        id,
        kind: 'user',
        domain_id: 'acme',
        capabilities: ['tokens:read'],
        tenant_ids: ['t1'],
        collections: ['cards'],
        temporary_generation: 0,
        disabled_at: null,
      });
    });

    it('fills in defaults: a new ID, domain default, no capabilities, every tenant and collection', async () => {
      const r = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'service' } });
      expect(r.status).toBe(201);
      expect(r.body).toEqual({ id: expect.any(String), kind: 'service', domain_id: 'default', capabilities: [], tenant_ids: null, collections: null, temporary_generation: 0, disabled_at: null });
    });

    it('answers 409 PV3004 for a duplicate ID and keeps the first subject', async () => {
      const id = uid('dup');
      expect((await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { id, kind: 'user', domain_id: 'first' } })).status).toBe(201);
      const again = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { id, kind: 'service', domain_id: 'second' } });
      expect(again.status).toBe(409);
      expect(again.body.error_code).toBe('PV3004');
      const row = await stack.database.db.selectFrom('subjects').select(['kind', 'domain_id']).where('id', '=', id).executeTakeFirstOrThrow();
      expect(row).toEqual({ kind: 'user', domain_id: 'first' });
    });

    it('forbids a caller without subjects:admin with 403 PV1007', async () => {
      const plain = await subject({ kind: 'service', capabilities: ['tokens:read'] });
      const r = await call(stack, 'POST', '/v1/subjects', { headers: plain.headers, body: { kind: 'user' } });
      expect(r.status).toBe(403);
      expect(r.body.error_code).toBe('PV1007');
    });

    it('rejects an unknown kind or capability with 400', async () => {
      expect((await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'robot' } })).status).toBe(400);
      const cap = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user', capabilities: ['everything'] } });
      expect(cap.status).toBe(400);
      expect(cap.body.error_code).toBe('PV1002');
    });
  });

  describe('POST /v1/subjects/{id}/tokens', () => {
    it('issues a named token with no generation and no expiry; the secret authenticates', async () => {
      const user = await subject({ kind: 'user' });
      const r = await issue(user.subject.id, { temporary: false, name: 'laptop' });
      expect(r.status).toBe(201);
      expect(IssuedAccessToken.parse(r.body)).toMatchObject({ temporary: false, generation: null, expires_at: null });
      expect(r.body.token).toEqual(expect.any(String));
      expect(r.headers['cache-control']).toBe('no-store');
      expect(await authStatus(r.body.token)).not.toBe(401);
    });

    it('issues a temporary token with the given TTL, carrying the subject’s current generation', async () => {
      const user = await subject({ kind: 'user' });
      const before = Date.now();
      const first = await issue(user.subject.id, { temporary: true, ttl_seconds: 600 });
      const after = Date.now();
      expect(first.status).toBe(201);
      expect(first.body).toMatchObject({ temporary: true, generation: 0 });
      const expiresAt = new Date(first.body.expires_at).getTime();
      expect(expiresAt).toBeGreaterThanOrEqual(before + 600_000);
      expect(expiresAt).toBeLessThanOrEqual(after + 600_000);

      const bump = await call(stack, 'DELETE', `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`, { headers: { ...stack.admin, ...WAIT } });
      expect(bump.status).toBe(204);
      const second = await issue(user.subject.id, { temporary: true });
      expect(second.status).toBe(201);
      expect(second.body).toMatchObject({ temporary: true, generation: 1, expires_at: expect.any(String) });
    });

    it('accepts a TTL of exactly 7 days and rejects one over 7 days with 400', async () => {
      const user = await subject({ kind: 'user' });
      expect((await issue(user.subject.id, { temporary: true, ttl_seconds: MAX_TEMPORARY_TTL_SECONDS })).status).toBe(201);
      const tooLong = await issue(user.subject.id, { temporary: true, ttl_seconds: 7 * 24 * 3600 + 1 });
      expect(tooLong.status).toBe(400);
      expect(tooLong.body.error_code).toBe('PV1002');
      expect(tooLong.body.message).toContain('ttl_seconds');
    });

    it('rejects a TTL on a named token with 400', async () => {
      const user = await subject({ kind: 'user' });
      const r = await issue(user.subject.id, { temporary: false, ttl_seconds: 60 });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
      expect(r.body.message).toContain('ttl_seconds');
      const stored = await stack.database.db.selectFrom('access_tokens').select('id').where('subject_id', '=', user.subject.id).execute();
      expect(stored).toHaveLength(1);
    });

    it('answers 404 PV3003 for an unknown subject', async () => {
      const r = await issue(uid('nobody'), { temporary: false });
      expect(r.status).toBe(404);
      expect(r.body.error_code).toBe('PV3003');
    });

    it('lets a subject issue itself a temporary token but not a named one', async () => {
      const user = await subject({ kind: 'user' });
      const temporary = await issue(user.subject.id, { temporary: true, ttl_seconds: 60 }, user.headers);
      expect(temporary.status).toBe(201);
      expect(temporary.body.temporary).toBe(true);
      const named = await issue(user.subject.id, { temporary: false }, user.headers);
      expect(named.status).toBe(403);
      expect(named.body.error_code).toBe('PV1007');
    });

    it('forbids a subject without subjects:admin to issue a token to someone else', async () => {
      const user = await subject({ kind: 'user' });
      const other = await subject({ kind: 'user' });
      const r = await issue(other.subject.id, { temporary: true }, user.headers);
      expect(r.status).toBe(403);
      expect(r.body.error_code).toBe('PV1007');
    });
  });

  describe('GET /v1/auth/verify', () => {
    it('answers 200 with the token’s facts for a valid token', async () => {
      const user = await subject({ kind: 'user', domain_id: 'acme' });
      const temp = await issue(user.subject.id, { temporary: true, ttl_seconds: 300 });
      const r = await verify(temp.body.token);
      expect(r.status).toBe(200);
      expect(VerifiedAccessToken.parse(r.body)).toEqual({
        token_id: temp.body.token_id,
        subject: { id: user.subject.id, kind: 'user', domain_id: 'acme' },
        temporary: true,
        generation: 0,
        expires_at: temp.body.expires_at,
      });
      const named = await verify(user.token);
      expect(named.body).toMatchObject({ token_id: user.tokenId, temporary: false, generation: null, expires_at: null });
    });

    it('answers 404 with reason not_found for an unknown token', async () => {
      const r = await verify(`rvk_${randomBytes(32).toString('base64url')}`);
      expect(r.status).toBe(404);
      expect(r.body.context).toMatchObject({ reason: 'not_found' });
    });

    it('answers 400 without X-Subject-Token', async () => {
      const r = await call(stack, 'GET', '/v1/auth/verify', { headers: stack.admin });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
    });

    it('after a generation bump: the old temporary token is revoked and no longer authenticates; a new one verifies', async () => {
      const user = await subject({ kind: 'user' });
      const old = await issue(user.subject.id, { temporary: true, ttl_seconds: 600 });
      expect((await verify(old.body.token)).status).toBe(200);
      expect(await authStatus(old.body.token)).not.toBe(401);

      const bump = await call(stack, 'DELETE', `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`, { headers: { ...user.headers, ...WAIT } });
      expect(bump.status).toBe(204);

      const revoked = await verify(old.body.token);
      expect(revoked.status).toBe(404);
      expect(revoked.body.context).toMatchObject({ reason: 'revoked' });
      expect(await authStatus(old.body.token)).toBe(401);
      // the named token is not temporary: it survives the bump
      expect(await authStatus(user.token)).not.toBe(401);

      const fresh = await issue(user.subject.id, { temporary: true, ttl_seconds: 600 });
      expect(fresh.body.generation).toBe(1);
      const verified = await verify(fresh.body.token);
      expect(verified.status).toBe(200);
      expect(verified.body).toMatchObject({ token_id: fresh.body.token_id, generation: 1 });
    });

    it('answers 404 with reason expired past the expiry', async () => {
      const user = await subject({ kind: 'user' });
      const temp = await issue(user.subject.id, { temporary: true, ttl_seconds: 1 });
      await sleep(1200);
      const r = await verify(temp.body.token);
      expect(r.status).toBe(404);
      expect(r.body.context).toMatchObject({ reason: 'expired' });
    });

    it('lets a caller without tokens:verify verify its own tokens, but not someone else’s', async () => {
      const user = await subject({ kind: 'user', capabilities: [] });
      const own = await issue(user.subject.id, { temporary: true, ttl_seconds: 60 });
      const mine = await verify(own.body.token, user.headers);
      expect(mine.status).toBe(200);
      expect(mine.body.subject.id).toBe(user.subject.id);

      const other = await subject({ kind: 'user' });
      const theirs = await verify(other.token, user.headers);
      expect(theirs.status).toBe(403);
      expect(theirs.body.error_code).toBe('PV1007');
      const unknown = await verify(`rvk_${randomBytes(32).toString('base64url')}`, user.headers);
      expect(unknown.status).toBe(403);
    });

    it('lets a caller with tokens:verify verify anyone’s token', async () => {
      const gateway = await subject({ kind: 'service', capabilities: ['tokens:verify'] });
      const other = await subject({ kind: 'user' });
      const r = await verify(other.token, gateway.headers);
      expect(r.status).toBe(200);
      expect(r.body.subject.id).toBe(other.subject.id);
    });
  });

  describe('the bootstrap admin', () => {
    it('authenticates with BOOTSTRAP_ADMIN_TOKEN and holds subjects:admin', async () => {
      const r = await call(stack, 'POST', '/v1/subjects', { headers: bearer(ADMIN_TOKEN), body: { kind: 'service' } });
      expect(r.status).toBe(201);
      const viaXAuth = await verify(ADMIN_TOKEN, { 'x-auth-token': ADMIN_TOKEN });
      expect(viaXAuth.status).toBe(200);
      expect(viaXAuth.body).toMatchObject({ subject: { kind: 'service' }, temporary: false, expires_at: null });
    });

    it('locked out, is enabled again by the next start (ensureBootstrapAdmin), with the secret of the configuration', async () => {
      const lockout = await call(stack, 'POST', '/v1/commands', { headers: { ...bearer(ADMIN_TOKEN), ...WAIT }, body: { type: 'subject.lockout', subject: { kind: 'service', id: 'admin' } } });
      expect(lockout.body.state).toBe('succeeded');
      expect((await call(stack, 'POST', '/v1/subjects', { headers: bearer(ADMIN_TOKEN), body: { kind: 'service' } })).status).toBe(401);

      expect(await ensureBootstrapAdmin(stack.database.db, ADMIN_TOKEN)).toEqual({ wasLockedOut: true });
      expect((await call(stack, 'POST', '/v1/subjects', { headers: bearer(ADMIN_TOKEN), body: { kind: 'service' } })).status).toBe(201);
      expect(await ensureBootstrapAdmin(stack.database.db, ADMIN_TOKEN)).toEqual({ wasLockedOut: false });
    });
  });

  describe('secret storage', () => {
    it('stores only a 32-byte SHA-256 of each secret, never the secret itself', async () => {
      const user = await subject({ kind: 'user' });
      const temp = await issue(user.subject.id, { temporary: true, ttl_seconds: 60, name: 'temp' });
      const secrets = [user.token, temp.body.token as string, ADMIN_TOKEN];

      const rows = await stack.database.db.selectFrom('access_tokens').selectAll().execute();
      expect(rows.length).toBeGreaterThanOrEqual(3);
      for (const row of rows) {
        expect(Buffer.isBuffer(row.secret_hash)).toBe(true);
        expect(row.secret_hash).toHaveLength(32);
        for (const value of Object.values(row)) {
          const text = Buffer.isBuffer(value) ? value.toString('utf8') : String(value);
          for (const secret of secrets) expect(text).not.toContain(secret);
        }
      }
      const hashes = rows.map((r) => r.secret_hash.toString('hex'));
      for (const secret of secrets) expect(hashes).toContain(createHash('sha256').update(secret).digest('hex'));
    });
  });
});
