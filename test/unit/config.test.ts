import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_EVENTS_STREAM, DEFAULT_QUEUE_PREFIX, loadConfig } from '../../contracts/index.js';

const projectRoot = fileURLToPath(new URL('../../', import.meta.url));

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
    expect(config).toMatchObject({ GROUP_COMMIT_MAX: 32, GROUP_COMMIT_LANES: 2, GROUP_COMMIT_SPARE_LANE_MS: 20, CREDENTIAL_CACHE_MAX: 10_000, OUTBOX_RETENTION_SECONDS: 3600, JOB_RETENTION_DAYS: 30 });
    expect(config.BOOTSTRAP_ADMIN_TOKEN).toBeUndefined();
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
      OUTBOX_RETENTION_SECONDS: '0',
      JOB_RETENTION_DAYS: '1',
      FORCE_ACCESS_REASON: 'false',
      LOG_LEVEL: 'debug',
      QUEUE_PREFIX: '{revocation}',
      DATABASE_URL: 'postgresql://u@db:5432/x',
      REDIS_URL: 'rediss://cache:6380',
    });
    expect(config).toMatchObject({ PORT: 9090, WORKER_CONCURRENCY: 3, GROUP_COMMIT_MAX: 1, GROUP_COMMIT_SPARE_LANE_MS: 0, CREDENTIAL_CACHE_MAX: 0, OUTBOX_RETENTION_SECONDS: 0, JOB_RETENTION_DAYS: 1, FORCE_ACCESS_REASON: false, LOG_LEVEL: 'debug', QUEUE_PREFIX: '{revocation}' });
  });

  it.each([
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['DATABASE_URL', 'nonsense'],
    ['REDIS_URL', 'http://x'],
    ['LOG_LEVEL', 'loud'],
    ['WORKER_CONCURRENCY', '0'],
    ['GROUP_COMMIT_MAX', '0'],
    ['GROUP_COMMIT_LANES', 'two'],
    ['GROUP_COMMIT_SPARE_LANE_MS', '-1'],
    ['CREDENTIAL_CACHE_MAX', '-1'],
    ['OUTBOX_RETENTION_SECONDS', '1.5'],
    ['JOB_RETENTION_DAYS', '0'],
    ['JOB_RETENTION_DAYS', '-3'],
    ['JOB_RETENTION_DAYS', '0.5'],
    ['JOB_RETENTION_DAYS', 'forever'],
    ['FORCE_ACCESS_REASON', 'maybe'],
    ['BOOTSTRAP_ADMIN_TOKEN', 'too-short'],
    ['QUEUE_PREFIX', 'has space'],
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

  it('stops bin/migrate.ts with exit code 1 and a message naming the variable', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'bin/migrate.ts'], {
      cwd: projectRoot,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: 'abc' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('PORT');
  });
});
