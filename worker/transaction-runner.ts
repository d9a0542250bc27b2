import { setTimeout as sleep } from 'node:timers/promises';
import type { Db, Trx } from '../db/database.js';
import { inSpan } from '../observability/tracing.js';

/** SQLSTATEs that mean "another transaction got there first": retry the whole transaction. */
const conflictStates = new Set(['40001', '40P01']);

export interface RetryPolicy {
  /** Retries after the first try. */
  retries: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export const defaultRetryPolicy: RetryPolicy = { retries: 6, baseDelayMs: 10, maxDelayMs: 1000 };

/** The SQLSTATE of a conflict (serialization failure, deadlock, a fresh ID that collided), else undefined. */
export function conflictState(error: unknown): string | undefined {
  const e = error as { code?: unknown; constraint?: unknown };
  if (typeof e?.code !== 'string') return undefined;
  if (conflictStates.has(e.code)) return e.code;
  // a rotate's fresh random ID that collided with an existing one: a new try draws new IDs
  if (e.code === '23505' && e.constraint === 'vault_tokens_collection_token_id_tenant') return e.code;
  return undefined;
}

/** Raised when a transaction still conflicts after every retry. */
export class ConflictRetriesExhausted extends Error {
  constructor(
    readonly sqlState: string,
    readonly tries: number,
    options?: { cause: unknown },
  ) {
    super(`transaction conflicted ${tries} times (SQLSTATE ${sqlState})`, options);
    this.name = 'ConflictRetriesExhausted';
  }
}

/** Full jitter: a random delay up to the exponential bound. */
function backoff(policy: RetryPolicy, retry: number): number {
  const bound = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
  return Math.random() * bound;
}

/**
 * Runs `fn` in a REPEATABLE READ transaction, and again from the start (jittered exponential
 * backoff) when it conflicts with a concurrent one. Returns what `fn` returns; throws
 * ConflictRetriesExhausted when conflicts outlast the policy, or any other error at once.
 * `fn` MUST be safe to run more than once: nothing it does outside the transaction is undone.
 * Traced as one span `transaction`, its retries included.
 */
export function runTransaction<T>(db: Db, fn: (trx: Trx) => Promise<T>, policy: RetryPolicy = defaultRetryPolicy, onRetry?: (sqlState: string) => void): Promise<T> {
  return inSpan('transaction', async (span) => {
    for (let retry = 0; ; retry++) {
      try {
        return await db.transaction().setIsolationLevel('repeatable read').execute(fn);
      } catch (error) {
        const state = conflictState(error);
        if (state === undefined) throw error;
        if (retry >= policy.retries) throw new ConflictRetriesExhausted(state, retry + 1, { cause: error });
        onRetry?.(state);
        span?.addEvent('conflict: retried', { 'db.response.status_code': state });
        await sleep(backoff(policy, retry));
      }
    }
  });
}
