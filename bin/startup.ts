import { setTimeout as sleep } from 'node:timers/promises';
import pino, { type Logger } from 'pino';
import { type Config, ConfigError, loadConfig } from '../contracts/index.js';
import { isConnectionLost } from '../db/database.js';

/** Values that hold secrets (credential headers); pino replaces them wherever they appear in a log line. */
export const redactedPaths = [
  'req.headers.authorization',
  'req.headers["x-auth-token"]',
  'req.headers["x-subject-token"]',
  'headers.authorization',
  'headers["x-auth-token"]',
  'headers["x-subject-token"]',
  // Fastify logs a request it cannot parse (header too large, bad header byte) at trace level
  // with Node's `err.rawPacket`: the raw request bytes, credentials included.
  'err.rawPacket',
];

/** JSON lines, or readable lines (pino-pretty) when stdout is a terminal. */
export function createLogger(config: Pick<Config, 'LOG_LEVEL'>, name: string): Logger {
  const options = { name, level: config.LOG_LEVEL, redact: { paths: redactedPaths, censor: '[redacted]' } };
  if (process.stdout.isTTY) return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  return pino(options);
}

/** Loads the configuration, or prints what is wrong and exits 1: nothing starts half-configured. */
export function configOrExit(): Config {
  try {
    return loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
}

/**
 * Runs `start` until it succeeds. While Postgres or Redis cannot be reached (not up yet, starting
 * up, out of connections), waits (0.5 s doubling to 10 s, jittered) and tries again, with a
 * warning naming the attempt and the error; any other error (a database not migrated, a wrong
 * password) is thrown at once. Processes started with their dependencies (docker compose, a
 * host's reboot) come up when those do.
 */
export async function retryWhileUnreachable<T>(logger: Logger, start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (error) {
      if (!isUnreachable(error)) throw error;
      const ceiling = Math.min(500 * 2 ** (attempt - 1), 10_000);
      const retryInMs = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
      logger.warn({ err: error, attempt, retry_in_ms: retryInMs }, 'Postgres or Redis cannot be reached yet; retrying');
      await sleep(retryInMs);
    }
  }
}

/** What `starting` gives, or, if it fails (a port in use, a database not migrated), the error logged as fatal and exit 1. */
export async function startedOrExit<T>(logger: Logger, starting: Promise<T>): Promise<T> {
  return starting.catch((error: unknown) => {
    logger.fatal({ err: error }, error instanceof Error ? error.message : 'could not start');
    process.exit(1);
  });
}

/** Errors of a Postgres or Redis that is not up, not reachable yet, or out of connections. */
export function isUnreachable(error: unknown): boolean {
  if (isConnectionLost(error)) return true;
  const e = error as { code?: unknown; message?: unknown; errors?: unknown } | null;
  // Node's AggregateError when each address of a name refused (localhost: ::1 and 127.0.0.1)
  if (Array.isArray(e?.errors) && e.errors.some(isUnreachable)) return true;
  if (typeof e?.code === 'string' && unreachableCodes.has(e.code)) return true;
  return typeof e?.message === 'string' && unreachableMessages.test(e.message);
}

/** 53300 too many connections, 57P03 starting up or shutting down; the rest from the network. */
const unreachableCodes = new Set(['53300', '57P03', 'ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/**
 * pg's pool timeout; ioredis's closed connection; Redis out of clients, or loading its data; no
 * node of a cluster answers, or the cluster lacks a slot; no sentinel answers or knows the primary.
 */
const unreachableMessages =
  /timeout exceeded when trying to connect|Connection is closed|max number of clients reached|^LOADING |None of startup nodes is available|Failed to refresh slots cache|^CLUSTERDOWN|All sentinels are unreachable/i;
