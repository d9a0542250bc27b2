import { parseArgs } from 'node:util';
import { AccessReason, type CommandInput, DEFAULT_EVENTS_STREAM, JobState } from '../../contracts/index.js';

/** The command line of `revoke`: its usage, its flags, and the command they describe. */

export const usage = `revoke: incident CLI of the revocation service

Usage:
  revoke delete --collection C [--tag T]... [--token-id ID]... [--object-id ID]... [--tenant-id T] [--archived] --reason R [--adhoc-reason TEXT] [--custom-audit TEXT] [--dry-run]
  revoke rotate --collection C --token-id ID... --reason R [--adhoc-reason TEXT] [--custom-audit TEXT] [--dry-run]
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
  --reason R              the access reason: ${AccessReason.options.join(', ')}
  --adhoc-reason TEXT     why, in words (needed with --reason Other)
  --custom-audit TEXT     your own audit note (an incident number, say), kept in the audit rows and events
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

/** The usage lines of the verb on the command line (all of them without one): the part of the help a usage error needs. */
function usageLines(): string {
  const lines = usage.split('\n').filter((line) => line.startsWith('  revoke '));
  const verb = process.argv.slice(2).find((arg) => lines.some((line) => line.startsWith(`  revoke ${arg} `)));
  return lines.filter((line) => verb === undefined || line.startsWith(`  revoke ${verb} `)).join('\n');
}

/** Prints `message` and the usage of the verb to stderr and exits 2 (bad usage). */
export function usageError(message: string): never {
  process.stderr.write(`revoke: ${message}\n\nUsage:\n${usageLines()}\nEvery option: revoke --help\n`);
  process.exit(2);
}

/** The flags and the positionals; an unknown flag or a missing value is bad usage. */
export function parseArguments() {
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

export type Flags = ReturnType<typeof parseArguments>['values'];

const list = (items: string[] | undefined) => {
  const all = (items ?? [])
    .flatMap((i) => i.split(','))
    .map((i) => i.trim())
    .filter(Boolean);
  return all.length > 0 ? all : undefined;
};

const reasonFields = (values: Flags) => ({
  ...(values.reason !== undefined && { reason: values.reason }),
  ...(values['adhoc-reason'] !== undefined && { adhoc_reason: values['adhoc-reason'] }),
  ...(values['custom-audit'] !== undefined && { custom_audit: values['custom-audit'] }),
});

/** The command the arguments describe. */
export function commandFromArgs(verb: string, values: Flags): CommandInput {
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
        ...reasonFields(values),
      };
    }
    case 'rotate': {
      const token_ids = list(values['token-id']);
      if (!values.collection || !token_ids) usageError('rotate needs --collection and --token-id');
      return { type: 'tokens.rotate', collection: values.collection, token_ids, ...reasonFields(values) };
    }
    case 'revoke-all': {
      if (Boolean(values.user) === Boolean(values.provider)) usageError('revoke-all needs exactly one of --user or --provider');
      const subject = values.user ? { kind: 'user' as const, id: values.user } : { kind: 'provider' as const, id: values.provider! };
      return { type: 'temporary_tokens.revoke_all', subject, ...reasonFields(values) };
    }
    case 'lockout':
    case 'unlock': {
      const named = (['user', 'provider', 'service'] as const).filter((kind) => values[kind] !== undefined);
      if (named.length !== 1) usageError(`${verb} needs exactly one of --user, --provider or --service`);
      const kind = named[0]!;
      return { type: verb === 'lockout' ? 'subject.lockout' : 'subject.unlock', subject: { kind, id: values[kind]! }, ...reasonFields(values) };
    }
    case 'revoke-token': {
      const [tokenId] = list(values['token-id']) ?? [];
      if (!tokenId) usageError('revoke-token needs --token-id');
      return { type: 'access_token.revoke', token_id: tokenId, ...reasonFields(values) };
    }
    default:
      usageError(`unknown command ${JSON.stringify(verb)}`);
  }
}
