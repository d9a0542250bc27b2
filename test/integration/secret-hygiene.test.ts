import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { Redis } from 'ioredis';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigSchema, EVENT_FIELD, RevocationEvent } from '../../contracts/index.js';
import { hashSecret, newSecret, sameHash } from '../../producer/secrets.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { rawRequest, sendRaw } from '../helpers/http.js';
import { compiled, PROJECT_ROOT } from '../helpers/processes.js';
import { deleteKeys, TEST_REDIS_URL } from '../helpers/redis.js';
import { sleep } from '../helpers/sleep.js';

/**
 * Secret hygiene (README "Security model", SPEC §1 and §3): access-token secrets are shown once,
 * stored only as their SHA-256, and never reach a log, a table, a queue job or an event.
 *
 * The real binaries run as child processes — `bin/producer.ts` and `bin/worker.ts`, whose pino
 * is made by `bin/startup.ts` (redaction included) — at LOG_LEVEL=trace, their output captured.
 * A scenario uses known secrets in every header that carries one (Authorization: Bearer and
 * Basic, X-Auth-Token, X-Subject-Token), through every kind of command, until every job has
 * ended and its events are on the stream. Then each secret, and its obvious encodings, is
 * looked for in every column of every table, every key of the test's Redis namespace and
 * every line the two processes wrote. The scenario asserts that each secret worked, so a
 * secret that was never sent cannot make the search pass.
 */

const COLLECTION = 'hyg_cards';

// ---------------------------------------------------------------------------------------------
// Child processes: the real entry points, configured only by their environment
// ---------------------------------------------------------------------------------------------

interface Service {
  child: ChildProcess;
  output(): string;
  exited: Promise<void>;
}

const children: ChildProcess[] = [];

/** `node dist/<script>.js`, as `npm run producer` / `npm run worker` run it, output piped. */
function spawnBin(script: string, env: Record<string, string>): Service {
  const base: NodeJS.ProcessEnv = { ...process.env };
  // the child gets exactly the configuration given here
  for (const key of ['NODE_OPTIONS', ...Object.keys(ConfigSchema.shape)]) delete base[key];
  const child = spawn(process.execPath, [compiled(script)], { cwd: PROJECT_ROOT, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  // 'close': every byte of stdout and stderr has been read
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  return { child, output: () => output, exited };
}

/** Resolves with the first JSON log line whose msg is `msg`. */
async function waitForLog(service: Service, msg: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of service.output().split('\n')) {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (entry.msg === msg) return entry;
      } catch {
        // not a log line
      }
    }
    if (service.child.exitCode !== null) throw new Error(`exited before logging '${msg}':\n${service.output()}`);
    if (Date.now() > deadline) throw new Error(`no '${msg}' after ${timeoutMs} ms:\n${service.output()}`);
    await sleep(50);
  }
}

/** SIGTERM (the producer and worker drain and exit 0), SIGKILL if that takes over 20 s. */
async function stop(service: Service): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  const timer = setTimeout(() => service.child.kill('SIGKILL'), 20_000);
  await service.exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------------------------

/**
 * What a secret may look like where it leaked: as is; its random part alone and the first 20
 * characters of it (a truncated log); base64, base64url and hex of its bytes (bytea columns
 * print as hex); and the decimal byte list JSON gives a Buffer (`{"type":"Buffer","data":[…]}`).
 */
function encodingsOf(secret: string): Record<string, string> {
  const bytes = Buffer.from(secret, 'utf8');
  const body = secret.startsWith('rvk_') ? secret.slice(4) : secret;
  return {
    plain: secret,
    'random part': body,
    'first 20 characters of the random part': body.slice(0, 20),
    base64: bytes.toString('base64').replace(/=+$/, ''),
    base64url: bytes.toString('base64url'),
    hex: bytes.toString('hex'),
    'JSON Buffer bytes': [...bytes].join(','),
  };
}

/** Where a needle was found: haystack name and a few characters around it. */
function findAll(haystacks: Record<string, string>, needles: Record<string, Record<string, string>>): string[] {
  const found: string[] = [];
  for (const [secretName, encodings] of Object.entries(needles)) {
    for (const [encoding, needle] of Object.entries(encodings)) {
      for (const [where, text] of Object.entries(haystacks)) {
        const at = text.toLowerCase().indexOf(needle.toLowerCase());
        if (at >= 0) found.push(`${secretName} (${encoding}) in ${where}: …${text.slice(Math.max(0, at - 80), at + needle.length + 40)}…`);
      }
    }
  }
  return found;
}

describe('secret hygiene: secrets never reach a log, a table, a queue or an event', () => {
  let database: TestDatabase;
  let producer: Service;
  let worker: Service;
  let base: string;
  let redis: Redis;
  const id = randomBytes(6).toString('hex');
  const prefix = `test-${id}`;
  const stream = `${prefix}:events`;
  const adminSecret = `hyg-admin-${randomBytes(24).toString('hex')}`;
  const admin = { authorization: `Bearer ${adminSecret}` };

  /** Every secret of the scenario, by name. */
  const secrets: Record<string, string> = { 'bootstrap admin': adminSecret };
  /** Public token IDs, by secret name. */
  const tokenIds: Record<string, string> = {};
  /** Every job the scenario submitted. */
  const jobs = new Set<string>();
  /** What the searches looked through, to show they were not empty. */
  const searched = { tables: 0, rows: 0, keys: 0, logLines: 0 };

  async function http(method: string, path: string, options: { headers?: Record<string, string>; body?: unknown } = {}) {
    const r = await rawRequest(base, method, path, options);
    const job = r.headers.location?.match(/^\/v1\/jobs\/(.+)$/)?.[1];
    if (job) jobs.add(job);
    return r;
  }

  async function issue(name: string, subjectId: string, token: { temporary: boolean; ttl_seconds?: number; name?: string }, headers: Record<string, string> = admin) {
    const r = await http('POST', `/v1/subjects/${subjectId}/tokens`, { headers, body: token });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.headers['cache-control']).toBe('no-store');
    secrets[name] = r.body.token;
    tokenIds[name] = r.body.token_id;
    return r.body.token as string;
  }

  async function subject(body: Record<string, unknown>) {
    const r = await http('POST', '/v1/subjects', { headers: admin, body });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
  }

  async function waitForJob(jobId: string, headers: Record<string, string>) {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const r = await http('GET', `/v1/jobs/${jobId}`, { headers });
      expect(r.status).toBe(200);
      if (r.body.state === 'succeeded' || r.body.state === 'failed') return r.body;
      if (Date.now() > deadline) throw new Error(`job ${jobId} still ${r.body.state}`);
      await sleep(50);
    }
  }

  async function events(): Promise<RevocationEvent[]> {
    const entries = await redis.xrange(stream, '-', '+');
    return entries.map(([, fields]) => RevocationEvent.parse(JSON.parse(fields[fields.indexOf(EVENT_FIELD) + 1] ?? 'null')));
  }

  beforeAll(async () => {
    database = await createTestDatabase();
    redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
    const common = {
      DATABASE_URL: database.url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: prefix,
      EVENTS_STREAM: stream,
      LOG_LEVEL: 'trace',
      WORKER_CONCURRENCY: '4',
      // the sweeper runs (and logs) during the scenario, deleting revoked tokens at once
      SWEEPER_INTERVAL_SECONDS: '1',
      SWEEPER_GRACE_SECONDS: '0',
    };
    worker = spawnBin('bin/worker.ts', common);
    producer = spawnBin('bin/producer.ts', { ...common, HOST: '127.0.0.1', PORT: '0', BOOTSTRAP_ADMIN_TOKEN: adminSecret });
    await waitForLog(worker, 'worker ready');
    base = String((await waitForLog(producer, 'producer ready')).url);
  }, 90_000);

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    redis?.disconnect();
    await deleteKeys(TEST_REDIS_URL, prefix, [stream]);
    await database?.drop();
  });

  it('runs a full scenario in which every secret is used successfully', async () => {
    // subjects and their tokens, issued by the bootstrap admin (Bearer)
    expect((await http('POST', '/v1/collections', { headers: admin, body: { name: COLLECTION } })).status).toBe(201);
    await subject({ id: 'hyg-service', kind: 'service', capabilities: ['tokens:tokenize', 'tokens:read', 'tokens:write'] });
    await subject({ id: 'hyg-gateway', kind: 'service', capabilities: ['tokens:verify'] });
    await subject({ id: 'hyg-alice', kind: 'user' });
    await subject({ id: 'hyg-bob', kind: 'user' });
    await subject({ id: 'hyg-provider', kind: 'provider' });
    const service = await issue('service (named)', 'hyg-service', { temporary: false, name: 'hyg-service-prod' });
    const gateway = await issue('gateway (named)', 'hyg-gateway', { temporary: false });
    const aliceTemp = await issue('alice (temporary)', 'hyg-alice', { temporary: true, ttl_seconds: 3600 });
    const aliceNamed = await issue('alice (named)', 'hyg-alice', { temporary: false });
    const bobTemp = await issue('bob (temporary)', 'hyg-bob', { temporary: true });
    const bobNamed = await issue('bob (named)', 'hyg-bob', { temporary: false });
    const providerNamed = await issue('provider (named)', 'hyg-provider', { temporary: false });
    const providerTemp = await issue('provider (temporary)', 'hyg-provider', { temporary: true, ttl_seconds: 600 });
    // a subject issues itself a temporary token with a temporary token (X-Auth-Token)
    const aliceSelf = await issue('alice (self-issued temporary)', 'hyg-alice', { temporary: true, ttl_seconds: 60 }, { 'x-auth-token': aliceTemp });

    // vault tokens: tokenize, query, count (Bearer and X-Auth-Token)
    const items = Array.from({ length: 6 }, (_, i) => ({ object: { id: `obj-${i}` }, tags: i < 3 ? ['breach-1'] : ['keep'], token_id: `hyg-${i}` }));
    const tokenized = await http('POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/tokens?reason=AppFunctionality`, { headers: { authorization: `Bearer ${service}` }, body: items });
    expect(tokenized.status).toBe(200);
    const query = await http('POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/query/tokens?reason=AppFunctionality`, { headers: { 'x-auth-token': service }, body: { tags: ['breach-1'] } });
    expect(query.status).toBe(200);
    expect(query.body).toHaveLength(3);
    expect((await http('GET', `/api/pvlt/1.0/data/collections/${COLLECTION}/count/tokens?reason=AppFunctionality`, { headers: { authorization: `bearer ${service}` } })).body).toEqual({
      active: 6,
      archived: 0,
      total: 6,
    });

    // delete (Prefer: wait), rotate (polled), a native command with an Idempotency-Key and its replay
    const deleted = await http('DELETE', `/api/pvlt/1.0/data/collections/${COLLECTION}/tokens?tags=breach-1&reason=FraudPreventionSecurityAndCompliance&adhoc_reason=incident`, {
      headers: { 'x-auth-token': service, prefer: 'wait=10' },
    });
    expect(deleted.status).toBe(200);
    const rotate = await http('POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/rotate/tokens?token_ids=hyg-3,hyg-4&reason=Maintenance`, {
      headers: { prefer: 'respond-async', authorization: `Bearer ${service}` },
    });
    expect(rotate.status).toBe(202);
    expect((await waitForJob(rotate.body.job_id, { 'x-auth-token': service })).state).toBe('succeeded');
    const command = { type: 'tokens.delete', collection: COLLECTION, token_ids: ['hyg-5'], reason: 'Other', adhoc_reason: 'cleanup', custom_audit: '{"ticket":"SEC-1"}' };
    const submitted = await http('POST', '/v1/commands', { headers: { authorization: `Bearer ${service}`, 'idempotency-key': `hyg-${id}` }, body: command });
    expect(submitted.status).toBe(202);
    const replayed = await http('POST', '/v1/commands', { headers: { 'x-auth-token': service, 'idempotency-key': `hyg-${id}` }, body: command });
    expect(replayed.status).toBe(200);
    expect(replayed.body.job_id).toBe(submitted.body.job_id);
    // a command that fails (rotate of a missing ID), so failure paths log too
    const failing = await http('POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/rotate/tokens?token_ids=no-such-token&reason=Maintenance`, {
      headers: { authorization: `Bearer ${service}`, prefer: 'wait=10' },
    });
    expect(failing.status).toBe(404);

    // a gateway verifies alice's token (X-Subject-Token)
    const verified = await http('GET', '/v1/auth/verify', { headers: { 'x-auth-token': gateway, 'x-subject-token': aliceTemp } });
    expect(verified.status).toBe(200);
    expect(verified.body.token_id).toBe(tokenIds['alice (temporary)']);
    expect((await http('GET', '/v1/auth/verify', { headers: { authorization: `Bearer ${aliceSelf}`, 'x-subject-token': aliceSelf } })).status).toBe(200);

    // Keystone: the admin deletes bob's temporary token; bob deletes his own named token
    const byAdmin = await http('DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': adminSecret, 'x-subject-token': bobTemp, prefer: 'wait=10' } });
    expect(byAdmin.status).toBe(204);
    const bySelf = await http('DELETE', '/v3/auth/tokens', { headers: { prefer: 'respond-async', 'x-auth-token': bobNamed, 'x-subject-token': bobNamed } });
    expect(bySelf.status).toBe(202);
    expect((await waitForJob(bySelf.body.job_id, admin)).state).toBe('succeeded');
    expect((await http('GET', '/v1/auth/verify', { headers: { 'x-auth-token': gateway, 'x-subject-token': bobTemp } })).body.context).toEqual({ reason: 'not_found' });
    expect((await http('GET', `/api/v3/onezone/users/hyg-bob/tokens/temporary`, { headers: { authorization: `Bearer ${bobNamed}` } })).status).toBe(401);

    // Onezone: revoke all of alice's temporary tokens; the provider revokes its own
    const aliceAll = await http('DELETE', '/api/v3/onezone/users/hyg-alice/tokens/temporary', { headers: { authorization: `Bearer ${adminSecret}`, prefer: 'wait=10' } });
    expect(aliceAll.status).toBe(204);
    expect((await http('GET', `/api/v3/onezone/users/hyg-alice/tokens/temporary`, { headers: { 'x-auth-token': aliceTemp } })).status).toBe(401);
    expect((await http('GET', `/api/v3/onezone/users/hyg-alice/tokens/temporary`, { headers: { 'x-auth-token': aliceNamed } })).body).toEqual({ generation: 1 });
    const providerAll = await http('DELETE', '/api/v3/onezone/provider/tokens/temporary', { headers: { prefer: 'respond-async', 'x-auth-token': providerNamed } });
    expect(providerAll.status).toBe(202);
    expect((await waitForJob(providerAll.body.job_id, { authorization: `Bearer ${providerNamed}` })).state).toBe('succeeded');
    expect((await http('GET', '/api/v3/onezone/provider/tokens/temporary', { headers: { authorization: `Bearer ${providerTemp}` } })).status).toBe(401);

    // the audit trail, and the dashboard signed in with HTTP Basic
    const audit = await http('GET', '/v1/audit?limit=1000', { headers: admin });
    expect(audit.status).toBe(200);
    expect(audit.body.entries.length).toBeGreaterThanOrEqual(5);
    expect((await http('GET', `/v1/audit?collection=${COLLECTION}`, { headers: { 'x-auth-token': service } })).status).toBe(200);
    const basic = `Basic ${Buffer.from(`ops:${adminSecret}`).toString('base64')}`;
    secrets['dashboard Basic credential'] = basic.slice('Basic '.length);
    const dashboard = await http('GET', '/admin/queues', { headers: { authorization: basic } });
    expect(dashboard.status).toBe(200);
    expect((await http('GET', '/admin/queues/api/queues', { headers: { authorization: basic } })).status).toBe(200);

    // credentials that fail: a secret with a byte more, and requests Node refuses before the
    // app (header too large; a forbidden header byte), which Fastify logs at trace level
    expect((await http('GET', `/api/pvlt/1.0/data/collections/${COLLECTION}/count/tokens?reason=AppFunctionality`, { headers: { authorization: `Bearer ${service}x` } })).status).toBe(401);
    const tooLarge = await sendRaw(base, `GET /v1/audit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${adminSecret}\r\nX-Subject-Token: ${service}\r\nX-Padding: ${'p'.repeat(20_000)}\r\n\r\n`);
    expect(tooLarge.status).toBe(431);
    expect((await sendRaw(base, `GET /v1/audit HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${gateway}\r\nX-Bad\u0001: y\r\n\r\n`)).status).toBe(400);

    // every job ends, and its events reach the stream
    for (const job of jobs) expect(['succeeded', 'failed']).toContain((await waitForJob(job, admin)).state);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ended = new Set((await events()).filter((e) => e.type === 'command.succeeded' || e.type === 'command.failed').map((e) => e.job_id));
      if ([...jobs].every((j) => ended.has(j))) break;
      if (Date.now() > deadline) throw new Error(`events missing for ${[...jobs].filter((j) => !ended.has(j)).join(', ')}`);
      await sleep(50);
    }
    const types = new Set((await events()).map((e) => e.type));
    for (const type of ['tokens.deleted', 'tokens.rotated', 'access_token.revoked', 'temporary_tokens.revoked', 'command.succeeded', 'command.failed'] as const) expect(types).toContain(type);
    expect(jobs.size).toBeGreaterThanOrEqual(7);
    expect(Object.keys(secrets).length).toBe(11);

    // let the sweeper delete the revoked tokens (it runs every second)
    await waitForLog(worker, 'swept dead access tokens');
  }, 120_000);

  it('stores secrets only as their SHA-256, the hash producer/secrets.ts computes', async () => {
    // the named tokens are never swept: their rows are still there
    for (const name of ['service (named)', 'gateway (named)', 'alice (named)', 'provider (named)']) {
      const row = await database.db.selectFrom('access_tokens').select(['secret_hash']).where('id', '=', tokenIds[name]!).executeTakeFirstOrThrow();
      expect(row.secret_hash.equals(createHash('sha256').update(secrets[name]!, 'utf8').digest()), name).toBe(true);
      expect(row.secret_hash.equals(hashSecret(secrets[name]!))).toBe(true);
    }
    const admin = await database.db.selectFrom('access_tokens').select(['secret_hash']).where('id', '=', 'bootstrap-admin').executeTakeFirstOrThrow();
    expect(admin.secret_hash.equals(hashSecret(adminSecret))).toBe(true);
    // the only column with secret material holds 32-byte digests
    const columns = await sql<{ table_name: string; column_name: string; data_type: string }>`
      select table_name, column_name, data_type from information_schema.columns
      where table_schema = 'public' and data_type = 'bytea'`.execute(database.db);
    expect(columns.rows.map((c) => `${c.table_name}.${c.column_name}`)).toEqual(['access_tokens.secret_hash']);
    const lengths = await sql<{ n: number }>`select distinct octet_length(secret_hash) as n from access_tokens`.execute(database.db);
    expect(lengths.rows).toEqual([{ n: 32 }]);
  });

  it('compares hashes in constant time (crypto.timingSafeEqual), after an index lookup by hash', () => {
    const secret = newSecret();
    expect(secret).toMatch(/^rvk_[A-Za-z0-9_-]{43}$/);
    const hash = hashSecret(secret);
    expect(hash).toHaveLength(32);
    expect(sameHash(hash, Buffer.from(hash))).toBe(true);
    for (const at of [0, 15, 31]) {
      const other = Buffer.from(hash);
      other[at] = other[at]! ^ 0x01;
      expect(sameHash(hash, other), `byte ${at} differs`).toBe(false);
    }
    // a hash of another length is refused, not thrown on (timingSafeEqual throws on unequal lengths)
    expect(sameHash(hash, hash.subarray(0, 31))).toBe(false);
    expect(sameHash(hash, Buffer.concat([hash, Buffer.from([0])]))).toBe(false);
    // the comparison itself is Node's constant-time one; the secret is only ever hashed
    expect(sameHash.toString()).toMatch(/\btimingSafeEqual\)?\(a, b\)/);
    expect(sameHash.toString()).not.toMatch(/\.equals\(|\.compare\(/);
    expect(timingSafeEqual(hash, Buffer.from(hash))).toBe(true);
  });

  it('finds no secret, in any encoding, in any table, Redis key or log line', async () => {
    // stop both processes: every log line is flushed
    await stop(producer);
    await stop(worker);
    expect(producer.child.exitCode).toBe(0);
    expect(worker.child.exitCode).toBe(0);

    const haystacks: Record<string, string> = {};

    // every row of every table, in every schema but the catalogs, cast to text
    const tables = await sql<{ table_schema: string; table_name: string }>`
      select table_schema, table_name from information_schema.tables
      where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')
      order by 1, 2`.execute(database.db);
    for (const { table_schema, table_name } of tables.rows) {
      const rows = await sql<{ row: string }>`select t::text as row from ${sql.table(`${table_schema}.${table_name}`)} t`.execute(database.db);
      haystacks[`table ${table_schema}.${table_name}`] = rows.rows.map((r) => r.row).join('\n');
      searched.tables++;
      searched.rows += rows.rows.length;
    }

    // every key of the namespace, read with the command its type needs
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      for (const key of keys) {
        const type = await redis.type(key);
        let values: (string | Buffer)[];
        if (type === 'string') values = [(await redis.getBuffer(key)) ?? Buffer.alloc(0)];
        else if (type === 'hash') values = Object.entries(await redis.hgetallBuffer(key)).flat();
        else if (type === 'list') values = await redis.lrangeBuffer(key, 0, -1);
        else if (type === 'set') values = await redis.smembersBuffer(key);
        else if (type === 'zset') values = await redis.zrangeBuffer(key, 0, -1, 'WITHSCORES');
        else if (type === 'stream') values = (await redis.xrangeBuffer(key, '-', '+')).flatMap(([entryId, fields]) => [entryId, ...fields]);
        else if (type === 'none')
          continue; // gone since the scan (BullMQ's own expiry)
        else throw new Error(`key ${key} has a type this test cannot read: ${type}`);
        haystacks[`redis ${type} ${key}`] = [key, ...values.map((v) => (Buffer.isBuffer(v) ? v.toString('utf8') : v))].join('\n');
        searched.keys++;
      }
    } while (cursor !== '0');

    // everything both processes wrote
    const logs = { producer: producer.output(), worker: worker.output() };
    for (const [name, text] of Object.entries(logs)) {
      haystacks[`${name} output`] = text;
      searched.logLines += text.split('\n').filter((l) => l.trim() !== '').length;
    }

    // the haystacks hold what the scenario did (so the search can find things)
    expect(haystacks['table public.access_tokens']).toContain(`\\x${hashSecret(secrets['service (named)']!).toString('hex')}`);
    expect(haystacks['table public.commands']).toContain(tokenIds['bob (temporary)']);
    expect(haystacks[`redis stream ${stream}`]).toContain('access_token.revoked');
    expect(haystacks[`redis stream ${stream}`]).toContain(tokenIds['bob (named)']);
    expect(Object.keys(haystacks).some((k) => k.startsWith(`redis hash ${prefix}:rate-limit:`) || k.startsWith(`redis string ${prefix}:rate-limit:`))).toBe(true);
    expect(logs.producer).toContain('"msg":"incoming request"');
    expect(logs.producer).toContain('"level":10'); // trace lines were written
    expect(logs.producer).toContain('"msg":"client header_overflow"');
    expect(logs.worker).toContain('"msg":"swept dead access tokens"');
    expect(logs.worker).toMatch(/"job_id":"[0-9a-f-]{36}".*"error_code":"PV3087","msg":"command failed"/);

    const needles = Object.fromEntries(Object.entries(secrets).map(([name, secret]) => [name, encodingsOf(secret)]));
    const leaks = findAll(haystacks, needles);
    console.log(
      `secret hygiene: ${Object.keys(secrets).length} secrets × ${Object.keys(encodingsOf('x')).length} encodings searched in ` +
        `${searched.tables} tables (${searched.rows} rows), ${searched.keys} Redis keys and ${searched.logLines} log lines: ${leaks.length} found`,
    );
    expect(leaks).toEqual([]);
    // the raw bytes of requests Node refused were logged, without them
    expect(logs.producer).toContain('"rawPacket":"[redacted]"');
  }, 60_000);
});
