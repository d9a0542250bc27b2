import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { type Config, loadConfig } from '../contracts/index.js';

/**
 * Where the run's Redis is: REDIS_CLUSTER_NODES (a Redis Cluster) if set in the environment,
 * else REDIS_URL (default the local server). The environment of the run's child processes.
 */
export function benchRedisEnv(): Record<string, string> {
  const nodes = process.env.REDIS_CLUSTER_NODES;
  return nodes ? { REDIS_CLUSTER_NODES: nodes } : { REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' };
}

/**
 * A throwaway database and Redis namespace for one benchmark run, removed at the end. On a
 * cluster (benchRedisEnv) the namespace is a hash tag, `{bench-…}`, as the service requires.
 */
export function benchConfig(env: Record<string, string> = {}): { config: Config; databaseName: string } {
  const id = randomBytes(4).toString('hex');
  const server = new URL(process.env.BENCH_DATABASE_SERVER_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  const databaseName = `rev_bench_${id}`;
  server.pathname = `/${databaseName}`;
  const redis = benchRedisEnv();
  const prefix = redis.REDIS_CLUSTER_NODES ? `{bench-${id}}` : `bench-${id}`;
  const config = loadConfig({
    DATABASE_URL: server.toString(),
    ...redis,
    PORT: '0',
    LOG_LEVEL: 'silent',
    QUEUE_PREFIX: prefix,
    EVENTS_STREAM: `${prefix}:events`,
    BOOTSTRAP_ADMIN_TOKEN: `bench-admin-${id}-0123456789`,
    ...env,
  });
  return { config, databaseName };
}

export const silent = pino({ level: 'silent' });

export async function dropDatabase(config: Config): Promise<void> {
  const url = new URL(config.DATABASE_URL);
  const name = url.pathname.slice(1);
  url.pathname = '/postgres';
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  await client.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
  await client.end();
}

export function ms(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function fmt(n: number, digits = 1): string {
  return n.toFixed(digits);
}
