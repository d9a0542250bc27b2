import DataLoader from 'dataloader';
import type { Db } from '../../db/database.js';
import { type CommandRecord, insertCommands, type RecordOutcome } from '../../db/repositories/command.repository.js';

/**
 * Batched recording. Commands recorded in the same turn of the event loop, up to `max`, are
 * recorded by ONE statement (insertCommands): under load one INSERT and one commit serve many
 * requests. Invariant: each `record` resolves with its own command's outcome only once the
 * statement holding its row has committed, and nothing waits for company (a batch leaves at the
 * end of the turn it was started in). If a batch fails as a whole, each of its commands is tried
 * alone, so one bad command fails alone. `max` 1 turns batching off: each command is its own
 * statement.
 */
export class RecordBatch {
  readonly #loader: DataLoader<CommandRecord, RecordOutcome>;

  constructor(db: Db, max: number) {
    const options = { cache: false, maxBatchSize: max, batchScheduleFn: (callback: () => void) => setImmediate(callback) };
    this.#loader = new DataLoader((records) => eachAloneOnFailure(records, (batch) => insertCommands(db, batch)), options);
  }

  /** Records a command for its credential (see insertCommands); resolves once its row is committed. */
  record(record: CommandRecord): Promise<RecordOutcome> {
    return this.#loader.load(record);
  }
}

const asError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)));

/** Runs `run` on the whole batch; if that throws, on each item alone (errors become that item's result). */
async function eachAloneOnFailure<I, O>(items: readonly I[], run: (batch: readonly I[]) => Promise<O[]>): Promise<(O | Error)[]> {
  try {
    return await run(items);
  } catch (error) {
    if (items.length === 1) return [asError(error)];
    return Promise.all(items.map((item) => run([item]).then((results) => results[0] as O, asError)));
  }
}
