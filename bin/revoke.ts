#!/usr/bin/env node
import { randomUUID } from 'node:crypto';
import { RevocationApiError, RevocationClient } from '../client/revocation-client.js';
import { type JobView, terminalStates } from '../contracts/index.js';
import { commandFromArgs, parseArguments, usage, usageError } from './revoke/args.js';
import { events } from './revoke/events.js';
import { follow } from './revoke/follow.js';
import { jobs } from './revoke/jobs.js';
import { previewSummary, summary } from './revoke/output.js';

/**
 * `revoke`, the incident CLI: this file picks the verb and sets the exit status; the command
 * line is read in revoke/args.ts, jobs are followed in revoke/follow.ts, `jobs` and `events`
 * have a module each, and what is printed for a person is in revoke/output.ts.
 */

const { values, positionals } = parseArguments();

const baseUrl = values.url ?? process.env.REVOCATION_URL ?? 'http://127.0.0.1:8080';

/** The service's client, from --url and --token (or REVOCATION_URL, REVOCATION_TOKEN). */
function client(): RevocationClient {
  const token = values.token ?? process.env.REVOCATION_TOKEN;
  if (!token) usageError('no access token: pass --token or set REVOCATION_TOKEN');
  if (!URL.canParse(baseUrl) || !/^https?:$/.test(new URL(baseUrl).protocol)) usageError(`the service address ${JSON.stringify(baseUrl)} is not an http(s) URL: pass --url or set REVOCATION_URL`);
  return new RevocationClient({ baseUrl, token, source: 'cli' });
}

/** Exit status 1 for a job that ended without succeeding. */
const endedBadly = (job: JobView) => job.state === 'failed' || job.state === 'cancelled';

async function main(): Promise<number> {
  const [verb, arg] = positionals;
  if (values.help || !verb) {
    process.stdout.write(`${usage}\n`);
    return verb || values.help ? 0 : 2;
  }
  if (verb === 'events') {
    await events(values);
    return 0;
  }
  if (!['status', 'jobs', 'cancel', 'delete', 'rotate', 'revoke-all', 'revoke-token', 'lockout', 'unlock'].includes(verb)) usageError(`unknown command ${JSON.stringify(verb)}`);
  if (verb === 'cancel' && !arg) usageError('cancel needs a job ID');
  const submits = !['status', 'jobs', 'cancel'].includes(verb);
  if (values['dry-run'] && !submits) usageError(`--dry-run previews a command; ${verb} submits none`);
  const command = submits ? commandFromArgs(verb, values) : undefined;
  const api = client();
  if (verb === 'jobs') {
    await jobs(api, values);
    return 0;
  }
  if (verb === 'status') {
    if (!arg) usageError('status needs a job ID');
    const job = values.follow ? await follow(api, arg, values.json) : await api.job(arg);
    process.stdout.write(
      values.json
        ? `${JSON.stringify(job)}\n`
        : `${terminalStates.includes(job.state) ? summary(job) : `job ${job.job_id} ${job.state}${job.progress ? `: ${job.progress.processed}/${job.progress.total ?? '?'}` : ''}`}\n`,
    );
    return endedBadly(job) ? 1 : 0;
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
  const job = await follow(api, submitted.job_id, values.json, !values.json);
  process.stdout.write(values.json ? `${JSON.stringify(job)}\n` : `${summary(job)}\n`);
  return endedBadly(job) ? 1 : 0;
}

/** Why the service could not be asked: fetch says only "fetch failed", its cause says why. */
function failure(error: unknown): string {
  if (error instanceof RevocationApiError) {
    const context = (error.body as { context?: Record<string, unknown> } | undefined)?.context;
    return `the service answered ${error.message}${context && Object.keys(context).length > 0 ? ` ${JSON.stringify(context)}` : ''}`;
  }
  const { message, cause } = error as Error & { cause?: Error };
  if (message === 'fetch failed') return `cannot reach the service at ${baseUrl}: ${cause?.message ?? message}`;
  return message;
}

/** Exits once stdout is written out: process.exit alone drops what a pipe has not taken yet. */
const exit = (code: number) => process.stdout.write('', () => process.exit(code));

// a reader that closes the pipe early (`revoke events | head`) has all it wanted
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

main().then(exit, (error: unknown) => {
  process.stderr.write(`revoke: ${failure(error)}\n`);
  exit(3);
});
