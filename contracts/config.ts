import { z } from 'zod';
import { DEFAULT_EVENTS_STREAM, DEFAULT_QUEUE_PREFIX } from './queue.js';
import { applyTopologyDefaults, nodeList, topologyIssues } from './redis-topology.js';

const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
/** Digits only: not " " (which Number reads as 0), 0x10 or 1e2. */
const int = (min: number, max: number) => {
  const message = `must be a whole number from ${min} to ${max}`;
  return z.string().regex(/^\d+$/, message).transform(Number).pipe(z.number().min(min, message).max(max, message));
};
const url = (protocols: RegExp, schemes: string) => z.string().refine((v) => URL.canParse(v) && protocols.test(new URL(v).protocol), `must be a ${schemes} URL`);

/** Every setting of SPEC §9, with defaults that work against a local Postgres and Redis. */
export const ConfigSchema = z.object({
  DATABASE_URL: url(/^postgres(ql)?:$/, 'postgres:// or postgresql://').default('postgres://postgres:postgres@127.0.0.1:5432/revocation'),
  /** One Redis server. Unset with REDIS_CLUSTER_NODES or REDIS_SENTINELS (see redis-topology.ts). */
  REDIS_URL: url(/^rediss?:$/, 'redis:// or rediss://').default('redis://127.0.0.1:6379'),
  /** A Redis Cluster: some of its nodes, `host:port,…`; the client learns the rest. */
  REDIS_CLUSTER_NODES: nodeList(6379).optional(),
  /** Sentinel: the sentinels, `host:port,…` (port 26379 if left out), with REDIS_SENTINEL_MASTER. */
  REDIS_SENTINELS: nodeList(26379).optional(),
  REDIS_SENTINEL_MASTER: z
    .string()
    .regex(/^[\w.-]+$/, 'must be the name the sentinels monitor the primary by')
    .optional(),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: int(0, 65535).default(8080),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  QUEUE_PREFIX: z
    .string()
    .min(1)
    .regex(/^[^\s:]+$|^\{[^\s{}]+\}$/, 'must be a word without spaces or colons, or a Redis Cluster hash tag like {revocation}')
    .default(DEFAULT_QUEUE_PREFIX),
  /** Jobs a worker process runs at once; short commands delivered together share transactions (below). */
  WORKER_CONCURRENCY: int(1, 1000).default(64),
  /** Group commit: at most this many short command steps per shared transaction; 1 turns it off. */
  GROUP_COMMIT_MAX: int(1, 1000).default(32),
  /** Group commit: transactions a worker process runs at once for short commands. */
  GROUP_COMMIT_LANES: int(1, 64).default(2),
  /** Group commit: lanes beyond the first open for a step that has waited this long (ms); 0 opens them at once. */
  GROUP_COMMIT_SPARE_LANE_MS: int(0, 10_000).default(20),
  /** How long a seed route waits for its job before answering 503 with the job's Location (SPEC §5); also the longest `Prefer: wait`. */
  SYNC_WAIT_SECONDS: int(1, 600).default(30),
  DELETE_BATCH_SIZE: int(1, 100_000).default(20_000),
  EVENTS_STREAM: z.string().min(1).default(DEFAULT_EVENTS_STREAM),
  EVENTS_STREAM_MAXLEN: int(1000, 1_000_000_000).default(1_000_000),
  /**
   * An event counts as published (marked in the outbox) once this many replicas have it too
   * (WAIT after its XADD): a failover cannot then lose it. 1 with REDIS_SENTINELS, else 0.
   */
  EVENTS_MIN_REPLICAS: int(0, 16).default(0),
  BOOTSTRAP_ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  FORCE_ACCESS_REASON: bool.default(true),
  /** Requests per subject per window, shared by all producers through Redis; 0 turns it off. */
  RATE_LIMIT_MAX: int(0, 10_000_000).default(60_000),
  RATE_LIMIT_WINDOW_SECONDS: int(1, 3600).default(60),
  /** Callers kept by each producer for its command routes (re-checked by the statement that records the command); 0 turns it off. */
  CREDENTIAL_CACHE_MAX: int(0, 1_000_000).default(10_000),
  /** Most commands a producer records in one statement (those submitted in one turn of the event loop); 1 turns batching off. */
  RECORD_BATCH_MAX: int(1, 1000).default(64),
  /** A worker run alone (`npm run worker`) serves GET /metrics on this port when set. */
  METRICS_PORT: int(1, 65535).optional(),
  /** How often the sweeper deletes dead access tokens (revoked by generation, or expired) and published outbox events past their retention. */
  SWEEPER_INTERVAL_SECONDS: int(1, 86_400).default(60),
  /** Dead tokens are kept this long, so verify can still answer `revoked` or `expired`. */
  SWEEPER_GRACE_SECONDS: int(0, 30 * 86_400).default(3600),
  /**
   * Outbox events already on the stream are kept this long after they were published (to look at
   * what went out), then the sweeper deletes them: the outbox would otherwise grow by every event
   * ever published. Unpublished events are never deleted.
   */
  OUTBOX_RETENTION_SECONDS: int(0, 30 * 86_400).default(3600),
  /**
   * A job that ended (succeeded, failed, cancelled) is kept this many days after it ended, with
   * its Idempotency-Key, then the sweeper deletes it (its audit rows stay). At least 1: keys are
   * kept at least 24 h (SPEC §4).
   */
  JOB_RETENTION_DAYS: z.coerce
    .number({ message: 'must be a whole number of days, at least 1' })
    .int('must be a whole number of days, at least 1')
    .min(1, 'must be at least 1 (day): an Idempotency-Key is kept at least 24 hours')
    .max(36_500, 'must be at most 36500 days')
    .default(30),
  /**
   * Traces (OpenTelemetry) are exported to this OTLP/HTTP collector when set; unset, nothing of
   * OpenTelemetry is loaded. The exporter reads it, and the SDK's other OTEL_* variables, from
   * the environment as the OpenTelemetry specification says (observability/tracing.ts).
   */
  OTEL_EXPORTER_OTLP_ENDPOINT: url(/^https?:$/, 'http:// or https://').optional(),
  /** How spans are encoded for the collector: OTLP/HTTP protobuf (the specification's default) or JSON. */
  OTEL_EXPORTER_OTLP_PROTOCOL: z.enum(['http/protobuf', 'http/json'], { message: 'must be http/protobuf or http/json (gRPC is not supported)' }).default('http/protobuf'),
});
export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  constructor(readonly issues: string[]) {
    super(`Invalid configuration:\n${issues.map((i) => `  - ${i}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Reads the configuration from `env` (empty strings count as unset). Throws ConfigError naming
 * every wrong variable; never returns a partial configuration.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  return parseSettings(ConfigSchema, env);
}

/** The settings a Redis client of the service needs: the topology, the queue prefix, the stream. */
export const RedisSettingsSchema = ConfigSchema.pick({ REDIS_URL: true, REDIS_CLUSTER_NODES: true, REDIS_SENTINELS: true, REDIS_SENTINEL_MASTER: true, QUEUE_PREFIX: true, EVENTS_STREAM: true });
export type RedisSettings = z.infer<typeof RedisSettingsSchema>;

/** Like loadConfig, for the Redis settings alone (the CLI's `revoke events`): other variables are not looked at. */
export function loadRedisSettings(env: Record<string, string | undefined> = process.env): RedisSettings {
  return parseSettings(RedisSettingsSchema, env);
}

function parseSettings<S extends z.ZodObject>(schema: S, env: Record<string, string | undefined>): z.infer<S> {
  const input: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') input[key] = value;
  }
  const issues = topologyIssues(input);
  applyTopologyDefaults(input);
  const parsed = schema.safeParse(input);
  if (!parsed.success) issues.push(...parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}${describeValue(i.path, input)}`));
  if (issues.length > 0 || !parsed.success) throw new ConfigError(issues);
  return parsed.data;
}

/** Variables whose value may hold a secret: a password in a URL, the admin token. */
const secretKeys = new Set(['BOOTSTRAP_ADMIN_TOKEN', 'DATABASE_URL', 'REDIS_URL', 'REDIS_CLUSTER_NODES', 'REDIS_SENTINELS', 'OTEL_EXPORTER_OTLP_ENDPOINT']);

function describeValue(path: PropertyKey[], input: Record<string, string>): string {
  const key = String(path[0]);
  // Never echo a value that may hold a secret (a password in a URL, the admin token).
  if (secretKeys.has(key) || !(key in input)) return '';
  return ` (got ${JSON.stringify(input[key])})`;
}
