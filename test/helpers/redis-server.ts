import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { sleep } from './sleep.js';

/**
 * A redis-server of the test's own, on a free port, for fault injection (FLUSHALL, stop,
 * restart): the shared Redis is never touched. No persistence (`--save "" --appendonly no`)
 * unless `args` turn it on, so a restart comes back empty, as a Redis without persistence does.
 * The same for a sentinel (`sentinel`), and for the nodes of a cluster (redis-cluster.ts).
 *
 * Every server started here is tracked; `stopOwnRedisServers()` (call it in afterAll) stops
 * the ones still running, and a process 'exit' hook SIGKILLs any left as a last resort. Only
 * processes started here are ever signalled.
 */

export interface OwnRedis {
  port: number;
  /** redis://127.0.0.1:<port> */
  url: string;
  running(): boolean;
  /** Starts it again on the same port (no-op if it runs). Resolves once it answers PING. */
  start(): Promise<void>;
  /** Stops it (SIGTERM, SIGKILL after 5 s); resolves once the process is gone. No-op if stopped. */
  stop(): Promise<void>;
  /** kill -9: no shutdown save, connections cut; resolves once the process is gone. No-op if stopped. */
  kill(): Promise<void>;
  /** stop() then start(): every key is gone, every client connection was cut. */
  restart(): Promise<void>;
  /** Sends one command (e.g. FLUSHALL) over a fresh connection; resolves with the raw reply line. */
  command(...args: string[]): Promise<string>;
  /** Sends one command over a fresh connection; resolves with the whole reply, parsed (bulk text, arrays). */
  query(...args: string[]): Promise<unknown>;
}

export interface OwnRedisOptions {
  /** redis-server arguments after the defaults (later ones win), given its directory: e.g. ['--appendonly', 'yes']. */
  args?: (dir: string) => string[];
  /** A sentinel instead: this configuration (given its port and directory) is written to <dir>/sentinel.conf. */
  sentinel?: (port: number, dir: string) => string;
}

const servers = new Map<OwnRedis, string>(); // server → its working directory
const processes = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of processes) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
}

const handedOut = new Set<number>();

/**
 * A TCP port nobody listens on right now: bind port 0, read it, release it. Never the same port
 * twice in one process, so two taken back to back (before either is bound) differ.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await unusedPort();
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}

function unusedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

/** Encodes a command in RESP and returns the first reply line (enough for PING, FLUSHALL, …). */
function sendCommand(port: number, args: string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis on port ${port}: no reply to ${args[0]} in ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      reply += chunk;
      const end = reply.indexOf('\r\n');
      if (end >= 0) {
        clearTimeout(timer);
        socket.destroy();
        resolve(reply.slice(0, end));
      }
    });
    socket.connect(port, '127.0.0.1', () => {
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    });
  });
}

/** The whole reply to one command, parsed by ioredis, on a connection that neither retries nor reconnects. */
async function queryServer(port: number, args: string[]): Promise<unknown> {
  const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false, connectTimeout: 2000 });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const [name, ...rest] = args;
    return await redis.call(name ?? 'PING', ...rest);
  } finally {
    redis.disconnect();
  }
}

/** Starts a redis-server (or a sentinel) of our own on a free port; resolves once it answers PING. */
export async function startOwnRedis(options: OwnRedisOptions = {}): Promise<OwnRedis> {
  installExitHook();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'own-redis-'));
  let child: ChildProcess | undefined;
  let output = '';

  const isRunning = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const sentinelConfig = options.sentinel ? join(dir, 'sentinel.conf') : undefined;
  // a sentinel rewrites its configuration file as it learns: written once, kept across restarts
  if (sentinelConfig && options.sentinel) writeFileSync(sentinelConfig, options.sentinel(port, dir));
  const argv = sentinelConfig
    ? [sentinelConfig, '--sentinel', '--port', String(port), '--bind', '127.0.0.1', '--daemonize', 'no']
    : ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir, ...(options.args?.(dir) ?? [])];

  async function start(): Promise<void> {
    if (isRunning()) return;
    output = '';
    const started = spawn('redis-server', argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = started;
    processes.add(started);
    started.once('exit', () => processes.delete(started));
    started.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    started.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (!isRunning()) throw new Error(`redis-server on port ${port} exited at start:\n${output}`);
      if ((await sendCommand(port, ['PING'], 500).catch(() => '')) === '+PONG') return;
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`redis-server on port ${port} did not answer PING in 10 s:\n${output}`);
      }
      await sleep(25);
    }
  }

  async function stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const running = child;
    if (!running || !isRunning()) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill(signal);
    const timer = setTimeout(() => running.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  const server: OwnRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    running: isRunning,
    start,
    stop: () => stop(),
    kill: () => stop('SIGKILL'),
    async restart() {
      await stop();
      await start();
    },
    command: (...args: string[]) => sendCommand(port, args),
    query: (...args: string[]) => queryServer(port, args),
  };
  servers.set(server, dir);
  await start();
  return server;
}

/** Stops every redis-server started here and removes their directories. */
export async function stopOwnRedisServers(): Promise<void> {
  await Promise.all(
    [...servers].map(async ([server, dir]) => {
      await server.stop();
      servers.delete(server);
      rmSync(dir, { recursive: true, force: true });
    }),
  );
}
