import type { Cluster, Redis } from 'ioredis';
import { DEFAULT_EVENTS_STREAM, EVENT_FIELD, RevocationEvent } from '../contracts/index.js';

export interface EventConsumerOptions {
  /**
   * An ioredis connection: `new Redis(url)`, `new Redis({ sentinels, name })`, or for a Redis
   * Cluster `new Cluster([{ host, port }, …])` (with a cluster the service's stream is
   * `{revocation}:events` unless EVENTS_STREAM says otherwise: pass it as `stream`).
   */
  redis: Redis | Cluster;
  /** Consumer group: instances of one service share it and split the events. */
  group: string;
  /** This instance's name within the group. */
  consumer: string;
  /** The service's EVENTS_STREAM (default `revocation:events`). */
  stream?: string;
  /** Where a new group starts: '$' only new events (default), '0' the whole stream. */
  startId?: string;
  batchSize?: number;
  blockMs?: number;
  /** Entries another instance took and did not ack for this long are claimed (XAUTOCLAIM). */
  claimIdleMs?: number;
  /** Called for an entry that is not a valid event (it is acked, so it does not come back). */
  onInvalid?: (entryId: string, reason: string) => void;
}

export type EventHandler = (event: RevocationEvent, entryId: string) => Promise<void> | void;

type Entry = [id: string, fields: string[]];

/**
 * Consumes revocation events with a Redis consumer group: XREADGROUP for new entries, XACK
 * after the handler succeeds, XAUTOCLAIM for entries a crashed instance left pending. Each
 * event is validated against the contract. Delivery is at least once: a handler that throws
 * leaves its entry pending, to be retried; handlers should be idempotent (dedupe on event_id).
 */
export class EventConsumer {
  private stopped = false;
  readonly stream: string;

  constructor(private readonly options: EventConsumerOptions) {
    this.stream = options.stream ?? DEFAULT_EVENTS_STREAM;
  }

  /** Creates the group (and the stream) if missing. */
  async ensureGroup(): Promise<void> {
    try {
      await this.options.redis.xgroup('CREATE', this.stream, this.options.group, this.options.startId ?? '$', 'MKSTREAM');
    } catch (error) {
      if (!String((error as Error).message).includes('BUSYGROUP')) throw error;
    }
  }

  /**
   * Handles one round: claimed stale entries first, then new ones (blocking up to blockMs).
   * Returns how many entries it handled.
   */
  async poll(handler: EventHandler): Promise<number> {
    const { redis, group, consumer } = this.options;
    const count = this.options.batchSize ?? 100;
    const claimed = (await redis.xautoclaim(this.stream, group, consumer, this.options.claimIdleMs ?? 60_000, '0-0', 'COUNT', count)) as [string, Entry[]];
    let handled = await this.handle(claimed[1] ?? [], handler);
    const reply = (await redis.xreadgroup('GROUP', group, consumer, 'COUNT', count, 'BLOCK', this.options.blockMs ?? 5000, 'STREAMS', this.stream, '>')) as [string, Entry[]][] | null;
    handled += await this.handle(reply?.[0]?.[1] ?? [], handler);
    return handled;
  }

  /** Polls until stop() is called. A failing handler stops the loop by throwing. */
  async run(handler: EventHandler): Promise<void> {
    await this.ensureGroup();
    while (!this.stopped) await this.poll(handler);
  }

  /** Ends run() after the current round. */
  stop(): void {
    this.stopped = true;
  }

  private async handle(entries: Entry[], handler: EventHandler): Promise<number> {
    let handled = 0;
    for (const [id, fields] of entries) {
      if (!fields) continue; // deleted from the stream (trimmed) while pending
      const raw = fields[fields.indexOf(EVENT_FIELD) + 1];
      let parsed: ReturnType<typeof RevocationEvent.safeParse> | undefined;
      try {
        parsed = RevocationEvent.safeParse(JSON.parse(raw ?? 'null'));
      } catch (error) {
        this.options.onInvalid?.(id, `not JSON: ${(error as Error).message}`);
      }
      if (parsed?.success) await handler(parsed.data, id);
      else if (parsed) this.options.onInvalid?.(id, parsed.error.message);
      await this.options.redis.xack(this.stream, this.options.group, id);
      handled++;
    }
    return handled;
  }
}
