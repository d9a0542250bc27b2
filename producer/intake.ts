import { randomUUID } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, errorRegistry, terminalStates } from '../contracts/index.js';
import type { CommandRow } from '../db/command.table.js';
import { findCommand } from '../db/repositories/command.repository.js';
import type { AppDeps } from './app.js';
import { sendError } from './plugins/error-handler.js';
import { previewCommand } from './services/command-preview.js';
import { type AskedCommand, prepareCommand } from './services/command-rules.js';
import { jobView } from './services/jobs.service.js';

/**
 * The one path of a revocation request (SPEC §5): a route hands its command to `submit`, which
 * authorizes it (command-rules), records and enqueues it (command-bus), then answers. A seed
 * route waits for the job and answers as its seed does; the native route answers 202 with the job.
 * A dry run (SPEC §10) takes the same path up to the record, and answers a preview instead.
 */

/** The seed's status and body for a success. */
export interface SeedAnswer {
  status: 200 | 204;
  body?: unknown;
}

/** A seed route's answer to its command's success: fixed, or built from the job's result. */
export type SeedSuccess = SeedAnswer | ((result: Record<string, unknown>) => SeedAnswer);

/** How the route answers: as a seed (synchronous by default) or natively (asynchronous). */
export type Answer = { seed: SeedSuccess } | 'native';

export interface Submission {
  input: AskedCommand;
  answer: Answer;
  /** What, beyond the command, makes a retry under an Idempotency-Key "the same request". */
  identity?: Record<string, unknown>;
  /** Preview the command (200 CommandPreview) instead of recording it: nothing is recorded, changed or enqueued. */
  dryRun?: boolean;
}

/**
 * Records and enqueues the command, then answers. Once the command is recorded, nothing is
 * thrown for the job's outcome: a failed job is answered in the route's envelope.
 */
export async function submit(deps: AppDeps, request: FastifyRequest, reply: FastifyReply, submission: Submission): Promise<FastifyReply> {
  const key = idempotencyKey(request);
  if (submission.dryRun) {
    // nothing is recorded, so no statement re-checks the caller: the preview waits for a fresh read
    await deps.credentials.confirm(request);
    // as a new command would be: an Idempotency-Key's earlier command does not excuse a missing token
    const { command, audit } = await prepareCommand(deps, request, submission.input, undefined);
    return reply.code(200).send(await previewCommand(deps.db, command, audit));
  }
  const prefer = preferences(request, deps.config.SYNC_WAIT_SECONDS);
  const seed = submission.answer === 'native' ? undefined : submission.answer.seed;
  // seed routes wait unless told `respond-async`; the native route waits only when asked to
  const wait = seed && !prefer.respondAsync ? (prefer.wait ?? deps.config.SYNC_WAIT_SECONDS) : prefer.wait;
  const id = randomUUID();
  // taken before the command is recorded, so that its end is heard without reading it (job-waiter.ts)
  const ticket = wait === undefined ? undefined : await deps.waiter.ticket(id);
  try {
    // the decision is taken again if the statement finds the caller's credential changed (credential-cache.ts)
    const { row, inserted } = await deps.credentials.decide(request, async () => {
      const { command, audit } = await prepareCommand(deps, request, submission.input, key);
      return deps.bus.recordCommand({ id, caller: request.caller, command, audit, idempotencyKey: key, identity: submission.identity });
    });
    const replayed = !inserted;
    reply.header('location', `/v1/jobs/${row.id}`);
    if (replayed) reply.header('idempotent-replayed', 'true');
    const applied = [...(prefer.respondAsync ? ['respond-async'] : []), ...(prefer.wait !== undefined ? [`wait=${prefer.wait}`] : [])];
    if (applied.length > 0) reply.header('preference-applied', applied.join(', '));
    if (wait === undefined) return reply.code(replayed ? 200 : 202).send(jobView(row));

    // a replay is another command than the ticket's: its end is read
    const waitStarted = performance.now();
    const state = terminalStates.includes(row.state) ? row.state : await deps.waiter.wait(row.id, wait * 1000, ticket);
    if (state === undefined) {
      // the time really waited: a draining producer stops waiting early
      if (seed && !prefer.respondAsync) return sendError(request, reply, stillRunning(row.id, Math.round((performance.now() - waitStarted) / 1000)));
      return reply.code(replayed ? 200 : 202).send(jobView((await findCommand(deps.db, row.id)) ?? row));
    }
    if (seed && state === 'succeeded' && typeof seed !== 'function') return reply.code(seed.status).send(seed.body);
    const ended = (await findCommand(deps.db, row.id)) ?? row;
    if (!seed) return reply.code(200).send(jobView(ended));
    if (ended.state === 'cancelled') return sendError(request, reply, cancelled(ended));
    if (ended.state !== 'succeeded') return sendError(request, reply, storedError(ended));
    const success = typeof seed === 'function' ? seed(ended.result ?? {}) : seed;
    return reply.code(success.status).send(success.body);
  } finally {
    if (ticket) deps.waiter.release(ticket);
  }
}

/** A synchronous seed call whose job outlived the wait: 503, the job going on (SPEC §5). */
function stillRunning(id: string, waited: number): AppError {
  return new AppError('PV1009', { job_id: id }, `The job did not end within ${waited} s; it goes on. Poll /v1/jobs/${id}, or send the request again with the same Idempotency-Key for its outcome.`, {
    location: `/v1/jobs/${id}`,
    'retry-after': '5',
  });
}

/**
 * A synchronous seed call whose job was cancelled (POST /v1/jobs/{id}/cancel) before it ended:
 * 409 PV3012 in the family's envelope, not the seed's success (the effect did not all commit)
 * nor its not-found (it may have deleted some); the context says what it did.
 */
function cancelled(row: CommandRow): AppError {
  const deleted = row.result?.deleted;
  return new AppError(
    'PV3012',
    { job_id: row.id, ...(typeof deleted === 'number' && { deleted }) },
    `The job was cancelled before it ended${typeof deleted === 'number' ? `, after deleting ${deleted} tokens` : ''}; see /v1/jobs/${row.id}.`,
    { location: `/v1/jobs/${row.id}` },
  );
}

/** `Idempotency-Key`: 1 to 255 characters, or absent. */
function idempotencyKey(request: FastifyRequest): string | undefined {
  const key = request.headers['idempotency-key'];
  if (key === undefined) return undefined;
  // Node joins a repeated header into one string ("a, b"): count the header lines as sent
  const lines = request.raw.rawHeaders?.filter((name, i) => i % 2 === 0 && name.toLowerCase() === 'idempotency-key').length ?? 1;
  if (typeof key !== 'string' || lines > 1 || key.length === 0 || key.length > 255) {
    throw new AppError('PV1002', { header: 'Idempotency-Key' }, 'Idempotency-Key must be a single string of 1 to 255 characters.');
  }
  return key;
}

/**
 * RFC 7240 preferences: `respond-async`, and `wait=N` seconds cut to `maxWait`. Unknown
 * preferences are ignored, as the RFC says.
 */
export function preferences(request: FastifyRequest, maxWait: number): { respondAsync: boolean; wait?: number } {
  const header = request.headers.prefer;
  const text = Array.isArray(header) ? header.join(',') : (header ?? '');
  let respondAsync = false;
  let wait: number | undefined;
  for (const preference of text.split(',')) {
    const [name = '', value] = (preference.split(';')[0] ?? '').split('=').map((part) => part.trim().replace(/^"|"$/g, ''));
    if (name.toLowerCase() === 'respond-async') respondAsync = true;
    if (name.toLowerCase() === 'wait' && value !== undefined && /^\d+$/.test(value)) wait = Math.min(Number(value), maxWait);
  }
  return wait === undefined ? { respondAsync } : { respondAsync, wait };
}

/** The stored error of a failed job, as the AppError it was. */
function storedError(row: CommandRow): AppError {
  const e = row.error;
  const code = e && e.error_code in errorRegistry ? e.error_code : 'PV1000';
  return new AppError(code, e?.context ?? {}, e?.message);
}
