import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandPreview, JobView, RevocationEvent } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { call, createCollection, subjectWithToken, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { compiled, killChildren, PROJECT_ROOT, runCli, runSeed, spawnCli } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

/**
 * bin/revoke.ts, the incident CLI, against a running producer and worker, and bin/seed.ts
 * against the stack's database. Exit status: 0 succeeded, 1 the job failed or was cancelled, 2 bad usage,
 * 3 the service refused or is unreachable.
 */

const REASON = ['--reason', 'FraudPreventionSecurityAndCompliance'];

async function tokenIds(db: Db, collection: string, tag?: string): Promise<string[]> {
  let q = db.selectFrom('vault_tokens').select('token_id').where('collection', '=', collection);
  if (tag !== undefined) q = q.where('tags', '@>', sql<string[]>`array[${tag}]::text[]`);
  return (await q.execute()).map((r) => r.token_id).sort();
}

async function commandCount(db: Db): Promise<number> {
  const row = await db
    .selectFrom('commands')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** The single JSON document a `--json` run printed. */
function jobOf(stdout: string): JobView {
  const lines = stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JobView.parse(JSON.parse(lines[0]!));
}

// every test spawns node processes; on a loaded machine each takes seconds to start
describe('the revoke CLI against a running stack', { timeout: 60_000 }, () => {
  const collection = 'cli';
  let stack: Stack;
  let env: Record<string, string>;

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, collection);
    env = { REVOCATION_URL: stack.producer.url, REVOCATION_TOKEN: ADMIN_TOKEN };
  });
  afterAll(async () => {
    await killChildren();
    await stack?.close();
  });

  const revoke = (args: string[], extra: Record<string, string> = {}) => runCli(args, { env: { ...env, ...extra } });

  it('delete --json exits 0 and prints the succeeded job with the number deleted', async () => {
    const doomed = await tokenize(stack, collection, [
      { object: { id: 'j1' }, tags: ['leak-json'] },
      { object: { id: 'j2' }, tags: ['leak-json', 'eu'] },
      { object: { id: 'j3' }, tags: ['leak-json'] },
    ]);
    const [bystander] = await tokenize(stack, collection, [{ object: { id: 'j4' }, tags: ['other'] }]);

    const run = await revoke(['delete', '--collection', collection, '--tag', 'leak-json', ...REASON, '--json']);

    expect(run.code).toBe(0);
    expect(run.stderr).not.toContain('accepted job');
    const job = jobOf(run.stdout);
    expect(job).toMatchObject({ type: 'tokens.delete', state: 'succeeded', result: { deleted: 3 }, progress: { processed: 3, total: 3 }, error: null });
    expect(await tokenIds(stack.database.db, collection, 'leak-json')).toEqual([]);
    expect(
      await stack.database.db
        .selectFrom('vault_tokens')
        .select('token_id')
        .where('token_id', 'in', [...doomed, bystander!])
        .execute(),
    ).toEqual([{ token_id: bystander }]);
    const row = await stack.database.db.selectFrom('commands').select(['audit', 'idempotency_key']).where('id', '=', job.job_id).executeTakeFirstOrThrow();
    expect(row.audit).toMatchObject({ source: 'cli', reason: 'FraudPreventionSecurityAndCompliance', actor: { id: 'admin' } });
    expect(row.idempotency_key).toEqual(expect.any(String));
  });

  it('delete that matches nothing exits 1 and prints the failed job with PV3009', async () => {
    const run = await revoke(['delete', '--collection', collection, '--tag', 'never-tagged', ...REASON, '--json']);

    expect(run.code).toBe(1);
    expect(jobOf(run.stdout)).toMatchObject({ state: 'failed', result: null, error: { error_code: 'PV3009' } });
  });

  it('delete without any criterion is bad usage: exit 2, the usage on stderr, nothing submitted', async () => {
    const before = await commandCount(stack.database.db);

    const run = await revoke(['delete', '--collection', collection, ...REASON, '--json']);

    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    // the message, the verb's usage and where the rest is: not the whole help
    expect(run.stderr).toMatch(/^revoke: delete needs at least one of --tag, --token-id, --object-id\n\nUsage:\n {2}revoke delete --collection C .*\nEvery option: revoke --help\n$/);
    expect(await commandCount(stack.database.db)).toBe(before);
  });

  it('an unknown option is bad usage: exit 2 with the usage, not a crash', async () => {
    const run = await revoke(['delete', '--collection', collection, '--tag', 'x', '--bogus', ...REASON]);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain('Usage:');
  });

  it('a wrong access token exits 3 with the service answer on stderr; nothing is submitted', async () => {
    const before = await commandCount(stack.database.db);

    const run = await revoke(['delete', '--collection', collection, '--tag', 'leak-json', ...REASON, '--json'], { REVOCATION_TOKEN: 'not-the-admin-token-0123456789' });

    expect(run.code).toBe(3);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/revoke: the service answered 401 PV1005/);
    expect(await commandCount(stack.database.db)).toBe(before);
  });

  it('an unreachable service exits 3 saying where and why; an address that is no http(s) URL is bad usage', async () => {
    const port = await freePort();
    const run = await revoke(['status', '00000000-0000-4000-8000-000000000000', '--json'], { REVOCATION_URL: `http://127.0.0.1:${port}` });

    expect(run.code).toBe(3);
    expect(run.stderr).toBe(`revoke: cannot reach the service at http://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}\n`);

    for (const url of ['revocation.internal:8080', 'ftp://127.0.0.1:8080']) {
      const bad = await revoke(['status', '00000000-0000-4000-8000-000000000000'], { REVOCATION_URL: url });
      expect(bad.code, url).toBe(2);
      expect(bad.stderr, url).toContain(`revoke: the service address "${url}" is not an http(s) URL`);
    }
  });

  it('delete --no-wait prints the accepted job; status --json prints the job as GET /v1/jobs does', async () => {
    await tokenize(stack, collection, [
      { object: { id: 's1' }, tags: ['leak-status'] },
      { object: { id: 's2' }, tags: ['leak-status'] },
    ]);

    const submitted = await revoke(['delete', '--collection', collection, '--tag', 'leak-status', ...REASON, '--json', '--no-wait']);
    expect(submitted.code).toBe(0);
    const accepted = jobOf(submitted.stdout);
    expect(accepted.type).toBe('tokens.delete');
    const done = await waitForJob(stack, accepted.job_id);
    expect(done.state).toBe('succeeded');

    const status = await revoke(['status', accepted.job_id, '--json']);

    expect(status.code).toBe(0);
    const job = jobOf(status.stdout);
    expect(job).toEqual(JobView.parse(done));
    expect(job).toMatchObject({ job_id: accepted.job_id, state: 'succeeded', result: { deleted: 2 } });
  });

  it('revoke-all --user --json exits 0 with the new generation', async () => {
    const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user' } });
    expect(created.status).toBe(201);
    const user = created.body.id as string;

    const run = await revoke(['revoke-all', '--user', user, '--json']);

    expect(run.code).toBe(0);
    expect(jobOf(run.stdout)).toMatchObject({ type: 'temporary_tokens.revoke_all', state: 'succeeded', result: { subject: { kind: 'user', id: user }, generation: 1 } });
    const generation = await call(stack, 'GET', `/api/v3/onezone/users/${user}/tokens/temporary`, { headers: stack.admin });
    expect(generation.body).toEqual({ generation: 1 });
  });

  it('lockout --user --json exits 0 with the number revoked; unlock --user prints the subject unlocked', async () => {
    const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'user' } });
    const user = created.body.id as string;
    for (const body of [{ temporary: false }, { temporary: true }]) expect((await call(stack, 'POST', `/v1/subjects/${user}/tokens`, { headers: stack.admin, body })).status).toBe(201);

    const locked = await revoke(['lockout', '--user', user, '--json']);

    expect(locked.code).toBe(0);
    expect(jobOf(locked.stdout)).toMatchObject({ type: 'subject.lockout', state: 'succeeded', result: { subject: { kind: 'user', id: user }, revoked: 2 }, progress: { processed: 2, total: 2 } });
    expect((await call(stack, 'GET', `/v1/subjects/${user}`, { headers: stack.admin })).body.disabled_at).toEqual(expect.any(String));
    expect(await stack.database.db.selectFrom('access_tokens').select('id').where('subject_id', '=', user).execute()).toEqual([]);

    const unlocked = await revoke(['unlock', '--user', user]);

    expect(unlocked.code).toBe(0);
    expect(unlocked.stdout).toMatch(new RegExp(`^job [0-9a-f-]{36} succeeded: unlocked user ${user}\n$`));
    expect((await call(stack, 'GET', `/v1/subjects/${user}`, { headers: stack.admin })).body.disabled_at).toBeNull();
  });

  it('lockout --service without --json ends with "locked out service S, revoked N access tokens"', async () => {
    const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: { kind: 'service' } });
    const service = created.body.id as string;
    expect((await call(stack, 'POST', `/v1/subjects/${service}/tokens`, { headers: stack.admin, body: { temporary: false } })).status).toBe(201);

    const run = await revoke(['lockout', '--service', service]);

    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^job [0-9a-f-]{36} succeeded: locked out service ${service}, revoked 1 access tokens\n$`));
    expect(run.stderr).toMatch(/accepted job [0-9a-f-]{36}/);
  });

  it('lockout and unlock need exactly one subject: exit 2 with the usage, nothing submitted; the help describes them', async () => {
    const before = await commandCount(stack.database.db);

    const runs = await Promise.all([revoke(['lockout']), revoke(['unlock', '--user', 'a', '--provider', 'b'])]);

    expect(runs.map((r) => r.code)).toEqual([2, 2]);
    expect(runs[0].stderr).toContain('lockout needs exactly one of --user, --provider or --service');
    expect(runs[1].stderr).toContain('unlock needs exactly one of --user, --provider or --service');
    expect(await commandCount(stack.database.db)).toBe(before);
    const help = await revoke(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('revoke lockout (--user ID | --provider ID | --service ID)');
    expect(help.stdout).toContain('revoke unlock (--user ID | --provider ID | --service ID)');
    expect(help.stdout).toMatch(/lockout locks an account out/);
  });

  it('events --json prints every event of the stream, one JSON document per line', async () => {
    await tokenize(stack, collection, [{ object: { id: 'e1' }, tags: ['leak-events'] }]);
    const deleted = await revoke(['delete', '--collection', collection, '--tag', 'leak-events', ...REASON, '--json']);
    expect(deleted.code).toBe(0);
    const jobId = jobOf(deleted.stdout).job_id;
    const published = await waitForEvents(stack, (es) => es.some((e) => e.job_id === jobId && e.type === 'command.succeeded'));

    const run = await revoke(['events', '--json', '--stream', stack.config.EVENTS_STREAM, '--redis-url', stack.config.REDIS_URL]);

    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split('\n');
    const events = lines.map((line) => RevocationEvent.parse(JSON.parse(line)));
    expect(events.map((e) => e.event_id)).toEqual(published.map((e) => e.event_id));
    expect(events.filter((e) => e.job_id === jobId).map((e) => e.type)).toEqual(['tokens.deleted', 'command.succeeded']);
    expect(events.find((e) => e.job_id === jobId && e.type === 'tokens.deleted')?.audit).toMatchObject({ source: 'cli', reason: 'FraudPreventionSecurityAndCompliance' });
  });

  it('events --json to a pipe prints every event, however large, before it exits', async () => {
    // five tokens.deleted events of 1,000 IDs each: far more than a pipe holds at once
    await createCollection(stack, 'cli_big');
    await tokenize(
      stack,
      'cli_big',
      Array.from({ length: 5_000 }, (_, i) => ({ object: { id: `b${i}` }, tags: ['leak-big'] })),
    );
    const deleted = await revoke(['delete', '--collection', 'cli_big', '--tag', 'leak-big', ...REASON, '--json']);
    expect(jobOf(deleted.stdout)).toMatchObject({ state: 'succeeded', result: { deleted: 5_000 } });
    const published = await waitForEvents(stack, (es) => es.some((e) => e.job_id === jobOf(deleted.stdout).job_id && e.type === 'command.succeeded'));

    // a reader slower than the CLI (the pipe fills up): what the CLI wrote must still come out
    const cli = `"${process.execPath}" ${compiled('bin/revoke.ts')} events --json --stream ${stack.config.EVENTS_STREAM} --redis-url ${stack.config.REDIS_URL}`;
    const { stdout } = await promisify(execFile)('sh', ['-c', `${cli} | (sleep 1; cat)`], { cwd: PROJECT_ROOT, maxBuffer: 64 << 20 });

    expect(stdout.length).toBeGreaterThan(200_000);
    expect(
      stdout
        .trim()
        .split('\n')
        .map((line) => RevocationEvent.parse(JSON.parse(line)).event_id),
    ).toEqual(published.map((e) => e.event_id));
  });

  it('events: an empty stream is said on stderr; an unreachable Redis exits 3 saying why', async () => {
    const empty = await revoke(['events', '--stream', `${stack.config.EVENTS_STREAM}:none`, '--redis-url', stack.config.REDIS_URL]);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toBe('');
    expect(empty.stderr).toBe(`revoke: no events in stream ${stack.config.EVENTS_STREAM}:none\n`);

    const port = await freePort();
    const down = await revoke(['events', '--follow', '--redis-url', `redis://127.0.0.1:${port}`]);
    expect(down.code).toBe(3);
    expect(down.stderr).toBe(`revoke: cannot reach Redis: connect ECONNREFUSED 127.0.0.1:${port}\n`);
  });

  it('without --json, delete shows a progress bar and ends with "succeeded: deleted N tokens"', async () => {
    await tokenize(stack, collection, [
      { object: { id: 'p1' }, tags: ['leak-bar'] },
      { object: { id: 'p2' }, tags: ['leak-bar'] },
    ]);

    const run = await revoke(['delete', '--collection', collection, '--tag', 'leak-bar', ...REASON]);

    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^job [0-9a-f-]{36} succeeded: deleted 2 tokens\n$/);
    expect(run.stderr).toMatch(/accepted job [0-9a-f-]{36}/);
    expect(run.stderr).toMatch(/100% \| 2\/2 \| \d+\/s \| ETA .* \| succeeded/);
    expect(await tokenIds(stack.database.db, collection, 'leak-bar')).toEqual([]);
  });

  describe('jobs', () => {
    /** A user with three jobs of its own: revoke-all, a failed delete, revoke-all (newest last). */
    let own: { token: string; jobs: JobView[] };

    beforeAll(async () => {
      const user = await subjectWithToken(stack, { kind: 'user', capabilities: ['tokens:write'] });
      const bodies = [
        { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: user.subject.id } },
        { type: 'tokens.delete', collection, tags: ['never-tagged'], reason: 'AppFunctionality' },
        { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: user.subject.id } },
      ];
      const jobs: JobView[] = [];
      for (const body of bodies) {
        const r = await call(stack, 'POST', '/v1/commands', { headers: { ...user.headers, prefer: 'wait=10' }, body });
        jobs.push(JobView.parse(r.body));
      }
      expect(jobs.map((j) => j.state)).toEqual(['succeeded', 'failed', 'succeeded']);
      own = { token: user.token, jobs };
    });

    const ownRevoke = (args: string[]) => revoke(args, { REVOCATION_TOKEN: own.token });
    const jsonLines = (stdout: string) =>
      stdout
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => JobView.parse(JSON.parse(line)));

    it('jobs prints a table of the caller’s jobs, newest first; jobs --json one job view per line', async () => {
      const [table, json] = await Promise.all([ownRevoke(['jobs']), ownRevoke(['jobs', '--json'])]);

      expect(table.code).toBe(0);
      const lines = table.stdout.trim().split('\n');
      expect(lines[0]).toMatch(/^JOB ID\s+TYPE\s+STATE\s+CREATED\s+FINISHED\s+OUTCOME$/);
      expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 3))).toEqual([...own.jobs].reverse().map((j) => [j.job_id, j.type, j.state]));
      expect(lines[2]).toMatch(/ PV3009 /);
      expect(json.code).toBe(0);
      expect(jsonLines(json.stdout)).toEqual([...own.jobs].reverse());
    });

    it('jobs --state/--type filter; --limit pages, saying on stderr how to ask for more; --all follows every page', async () => {
      const [failed, first, all] = await Promise.all([
        ownRevoke(['jobs', '--json', '--state', 'failed', '--type', 'tokens.delete']),
        ownRevoke(['jobs', '--json', '--limit', '2']),
        ownRevoke(['jobs', '--json', '--limit', '1', '--all']),
      ]);
      expect(jsonLines(failed.stdout)).toEqual([own.jobs[1]]);
      expect(all.code).toBe(0);
      expect(jsonLines(all.stdout)).toEqual([...own.jobs].reverse());

      expect(jsonLines(first.stdout).map((j) => j.job_id)).toEqual([own.jobs[2]!.job_id, own.jobs[1]!.job_id]);
      const cursor = /^more: --cursor (\S+)$/m.exec(first.stderr)?.[1];
      expect(cursor).toEqual(expect.any(String));
      const next = await ownRevoke(['jobs', '--json', '--limit', '2', '--cursor', cursor!]);
      expect(jsonLines(next.stdout)).toEqual([own.jobs[0]]);
      expect(next.stderr).not.toContain('more:');
    });

    it('a bad filter is bad usage: exit 2 naming each bad flag, with the usage', async () => {
      const run = await ownRevoke(['jobs', '--state', 'done', '--since', 'yesterday']);

      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(/--state: .*--since: must be an ISO 8601 date/);
      expect(run.stderr).toContain('revoke jobs [--state S]');
    });
  });
});

describe('the revoke CLI: dry runs and cancels', { timeout: 60_000 }, () => {
  const collection = 'cli_cancel';
  let stack: Stack;
  let env: Record<string, string>;

  // no worker: a submitted job stays queued until a test cancels it
  beforeAll(async () => {
    stack = await startStack({ worker: false });
    await createCollection(stack, collection);
    env = { REVOCATION_URL: stack.producer.url, REVOCATION_TOKEN: ADMIN_TOKEN };
  });
  afterAll(async () => {
    await killChildren();
    await stack?.close();
  });

  const revoke = (args: string[]) => runCli(args, { env });

  it('delete --dry-run prints what the delete would touch, exits 0, and submits nothing', async () => {
    const ids = await tokenize(
      stack,
      collection,
      Array.from({ length: 25 }, (_, i) => ({ object: { id: `d${i}` }, tags: ['leak-dry'] })),
    );
    const before = await commandCount(stack.database.db);

    const run = await revoke(['delete', '--collection', collection, '--tag', 'leak-dry', ...REASON, '--dry-run']);
    const json = await revoke(['delete', '--collection', collection, '--tag', 'leak-dry', ...REASON, '--dry-run', '--json']);

    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`dry run: tokens.delete would delete 25 tokens now; nothing was submitted\nfirst 20: ${ids.slice(0, 20).join(', ')}\n`);
    expect(json.code).toBe(0);
    expect(CommandPreview.parse(JSON.parse(json.stdout))).toEqual({ type: 'tokens.delete', matches: 25, sample: ids.slice(0, 20) });
    expect(await commandCount(stack.database.db)).toBe(before);
    expect(await tokenIds(stack.database.db, collection, 'leak-dry')).toHaveLength(25);
  });

  it('rotate --dry-run lists the IDs the rotate would not find', async () => {
    const [a] = await tokenize(stack, collection, [{ object: { id: 'r1' } }]);

    const run = await revoke(['rotate', '--collection', collection, '--token-id', `${a},no-such-token`, ...REASON, '--dry-run']);

    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`dry run: tokens.rotate would rotate 1 token now; nothing was submitted\nall: ${a}\nnot found (the rotate would fail with PV3087, rotating nothing): no-such-token\n`);
  });

  it('lockout --dry-run prints the access tokens the lockout would revoke and locks nothing out', async () => {
    const user = await subjectWithToken(stack, { kind: 'user' });

    const run = await revoke(['lockout', '--user', user.subject.id, '--dry-run']);

    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`dry run: subject.lockout would revoke 1 access token now; nothing was submitted\nall: ${user.tokenId}\n`);
    expect((await call(stack, 'GET', '/v1/auth/verify', { headers: { ...user.headers, 'x-subject-token': user.token } })).status).toBe(200);
  });

  it('cancel ID cancels a queued job and prints it; again, the same; a job that ended is refused with exit 3', async () => {
    await tokenize(stack, collection, [{ object: { id: 'c1' }, tags: ['leak-cancel'] }]);
    const submitted = await revoke(['delete', '--collection', collection, '--tag', 'leak-cancel', ...REASON, '--no-wait', '--json']);
    const id = jobOf(submitted.stdout).job_id;

    const run = await revoke(['cancel', id]);
    const again = await revoke(['cancel', id, '--json']);
    const status = await revoke(['status', id]);

    expect(run.code).toBe(0);
    expect(run.stdout).toBe(`job ${id} cancelled: deleted 0 tokens before it stopped\n`);
    expect(again.code).toBe(0);
    expect(jobOf(again.stdout)).toMatchObject({ job_id: id, state: 'cancelled', result: { deleted: 0 } });
    expect(status.stdout).toBe(`job ${id} cancelled: deleted 0 tokens before it stopped\n`);
    expect(status.code).toBe(1);
    expect(await tokenIds(stack.database.db, collection, 'leak-cancel')).toHaveLength(1);

    await stack.database.db
      .updateTable('commands')
      .set({ state: 'succeeded', result: JSON.stringify({ deleted: 1 }) })
      .where('id', '=', id)
      .execute();
    const ended = await revoke(['cancel', id]);
    expect(ended.code).toBe(3);
    expect(ended.stderr).toMatch(/revoke: the service answered 409 PV3011: The job has already succeeded/);
    expect(ended.stderr).toContain(JSON.stringify({ job_id: id, state: 'succeeded' }));
    expect((await revoke(['cancel'])).code).toBe(2);
  });

  it('Ctrl-C while a delete is followed detaches: exit 130, the job goes on, and how to cancel it is printed', async () => {
    await tokenize(stack, collection, [{ object: { id: 'i1' }, tags: ['leak-interrupt'] }]);
    const cli = spawnCli(['delete', '--collection', collection, '--tag', 'leak-interrupt', ...REASON], { env });
    for (let round = 0; !/accepted job [0-9a-f-]{36}/.test(cli.stderr()); round++) {
      if (round > 600 || !cli.running()) throw new Error(`the CLI did not accept the job: ${cli.stderr()}`);
      await sleep(50);
    }
    const id = /accepted job ([0-9a-f-]{36})/.exec(cli.stderr())![1]!;

    cli.signal('SIGINT');
    const exit = await cli.exited;

    expect(exit).toEqual({ code: 130, signal: null });
    expect(cli.stderr()).toContain(`detached from job ${id}: it goes on.`);
    expect(cli.stderr()).toContain(`Cancel it: revoke cancel ${id}`);
    expect((await call(stack, 'GET', `/v1/jobs/${id}`, { headers: stack.admin })).body.state).toBe('queued');
    const cancelled = await revoke(['cancel', id]);
    expect(cancelled.code).toBe(0);
  });
});

describe('the seed script', { timeout: 60_000 }, () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(async () => {
    await killChildren();
    await stack?.close();
  });

  const seed = (args: string[]) => runSeed(args, { env: { DATABASE_URL: stack.config.DATABASE_URL } });

  it('seeds 1,000 tokens into a new collection with every 10th tagged', async () => {
    const run = await seed(['--collection', 'seeded', '--tokens', '1000', '--tag', 't', '--tag-ratio', '0.1']);

    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^seeded 1000 tokens in seeded \(100 tagged t\) in [\d.]+ s\n$/);
    const db = stack.database.db;
    expect(await db.selectFrom('collections').select('name').where('name', '=', 'seeded').execute()).toEqual([{ name: 'seeded' }]);
    expect(await tokenIds(db, 'seeded')).toHaveLength(1000);
    expect(await tokenIds(db, 'seeded', 't')).toHaveLength(100);
    const count = await call(stack, 'GET', '/api/pvlt/1.0/data/collections/seeded/count/tokens?reason=AppFunctionality', { headers: stack.admin });
    expect(count.body).toEqual({ active: 1000, archived: 0, total: 1000 });
  });

  it('rejects bad arguments with exit 2 and the usage, and seeds nothing', async () => {
    const runs = await Promise.all([
      seed(['--tokens', '1000']),
      seed(['--collection', 'bad', '--tokens=-5']),
      seed(['--collection', 'bad', '--tokens', '1.5']),
      seed(['--collection', 'bad', '--tokens', '10', '--tag-ratio', '2']),
      seed(['--temporary-tokens', '10']),
      seed([]),
    ]);

    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/^seed: /);
      expect(run.stderr).toContain('Options:');
    }
    expect(await stack.database.db.selectFrom('collections').select('name').where('name', '=', 'bad').execute()).toEqual([]);
  });

  it('an unknown option or an option without its value is bad usage: exit 2 with the usage, not a crash', async () => {
    const runs = await Promise.all([seed(['--collection', 'bad', '--tokens']), seed(['--collection', 'bad', '--tokens', '10', '--bogus'])]);

    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('Options:');
    }
    expect(await stack.database.db.selectFrom('collections').select('name').where('name', '=', 'bad').execute()).toEqual([]);
  });
});
