/**
 * Group commit for command steps (GROUP_COMMIT_MAX; 1 turns it off). Steps submitted while a
 * lane is busy wait, and the next free lane runs them in ONE REPEATABLE READ transaction: one
 * statement locks all their command rows, the steps apply their effects (those of a handler with
 * `stepMany`, such as deletes of named tokens, in one statement; the others one after another, in
 * group order), one statement writes all their audit rows, events and states, and one COMMIT (one
 * WAL flush) ends them all. Alone, a one-row command costs five round trips (BEGIN, lock, effect,
 * commit statement, COMMIT) and a WAL flush; a group of n deletes, five in all. When the worker
 * is not busy a step finds a lane free and runs at once, alone: a group never waits for company.
 * One lane serves moderate load (its groups grow with the load, and fewer transactions cost
 * less); the others open for steps that have waited spareLaneAfterMs, so one lane stuck behind a
 * lock does not hold every short command.
 *
 * The invariant: each step keeps the guarantees it has alone. Its effect and its writes commit
 * together or not at all, and nothing another step does is committed by its failure: when a step
 * of a group fails (a business failure, a conflict, a fault) the group rolls back; that step runs
 * alone (its own retries, its own error) and the others go back to the head of the queue. The
 * result is that of running the steps one after another in some order.
 *
 * Why it is one file of some 300 lines: the lanes (which steps share a transaction), the turns
 * (steps run side by side up to their handler call) and the calls (stepMany) hand one promise per
 * step between them; apart, each would need the others' internals. Outside it, only the
 * executor (which hands a step over in its two forms, StepFns), the step (command-step.ts, which
 * takes its turn) and a handler's optional stepMany know that groups exist.
 */
import type { CommandType } from '../contracts/index.js';
import type { Db, Trx } from '../db/database.js';
import { commitSteps, type StepRecord } from '../db/repositories/command-step.repository.js';
import { type LockedCommand, lockCommands } from '../db/repositories/command.repository.js';
import type { OutboxEvent } from '../db/repositories/outbox.repository.js';
import { activeTrace, inSpan, type TraceContext, withTrace } from '../observability/tracing.js';
import type { CommandHandler, StepContext, StepOutcome } from './handlers/handler.js';
import { conflictState, type RetryPolicy, defaultRetryPolicy, runTransaction } from './transaction-runner.js';

/**
 * What a step in a group returns instead of its result when it did not run there: 'run alone'
 * before it wrote anything, when it needs a transaction of its own (a long step), and the group
 * goes on without it and runs it alone after; 'group failed' when another step of the group
 * failed first, and it goes back to the queue.
 */
export type NotInGroup = 'run alone' | 'group failed';

/**
 * What a step running in a group's transaction gets instead of locking and writing itself. The
 * steps of a group run side by side up to `step`, so a step MUST make no query before it.
 */
export interface SharedTurn {
  /** Its command row, locked by the group (undefined: no such command). */
  row: LockedCommand | undefined;
  /**
   * Runs the handler's step: once every step of the group has come this far, those of one
   * handler with `stepMany` run in one call, the others one by one, in group order.
   */
  step<T extends CommandType>(handler: CommandHandler<T>, context: StepContext<T>): Promise<StepOutcome<T> | NotInGroup>;
  /** Hands over the step's writes: the group writes every step's in one statement before COMMIT. */
  write(record: StepRecord): void;
}

/** A handler step a turn asked for, and how to answer it. */
interface StepCall {
  /** The step's place in its group. */
  order: number;
  handler: CommandHandler<CommandType>;
  context: StepContext<CommandType>;
  resolve: (outcome: StepOutcome<CommandType> | NotInGroup) => void;
  reject: (error: unknown) => void;
}

/** A command step, two ways: alone it locks and writes itself; in a group it uses its turn. */
export interface StepFns<T> {
  alone: (trx: Trx) => Promise<T>;
  inGroup: (trx: Trx, turn: SharedTurn) => Promise<T | NotInGroup>;
}

interface Entry {
  commandId: string;
  /** When it was submitted (performance.now()). */
  since: number;
  /** Its job's trace context: the group's work is traced in the first step's, linked to each. */
  trace: TraceContext | undefined;
  fns: StepFns<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export interface GroupCommitOptions {
  /** Transactions in flight at once, at most, each on a connection of its own. */
  lanes: number;
  /**
   * Lanes beyond the first open only for a step that has waited this long (default 20 ms): a
   * lane stuck behind a lock or a long group, or more work than one lane keeps up with. Below
   * that, steps wait for the one lane and share its next transaction. 0: every lane at once.
   */
  spareLaneAfterMs?: number;
  /** Steps per shared transaction, at most. */
  maxSize: number;
  retryPolicy?: RetryPolicy;
  onConflictRetry?: (sqlState: string) => void;
  /** Called with the number of steps each shared transaction committed. */
  onGroupCommitted?: (steps: number) => void;
  /** Called after each shared commit with the outbox rows it wrote (the EventPublisher puts them on the stream). */
  onCommitted?: (events: readonly OutboxEvent[]) => void;
}

/** Runs command steps alone or in groups: see the top of this file. */
export class GroupCommit {
  private readonly waiting: Entry[] = [];
  private busyLanes = 0;
  private spareTimer: NodeJS.Timeout | undefined;
  private readonly policy: RetryPolicy;
  /** Shared transactions committed, the steps they committed, and the most lanes busy at once. */
  readonly stats = { groups: 0, steps: 0, maxLanes: 0 };

  constructor(
    private readonly db: Db,
    private readonly options: GroupCommitOptions,
  ) {
    this.policy = options.retryPolicy ?? defaultRetryPolicy;
  }

  /** Runs the step of `commandId`, alone or in a group; resolves with its result once it committed. */
  run<T>(commandId: string, fns: StepFns<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ commandId, since: performance.now(), trace: activeTrace(), fns, resolve: resolve as (value: unknown) => void, reject });
      this.openLane();
    });
  }

  /** Opens a lane for the waiting steps: the first at once, the others once the oldest step has waited spareLaneAfterMs. */
  private openLane(): void {
    const oldest = this.waiting[0];
    if (!oldest || this.busyLanes >= this.options.lanes) return;
    const after = this.options.spareLaneAfterMs ?? 20;
    const waited = performance.now() - oldest.since;
    if (this.busyLanes === 0 || waited >= after) void this.lane();
    else
      this.spareTimer ??= setTimeout(() => {
        this.spareTimer = undefined;
        this.openLane();
      }, after - waited).unref();
  }

  private async lane(): Promise<void> {
    this.busyLanes++;
    this.stats.maxLanes = Math.max(this.stats.maxLanes, this.busyLanes);
    try {
      while (this.waiting.length > 0) {
        const group = this.take();
        // a group is traced in its first step's trace, linked to the others' (a step alone: see alone)
        await (group.length > 1
          ? inSpan('transaction', () => this.runGroup(group), { traces: group.map((entry) => entry.trace), attributes: { 'revocation.group_commit.steps': group.length } })
          : this.runGroup(group));
        this.openLane();
      }
    } finally {
      this.busyLanes--;
    }
  }

  /** The next group: the oldest waiting steps, one per command, at most maxSize. */
  private take(): Entry[] {
    const group: Entry[] = [];
    const ids = new Set<string>();
    for (let i = 0; i < this.waiting.length && group.length < this.options.maxSize;) {
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
    return withTrace(entry.trace, () => runTransaction(this.db, entry.fns.alone, this.policy, this.options.onConflictRetry)).then(entry.resolve, entry.reject);
  }

  private async runGroup(group: Entry[]): Promise<void> {
    if (group.length === 1) return this.alone(group[0]!);
    const later: Entry[] = [];
    const failed: Entry[] = [];
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
          const { settled, records } = await runTurns(trx, group, rows);
          const done = new Map<Entry, unknown>();
          let failure: unknown;
          for (const outcome of settled) {
            if (!outcome.ok) {
              failed.push(outcome.entry);
              failure ??= outcome.error;
            } else if (outcome.value === 'run alone') later.push(outcome.entry);
            else if (outcome.value !== 'group failed') done.set(outcome.entry, outcome.value);
          }
          // a step answers 'group failed' only after another one failed; rolled back either way
          if (failure !== undefined || done.size + later.length < group.length) throw failure ?? new Error('a step of the group did not run');
          const written = group.flatMap((entry) => (records.has(entry) ? [records.get(entry)!] : []));
          events = written.length > 0 ? await commitSteps(trx, written) : [];
          return done;
        });
    } catch (error) {
      const conflict = conflictState(error);
      if (conflict) this.options.onConflictRetry?.(conflict);
      // rolled back: the steps that failed run alone, the others go back to the head of the queue
      // (if the lock or the commit itself failed, every step runs alone)
      const rest = group.filter((entry) => !failed.includes(entry) && !later.includes(entry));
      if (failed.length > 0) this.waiting.unshift(...rest);
      for (const entry of failed.length > 0 ? [...later, ...failed] : [...later, ...rest]) void this.alone(entry);
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

/** How a step of a group ended, up to its commit. */
type Settled = { entry: Entry; ok: true; value: unknown } | { entry: Entry; ok: false; error: unknown };

/**
 * Runs the steps of a group side by side in `trx`, each up to its handler call (or its end), then
 * the calls together (runCalls), then each to its end. Resolves with how each ended, in group
 * order, and the records they handed over; never rejects.
 */
async function runTurns(trx: Trx, group: readonly Entry[], rows: Map<string, LockedCommand>): Promise<{ settled: Settled[]; records: Map<Entry, StepRecord> }> {
  const records = new Map<Entry, StepRecord>();
  const calls: StepCall[] = [];
  let waiting = group.length;
  let allThere!: () => void;
  const there = new Promise<void>((resolve) => (allThere = resolve));
  const settled = group.map((entry, order) => {
    let arrived = false;
    const arrive = () => {
      if (arrived) return;
      arrived = true;
      if (--waiting === 0) allThere();
    };
    const turn: SharedTurn = {
      row: rows.get(entry.commandId),
      step: (handler, context) =>
        new Promise((resolve, reject) => {
          calls.push({ order, handler, context, resolve, reject } as unknown as StepCall);
          arrive();
        }),
      write: (record) => records.set(entry, record),
    };
    return entry.fns
      .inGroup(trx, turn)
      .then(
        (value): Settled => ({ entry, ok: true, value }),
        (error: unknown): Settled => ({ entry, ok: false, error }),
      )
      .finally(arrive);
  });
  await there;
  await runCalls(trx, calls);
  return { settled: await Promise.all(settled), records };
}

/**
 * Runs the handler calls of a group's steps in the shared transaction: those of one handler with
 * `stepMany` in one call, the others one by one, in group order. After the first call that
 * fails, the rest are not run ('group failed'): the group rolls back.
 */
async function runCalls(trx: Trx, arrived: readonly StepCall[]): Promise<void> {
  const calls = [...arrived].sort((a, b) => a.order - b.order);
  const batched = new Map<CommandHandler<CommandType>, StepCall[]>();
  for (const call of calls) {
    if (!call.handler.stepMany) continue;
    let together = batched.get(call.handler);
    if (!together) batched.set(call.handler, (together = []));
    together.push(call);
  }
  const units: StepCall[][] = [];
  for (const call of calls) {
    const together = batched.get(call.handler);
    if (together && together.length > 1) {
      if (together[0] === call) units.push(together);
    } else units.push([call]);
  }
  let aborted: unknown;
  for (const unit of units) {
    if (aborted !== undefined) {
      for (const call of unit) call.resolve('group failed');
      continue;
    }
    try {
      if (unit.length === 1) unit[0]!.resolve(await unit[0]!.handler.step(unit[0]!.context));
      else {
        const outcomes = await unit[0]!.handler.stepMany!(
          trx,
          unit.map((call) => call.context),
        );
        unit.forEach((call, i) => {
          const outcome = outcomes[i]!;
          if (outcome instanceof Error) {
            call.reject(outcome);
            aborted = outcome;
          } else call.resolve(outcome);
        });
      }
    } catch (error) {
      aborted = error;
      for (const call of unit) call.reject(error);
    }
  }
}
