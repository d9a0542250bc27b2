import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, freshCollection, subjectWithToken, tokenize, uid, waitForJob } from '../helpers/api.js';
import { rawRequest } from '../helpers/http.js';
import { type Stack, startStack } from '../helpers/stack.js';

describe('Idempotency-Key', () => {
  let stack: Stack;
  let writer: Awaited<ReturnType<typeof subjectWithToken>>;

  beforeAll(async () => {
    stack = await startStack();
    writer = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
  });
  afterAll(() => stack?.close());

  function submit(body: unknown, key: string, headers: Record<string, string> = writer.headers) {
    return call(stack, 'POST', '/v1/commands', { headers: { ...headers, 'idempotency-key': key }, body });
  }

  async function commandRows(submitterId: string, key: string) {
    return stack.database.db.selectFrom('commands').select(['id', 'submitter_id']).where('submitter_id', '=', submitterId).where('idempotency_key', '=', key).execute();
  }

  it('refuses an Idempotency-Key header sent twice (Node would join them into one key, "a, b") with 400 PV1002, over HTTP', async () => {
    const c = await freshCollection(stack);
    const body = { type: 'tokens.delete', collection: c, tags: ['t'], reason: 'AppFunctionality' };
    const r = await rawRequest(stack.producer.url, 'POST', '/v1/commands', { headers: { ...writer.headers, 'idempotency-key': ['key-a', 'key-b'] }, body });
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error_code: 'PV1002', context: { header: 'Idempotency-Key' } });
    expect(await commandRows(writer.subject.id, 'key-a, key-b')).toEqual([]);
  });

  describe('a revoke retried after it ran (its token is gone)', () => {
    /** A user and a second access token of theirs, to revoke. */
    async function userWithSecondToken() {
      const user = await subjectWithToken(stack, { id: uid('u'), kind: 'user' });
      const issued = await call(stack, 'POST', `/v1/subjects/${user.subject.id}/tokens`, { headers: stack.admin, body: { temporary: false } });
      expect(issued.status).toBe(201);
      return { user, secret: issued.body.token as string, tokenId: issued.body.token_id as string };
    }

    it('POST /v1/commands: the same key and token replay the job (not 404); another token under the key is 422; no key is 404', async () => {
      const { user, tokenId } = await userWithSecondToken();
      const key = uid('revoke');
      const command = { type: 'access_token.revoke', token_id: tokenId };
      const first = await call(stack, 'POST', '/v1/commands', { headers: { ...user.headers, 'idempotency-key': key, prefer: 'wait=10' }, body: command });
      expect(first.status).toBe(200);
      expect(first.body.state).toBe('succeeded');

      const again = await call(stack, 'POST', '/v1/commands', { headers: { ...user.headers, 'idempotency-key': key }, body: command });
      expect(again.status).toBe(200);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.job_id).toBe(first.body.job_id);

      const other = await call(stack, 'POST', '/v1/commands', { headers: { ...user.headers, 'idempotency-key': key }, body: { ...command, token_id: uid('gone') } });
      expect(other.status).toBe(422);
      expect(other.body).toMatchObject({ error_code: 'PV3010' });
      const noKey = await call(stack, 'POST', '/v1/commands', { headers: user.headers, body: command });
      expect(noKey.status).toBe(404);
      expect(noKey.body).toMatchObject({ error_code: 'PV3006' });
      expect(await commandRows(user.subject.id, key)).toHaveLength(1);
    });

    it('DELETE /v3/auth/tokens: the same key and secret replay the job (not 404); another key is 404', async () => {
      const { user, secret } = await userWithSecondToken();
      const key = uid('ks');
      const headers = { 'x-auth-token': user.token, 'x-subject-token': secret, 'idempotency-key': key };
      const first = await call(stack, 'DELETE', '/v3/auth/tokens', { headers });
      expect(first.status).toBe(204);
      const [row] = await commandRows(user.subject.id, key);

      const again = await call(stack, 'DELETE', '/v3/auth/tokens', { headers });
      expect(again.status).toBe(204);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.headers.location).toBe(`/v1/jobs/${row!.id}`);
      const async = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { ...headers, prefer: 'respond-async' } });
      expect(async.status).toBe(200);
      expect(async.body.job_id).toBe(row!.id);

      const otherKey = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { ...headers, 'idempotency-key': uid('ks') } });
      expect(otherKey.status).toBe(404);
      expect(otherKey.body).toMatchObject({ error: { code: 404 } });
    });

    it('DELETE /v3/auth/tokens: under a used key, another unknown X-Subject-Token is another request (422), not a replay', async () => {
      const { user, secret } = await userWithSecondToken();
      const key = uid('ks');
      const first = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': secret, 'idempotency-key': key, prefer: 'wait=10' } });
      expect(first.status).toBe(204);
      const unknown = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': `rvk_unknown_${uid('s')}`, 'idempotency-key': key } });
      expect(unknown.status).toBe(422);
      expect(unknown.headers['idempotent-replayed']).toBeUndefined();
      expect(await commandRows(user.subject.id, key)).toHaveLength(1);
    });
  });

  it('replays the same job with 200 and Idempotent-Replayed: true for the same key and command', async () => {
    const c = await freshCollection(stack);
    await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['t'] }]);
    const key = uid('key');
    const command = { type: 'tokens.delete', collection: c, tags: ['t'], reason: 'AppFunctionality' };
    const first = await submit(command, key);
    expect(first.status).toBe(202);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    expect(first.body.idempotency_key).toBe(key);

    const second = await submit(command, key);
    expect(second.status).toBe(200);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(second.body.job_id).toBe(first.body.job_id);
    expect(second.headers.location).toBe(`/v1/jobs/${first.body.job_id}`);

    const job = await waitForJob(stack, first.body.job_id, writer.headers);
    expect(job).toMatchObject({ state: 'succeeded', result: { deleted: 1 } });
    // a replay after the end still names the same job, and runs nothing again
    const third = await submit(command, key);
    expect(third.status).toBe(200);
    expect(third.body).toMatchObject({ job_id: first.body.job_id, state: 'succeeded', result: { deleted: 1 } });
    expect(await commandRows(writer.subject.id, key)).toHaveLength(1);
  });

  it('answers 422 PV3010 when the same key comes with a different command, and keeps the first one', async () => {
    const c = await freshCollection(stack);
    const key = uid('key');
    const first = await submit({ type: 'tokens.rotate', collection: c, token_ids: ['a'], reason: 'AppFunctionality' }, key);
    expect(first.status).toBe(202);
    const other = await submit({ type: 'tokens.rotate', collection: c, token_ids: ['b'], reason: 'AppFunctionality' }, key);
    expect(other.status).toBe(422);
    expect(other.body).toMatchObject({ error_code: 'PV3010', message: expect.any(String) });
    const otherType = await submit({ type: 'tokens.delete', collection: c, token_ids: ['a'], reason: 'AppFunctionality' }, key);
    expect(otherType.status).toBe(422);
    expect(otherType.body.error_code).toBe('PV3010');
    expect(await commandRows(writer.subject.id, key)).toHaveLength(1);
  });

  it('answers 422 PV3010 on a seed route too when the key was used for another command', async () => {
    const c = await freshCollection(stack);
    const key = uid('key');
    const first = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${c}/tokens?tags=x&reason=AppFunctionality`, { headers: { ...writer.headers, 'idempotency-key': key } });
    expect(first.status).toBe(404);
    const other = await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/${c}/tokens?tags=y&reason=AppFunctionality`, { headers: { ...writer.headers, 'idempotency-key': key } });
    expect(other.status).toBe(422);
    expect(other.body.error_code).toBe('PV3010');
  });

  it('scopes the key to the subject: another subject using the same key gets a new job', async () => {
    const c = await freshCollection(stack);
    const key = uid('key');
    const other = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
    const command = { type: 'tokens.rotate', collection: c, token_ids: ['a'], reason: 'AppFunctionality' };
    const mine = await submit(command, key);
    const theirs = await submit(command, key, other.headers);
    expect(mine.status).toBe(202);
    expect(theirs.status).toBe(202);
    expect(theirs.headers['idempotent-replayed']).toBeUndefined();
    expect(theirs.body.job_id).not.toBe(mine.body.job_id);
    expect(await commandRows(writer.subject.id, key)).toHaveLength(1);
    expect(await commandRows(other.subject.id, key)).toHaveLength(1);
    // and the other subject cannot see my job through the shared key
    expect((await call(stack, 'GET', `/v1/jobs/${mine.body.job_id}`, { headers: other.headers })).status).toBe(404);
  });

  it('accepts a key of 255 characters and rejects one of 256 with 400 PV1002', async () => {
    const c = await freshCollection(stack);
    const command = { type: 'tokens.rotate', collection: c, token_ids: ['a'], reason: 'AppFunctionality' };
    const ok = await submit(command, 'k'.repeat(255));
    expect(ok.status).toBe(202);
    expect(ok.body.idempotency_key).toBe('k'.repeat(255));
    const tooLong = await submit(command, 'k'.repeat(256));
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error_code).toBe('PV1002');
    expect(await commandRows(writer.subject.id, 'k'.repeat(256))).toHaveLength(0);
  });

  it('creates exactly one command for twenty concurrent submissions with one key', async () => {
    const c = await freshCollection(stack);
    await tokenize(stack, c, [
      { object: { id: 'o1' }, tags: ['race'] },
      { object: { id: 'o2' }, tags: ['race'] },
    ]);
    const key = uid('key');
    const command = { type: 'tokens.delete', collection: c, tags: ['race'], reason: 'AppFunctionality' };
    const answers = await Promise.all(Array.from({ length: 20 }, () => submit(command, key)));

    expect(answers.map((a) => a.status).filter((s) => s !== 200 && s !== 202)).toEqual([]);
    expect(new Set(answers.map((a) => a.body.job_id)).size).toBe(1);
    expect(answers.filter((a) => a.status === 202)).toHaveLength(1);
    for (const replay of answers.filter((a) => a.status === 200)) expect(replay.headers['idempotent-replayed']).toBe('true');
    const rows = await commandRows(writer.subject.id, key);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.id).toBe(answers[0]?.body.job_id);

    const job = await waitForJob(stack, rows[0]!.id, writer.headers);
    expect(job).toMatchObject({ state: 'succeeded', result: { deleted: 2 }, attempts: 1 });
  });

  it('replays a finished rotate with Prefer: wait as the identical mapping, rotating nothing again', async () => {
    const c = await freshCollection(stack);
    const [a, b] = await tokenize(stack, c, [{ object: { id: 'o1' } }, { object: { id: 'o2' } }]);
    const key = uid('key');
    const url = `/api/pvlt/1.0/data/collections/${c}/rotate/tokens?token_ids=${a},${b}&reason=AppFunctionality`;
    const headers = { ...writer.headers, 'idempotency-key': key, prefer: 'wait=10' };
    const first = await call(stack, 'POST', url, { headers });
    expect(first.status).toBe(200);
    expect(Object.keys(first.body).sort()).toEqual([a, b].sort());

    const replay = await call(stack, 'POST', url, { headers });
    expect(replay.status).toBe(200);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body).toEqual(first.body);

    // the new IDs from the first answer are the ones that exist
    const found = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${c}/query/tokens?reason=AppFunctionality`, {
      headers: stack.admin,
      body: { token_ids: [a, b, ...Object.values(first.body as Record<string, string>)] },
    });
    expect(new Set(found.body.map((t: { token_id: string }) => t.token_id))).toEqual(new Set(Object.values(first.body)));
  });

  it('replays the same job through the native route as the same finished rotate mapping', async () => {
    const c = await freshCollection(stack);
    const [a] = await tokenize(stack, c, [{ object: { id: 'o1' } }]);
    const key = uid('key');
    const command = { type: 'tokens.rotate', collection: c, token_ids: [a], reason: 'AppFunctionality' };
    const headers = { ...writer.headers, prefer: 'wait=10' };
    const first = await submit(command, key, headers);
    expect(first.status).toBe(200);
    expect(first.body.state).toBe('succeeded');
    const replay = await submit(command, key, headers);
    expect(replay.status).toBe(200);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.job_id).toBe(first.body.job_id);
    expect(replay.body.result).toEqual(first.body.result);
  });
});
