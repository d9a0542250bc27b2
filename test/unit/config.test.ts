import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compiled, PROJECT_ROOT } from '../helpers/processes.js';
import { ConfigError, ConfigSchema, DEFAULT_EVENTS_STREAM, DEFAULT_QUEUE_PREFIX, loadConfig, loadRedisSettings, redisTopology } from '../../contracts/index.js';

/** The ConfigError loadConfig throws for `env`; fails the test if it does not throw one. */
function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('works with an empty environment, using the documented defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      DATABASE_URL: 'postgres://postgres:postgres@127.0.0.1:5432/revocation',
      REDIS_URL: 'redis://127.0.0.1:6379',
      HOST: '127.0.0.1',
      PORT: 8080,
      LOG_LEVEL: 'info',
      QUEUE_PREFIX: DEFAULT_QUEUE_PREFIX,
      EVENTS_STREAM: DEFAULT_EVENTS_STREAM,
      FORCE_ACCESS_REASON: true,
    });
    expect(config.WORKER_CONCURRENCY).toBeGreaterThanOrEqual(1);
    expect(config.DELETE_BATCH_SIZE).toBeGreaterThanOrEqual(1);
    expect(config).toMatchObject({
      GROUP_COMMIT_MAX: 32,
      GROUP_COMMIT_LANES: 2,
      GROUP_COMMIT_SPARE_LANE_MS: 20,
      CREDENTIAL_CACHE_MAX: 10_000,
      RECORD_BATCH_MAX: 64,
      OUTBOX_RETENTION_SECONDS: 3600,
      JOB_RETENTION_DAYS: 30,
    });
    expect(config.BOOTSTRAP_ADMIN_TOKEN).toBeUndefined();
    // tracing off
    expect(config.OTEL_EXPORTER_OTLP_ENDPOINT).toBeUndefined();
  });

  it('treats empty strings as unset', () => {
    expect(loadConfig({ PORT: '', LOG_LEVEL: '' })).toMatchObject({ PORT: 8080, LOG_LEVEL: 'info' });
  });

  it('parses valid values into their types', () => {
    const config = loadConfig({
      PORT: '9090',
      WORKER_CONCURRENCY: '3',
      GROUP_COMMIT_MAX: '1',
      GROUP_COMMIT_SPARE_LANE_MS: '0',
      CREDENTIAL_CACHE_MAX: '0',
      RECORD_BATCH_MAX: '1',
      OUTBOX_RETENTION_SECONDS: '0',
      JOB_RETENTION_DAYS: '1',
      FORCE_ACCESS_REASON: 'false',
      LOG_LEVEL: 'debug',
      QUEUE_PREFIX: '{revocation}',
      DATABASE_URL: 'postgresql://u@db:5432/x',
      REDIS_URL: 'rediss://cache:6380',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    });
    expect(config).toMatchObject({
      PORT: 9090,
      WORKER_CONCURRENCY: 3,
      GROUP_COMMIT_MAX: 1,
      GROUP_COMMIT_SPARE_LANE_MS: 0,
      CREDENTIAL_CACHE_MAX: 0,
      RECORD_BATCH_MAX: 1,
      OUTBOX_RETENTION_SECONDS: 0,
      JOB_RETENTION_DAYS: 1,
      FORCE_ACCESS_REASON: false,
      LOG_LEVEL: 'debug',
      QUEUE_PREFIX: '{revocation}',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    });
  });

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', ' '],
    ['PORT', '0x10'],
    ['PORT', '1e2'],
    ['RATE_LIMIT_MAX', ' '],
    ['DATABASE_URL', 'nonsense'],
    ['REDIS_URL', 'http://x'],
    ['LOG_LEVEL', 'loud'],
    ['WORKER_CONCURRENCY', '0'],
    ['GROUP_COMMIT_MAX', '0'],
    ['GROUP_COMMIT_LANES', 'two'],
    ['GROUP_COMMIT_SPARE_LANE_MS', '-1'],
    ['CREDENTIAL_CACHE_MAX', '-1'],
    ['RECORD_BATCH_MAX', '0'],
    ['RECORD_BATCH_MAX', '1001'],
    ['OUTBOX_RETENTION_SECONDS', '1.5'],
    ['JOB_RETENTION_DAYS', '0'],
    ['JOB_RETENTION_DAYS', '-3'],
    ['JOB_RETENTION_DAYS', '0.5'],
    ['JOB_RETENTION_DAYS', 'forever'],
    ['FORCE_ACCESS_REASON', 'maybe'],
    ['BOOTSTRAP_ADMIN_TOKEN', 'too-short'],
    ['QUEUE_PREFIX', 'has space'],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', 'collector:4318'],
    ['OTEL_EXPORTER_OTLP_ENDPOINT', 'grpc://collector:4317'],
    ['OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc'],
  ])('rejects %s=%s with a ConfigError naming the variable', (name, value) => {
    const error = configError({ [name]: value });
    expect(error.message).toContain(name);
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]).toMatch(new RegExp(`^${name}\\b`));
  });

  it('refuses a job retention under a day, saying why (SPEC §4: Idempotency-Keys are kept at least 24 h)', () => {
    const error = configError({ JOB_RETENTION_DAYS: '0' });
    expect(error.issues).toEqual(['JOB_RETENTION_DAYS: must be at least 1 (day): an Idempotency-Key is kept at least 24 hours (got "0")']);
  });

  it('says what a number or a URL must be', () => {
    expect(configError({ PORT: 'abc' }).issues).toEqual(['PORT: must be a whole number from 0 to 65535 (got "abc")']);
    expect(configError({ REDIS_URL: 'http://x' }).issues).toEqual(['REDIS_URL: must be a redis:// or rediss:// URL']); // a URL may hold a password: never echoed
    expect(configError({ DATABASE_URL: 'mysql://db/x' }).issues[0]).toMatch(/^DATABASE_URL: must be a postgres:\/\/ or postgresql:\/\/ URL/);
  });

  it('names every wrong variable at once', () => {
    const error = configError({ PORT: 'abc', LOG_LEVEL: 'loud', WORKER_CONCURRENCY: '0', QUEUE_PREFIX: 'a b', REDIS_URL: 'http://x' });
    for (const name of ['PORT', 'LOG_LEVEL', 'WORKER_CONCURRENCY', 'QUEUE_PREFIX', 'REDIS_URL']) expect(error.message).toContain(name);
    expect(error.issues).toHaveLength(5);
  });

  it('never echoes the value of a secret-bearing variable', () => {
    const dbSecret = 'pg-pass-Zx81q';
    const adminSecret = 'adm-Qw7';
    const error = configError({ DATABASE_URL: `mysql://user:${dbSecret}@db/x`, BOOTSTRAP_ADMIN_TOKEN: adminSecret });
    expect(error.message).toContain('DATABASE_URL');
    expect(error.message).toContain('BOOTSTRAP_ADMIN_TOKEN');
    expect(error.message).not.toContain(dbSecret);
    expect(error.message).not.toContain(adminSecret);
    expect(JSON.stringify(error.issues)).not.toContain(dbSecret);
    expect(JSON.stringify(error.issues)).not.toContain(adminSecret);
  });

  it('stops bin/migrate with exit code 1 and a message naming the variable', () => {
    const result = spawnSync(process.execPath, [compiled('bin/migrate.ts')], {
      cwd: PROJECT_ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: 'abc' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('PORT');
  });

  describe('Redis topology (SPEC §9)', () => {
    it('is one server by default, at REDIS_URL', () => {
      expect(redisTopology(loadConfig({}))).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379' });
    });

    it('is a cluster with REDIS_CLUSTER_NODES, whose queue prefix and stream default to one hash tag', () => {
      const config = loadConfig({ REDIS_CLUSTER_NODES: 'node-a:7000, node-b:7001,[::1]:7002,node-c' });
      expect(config).toMatchObject({ QUEUE_PREFIX: '{revocation}', EVENTS_STREAM: '{revocation}:events' });
      expect(redisTopology(config)).toEqual({
        kind: 'cluster',
        nodes: [
          { host: 'node-a', port: 7000 },
          { host: 'node-b', port: 7001 },
          { host: '::1', port: 7002 },
          { host: 'node-c', port: 6379 },
        ],
        auth: { tls: false },
      });
      // a prefix of one's own: the stream follows it into its slot
      expect(loadConfig({ REDIS_CLUSTER_NODES: 'a:1', QUEUE_PREFIX: '{svc}' })).toMatchObject({ QUEUE_PREFIX: '{svc}', EVENTS_STREAM: '{svc}:events' });
      // nothing writes the stream together with the queue's keys: it may live in another slot
      expect(loadConfig({ REDIS_CLUSTER_NODES: 'a:1', EVENTS_STREAM: 'audit:events' })).toMatchObject({ QUEUE_PREFIX: '{revocation}', EVENTS_STREAM: 'audit:events' });
    });

    it('takes credentials and TLS for every node from URL entries, and never echoes them', () => {
      const config = loadConfig({ REDIS_CLUSTER_NODES: 'rediss://app:s3cr%40t@a:7000,rediss://app:s3cr%40t@b:7001' });
      expect(redisTopology(config)).toMatchObject({ kind: 'cluster', auth: { username: 'app', password: 's3cr@t', tls: true } });
      const error = configError({ REDIS_CLUSTER_NODES: 'rediss://app:Hidden-9@a:7000,redis://b:7001' });
      expect(error.issues).toEqual([expect.stringMatching(/^REDIS_CLUSTER_NODES: entries disagree on credentials or TLS/)]);
      expect(error.message).not.toContain('Hidden-9');
    });

    it('is Sentinel with REDIS_SENTINELS and REDIS_SENTINEL_MASTER (sentinel port 26379 unless given)', () => {
      const config = loadConfig({ REDIS_SENTINELS: 's1,s2:26380', REDIS_SENTINEL_MASTER: 'mymaster' });
      expect(config).toMatchObject({ QUEUE_PREFIX: DEFAULT_QUEUE_PREFIX, EVENTS_STREAM: DEFAULT_EVENTS_STREAM });
      expect(redisTopology(config)).toEqual({
        kind: 'sentinel',
        sentinels: [
          { host: 's1', port: 26379 },
          { host: 's2', port: 26380 },
        ],
        master: 'mymaster',
        auth: { tls: false },
      });
    });

    it.each([
      [{ REDIS_CLUSTER_NODES: 'a:1', REDIS_SENTINELS: 'b:2', REDIS_SENTINEL_MASTER: 'm' }, /^REDIS_CLUSTER_NODES: set REDIS_CLUSTER_NODES \(a Redis Cluster\) or REDIS_SENTINELS .*, not both$/],
      [{ REDIS_URL: 'redis://x:6379', REDIS_CLUSTER_NODES: 'a:1' }, /^REDIS_URL: set REDIS_URL \(one Redis server\) or REDIS_CLUSTER_NODES, not both$/],
      [{ REDIS_URL: 'redis://x:6379', REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_MASTER: 'm' }, /^REDIS_URL: set REDIS_URL \(one Redis server\) or REDIS_SENTINELS, not both$/],
      [{ REDIS_SENTINELS: 'a:1' }, /^REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS/],
      [{ REDIS_SENTINEL_MASTER: 'm' }, /^REDIS_SENTINEL_MASTER: only used with REDIS_SENTINELS, which is not set$/],
      [
        { REDIS_CLUSTER_NODES: 'a:1', QUEUE_PREFIX: 'revocation' },
        /^QUEUE_PREFIX: with REDIS_CLUSTER_NODES it must be a hash tag such as \{revocation\}.*set QUEUE_PREFIX=\{revocation\} .*\(got "revocation"\)$/,
      ],
      [{ REDIS_CLUSTER_NODES: 'a:b' }, /^REDIS_CLUSTER_NODES: must be host:port entries separated by commas/],
      [{ REDIS_CLUSTER_NODES: 'a:1,,b:2' }, /^REDIS_CLUSTER_NODES: must be host:port entries/],
      [{ REDIS_CLUSTER_NODES: 'http://a:1' }, /^REDIS_CLUSTER_NODES: must be host:port entries/],
      [{ REDIS_SENTINELS: 'a:1/db', REDIS_SENTINEL_MASTER: 'm' }, /^REDIS_SENTINELS: must be host:port entries/],
      [{ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_MASTER: 'my master' }, /^REDIS_SENTINEL_MASTER: must be the name the sentinels monitor the primary by/],
    ])('refuses %j, saying what to set', (env, message) => {
      const error = configError(env);
      expect(error.issues).toEqual([expect.stringMatching(message)]);
    });

    it('counts an event published once a replica has it too by default with Sentinel (EVENTS_MIN_REPLICAS), not otherwise', () => {
      expect(loadConfig({}).EVENTS_MIN_REPLICAS).toBe(0);
      expect(loadConfig({ REDIS_CLUSTER_NODES: 'a:1' }).EVENTS_MIN_REPLICAS).toBe(0);
      expect(loadConfig({ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_MASTER: 'm' }).EVENTS_MIN_REPLICAS).toBe(1);
      expect(loadConfig({ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_MASTER: 'm', EVENTS_MIN_REPLICAS: '0' }).EVENTS_MIN_REPLICAS).toBe(0);
      expect(loadConfig({ EVENTS_MIN_REPLICAS: '2' }).EVENTS_MIN_REPLICAS).toBe(2);
      expect(configError({ REDIS_CLUSTER_NODES: 'a:1', EVENTS_MIN_REPLICAS: '1' }).issues).toEqual([expect.stringMatching(/^EVENTS_MIN_REPLICAS: not supported with REDIS_CLUSTER_NODES/)]);
    });

    it('loadRedisSettings reads the Redis settings alone (the CLI), with the same rules', () => {
      expect(loadRedisSettings({ PORT: 'abc', REDIS_CLUSTER_NODES: 'a:1' })).toMatchObject({ QUEUE_PREFIX: '{revocation}', EVENTS_STREAM: '{revocation}:events' });
      expect(() => loadRedisSettings({ REDIS_SENTINEL_MASTER: 'm' })).toThrow(ConfigError);
    });
  });

  it('docker-compose.yml sets only variables the configuration has (or OpenTelemetry and the postgres image read), each default valid', () => {
    const compose = readFileSync(join(PROJECT_ROOT, 'docker-compose.yml'), 'utf8');
    const settings = [...compose.matchAll(/^ {2,}([A-Z][A-Z0-9_]*): (.*)$/gm)].map(([, name, value]) => ({ name: name!, value: value!.replace(/^'|'$/g, '') }));
    expect(settings.length).toBeGreaterThan(20);
    const ours = settings.filter(({ name }) => !name.startsWith('OTEL_') && !name.startsWith('POSTGRES_'));
    expect(ours.map(({ name }) => name).filter((name) => !(name in ConfigSchema.shape))).toEqual([]);
    // a default like ${X:-30} must be a value the service accepts
    const defaults = Object.fromEntries(ours.map(({ name, value }) => [name, /^\$\{[A-Z_]+:-(.*)\}$/.exec(value)?.[1] ?? value]));
    expect(() => loadConfig(defaults)).not.toThrow();
  });
});
