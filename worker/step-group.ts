import type { CommandRow } from '../db/command.table.js';
import type { Db, Trx } from '../db/database.js';
import { commitSteps, lockCommands, type StepRecord } from '../db/repositories/command.repository.js';
import type { OutboxEvent } from '../db/repositories/outbox.repository.js';
import { conflictState, type RetryPolicy, defaultRetryPolicy, runTransaction } from './transaction-runner.js';

/**
 * Thrown by a grouped step, before it has written anything, when it needs a transaction of its
 * own (a long step): the group goes on without it and it runs alone after.
 */
export class RunAlone extends Error {
  constructor() {
    super('this step runs in a transaction of its own');
    this.name = 'RunAlone';
  }
}

/** What a step running in a group's transaction gets instead of locking and writing itself. */
export interface SharedTurn {
  /** Its command row, locked by the group (undefined: no such command). */
  row: CommandRow | undefined;
  /** Hands over the step's writes: the group writes every step's in one statement before COMMIT. */
  write(record: StepRecord): void;
}

/** A command step: alone (`turn` undefined) it locks and writes itself; in a group it uses the turn. */
export type StepFn<T> = (trx: Trx, turn?: SharedTurn) => Promise<T>;

interface Entry {
  commandId: string;
  fn: StepFn<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export interface StepGroupOptions {
  /** Transactions in flight at once, each on a connection of its own. */
  lanes: number;
  /** Steps per shared transaction, at most. */
  maxSize: number;
  retryPolicy?: RetryPolicy;
  onConflictRetry?: (sqlState: string) => void;
  /** Called with the number of steps each shared transaction committed. */
  onGroupCommitted?: (steps: number) => void;
  /** Called after each shared commit with the outbox rows it wrote (the EventPublisher puts them on the stream). */
  onCommitted?: (events: readonly OutboxEvent[]) => void;
}

/**
 * Group commit for command steps. Steps submitted while every lane is busy wait, and the next
 * free lane runs them one after another in ONE REPEATABLE READ transaction: one statement locks
 * all their command rows, each step applies its effect, one statement writes all their audit
 * rows, events and states, and one COMMIT (one WAL flush) ends them all. Alone, a one-row command
 * costs five round trips and a commit; in a group of n, one round trip plus 4/n. When the worker
 * is not busy a step finds a lane free and runs at once, alone: a group never waits for company.
 *
 * Each step keeps the guarantees it has alone: its effect and its writes commit together or not
 * at all, and nothing another step does is committed by its failure. When a step of a group
 * throws (a business failure, a conflict, a fault) the group rolls back; that step runs alone
 * (its own retries, its own error) and the others go back to the head of the queue.
 */
export class StepGroup {
  private readonly waiting: Entry[] = [];
  private busyLanes = 0;
  private readonly policy: RetryPolicy;
  /** Shared transactions committed, and the steps they committed. */
  readonly stats = { groups: 0, steps: 0 };

  constructor(
    private readonly db: Db,
    private readonly options: StepGroupOptions,
  ) {
    this.policy = options.retryPolicy ?? defaultRetryPolicy;
  }

  /** Runs the step of `commandId`, alone or in a group; resolves with its result once it committed. */
  run<T>(commandId: string, fn: StepFn<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ commandId, fn, resolve: resolve as (value: unknown) => void, reject });
      if (this.busyLanes < this.options.lanes) void this.lane();
    });
  }

  private async lane(): Promise<void> {
    this.busyLanes++;
    try {
      while (this.waiting.length > 0) await this.runGroup(this.take());
    } finally {
      this.busyLanes--;
    }
  }

  /** The next group: the oldest waiting steps, one per command, at most maxSize. */
  private take(): Entry[] {
    const group: Entry[] = [];
    const ids = new Set<string>();
    for (let i = 0; i < this.waiting.length && group.length < this.options.maxSize; ) {
      const entry = this.waiting[i]!;
      if (ids.has(entry.commandId)) i++;
      else {
        ids.add(entry.commandId);
        group.push(entry);
        this.waiting.splice(i, 1);
      }
    }
    return group;
  }

  /** A step in a transaction of its own, with conflict retries: exactly as without a group. Never rejects. */
  private alone(entry: Entry): Promise<void> {
    return runTransaction(this.db, (trx) => entry.fn(trx), this.policy, this.options.onConflictRetry).then(entry.resolve, entry.reject);
  }

  private async runGroup(group: Entry[]): Promise<void> {
    if (group.length === 1) return this.alone(group[0]!);
    const later: Entry[] = [];
    let failed: Entry | undefined;
    let results: Map<Entry, unknown>;
    let events: OutboxEvent[] = [];
    try {
      results = await this.db
        .transaction()
        .setIsolationLevel('repeatable read')
        .execute(async (trx) => {
          const rows = await lockCommands(
            trx,
            group.map((entry) => entry.commandId),
          );
          const records: StepRecord[] = [];
          const done = new Map<Entry, unknown>();
          for (const entry of group) {
            try {
              done.set(entry, await entry.fn(trx, { row: rows.get(entry.commandId), write: (record) => records.push(record) }));
            } catch (error) {
              if (!(error instanceof RunAlone)) {
                failed = entry;
                throw error;
              }
              later.push(entry);
            }
          }
          events = records.length > 0 ? await commitSteps(trx, records) : [];
          return done;
        });
    } catch (error) {
      const conflict = conflictState(error);
      if (conflict) this.options.onConflictRetry?.(conflict);
      // rolled back: the step that failed runs alone, the others go back to the head of the queue
      // (if the lock or the commit itself failed, every step runs alone)
      const rest = group.filter((entry) => entry !== failed && !later.includes(entry));
      if (failed) this.waiting.unshift(...rest);
      for (const entry of failed ? [...later, failed] : [...later, ...rest]) void this.alone(entry);
      return;
    }
    this.stats.groups++;
    this.stats.steps += results.size;
    this.options.onGroupCommitted?.(results.size);
    if (events.length > 0) this.options.onCommitted?.(events);
    for (const [entry, value] of results) entry.resolve(value);
    // not awaited: this lane goes on with the queue while they run, each on a connection of its own
    for (const entry of later) void this.alone(entry);
  }
}
