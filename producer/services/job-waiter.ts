import pg from 'pg';
import type { Logger } from 'pino';
import { terminalStates } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { COMMAND_CHANNEL, findCommand } from '../../db/repositories/command.repository.js';

/** Longest sleep between reads when no notification comes (LISTEN connection lost, say). */
const POLL_MS = 1000;
/** A Postgres that accepts and never answers must not hold start-up: give up, poll, retry. */
const CONNECT_TIMEOUT_MS = 1500;

/** After the last wait ends, the connection stays LISTENing this long before it UNLISTENs. */
const LINGER_MS = 10_000;

/**
 * Waits for commands to end, for `Prefer: wait=N`. Workers NOTIFY when a command's terminal
 * state commits; this LISTENs on one connection and wakes the waiters of that command. It
 * LISTENs only while someone waits (and LINGER_MS after): every command commit NOTIFYs, and a
 * producer nobody waits on need not be woken for each. Reads come from Postgres, and LISTEN is
 * in effect before the first read, so a lost notification only costs latency, never a wrong
 * answer.
 */
export class JobWaiter {
  private client: pg.Client | undefined;
  private readonly waiters = new Map<string, Set<() => void>>();
  private closed = false;
  private draining = false;
  /** wait() calls in progress. */
  private active = 0;
  /** Resolves once LISTEN is in effect on `client`; undefined when not listening. */
  private listening: Promise<void> | undefined;
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
      const [kind, id] = (message.payload ?? '').split(':');
      if (kind === 'done' && id) this.wake(id);
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
    }
    client.removeAllListeners();
    client.on('error', () => {});
    void client.end().catch(() => {});
    if (!this.closed) setTimeout(() => void this.start(), 1000).unref();
  }

  private wake(id: string): void {
    for (const resolve of this.waiters.get(id) ?? []) resolve();
  }

  /** Resolves with the command once it is terminal, or with its latest row after `timeoutMs`. */
  async wait(id: string, timeoutMs: number): Promise<CommandRow | undefined> {
    const deadline = Date.now() + timeoutMs;
    this.active++;
    try {
      await this.listen();
      let row = await findCommand(this.db, id);
      while (row && !terminalStates.includes(row.state) && Date.now() < deadline && !this.draining) {
        await this.signal(id, Math.min(POLL_MS, deadline - Date.now()));
        row = await findCommand(this.db, id);
      }
      return row;
    } finally {
      if (--this.active === 0) this.unlistenLater();
    }
  }

  /** LISTENs (once) on the current connection; without one, waits poll. Never throws. */
  private listen(): Promise<void> {
    clearTimeout(this.idleTimer);
    const client = this.client;
    if (!client) return Promise.resolve();
    this.listening ??= client.query(`listen ${COMMAND_CHANNEL}`).then(
      () => undefined,
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
