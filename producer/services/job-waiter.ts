import pg from 'pg';
import type { Logger } from 'pino';
import { type JobState, terminalStates } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { COMMAND_CHANNEL, findCommand } from '../../db/repositories/command.repository.js';

/** Longest sleep between reads when the LISTEN connection is lost. */
const POLL_MS = 1000;
/** A Postgres that accepts and never answers must not hold start-up: give up, poll, retry. */
const CONNECT_TIMEOUT_MS = 1500;

/** After the last wait ends, the connection stays LISTENing this long before it UNLISTENs. */
const LINGER_MS = 10_000;

/** Taken for a command before it is recorded (`ticket`), handed to `wait`. */
export interface Ticket {
  /** The command it was taken for. */
  readonly id: string;
  /** The LISTEN in effect when it was taken; undefined when none was. */
  readonly since: number | undefined;
}

/**
 * Waits for commands to end, for the synchronous seed routes and `Prefer: wait`. Workers NOTIFY
 * `done:<id>:<state>` when a command's terminal state commits; this LISTENs on one connection,
 * keeps what it hears of the commands it holds tickets for, and wakes their waiters. It LISTENs only
 * while someone waits (and LINGER_MS after): every command commit NOTIFYs, and a producer nobody
 * waits on need not be woken for each.
 *
 * Invariant: a wait reads the command from Postgres unless its ticket was taken for that command
 * before it was recorded and the ticket's LISTEN is still the one in effect — then every terminal
 * state it reaches is heard, and the wait needs no read at all. A lost connection ends
 * that LISTEN: waits on it fall back to reading every POLL_MS, so a lost notification only costs
 * latency, never a wrong answer.
 */
export class JobWaiter {
  private client: pg.Client | undefined;
  private readonly waiters = new Map<string, Set<() => void>>();
  /** What was heard of the commands tickets are held for: their terminal state, 'ended' (a notification without one: read it), or nothing yet. */
  private readonly heard = new Map<string, JobState | 'ended' | undefined>();
  private closed = false;
  private draining = false;
  /** Tickets taken and not yet waited on, and waits in progress. */
  private active = 0;
  /** Resolves once LISTEN is in effect on `client`; undefined when not listening. */
  private listening: Promise<void> | undefined;
  /** Numbers each LISTEN that took effect; `current` is undefined while none is in effect. */
  private listens = { taken: 0, current: undefined as number | undefined };
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly databaseUrl: string,
    private readonly db: Db,
    private readonly logger: Logger,
    private readonly options: { lingerMs?: number } = {},
  ) {}

  /** Connects the LISTEN connection; on loss it reconnects in the background. Never throws. */
  async start(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.databaseUrl, application_name: 'revocation-waiter', connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
    client.on('notification', (message) => {
      const [kind, id, state] = (message.payload ?? '').split(':');
      if (kind !== 'done' || !id) return;
      if (this.heard.has(id)) this.heard.set(id, state && (terminalStates as readonly string[]).includes(state) ? (state as JobState) : 'ended');
      this.wake(id);
    });
    client.on('error', () => this.reconnect(client));
    client.on('end', () => this.reconnect(client));
    try {
      await client.connect();
      this.client = client;
      this.listening = undefined;
      if (this.active > 0) await this.listen();
    } catch (error) {
      this.logger.warn({ err: error }, 'job waiter could not LISTEN; falling back to polling');
      this.reconnect(client);
    }
  }

  private reconnect(client: pg.Client): void {
    if (this.client === client) {
      this.client = undefined;
      this.listening = undefined;
      this.listens.current = undefined;
      // what was heard on it no longer covers every end: the waits on it read from now on
      for (const id of [...this.waiters.keys()]) this.wake(id);
    }
    client.removeAllListeners();
    client.on('error', () => {});
    void client.end().catch(() => {});
    if (!this.closed) setTimeout(() => void this.start(), 1000).unref();
  }

  private wake(id: string): void {
    for (const resolve of this.waiters.get(id) ?? []) resolve();
  }

  /**
   * Takes a ticket for the command `id`, about to be recorded: LISTEN is in effect when it
   * resolves, if the connection is up, and stays so until the ticket is released. Never throws.
   */
  async ticket(id: string): Promise<Ticket> {
    this.active++;
    this.heard.set(id, undefined);
    await this.listen();
    return { id, since: this.listens.current };
  }

  /** Gives a ticket back: its LISTEN may end (after LINGER_MS) once no other is held. */
  release(ticket: Ticket): void {
    this.heard.delete(ticket.id);
    if (--this.active === 0) this.unlistenLater();
  }

  /**
   * Resolves with the state the command ended in, once it has ended, or undefined if it has not
   * after `timeoutMs` (or the producer is draining). With the ticket taken before the command
   * was recorded, and held meanwhile, it never reads the command while that LISTEN lasts (see the
   * invariant above); without one it reads it every POLL_MS or on its notification.
   */
  async wait(id: string, timeoutMs: number, ticket?: Ticket): Promise<JobState | undefined> {
    const deadline = Date.now() + timeoutMs;
    const mine = ticket?.id === id;
    const heardAll = () => mine && ticket.since !== undefined && ticket.since === this.listens.current;
    const ended = async () => {
      const heard = mine ? this.heard.get(id) : undefined;
      return heard === 'ended' || (heard === undefined && !heardAll()) ? this.readState(id) : heard;
    };
    let state = await ended();
    while (state === undefined && Date.now() < deadline && !this.draining) {
      await this.signal(id, Math.min(heardAll() ? deadline - Date.now() : POLL_MS, deadline - Date.now()));
      state = await ended();
    }
    return state;
  }

  /** The command's state if it has ended. */
  private async readState(id: string): Promise<JobState | undefined> {
    const row = await findCommand(this.db, id);
    return row && terminalStates.includes(row.state) ? row.state : undefined;
  }

  /** LISTENs (once) on the current connection; without one, waits poll. Never throws. */
  private listen(): Promise<void> {
    clearTimeout(this.idleTimer);
    const client = this.client;
    if (!client) return Promise.resolve();
    this.listening ??= client.query(`listen ${COMMAND_CHANNEL}`).then(
      () => {
        if (this.client === client) this.listens.current = ++this.listens.taken;
      },
      (error: unknown) => {
        if (this.client === client) this.listening = undefined;
        this.logger.warn({ err: error }, 'job waiter could not LISTEN; polling');
      },
    );
    return this.listening;
  }

  /** UNLISTENs once nobody has waited for LINGER_MS. */
  private unlistenLater(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      const client = this.client;
      if (this.active > 0 || !client || !this.listening) return;
      this.listening = undefined;
      this.listens.current = undefined;
      client.query(`unlisten ${COMMAND_CHANNEL}`).catch(() => {});
    }, this.options.lingerMs ?? LINGER_MS).unref();
  }

  /** Whether the connection is LISTENing now (for tests). */
  get isListening(): boolean {
    return this.listening !== undefined;
  }

  private signal(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const set = this.waiters.get(id) ?? new Set();
      this.waiters.set(id, set);
      const done = () => {
        clearTimeout(timer);
        set.delete(done);
        if (set.size === 0) this.waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
    });
  }

  /**
   * The producer is shutting down: every wait ends now with the command's current row (the
   * route answers 202 with the job, which the client polls), and later waits return at once,
   * so `Prefer: wait` requests do not hold the drain for up to 30 s.
   */
  drain(): void {
    this.draining = true;
    for (const id of [...this.waiters.keys()]) this.wake(id);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.draining = true;
    for (const id of [...this.waiters.keys()]) this.wake(id);
    const client = this.client;
    this.client = undefined;
    if (client) {
      client.removeAllListeners();
      client.on('error', () => {});
      await client.end().catch(() => {});
    }
  }
}
