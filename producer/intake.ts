import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, type AuditContext, type Command, type ErrorCode, errorRegistry, MAX_PREFER_WAIT_SECONDS, terminalStates } from '../contracts/index.js';
import type { CommandRow } from '../db/command.table.js';
import type { TenantScope } from '../db/repositories/tenant-scope.js';
import type { ResolvedReason } from './access.js';
import { type CommandBus, jobView, submitCommand } from './services/commands.service.js';
import type { JobWaiter } from './services/job-waiter.js';

export interface IntakeDeps {
  bus: CommandBus;
  waiter: JobWaiter;
}

/** How a seed route answers a finished job: its own success body, or the stored error. */
export type DoneRenderer = (row: CommandRow, reply: FastifyReply) => FastifyReply;

const sources = new Set(['cli', 'client']);

/** The audit context of a request, fixed at acceptance (SPEC §3). */
export function auditContext(request: FastifyRequest, scope: TenantScope, reason: ResolvedReason | null): AuditContext {
  const source = request.headers['x-request-source'];
  return {
    actor: { id: request.caller.subject.id, kind: request.caller.subject.kind },
    tenant_ids: scope === null ? null : [...scope],
    reason: reason?.reason ?? null,
    adhoc_reason: reason?.adhoc_reason ?? null,
    custom_audit: reason?.custom_audit ?? null,
    request_id: request.id,
    source: typeof source === 'string' && sources.has(source) ? (source as 'cli' | 'client') : 'http',
  };
}

/** `Idempotency-Key`: 1 to 255 characters, or absent. */
export function idempotencyKey(request: FastifyRequest): string | undefined {
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
 * `Prefer: wait=N` (RFC 7240): seconds to wait for the job, at most 30 (larger asks are cut to
 * 30). Returns undefined when the client did not ask to wait.
 */
export function preferWait(request: FastifyRequest): number | undefined {
  const header = request.headers.prefer;
  if (header === undefined) return undefined;
  const text = Array.isArray(header) ? header.join(',') : header;
  const match = /(?:^|[,;\s])wait\s*=\s*"?(\d+)"?/i.exec(text);
  if (!match?.[1]) return undefined;
  return Math.min(Number(match[1]), MAX_PREFER_WAIT_SECONDS);
}

/** The stored error of a failed job, as an AppError to render in the route's envelope. */
export function storedError(row: CommandRow): AppError {
  const e = row.error;
  const code = (e && e.error_code in errorRegistry ? e.error_code : 'PV1000') as ErrorCode;
  return new AppError(code, e?.context ?? {}, e?.message);
}

/**
 * Records and enqueues a command, then answers: 202 with the job view and Location (200 with
 * `Idempotent-Replayed: true` for a replay); with `Prefer: wait=N`, the seed's own answer
 * (`done`) if the job ends within N seconds.
 */
export async function accept(deps: IntakeDeps, request: FastifyRequest, reply: FastifyReply, command: Command, audit: AuditContext, done: DoneRenderer): Promise<FastifyReply> {
  const key = idempotencyKey(request);
  const wait = preferWait(request);
  let { row, replayed } = await submitCommand(deps.bus, { caller: request.caller, command, audit, idempotencyKey: key });
  reply.header('location', `/v1/jobs/${row.id}`);
  if (replayed) reply.header('idempotent-replayed', 'true');
  if (wait !== undefined) {
    reply.header('preference-applied', `wait=${wait}`);
    row = (await deps.waiter.wait(row.id, wait * 1000)) ?? row;
    if (terminalStates.includes(row.state)) return done(row, reply);
  }
  return reply.code(replayed ? 200 : 202).send(jobView(row));
}
