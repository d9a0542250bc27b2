import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient } from '../db/redis-connection.js';
import type { Logger } from 'pino';
import { EVENT_FIELD } from '../contracts/index.js';
import type { Db } from '../db/database.js';
import { activeTrace, inSpan, type TraceContext } from '../observability/tracing.js';
import { commandsWithUnpublishedEvents, markPublished, type OutboxEvent } from '../db/repositories/outbox.repository.js';
import { timeLimit } from '../db/time-limit.js';
import { eventsPublished } from './metrics.js';

export interface StreamOptions {
  stream: string;
  maxLen: number;
  /** Replicas that must have the events too (WAIT) before they count as published; 0 or absent: the primary's word. */
  minReplicas?: number;
  /** How long WAIT waits for them (ms). */
  replicaTimeoutMs?: number;
}

/** Events the primary took but fewer replicas than asked acknowledged in time: a failover could lose them. */
export class NotReplicated extends Error {
  constructor(acknowledged: number, wanted: number, timeoutMs: number) {
    super(`events on the primary, but on ${acknowledged} of the ${wanted} replica(s) asked for after ${timeoutMs} ms: not counted as published`);
    this.name = 'NotReplicated';
  }
}

/**
 * Appends `events` (JSON texts) to the stream, in order, one XADD MAXLEN ~ each, sent together
 * without waiting for one another's answers. With `minReplicas`, a WAIT follows them, and NotReplicated is thrown unless that many replicas have every one of them: the
 * caller publishes them again (consumers dedupe on event_id). WAIT holds the connection until
 * the replicas answer: give it a connection that nothing else waits on.
 */
export async function appendToStream(redis: RedisClient, { stream, maxLen, minReplicas = 0, replicaTimeoutMs = 1000 }: StreamOptions, events: readonly string[]): Promise<void> {
  if (events.length === 0) return;
  const added = Promise.all(events.map((event) => redis.xadd(stream, 'MAXLEN', '~', String(maxLen), '*', EVENT_FIELD, event)));
  if (minReplicas === 0) {
    await added;
    return;
  }
  const [, acknowledged] = await Promise.all([added, redis.wait(minReplicas, replicaTimeoutMs)]);
  if (acknowledged < minReplicas) throw new NotReplicated(acknowledged, minReplicas, replicaTimeoutMs);
}

export interface EventPublisherOptions extends StreamOptions {
  /** Events per batch of XADDs (sent together, without waiting for one another's answers), at most. */
  batchSize?: number;
  /** Published events are marked in Postgres in one statement per this many milliseconds (or per batchSize events). */
  markDelayMs?: number;
  /** close() waits this long, at most, for events still going out (Redis unreachable): the relay publishes the rest. */
  closeTimeoutMs?: number;
  /**
   * Events waiting to go out, at most (Redis unreachable while a breach delete goes on committing
   * batches): beyond it, events are left to the relay instead of piling up in memory.
   */
  maxWaiting?: number;
  /** While commands are left to the relay, how often to look which of them the relay is done with (see forgetPublished). */
  relayCheckMs?: number;
}

/**
 * Puts the events a worker's transaction just committed on the stream at once, from the process
 * that committed them: the outbox relay (OutboxRelay) only publishes what is left unpublished for
 * longer than its grace period (this process died between its commit and its XADD, or Redis was
 * unreachable for that long). An event reaches the stream one round trip after its commit, with
 * no NOTIFY to wake a relay and no query to find it; the marks that tell the relay it is done go
 * in batches, off the event's path.
 *
 * Events go out in the order they were handed over, one batch at a time (what arrives while
 * one is in flight goes in the next): a command's steps run one after another in one process, so
 * its events keep their order. A batch that fails is tried again (with backoff) before
 * anything handed over after it, so nothing overtakes an event that failed. Events it cannot
 * take (the queue is full, or the publisher closed) stay unpublished in the outbox for the relay,
 * and so do the later events of their command, until its terminal one or until the relay has
 * published every event of it (forgetPublished): the relay publishes in outbox order, so a
 * command's events still reach the stream in order. At least once: an event
 * whose mark was lost (crash, Postgres unreachable) is published again by the relay, and
 * consumers dedupe on event_id.
 */
export class EventPublisher {
  private readonly waiting: OutboxEvent[] = [];
  /** The trace each waiting event was handed over in (tracing on): its XADD is traced there. */
  private readonly traces = new WeakMap<OutboxEvent, TraceContext>();
  private sending: Promise<void> | undefined;
  private toMark: string[] = [];
  private markTimer: NodeJS.Timeout | undefined;
  private marking: Promise<void> = Promise.resolve();
  private closed = false;
  private failures = 0;
  /** Commands whose events are left to the relay (see leave), each with the number of the last leave of its events. */
  private readonly relayed = new Map<string, number>();
  private leaves = 0;
  private relayTimer: NodeJS.Timeout | undefined;
  private relayCheck: Promise<void> = Promise.resolve();
  /** Whether leaving events to the relay was logged since the last batch went out. */
  private leaving = false;
  /** Events this publisher put on the stream. */
  published = 0;

  constructor(
    private readonly db: Db,
    private readonly redis: RedisClient,
    private readonly logger: Logger,
    private readonly options: EventPublisherOptions,
  ) {}

  /** Hands over events just committed (in outbox order); returns at once. After close(), they are left to the relay. */
  publish(events: readonly OutboxEvent[]): void {
    const max = this.options.maxWaiting ?? 10_000;
    const trace = activeTrace();
    for (const event of events) {
      if (this.closed || this.relayed.has(event.commandId) || this.waiting.length >= max) this.leave(event);
      else {
        this.waiting.push(event);
        if (trace) this.traces.set(event, trace);
      }
    }
    if (this.waiting.length > 0) this.sending ??= this.send();
  }

  /**
   * Leaves an event to the relay (it stays unpublished in the outbox), and with it the rest of
   * its command's events: publishing a later one now would put it on the stream before this one.
   */
  private leave(event: OutboxEvent): void {
    if (!this.closed && !this.leaving) this.logger.warn({ waiting: this.waiting.length }, 'too many events waiting for Redis: leaving events to the outbox relay');
    this.leaving = true;
    if (event.terminal) this.relayed.delete(event.commandId);
    else {
      this.relayed.set(event.commandId, ++this.leaves);
      this.checkRelayedLater();
    }
  }

  private checkRelayedLater(): void {
    if (!this.closed) this.relayTimer ??= setTimeout(() => void this.forgetPublished(), this.options.relayCheckMs ?? 5000).unref();
  }

  /** Commands whose events are left to the relay now. */
  get relayedCommands(): number {
    return this.relayed.size;
  }

  /**
   * Forgets the commands left to the relay that have no event unpublished any more: the relay
   * published them, so their next events may go out at once without overtaking one. (Without it,
   * a command whose terminal event another process commits is remembered for the life of this
   * one.) Runs every relayCheckMs while commands are left; never rejects.
   */
  forgetPublished(): Promise<void> {
    clearTimeout(this.relayTimer);
    this.relayTimer = undefined;
    this.relayCheck = this.relayCheck.then(async () => {
      // every event left so far committed before its leave, so the query sees it; a command left
      // again while the query runs is kept (its number is past `asked`)
      const asked = this.leaves;
      const ids = [...this.relayed.keys()];
      if (ids.length === 0) return;
      try {
        const pending = await commandsWithUnpublishedEvents(this.db, ids);
        for (const id of ids) if (!pending.has(id) && (this.relayed.get(id) ?? Infinity) <= asked) this.relayed.delete(id);
      } catch (error) {
        this.logger.warn({ err: error }, 'could not look which events the relay published; looking again later');
      }
      if (this.relayed.size > 0) this.checkRelayedLater();
    });
    return this.relayCheck;
  }

  /**
   * Stops taking events; waits until those handed over are on the stream and marked. A batch
   * still failing at close is given up (the relay publishes those events).
   */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.relayTimer);
    this.relayTimer = undefined;
    await timeLimit(Promise.resolve(this.sending), this.options.closeTimeoutMs ?? 5000);
    this.flushMarks();
    await Promise.all([this.marking, this.relayCheck]);
  }

  private async send(): Promise<void> {
    const size = this.options.batchSize ?? 500;
    while (this.waiting.length > 0) {
      const batch = this.waiting.slice(0, size);
      try {
        // in the trace its first event was handed over in, linked to the others'
        const traced = { kind: 'client', traces: batch.map((e) => this.traces.get(e)), attributes: { 'db.operation.name': 'XADD', 'revocation.events': batch.length } } as const;
        const texts = batch.map((e) => e.event);
        await inSpan('XADD', () => appendToStream(this.redis, this.options, texts), traced);
      } catch (error) {
        this.failures++;
        if (this.failures === 1 || this.failures % 30 === 0)
          this.logger.warn({ err: error, failures: this.failures }, 'could not put committed events on the stream; retrying (the relay publishes them if this process stops)');
        if (this.closed) {
          for (const event of this.waiting.splice(0)) this.leave(event);
          break;
        }
        await sleep(Math.min(5000, 50 * 2 ** Math.min(this.failures, 7)));
        continue;
      }
      this.failures = 0;
      this.leaving = false;
      this.waiting.splice(0, batch.length);
      this.published += batch.length;
      eventsPublished.inc(batch.length);
      this.toMark.push(...batch.map((e) => e.id));
      if (this.toMark.length >= size) this.flushMarks();
      else this.markTimer ??= setTimeout(() => this.flushMarks(), this.options.markDelayMs ?? 50);
    }
    this.sending = undefined;
  }

  /** Marks what was published so far, after the marks before it (one statement at a time). */
  private flushMarks(): void {
    clearTimeout(this.markTimer);
    this.markTimer = undefined;
    if (this.toMark.length === 0) return;
    const ids = this.toMark;
    this.toMark = [];
    this.marking = this.marking.then(() =>
      markPublished(this.db, ids).catch((error: unknown) => this.logger.warn({ err: error, events: ids.length }, 'could not mark published events; the relay will publish them again')),
    );
  }
}
