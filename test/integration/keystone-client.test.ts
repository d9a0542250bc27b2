import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newSecret } from '../../producer/secrets.js';
import { call, insertExpiredToken, issueToken, subjectWithToken } from '../helpers/api.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §5/§6: a client written for Keystone works unchanged. Debian's python3-keystoneclient
 * (installed by .ci/run) talks to the producer on a real port through test/clients/keystone_client.py.
 * Debian's interpreter by path: a python3 earlier on PATH (pyenv, a venv) does not see its packages.
 */
const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('../clients/keystone_client.py', import.meta.url));

interface Step {
  op: 'validate' | 'get_token_data' | 'check' | 'revoke_token';
  token: string;
  allow_expired?: boolean;
}

/** Runs the steps with keystoneclient, as `authToken`, against the producer; returns a result per step. */
function keystoneClient(stack: Stack, authToken: string, steps: Step[]): Promise<any[]> {
  const input = JSON.stringify({ endpoint: `${stack.producer.url}/v3`, auth_token: authToken, steps });
  return new Promise((resolve, reject) => {
    // asynchronous: the producer answering the script runs in this process
    const child = execFile(PYTHON, [SCRIPT], { encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`${error.message}\n${stderr}`));
      resolve(JSON.parse(stdout).results);
    });
    child.stdin?.end(input);
  });
}

const KEYSTONE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;
/** A JavaScript ISO time as Python's `datetime.isoformat()` prints it (microseconds unless zero). */
const pythonTime = (iso: string) => iso.replace(/\.(\d{3})Z$/, (_, ms: string) => (ms === '000' ? '+00:00' : `.${ms}000+00:00`));

describe('keystoneclient against the Keystone routes', () => {
  let stack: Stack;
  /** A gateway: validates anyone's token (tokens:verify). */
  let gateway: Awaited<ReturnType<typeof subjectWithToken>>;
  let user: Awaited<ReturnType<typeof subjectWithToken>>;

  beforeAll(async () => {
    stack = await startStack();
    gateway = await subjectWithToken(stack, { id: `kc-gateway-${randomBytes(4).toString('hex')}`, kind: 'service', capabilities: ['tokens:verify'] });
    user = await subjectWithToken(stack, { id: `kc-user-${randomBytes(4).toString('hex')}`, kind: 'user', domain_id: 'kc-domain' });
  });
  afterAll(() => stack?.close());

  it('tokens.validate() gives an AccessInfoV3 of the user, with the token as auth_token and its ID as audit_id', async () => {
    const temporary = await issueToken(stack, user.subject.id);
    const [named, temp] = await keystoneClient(stack, gateway.token, [
      { op: 'validate', token: user.token },
      { op: 'validate', token: temporary.token },
    ]);
    expect(named).toMatchObject({
      ok: true,
      auth_token: user.token,
      user_id: user.subject.id,
      username: user.subject.id,
      user_domain_id: 'kc-domain',
      user_domain_name: 'kc-domain',
      audit_id: user.tokenId,
      // a named token lives until deleted: the last instant a Keystone client can parse
      expires: '9999-12-31T23:59:59+00:00',
      will_expire_soon: false,
      scoped: false,
    });
    expect(temp).toMatchObject({ ok: true, auth_token: temporary.token, audit_id: temporary.tokenId, expires: pythonTime(temporary.expiresAt!), will_expire_soon: false });
    expect(Date.parse(temp.issued)).toBeLessThanOrEqual(Date.parse(temp.expires));
  });

  it('tokens.get_token_data() gives the body of SPEC §6 with Keystone-formatted times', async () => {
    const [data] = await keystoneClient(stack, gateway.token, [{ op: 'get_token_data', token: user.token }]);
    expect(data.ok).toBe(true);
    expect(data.body).toEqual({
      token: {
        methods: ['token'],
        user: { id: user.subject.id, name: user.subject.id, domain: { id: 'kc-domain', name: 'kc-domain' } },
        audit_ids: [user.tokenId],
        issued_at: expect.stringMatching(KEYSTONE_TIME),
        expires_at: '9999-12-31T23:59:59.000000Z',
      },
    });
  });

  it('a HEAD check through the keystoneauth session: 200 with X-Subject-Token and no body, 404 for an unknown token', async () => {
    const [good, unknown] = await keystoneClient(stack, gateway.token, [
      { op: 'check', token: user.token },
      { op: 'check', token: newSecret() },
    ]);
    expect(good).toEqual({ ok: true, http_status: 200, subject_token: user.token, body: '' });
    expect(unknown).toEqual({ ok: true, http_status: 404, subject_token: null, body: '' });
  });

  it('an unknown or expired token raises NotFound; allow_expired validates the expired one', async () => {
    const expired = await insertExpiredToken(stack, user.subject.id);
    const [unknown, refused, allowed, data] = await keystoneClient(stack, gateway.token, [
      { op: 'validate', token: newSecret() },
      { op: 'validate', token: expired.token },
      { op: 'validate', token: expired.token, allow_expired: true },
      { op: 'get_token_data', token: expired.token, allow_expired: true },
    ]);
    expect(unknown).toMatchObject({ ok: false, error: 'NotFound', http_status: 404 });
    expect(refused).toMatchObject({ ok: false, error: 'NotFound', http_status: 404 });
    expect(allowed).toMatchObject({ ok: true, audit_id: expired.tokenId, expires: pythonTime(expired.expiresAt), will_expire_soon: true });
    expect(data.body.token.audit_ids).toEqual([expired.tokenId]);
  });

  it("a user validating another user's token without tokens:verify raises Forbidden", async () => {
    const other = await subjectWithToken(stack, { id: `kc-other-${randomBytes(4).toString('hex')}`, kind: 'user', domain_id: 'kc-domain' });
    const [result] = await keystoneClient(stack, other.token, [{ op: 'validate', token: user.token }]);
    expect(result).toMatchObject({ ok: false, error: 'Forbidden', http_status: 403 });
  });

  it('tokens.revoke_token() is accepted and the token ends revoked', async () => {
    const victim = await issueToken(stack, user.subject.id);
    const [revoked] = await keystoneClient(stack, user.token, [{ op: 'revoke_token', token: victim.token }]);
    expect(revoked.ok).toBe(true);
    expect([202, 204]).toContain(revoked.http_status);
    const deadline = Date.now() + 15_000;
    let status = 200;
    while (status === 200 && Date.now() < deadline) {
      status = (await call(stack, 'GET', '/v3/auth/tokens', { headers: { 'x-auth-token': gateway.token, 'x-subject-token': victim.token } })).status;
      if (status === 200) await sleep(25);
    }
    expect(status).toBe(404);
  });

  it('tokens.revoke_token() answers 204 and the token no longer validates on the very next request (SPEC §5)', async () => {
    const victim = await issueToken(stack, user.subject.id);
    const [revoked] = await keystoneClient(stack, user.token, [{ op: 'revoke_token', token: victim.token }]);
    expect(revoked).toEqual({ ok: true, http_status: 204 });
    // the gateway asks: to its user, a token that is gone is no longer provably its own (403)
    const [after] = await keystoneClient(stack, gateway.token, [{ op: 'validate', token: victim.token }]);
    expect(after).toMatchObject({ ok: false, error: 'NotFound', http_status: 404 });
  });
});
