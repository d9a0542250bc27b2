import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A redis-server of the test's own, on a free port, for fault injection (FLUSHALL, stop,
 * restart): the shared Redis is never touched. No persistence (`--save "" --appendonly no`),
 * so a restart comes back empty, as a Redis without persistence does.
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
  /** stop() then start(): every key is gone, every client connection was cut. */
  restart(): Promise<void>;
  /** Sends one command (e.g. FLUSHALL) over a fresh connection; resolves with the raw reply line. */
  command(...args: string[]): Promise<string>;
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

/** A TCP port nobody listens on right now: bind port 0, read it, release it. */
export function freePort(): Promise<number> {
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

/** Starts a redis-server of our own on a free port; resolves once it answers PING. */
export async function startOwnRedis(): Promise<OwnRedis> {
  installExitHook();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'own-redis-'));
  let child: ChildProcess | undefined;
  let output = '';

  const isRunning = () => child !== undefined && child.exitCode === null && child.signalCode === null;

  async function start(): Promise<void> {
    if (isRunning()) return;
    output = '';
    const started = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir], {
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
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  async function stop(): Promise<void> {
    const running = child;
    if (!running || !isRunning()) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill('SIGTERM');
    const timer = setTimeout(() => running.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  const server: OwnRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    running: isRunning,
    start,
    stop,
    async restart() {
      await stop();
      await start();
    },
    command: (...args: string[]) => sendCommand(port, args),
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
