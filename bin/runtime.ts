import pino, { type Logger } from 'pino';
import { type Config, ConfigError, loadConfig } from '../contracts/index.js';

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
