/**
 * bench/wakeups: what one hop costs on this machine, by rate, with nothing of the service in it.
 * Every hop of a command's path (HTTP to the producer, a Postgres statement, a Redis command)
 * wakes a process; this measures the CPU a bare hop of each kind costs its client and its server
 * at a fixed rate (open loop), from 100/s up: a bare Node HTTP server answering 202 with a small
 * JSON body (its own process), `SELECT 1` on one Postgres connection, `PING` on one Redis
 * connection. The figure to read is the ratio of CPU per hop at each rate to that at the highest
 * rate: how much more a hop costs when the processes sleep between hops (bench/RESULTS.md,
 * session 9). Usage: npm run bench:wakeups [-- --rates 100,300,900,2000 --duration 5]
 */
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { atRate, cpuSeconds, forkNode, killAllChildren, machineCpuSeconds, nextMessage } from './pipeline-kit.js';
import { fmt } from './support.js';

const BODY = JSON.stringify({ job_id: '0193e4c2-7a1b-7c3d-9e4f-1234567890ab', state: 'queued', type: 'tokens.delete', links: { self: '/v1/jobs/0193e4c2-7a1b-7c3d-9e4f-1234567890ab' } });

if (process.env.WAKEUPS_ROLE === 'http-server') {
  // the bare HTTP server: reads the body, answers 202
  const server = http.createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      response.writeHead(202, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY) });
      response.end(BODY);
    });
  });
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: (server.address() as { port: number }).port }));
} else {
  await main();
}

interface Hop {
  name: string;
  /** The server process whose CPU the hop costs (besides this client). */
  serverCpu: () => Promise<number>;
  op: () => Promise<unknown>;
  close: () => Promise<void>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rates: { type: 'string', default: '100,300,900,2000' }, duration: { type: 'string', default: '5' } } });
  const rates = values.rates.split(',').map(Number);
  const seconds = Number(values.duration);
  const log = (line: string) => process.stdout.write(`${line}\n`);

  const server = forkNode('http-server', fileURLToPath(import.meta.url), { WAKEUPS_ROLE: 'http-server' });
  const { port } = await nextMessage<{ type: string; port: number }>(server, 'ready', 10_000);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const post = () =>
    new Promise<void>((resolve, reject) => {
      const request = http.request({ host: '127.0.0.1', port, path: '/v1/commands', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (response) => {
        response.resume();
        response.on('end', resolve);
      });
      request.on('error', reject);
      request.end('{"type":"tokens.delete","collection":"svc","token_ids":["tok-1"],"reason":"AppFunctionality"}');
    });

  // one connection: the statements queue on it, as on a worker's lane
  const client = new pg.Pool({
    connectionString: process.env.BENCH_DATABASE_SERVER_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    application_name: 'bench-wakeups',
    max: 1,
    idleTimeoutMillis: 0,
  });
  const backendPid = Number((await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid);

  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { connectionName: 'bench-wakeups' });
  const redisPid = Number(/^process_id:(\d+)/m.exec(await redis.info('server'))?.[1]);

  const hops: Hop[] = [
    { name: 'HTTP POST → bare Node server (202)', serverCpu: async () => cpuSeconds(server.pid), op: post, close: async () => agent.destroy() },
    { name: 'SELECT 1 → Postgres backend', serverCpu: async () => cpuSeconds(backendPid), op: () => client.query('select 1'), close: () => client.end() },
    { name: 'PING → Redis', serverCpu: async () => cpuSeconds(redisPid), op: () => redis.ping(), close: async () => redis.disconnect() },
  ];

  log(`bench:wakeups  ${seconds} s per rate, rates ${rates.join(', ')}/s (open loop; CPU from /proc, client = this process)`);
  try {
    for (const hop of hops) {
      await atRate(500, 1, hop.op); // warm-up: connections open, code compiled
      const rows: { rate: number; client: number; server: number; busy: number }[] = [];
      for (const rate of rates) {
        const c0 = process.cpuUsage();
        const s0 = await hop.serverCpu();
        const m0 = machineCpuSeconds();
        const n = await atRate(rate, seconds, hop.op);
        const c = process.cpuUsage(c0);
        const s1 = await hop.serverCpu();
        const m1 = machineCpuSeconds();
        rows.push({ rate, client: (c.user + c.system) / n, server: ((s1 - s0) * 1e6) / n, busy: (m1.busy - m0.busy) / (m1.total - m0.total) });
      }
      const top = rows[rows.length - 1]!;
      log(`\n${hop.name}`);
      log('     rate/s   client µs per hop   server µs per hop   client ÷ at top rate   server ÷ at top rate   machine busy');
      for (const r of rows) {
        log(
          `${String(r.rate).padStart(11)}${fmt(r.client, 0).padStart(20)}${fmt(r.server, 0).padStart(20)}${fmt(r.client / top.client, 2).padStart(23)}${fmt(r.server / top.server, 2).padStart(23)}${`${fmt(r.busy * 100, 0)}%`.padStart(15)}`,
        );
      }
      await hop.close();
    }
    log('\n(server µs per hop for Redis and Postgres has a resolution of 10 ms of CPU per rate: read it at the higher rates, or raise --duration)');
  } finally {
    killAllChildren();
  }
}
