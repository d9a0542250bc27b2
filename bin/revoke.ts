#!/usr/bin/env node
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import {
  type CommandInput,
  type CommandPreview,
  ConfigError,
  DEFAULT_EVENTS_STREAM,
  EVENT_FIELD,
  JobListQuery,
  JobState,
  type JobView,
  loadRedisSettings,
  redisTopology,
  terminalStates,
} from '../contracts/index.js';
import { RevocationApiError, RevocationClient } from '../client/revocation-client.js';
import { connectRedis } from '../db/redis-connection.js';

const usage = `revoke: incident CLI of the revocation service

Usage:
  revoke delete --collection C [--tag T]... [--token-id ID]... [--object-id ID]... [--tenant-id T] [--archived] --reason R [--adhoc-reason TEXT] [--dry-run]
  revoke rotate --collection C --token-id ID... --reason R [--adhoc-reason TEXT] [--dry-run]
  revoke revoke-all (--user ID | --provider ID) [--dry-run]
  revoke revoke-token --token-id ID [--dry-run]
  revoke lockout (--user ID | --provider ID | --service ID) [--dry-run]
  revoke unlock (--user ID | --provider ID | --service ID) [--dry-run]
  revoke status JOB_ID [--follow]
  revoke cancel JOB_ID
  revoke jobs [--state S] [--type T] [--since DATE] [--limit N] [--cursor C | --all]
  revoke events [--follow] [--from STREAM_ID]

Options:
  --url URL               service address (env REVOCATION_URL, default http://127.0.0.1:8080)
  --token SECRET          access token (env REVOCATION_TOKEN)
  --json                  print JSON (one job view, or one event per line) instead of a progress bar
  --dry-run               show what the command would touch now (how many, up to 20 IDs, a rotate's
                          missing IDs); nothing is submitted or changed
  --no-wait               submit and print the job ID without following it
  --idempotency-key KEY   make the submission safe to repeat (default: a new key each run)
  --redis-url URL         for events (env REDIS_URL, default redis://127.0.0.1:6379); a Redis Cluster:
    --redis-cluster-nodes H:P,…  (env REDIS_CLUSTER_NODES); Sentinel: --redis-sentinels H:P,…
    --redis-sentinel-master NAME  (env REDIS_SENTINELS, REDIS_SENTINEL_MASTER)
  --stream NAME           for events (env EVENTS_STREAM, default ${DEFAULT_EVENTS_STREAM}; {revocation}:events with a cluster)
Lists take repeated flags or commas: --tag a --tag b, or --tag a,b.

jobs lists the jobs you may see (yours; every job with subjects:admin), newest first, a table
or, with --json, one job view per line:
  --state S               ${JobState.options.join(', ')}
  --type T                a command type, e.g. tokens.delete
  --since DATE            created at or after: 2024-05-01 (UTC midnight) or 2024-05-01T12:00:00Z
  --limit N               jobs per page, 1 to 500 (default 50)
  --cursor C              the page after the one that printed "more: --cursor C"
  --all                   every page, not only the first

lockout locks an account out (ASVS 7.4.2): from the job's first commit on nothing the subject
holds authenticates and no token can be issued to it, and every access token it holds, named and
temporary, is revoked; the job ends with the number revoked. unlock enables the account again;
its old tokens stay revoked. Both need subjects:admin, or security_admin in the subject's domain.

Following a job, Ctrl-C detaches: the job goes on, and how to cancel it is printed (exit status 130).
'revoke cancel' stops a queued job before it runs, and a bulk delete after its current batch
(a lockout that has started runs to its end).

Exit status: 0 succeeded (a --dry-run: previewed; cancel: cancelled), 1 the job failed or was
cancelled, 2 bad usage, 3 the service refused or is unreachable, 130 detached by Ctrl-C.`;

function parseArguments() {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        token: { type: 'string' },
        json: { type: 'boolean', default: false },
        'no-wait': { type: 'boolean', default: false },
        'dry-run': { type: 'boolean', default: false },
        'idempotency-key': { type: 'string' },
        collection: { type: 'string' },
        tag: { type: 'string', multiple: true },
        'token-id': { type: 'string', multiple: true },
        'object-id': { type: 'string', multiple: true },
        'tenant-id': { type: 'string' },
        archived: { type: 'boolean', default: false },
        reason: { type: 'string' },
        'adhoc-reason': { type: 'string' },
        'custom-audit': { type: 'string' },
        user: { type: 'string' },
        provider: { type: 'string' },
        service: { type: 'string' },
        follow: { type: 'boolean', default: false },
        from: { type: 'string' },
        'redis-url': { type: 'string' },
        'redis-cluster-nodes': { type: 'string' },
        'redis-sentinels': { type: 'string' },
        'redis-sentinel-master': { type: 'string' },
        stream: { type: 'string' },
        state: { type: 'string' },
        type: { type: 'string' },
        since: { type: 'string' },
        limit: { type: 'string' },
        cursor: { type: 'string' },
        all: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (error) {
    return usageError((error as Error).message);
  }
}
const { values, positionals } = parseArguments();

function usageError(message: string): never {
  process.stderr.write(`revoke: ${message}\n\n${usage}\n`);
  process.exit(2);
}

const list = (items: string[] | undefined) => {
  const all = (items ?? [])
    .flatMap((i) => i.split(','))
    .map((i) => i.trim())
    .filter(Boolean);
  return all.length > 0 ? all : undefined;
};

const reasonFields = () => ({
  ...(values.reason !== undefined && { reason: values.reason }),
  ...(values['adhoc-reason'] !== undefined && { adhoc_reason: values['adhoc-reason'] }),
  ...(values['custom-audit'] !== undefined && { custom_audit: values['custom-audit'] }),
});

/** The command the arguments describe. */
function commandFromArgs(verb: string): CommandInput {
  switch (verb) {
    case 'delete': {
      if (!values.collection) usageError('delete needs --collection');
      const token_ids = list(values['token-id']);
      const object_ids = list(values['object-id']);
      const tags = list(values.tag);
      if (!token_ids && !object_ids && !tags) usageError('delete needs at least one of --tag, --token-id, --object-id');
      return {
        type: 'tokens.delete',
        collection: values.collection,
        archived: values.archived ?? false,
        ...(token_ids && { token_ids }),
        ...(object_ids && { object_ids }),
        ...(tags && { tags }),
        ...(values['tenant-id'] !== undefined && { tenant_id: values['tenant-id'] }),
        ...reasonFields(),
      };
    }
    case 'rotate': {
      const token_ids = list(values['token-id']);
      if (!values.collection || !token_ids) usageError('rotate needs --collection and --token-id');
      return { type: 'tokens.rotate', collection: values.collection, token_ids, ...reasonFields() };
    }
    case 'revoke-all': {
      if (Boolean(values.user) === Boolean(values.provider)) usageError('revoke-all needs exactly one of --user or --provider');
      const subject = values.user ? { kind: 'user' as const, id: values.user } : { kind: 'provider' as const, id: values.provider! };
      return { type: 'temporary_tokens.revoke_all', subject, ...reasonFields() };
    }
    case 'lockout':
    case 'unlock': {
      const named = (['user', 'provider', 'service'] as const).filter((kind) => values[kind] !== undefined);
      if (named.length !== 1) usageError(`${verb} needs exactly one of --user, --provider or --service`);
      const kind = named[0]!;
      return { type: verb === 'lockout' ? 'subject.lockout' : 'subject.unlock', subject: { kind, id: values[kind]! }, ...reasonFields() };
    }
    case 'revoke-token': {
      const [tokenId] = list(values['token-id']) ?? [];
      if (!tokenId) usageError('revoke-token needs --token-id');
      return { type: 'access_token.revoke', token_id: tokenId, ...reasonFields() };
    }
    default:
      usageError(`unknown command ${JSON.stringify(verb)}`);
  }
}

function client(): RevocationClient {
  const token = values.token ?? process.env.REVOCATION_TOKEN;
  if (!token) usageError('no access token: pass --token or set REVOCATION_TOKEN');
  return new RevocationClient({ baseUrl: values.url ?? process.env.REVOCATION_URL ?? 'http://127.0.0.1:8080', token, source: 'cli' });
}

function summary(job: JobView): string {
  if (job.state === 'failed')
    return `job ${job.job_id} failed: ${job.error?.error_code} ${job.error?.message}${job.error && Object.keys(job.error.context).length ? ` ${JSON.stringify(job.error.context)}` : ''}`;
  if (job.state === 'cancelled') return `job ${job.job_id} cancelled${typeof job.result?.deleted === 'number' ? `: deleted ${job.result.deleted} tokens before it stopped` : ''}`;
  const result = job.result ?? {};
  if (job.type === 'tokens.delete') return `job ${job.job_id} succeeded: deleted ${String(result.deleted)} tokens`;
  if (job.type === 'subject.lockout' || job.type === 'subject.unlock') {
    const { kind, id } = (result.subject ?? {}) as { kind?: string; id?: string };
    if (job.type === 'subject.unlock') return `job ${job.job_id} succeeded: unlocked ${kind} ${id}`;
    return `job ${job.job_id} succeeded: locked out ${kind} ${id}, revoked ${String(result.revoked)} access tokens`;
  }
  if (job.type === 'tokens.rotate') return `job ${job.job_id} succeeded: rotated ${Object.keys((result.mapping as object) ?? {}).length} tokens\n${JSON.stringify(result.mapping, null, 2)}`;
  return `job ${job.job_id} succeeded: ${JSON.stringify(result)}`;
}

const previewVerbs: Record<CommandPreview['type'], [string, string]> = {
  'tokens.delete': ['delete', 'token'],
  'tokens.rotate': ['rotate', 'token'],
  'access_token.revoke': ['revoke', 'access token'],
  'temporary_tokens.revoke_all': ['revoke', 'live temporary token'],
  'subject.lockout': ['revoke', 'access token'],
  'subject.unlock': ['enable', 'locked-out subject'],
};

function previewSummary(preview: CommandPreview): string {
  const [verb, noun] = previewVerbs[preview.type];
  const lines = [`dry run: ${preview.type} would ${verb} ${preview.matches} ${noun}${preview.matches === 1 ? '' : 's'} now; nothing was submitted`];
  if (preview.sample.length > 0) lines.push(`${preview.sample.length < preview.matches ? `first ${preview.sample.length}` : 'all'}: ${preview.sample.join(', ')}`);
  if (preview.missing && preview.missing.length > 0) lines.push(`not found (the rotate would fail with PV3087, rotating nothing): ${preview.missing.join(', ')}`);
  return lines.join('\n');
}

/**
 * Follows a job to its end with a progress bar (processed of total, rate, ETA). Ctrl-C detaches:
 * the job goes on, and how to follow or cancel it is printed; exit status 130.
 */
async function follow(api: RevocationClient, jobId: string): Promise<JobView> {
  const bar = new cliProgress.SingleBar(
    { format: ' {bar} {percentage}% | {value}/{total} | {rate}/s | ETA {eta_formatted} | {state}', hideCursor: true, noTTYOutput: true, notTTYSchedule: 5000, etaBuffer: 20 },
    cliProgress.Presets.shades_classic,
  );
  let shown = false;
  const detach = () => {
    if (shown) bar.stop();
    process.stderr.write(`\ndetached from job ${jobId}: it goes on. Follow it: revoke status ${jobId} --follow. Cancel it: revoke cancel ${jobId}\n`);
    process.exit(130);
  };
  process.once('SIGINT', detach);
  const started = Date.now();
  try {
    if (values.json) return await api.waitForJob(jobId, { pollMs: 250, maxPollMs: 1000 });
    return await api.waitForJob(jobId, {
      pollMs: 250,
      maxPollMs: 500,
      onUpdate: (job) => {
        const processed = job.progress?.processed ?? (job.state === 'succeeded' ? 1 : 0);
        // a long delete's total is counted beside its first batches: null until then
        const counting = job.progress !== null && job.progress.total === null;
        const total = Math.max(job.progress?.total ?? processed, 1);
        const state = counting ? `${job.state}, counting the total` : job.state;
        const rate = Math.round(processed / Math.max(0.001, (Date.now() - started) / 1000));
        if (!shown) bar.start(total, processed, { rate, state });
        shown = true;
        bar.setTotal(total);
        bar.update(processed, { rate, state });
      },
    });
  } finally {
    process.off('SIGINT', detach);
    if (shown) bar.stop();
  }
}

/** Where the events are: the Redis flags if any is given (the environment's topology is then ignored), else the environment. */
function eventSource() {
  const flags = {
    REDIS_URL: values['redis-url'],
    REDIS_CLUSTER_NODES: values['redis-cluster-nodes'],
    REDIS_SENTINELS: values['redis-sentinels'],
    REDIS_SENTINEL_MASTER: values['redis-sentinel-master'],
  };
  const fromFlags = Object.values(flags).some((v) => v !== undefined);
  try {
    return loadRedisSettings({ ...process.env, ...(fromFlags ? flags : {}), ...(values.stream !== undefined ? { EVENTS_STREAM: values.stream } : {}) });
  } catch (error) {
    if (error instanceof ConfigError) usageError(error.issues.join('; '));
    throw error;
  }
}

async function events(): Promise<void> {
  const settings = eventSource();
  const redis = connectRedis(redisTopology(settings), { name: 'revocation-cli', whenDown: 'wait' });
  const stream = settings.EVENTS_STREAM;
  let last = values.from ?? (values.follow ? '$' : '0');
  let stopping = false;
  process.on('SIGINT', () => {
    stopping = true;
    redis.disconnect();
  });
  try {
    for (;;) {
      const reply = values.follow ? await redis.xread('COUNT', 500, 'BLOCK', 5000, 'STREAMS', stream, last) : await redis.xread('COUNT', 500, 'STREAMS', stream, last);
      const entries = reply?.[0]?.[1] ?? [];
      for (const [id, fields] of entries) {
        last = id;
        const raw = fields[fields.indexOf(EVENT_FIELD) + 1] ?? '{}';
        if (values.json) process.stdout.write(`${raw}\n`);
        else {
          const e = JSON.parse(raw) as { type: string; job_id: string; occurred_at: string; data: Record<string, unknown> };
          const detail = Array.isArray(e.data.token_ids) ? `${e.data.token_ids.length} token IDs` : JSON.stringify(e.data).slice(0, 160);
          process.stdout.write(`${id}  ${e.occurred_at}  ${e.type.padEnd(24)} job ${e.job_id}  ${detail}\n`);
        }
      }
      if (!values.follow && entries.length === 0) break;
    }
  } catch (error) {
    if (!stopping) throw error;
  } finally {
    redis.disconnect();
  }
}

/** `revoke jobs`: the filter flags are checked against the route's own schema (bad usage, exit 2). */
async function jobs(api: RevocationClient): Promise<void> {
  if (values.all && values.cursor !== undefined) usageError('jobs takes --cursor or --all, not both');
  const flags = { state: values.state, type: values.type, since: values.since, limit: values.limit, cursor: values.cursor };
  const parsed = JobListQuery.safeParse(Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)));
  if (!parsed.success) usageError(parsed.error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; '));
  const { state, type, since, limit, cursor } = parsed.data;
  const filter = { ...(state && { state }), ...(type && { type }), ...(since && { since }), limit };
  // the table's header goes out with the first answer, so that an error leaves no table behind
  let header = !values.json;
  const print = (job?: JobView) => {
    if (header) process.stdout.write(`${jobLine()}\n`);
    header = false;
    if (job) process.stdout.write(`${values.json ? JSON.stringify(job) : jobLine(job)}\n`);
  };
  if (values.all) {
    for await (const job of api.jobs(filter)) print(job);
    print();
    return;
  }
  const page = await api.listJobs({ ...filter, ...(cursor !== undefined && { cursor }) });
  print();
  for (const job of page.jobs) print(job);
  if (page.next_cursor !== null) process.stderr.write(`more: --cursor ${page.next_cursor}\n`);
}

/** A row of the `revoke jobs` table; without a job, its header. */
function jobLine(job?: JobView): string {
  const outcome = (j: JobView) => {
    if (j.error) return `${j.error.error_code} ${j.error.message}`;
    if (j.progress) return `${j.progress.processed}/${j.progress.total ?? '?'}`;
    if (j.result && typeof j.result.deleted === 'number') return `deleted ${j.result.deleted}`;
    if (j.result && typeof j.result.revoked === 'number') return `revoked ${j.result.revoked}`;
    return '';
  };
  const cells = job ? [job.job_id, job.type, job.state, job.created_at, job.finished_at ?? '-', outcome(job)] : ['JOB ID', 'TYPE', 'STATE', 'CREATED', 'FINISHED', 'OUTCOME'];
  const widths = [36, 27, 9, 24, 24];
  return cells
    .map((c, i) => (i < widths.length ? c.padEnd(widths[i]!) : c))
    .join('  ')
    .trimEnd();
}

async function main(): Promise<number> {
  const [verb, arg] = positionals;
  if (values.help || !verb) {
    process.stdout.write(`${usage}\n`);
    return verb || values.help ? 0 : 2;
  }
  if (verb === 'events') {
    await events();
    return 0;
  }
  if (!['status', 'jobs', 'cancel', 'delete', 'rotate', 'revoke-all', 'revoke-token', 'lockout', 'unlock'].includes(verb)) usageError(`unknown command ${JSON.stringify(verb)}`);
  if (verb === 'cancel' && !arg) usageError('cancel needs a job ID');
  const submits = !['status', 'jobs', 'cancel'].includes(verb);
  if (values['dry-run'] && !submits) usageError(`--dry-run previews a command; ${verb} submits none`);
  const command = submits ? commandFromArgs(verb) : undefined;
  const api = client();
  if (verb === 'jobs') {
    await jobs(api);
    return 0;
  }
  if (verb === 'status') {
    if (!arg) usageError('status needs a job ID');
    const job = values.follow ? await follow(api, arg) : await api.job(arg);
    process.stdout.write(
      values.json
        ? `${JSON.stringify(job)}\n`
        : `${terminalStates.includes(job.state) ? summary(job) : `job ${job.job_id} ${job.state}${job.progress ? `: ${job.progress.processed}/${job.progress.total ?? '?'}` : ''}`}\n`,
    );
    return job.state === 'failed' ? 1 : 0;
  }
  if (verb === 'cancel') {
    const job = await api.cancel(arg!);
    // not cancelled yet: a step held the job past the service's wait, and the job stops when that step commits
    const text = job.state === 'cancelled' ? summary(job) : `cancel of job ${job.job_id} requested: it stops when its current step commits. Follow it: revoke status ${job.job_id} --follow`;
    process.stdout.write(values.json ? `${JSON.stringify(job)}\n` : `${text}\n`);
    return 0;
  }
  if (!command) return usageError(`unknown command ${JSON.stringify(verb)}`);
  if (values['dry-run']) {
    const preview = await api.preview(command);
    process.stdout.write(values.json ? `${JSON.stringify(preview)}\n` : `${previewSummary(preview)}\n`);
    return 0;
  }
  const submitted = await api.submit(command, { idempotencyKey: values['idempotency-key'] ?? randomUUID() });
  if (values['no-wait']) {
    process.stdout.write(values.json ? `${JSON.stringify(submitted)}\n` : `accepted job ${submitted.job_id}\n`);
    return 0;
  }
  if (!values.json) process.stderr.write(`accepted job ${submitted.job_id}\n`);
  const job = await follow(api, submitted.job_id);
  process.stdout.write(values.json ? `${JSON.stringify(job)}\n` : `${summary(job)}\n`);
  return job.state === 'succeeded' ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof RevocationApiError) process.stderr.write(`revoke: the service answered ${error.message}\n`);
    else process.stderr.write(`revoke: ${(error as Error).message}\n`);
    process.exit(3);
  },
);
