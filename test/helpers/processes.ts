import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { COMMAND_QUEUE, type Config, ConfigSchema } from '../../contracts/index.js';
import { sleep } from './sleep.js';

/**
 * Child processes for tests: worker, producer and service processes (`bin/worker.ts`,
 * `bin/producer.ts`, `bin/start.ts`) that a test can signal (SIGTERM, SIGINT) or kill -9, and
 * one-shot CLI runs (`bin/revoke.ts`, `bin/seed.ts`) with their output and exit status.
 *
 * Every child is tracked in this module; `killChildren()` (call it in afterAll) SIGKILLs the
 * ones still running. Only processes started here are ever signalled.
 */

/** The project root: entry points are run from here, as `npm run …` does. */
export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const children = new Set<ChildProcess>();
let exitHookInstalled = false;

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Keeps `child` in the set until it exits; makes sure none outlives the test process. */
function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // last resort if afterAll never ran: SIGKILL what this module started, nothing else
    process.once('exit', () => {
      for (const c of children) if (isRunning(c)) c.kill('SIGKILL');
    });
  }
}

/** Resolves with how the child ended (at once if it already has). */
function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (!isRunning(child)) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** SIGKILLs every child this module started that is still running, and waits for them to end. */
export async function killChildren(): Promise<void> {
  await Promise.all(
    [...children].map(async (child) => {
      if (isRunning(child)) child.kill('SIGKILL');
      await exitOf(child);
    }),
  );
}

/** Variables a child must not inherit from the test process: it gets exactly what we pass. */
const inheritedNever = ['NODE_OPTIONS', 'REVOCATION_URL', 'REVOCATION_TOKEN', ...Object.keys(ConfigSchema.shape)];

function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const key of inheritedNever) delete base[key];
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete base[key];
    else base[key] = value;
  }
  return base;
}

/** The compiled entry point of `script` (`bin/worker.ts` → `dist/bin/worker.js`), built by test/global-setup.ts. */
export function compiled(script: string): string {
  return join('dist', script.replace(/\.ts$/, '.js'));
}

/** `node dist/<script>.js …args` from the project root, output piped. */
function spawnScript(script: string, args: readonly string[], env: Record<string, string | undefined>): ChildProcess {
  const child = spawn(process.execPath, [compiled(script), ...args], {
    cwd: PROJECT_ROOT,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  return child;
}

export type LogLevel = Config['LOG_LEVEL'];

/**
 * The environment of a worker process for this configuration: the same database, Redis,
 * queue prefix, stream and settings as the stack, and no BOOTSTRAP_ADMIN_TOKEN (a worker
 * does not need one).
 */
export function workerEnv(config: Config, logLevel: LogLevel, overrides: Record<string, string> = {}): Record<string, string | undefined> {
  return {
    DATABASE_URL: config.DATABASE_URL,
    REDIS_URL: config.REDIS_URL,
    QUEUE_PREFIX: config.QUEUE_PREFIX,
    EVENTS_STREAM: config.EVENTS_STREAM,
    EVENTS_STREAM_MAXLEN: String(config.EVENTS_STREAM_MAXLEN),
    DELETE_BATCH_SIZE: String(config.DELETE_BATCH_SIZE),
    WORKER_CONCURRENCY: String(config.WORKER_CONCURRENCY),
    SWEEPER_INTERVAL_SECONDS: String(config.SWEEPER_INTERVAL_SECONDS),
    SWEEPER_GRACE_SECONDS: String(config.SWEEPER_GRACE_SECONDS),
    OUTBOX_RETENTION_SECONDS: String(config.OUTBOX_RETENTION_SECONDS),
    JOB_RETENTION_DAYS: String(config.JOB_RETENTION_DAYS),
    LOG_LEVEL: logLevel,
    BOOTSTRAP_ADMIN_TOKEN: undefined,
    ...overrides,
  };
}

export interface WorkerProcess {
  pid: number;
  /** Everything it wrote so far. */
  stdout(): string;
  stderr(): string;
  /** Resolves when it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** kill -9: no drain, no cleanup, BullMQ lock left behind. Resolves once it is gone. */
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends a signal (SIGTERM, SIGINT) to the process; no-op once it has exited. */
  signal(signal: NodeJS.Signals): void;
  /** The `msg` of every JSON log line so far, in order. */
  messages(): string[];
  /** Resolves once a log line with this `msg` has been written (at once if it has). */
  waitForLog(msg: string, timeoutMs?: number): Promise<void>;
}

/**
 * Reads a child's output: JSON log lines are parsed as they come (`onLine` sees each one), and
 * the handle can wait for a log message. The child must already be tracked.
 */
function watch(child: ChildProcess, onLine: (entry: Record<string, unknown>) => void = () => {}): WorkerProcess {
  let out = '';
  let err = '';
  let pending = '';
  const messages: string[] = [];
  const listeners = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (typeof entry.msg !== 'string') continue;
        messages.push(entry.msg);
        onLine(entry);
      } catch {
        // not a log line
      }
    }
    for (const listener of listeners) listener();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
  });
  const exited = exitOf(child);
  const waitForLog = (msg: string, ms = 30_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (messages.includes(msg)) done(resolve);
        else if (!isRunning(child)) done(() => reject(new Error(`process exited (${child.exitCode ?? child.signalCode}) before logging '${msg}'\nstdout: ${out}\nstderr: ${err}`)));
      };
      const done = (then: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off('exit', check);
        then();
      };
      const timer = setTimeout(() => done(() => reject(new Error(`process did not log '${msg}' in ${ms} ms\nstdout: ${out}\nstderr: ${err}`))), ms);
      listeners.add(check);
      child.on('exit', check);
      check();
    });
  return {
    pid: child.pid!,
    stdout: () => out,
    stderr: () => err,
    exited,
    running: () => isRunning(child),
    async kill() {
      if (isRunning(child)) child.kill('SIGKILL');
      return exited;
    },
    signal(signal) {
      if (isRunning(child)) child.kill(signal);
    },
    messages: () => [...messages],
    waitForLog,
  };
}

export interface SpawnWorkerOptions {
  /**
   * 'info' (default) or more verbose: ready when it logs `worker ready` on stdout. Quieter
   * levels: ready when one more BullMQ worker is connected to the queue than before.
   */
  logLevel?: LogLevel;
  /** Extra environment variables (override the ones taken from the configuration). */
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

const verbose: readonly LogLevel[] = ['info', 'debug', 'trace'];

/** Starts `node dist/bin/worker.js` for this configuration and waits until it is ready. */
export async function spawnWorker(config: Config, options: SpawnWorkerOptions = {}): Promise<WorkerProcess> {
  const logLevel = options.logLevel ?? 'info';
  const timeoutMs = options.readyTimeoutMs ?? 20_000;
  const logsReady = verbose.includes(logLevel);
  const before = logsReady ? 0 : await connectedWorkers(config);

  const child = spawnScript('bin/worker.ts', [], workerEnv(config, logLevel, options.env));
  const handle = watch(child);
  const sawReady = () => handle.messages().includes('worker ready');

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!handle.running()) throw new Error(`worker process exited before it was ready (${JSON.stringify(await handle.exited)})\nstdout: ${handle.stdout()}\nstderr: ${handle.stderr()}`);
    if (logsReady ? sawReady() : (await connectedWorkers(config)) > before) return handle;
    if (Date.now() > deadline) {
      await handle.kill();
      throw new Error(`worker process not ready after ${timeoutMs} ms\nstdout: ${handle.stdout()}\nstderr: ${handle.stderr()}`);
    }
    await sleep(50);
  }
}

/**
 * Starts `node dist/bin/worker.js` for this configuration and returns at once, before it
 * is ready: for a test that watches how it starts (its dependencies not up yet, say).
 */
export function launchWorker(config: Config, options: Pick<SpawnWorkerOptions, 'logLevel' | 'env'> = {}): WorkerProcess {
  return watch(spawnScript('bin/worker.ts', [], workerEnv(config, options.logLevel ?? 'info', options.env)));
}

/** BullMQ workers connected to this configuration's command queue. */
async function connectedWorkers(config: Config): Promise<number> {
  const connection = new Redis(config.REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue(COMMAND_QUEUE, { connection, prefix: config.QUEUE_PREFIX });
  try {
    return await queue.getWorkersCount();
  } finally {
    await queue.close().catch(() => {});
    connection.disconnect();
  }
}

export interface RunResult {
  /** Exit status, or null if it was killed (see `signal`). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** It ran past the timeout and was killed. */
  timedOut: boolean;
}

export interface RunOptions {
  /** The child's configuration: only these variables (plus PATH, HOME, …) are set. */
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
}

/** Runs `node dist/<script>.js …args` to its end; captures stdout, stderr and the exit status. */
export async function runScript(script: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const child = spawnScript(script, args, options.env ?? {});
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs ?? 30_000);
  // 'close' (not 'exit'): every byte of stdout and stderr has been read
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (c, s) => resolve({ code: c, signal: s })));
  clearTimeout(timer);
  return { code, signal, stdout, stderr, timedOut };
}

/** Runs the incident CLI: `node dist/bin/revoke.js …args`. */
export function runCli(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return runScript('bin/revoke.ts', args, options);
}

/**
 * Starts the incident CLI without waiting for it to end, so a test can read its output as it
 * comes and signal it (Ctrl-C is SIGINT). Its exit status is in `exited`.
 */
export function spawnCli(args: readonly string[], options: RunOptions = {}): WorkerProcess {
  return watch(spawnScript('bin/revoke.ts', args, options.env ?? {}));
}

/** Runs the seeder: `node dist/bin/seed.js …args`. */
export function runSeed(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return runScript('bin/seed.ts', args, options);
}

export interface ServiceProcess extends WorkerProcess {
  /** The producer's address, from its ready log line (`revocation service ready`, `producer ready`). */
  url: string;
}

/**
 * Spawns `script` and waits until it is ready: at `info` or more verbose, its ready log line
 * (which carries the producer's `url`); at quieter levels, `GET /healthz` answering 200 on
 * HOST:PORT of `env` (PORT must then be a fixed port).
 */
async function spawnListening(script: string, env: Record<string, string | undefined>, readyMsg: string, timeoutMs: number): Promise<ServiceProcess> {
  const settings: Record<string, string | undefined> = { LOG_LEVEL: 'info', ...env };
  const child = spawnScript(script, [], settings);
  let url = '';
  const handle = watch(child, (entry) => {
    if (entry.msg === readyMsg && typeof entry.url === 'string') url = entry.url;
  });
  try {
    if (verbose.includes(settings.LOG_LEVEL as LogLevel)) {
      await handle.waitForLog(readyMsg, timeoutMs);
    } else {
      if (!settings.PORT || settings.PORT === '0') throw new Error('a quiet producer needs a fixed PORT to be probed');
      url = `http://${settings.HOST ?? '127.0.0.1'}:${settings.PORT}`;
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (!handle.running()) throw new Error(`${script} exited before it was ready (${JSON.stringify(await handle.exited)})\nstdout: ${handle.stdout()}\nstderr: ${handle.stderr()}`);
        const status = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1_000) }).then(
          (r) => r.status,
          () => 0,
        );
        if (status === 200) break;
        if (Date.now() > deadline) throw new Error(`${script} not ready after ${timeoutMs} ms\nstdout: ${handle.stdout()}\nstderr: ${handle.stderr()}`);
        await sleep(50);
      }
    }
  } catch (error) {
    await handle.kill();
    throw error;
  }
  return Object.assign(handle, { url });
}

/**
 * Starts `node dist/bin/start.js` (migrate, producer, worker, relay and reconciler in
 * one process, as `npm start` runs them) with exactly this environment (LOG_LEVEL defaults to
 * `info`: readiness is read from the `revocation service ready` log line), and waits until it
 * is ready. PORT should be a free port (or 0).
 */
export function spawnService(env: Record<string, string | undefined>, options: { readyTimeoutMs?: number } = {}): Promise<ServiceProcess> {
  return spawnListening('bin/start.ts', env, 'revocation service ready', options.readyTimeoutMs ?? 30_000);
}

/**
 * The environment of a producer process for this configuration: the same database, Redis,
 * queue prefix, stream and settings as the stack (BOOTSTRAP_ADMIN_TOKEN included), listening
 * on `port` (a free one: see `freePort` in redis-server.ts).
 */
export function producerEnv(config: Config, port: number, logLevel: LogLevel = 'info', overrides: Record<string, string> = {}): Record<string, string | undefined> {
  return {
    ...workerEnv(config, logLevel),
    HOST: '127.0.0.1',
    PORT: String(port),
    BOOTSTRAP_ADMIN_TOKEN: config.BOOTSTRAP_ADMIN_TOKEN,
    FORCE_ACCESS_REASON: String(config.FORCE_ACCESS_REASON),
    RATE_LIMIT_MAX: String(config.RATE_LIMIT_MAX),
    RATE_LIMIT_WINDOW_SECONDS: String(config.RATE_LIMIT_WINDOW_SECONDS),
    ...overrides,
  };
}

/**
 * Starts `node dist/bin/producer.js` (the HTTP producer alone, as `npm run producer`
 * runs it; the database must be migrated) with exactly this environment (see `producerEnv`;
 * LOG_LEVEL defaults to `info`: readiness is read from the `producer ready` log line; quieter,
 * from `GET /healthz`), and waits until it listens.
 */
export function spawnProducer(env: Record<string, string | undefined>, options: { readyTimeoutMs?: number } = {}): Promise<ServiceProcess> {
  return spawnListening('bin/producer.ts', env, 'producer ready', options.readyTimeoutMs ?? 30_000);
}
