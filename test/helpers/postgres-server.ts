import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './redis-server.js';

/**
 * A Postgres server of the test's own (initdb in a temporary directory, pg_ctl on a free port,
 * trust authentication, fsync off), for faults that need the server itself down: the shared
 * Postgres is never touched. Its data survives a stop and start. As root, the server runs as
 * user `postgres` (Postgres refuses to run as root).
 *
 * Every server started here is tracked; `stopOwnPostgresServers()` (call it in afterAll) stops
 * them and removes their directories, and a process 'exit' hook stops any left as a last resort.
 */

export interface OwnPostgres {
  port: number;
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database: string): string;
  running(): boolean;
  /** Starts it (no-op if it runs); resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops it (fast shutdown: sessions are ended); no-op if stopped. */
  stop(): Promise<void>;
}

/** The directory of initdb and pg_ctl (the newest of Debian's /usr/lib/postgresql/<version>/bin), or undefined. */
export function postgresBinaries(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl')) && existsSync(join(root, v, 'bin', 'initdb')));
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0];
  return newest === undefined ? undefined : join(root, newest, 'bin');
}

const servers = new Map<OwnPostgres, string>(); // server → its directory
let exitHookInstalled = false;

/** The command line of a Postgres binary: as user postgres when we are root. */
function commandLine(bin: string, program: string, args: readonly string[]): [string, string[]] {
  if (process.getuid?.() === 0) return ['runuser', ['-u', 'postgres', '--', join(bin, program), ...args]];
  return [join(bin, program), [...args]];
}

/** Runs a Postgres binary to its end; rejects with its output on failure. */
function run(bin: string, program: string, args: readonly string[]): Promise<void> {
  const [command, argv] = commandLine(bin, program, args);
  return new Promise((resolve, reject) => {
    // stdout ignored: pg_ctl start leaves it to the server, which would hold the pipe open
    const child = spawn(command, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`${program} ${args.join(' ')} failed (${code ?? signal}):\n${output}`))));
  });
}

function uidOf(user: string): { uid: number; gid: number } {
  const id = (flag: string) => Number(spawnSync('id', [flag, user], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** initdb, then starts the server on a free port; resolves once it accepts connections. */
export async function startOwnPostgres(bin: string): Promise<OwnPostgres> {
  const dir = mkdtempSync(join(tmpdir(), 'own-postgres-'));
  if (process.getuid?.() === 0) {
    const { uid, gid } = uidOf('postgres');
    chownSync(dir, uid, gid);
  }
  const data = join(dir, 'data');
  const port = await freePort();
  await run(bin, 'initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  let running = false;

  const server: OwnPostgres = {
    port,
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    running: () => running,
    async start() {
      if (running) return;
      const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
      await run(bin, 'pg_ctl', ['-D', data, '-o', options, '-l', join(dir, 'log'), '-w', '-t', '60', 'start']);
      running = true;
    },
    async stop() {
      if (!running) return;
      await run(bin, 'pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      running = false;
    },
  };
  servers.set(server, dir);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // last resort if afterAll never ran: stop what this module started, nothing else
    process.once('exit', () => {
      for (const [s, d] of servers) if (s.running()) spawnSync(...commandLine(bin, 'pg_ctl', ['-D', join(d, 'data'), '-m', 'immediate', 'stop']));
    });
  }
  await server.start();
  return server;
}

/** Stops every server started here and removes its directory. */
export async function stopOwnPostgresServers(): Promise<void> {
  for (const [server, dir] of servers) {
    await server.stop().catch(() => {});
    servers.delete(server);
    rmSync(dir, { recursive: true, force: true });
  }
}
