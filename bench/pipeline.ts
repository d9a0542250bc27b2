/**
 * bench/pipeline: the service's throughput and latency against bare baselines, in one run on
 * one throwaway database and Redis namespace (issue 8).
 *   (a) baselines, each in its own process: a bare Fastify route that INSERTs one row and calls
 *       queue.add (the limit of durable acceptance); a bare BullMQ worker running one
 *       single-token transaction per job (the limit of execution).
 *   (b) the service, producer and worker as separate processes (dist/bin/producer.js and
 *       dist/bin/worker.js): accepted/s with the worker stopped; completed/s draining the
 *       commands so accepted (the bare worker drains as many jobs, the same way); accepted/s and
 *       completed/s with both running; request → command.succeeded event latency (p50, p99) at
 *       25%, 50% and 90% of that sustained rate, from an open-loop generator.
 *   (c) GET /v1/auth/verify against a bare route running the same SELECT.
 *   (d) the Piiano delete route called synchronously (SPEC §5: the request waits for its job and
 *       answers 200 {}), closed loops at 32 and 256 connections, against the same loop with
 *       `Prefer: respond-async` (completed/s from the events): requests/s, p99, the ratio, and
 *       the producer's resident memory during each loop.
 * Every delete command names a token of its own, so none fails with PV3009.
 * On a Redis Cluster: REDIS_CLUSTER_NODES=host:port,… in the environment (the run's keys then
 * share the hash tag {bench-…}); Redis CPU and script counts are summed over its nodes.
 * Usage: npm run bench:pipeline [-- --latency-only --sync-only --duration 10 --connections 32 --sync-connections 32,256 --worker-concurrency 64 --tokens 200000 --profile /tmp/prof --quick --rates 300 --fractions 0.25,0.5,0.9 --rate-limit 10000000 --log-level info]
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue } from 'bullmq';
import { sql } from 'kysely';
import { COMMAND_JOB_NAME, COMMAND_JOB_OPTIONS, COMMAND_QUEUE, redisTopology } from '../contracts/index.js';
import { createDb } from '../db/create-db.js';
import type { Db } from '../db/database.js';
import { connectRedis, type RedisClient, serverConnections } from '../db/redis-connection.js';
import { migrateToLatest } from '../db/migrate.js';
import { insertCollection } from '../db/repositories/collection.repository.js';
import {
  BARE_EXEC_QUEUE,
  BARE_PIPELINE_QUEUE,
  type Child,
  childNodeFlags,
  EventWatch,
  closedLoop,
  contextSwitches,
  cpuSeconds,
  type DiskProbe,
  diskPhrase,
  forkNode,
  freePort,
  type GcPauses,
  gcPausesBetween,
  killAllChildren,
  type LoadResult,
  machineCpuSeconds,
  nextMessage,
  openLoop,
  percentile,
  probeDisk,
  type RequestSpec,
  type RssRange,
  RssSampler,
  spawnNode,
  tailPhrase,
  tailWindows,
  WalWatch,
  type WalWaits,
  walPhrase,
  waitForHttp,
  writeSyscalls,
} from './pipeline-kit.js';
import { benchConfig, benchRedisEnv, dropDatabase, fmt } from './support.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    'worker-concurrency': { type: 'string', default: '64' },
    tokens: { type: 'string', default: '200000' },
    warmup: { type: 'string', default: '2' },
    'drain-timeout': { type: 'string', default: '120' },
    'open-loop-sockets': { type: 'string', default: '256' },
    /** Open-loop rates (commands/s, comma-separated) to add to the fractions of the maximum: compares builds at the same load. */
    rates: { type: 'string' },
    /** Fractions of the maximum rate to measure latency at (comma-separated; '' for none, with --rates). */
    fractions: { type: 'string', default: '0.25,0.5,0.9' },
    /** Only the open-loop rows at --rates, for the service and the bare pipeline: compares builds at equal load, fast. */
    'latency-only': { type: 'boolean', default: false },
    /** Accept and drain phases only (the two throughput ratios), for iterating on an optimisation; with --sync-connections, (d) too. */
    quick: { type: 'boolean', default: false },
    /** Only (d): the synchronous Piiano delete against the same loop with Prefer: respond-async. */
    'sync-only': { type: 'boolean', default: false },
    /** Connections of (d)'s closed loops, one row each (comma-separated; '' for none). Default 32,256, and none under --quick (it would double it). */
    'sync-connections': { type: 'string' },
    /** Writes a V8 CPU profile of every child process (producer, worker, baselines) to this directory. */
    profile: { type: 'string' },
    /** Extra node flags for every child process, service and baselines alike (space-separated), e.g. '--max-semi-space-size=64' to try a V8 setting. */
    'node-flags': { type: 'string', default: '' },
    /** Seconds of the disk probe before the measured phases (fdatasync every 5 ms beside Postgres's data; 0 for none). */
    'disk-probe': { type: 'string', default: '10' },
    /**
     * RATE_LIMIT_MAX of the producer (requests per subject per minute; 0, the default here, turns
     * the limiter off). The run's few subjects send thousands per second: a limit high enough never
     * to refuse (10000000) measures what counting every request in Redis costs, as a producer with
     * the limiter on (its default) pays.
     */
    'rate-limit': { type: 'string', default: '0' },
    /** LOG_LEVEL of the producer and worker ('silent' here; 'info', their default, logs two lines per request to the benchmark's pipe). */
    'log-level': { type: 'string', default: 'silent' },
  },
});
const D = Number(values.duration);
const C = Number(values.connections);
const CONCURRENCY = Number(values['worker-concurrency']);
const TOKENS = Number(values.tokens);
const WARMUP = Number(values.warmup);
const DRAIN_TIMEOUT_S = Number(values['drain-timeout']);
const OPEN_SOCKETS = Number(values['open-loop-sockets']);
const FRACTIONS = values.fractions
  .split(',')
  .filter((f) => f.trim() !== '')
  .map(Number);
const FIXED_RATES = values.rates ? values.rates.split(',').map(Number) : [];
const QUICK = values.quick;
const LATENCY_ONLY = values['latency-only'];
const SYNC_ONLY = values['sync-only'];
const SYNC_CONNECTIONS = (values['sync-connections'] ?? (QUICK ? '' : '32,256'))
  .split(',')
  .filter((c) => c.trim() !== '')
  .map(Number);
const DISK_PROBE_S = Number(values['disk-probe']);
if (LATENCY_ONLY && (QUICK || FIXED_RATES.length === 0)) throw new Error('--latency-only needs --rates, and not --quick');
if (SYNC_ONLY && (QUICK || LATENCY_ONLY || SYNC_CONNECTIONS.length === 0)) throw new Error('--sync-only needs --sync-connections, and neither --quick nor --latency-only');
if (SYNC_CONNECTIONS.some((c) => !Number.isInteger(c) || c < 1)) throw new Error(`--sync-connections must be whole numbers, not '${values['sync-connections'] ?? ''}'`);
// every child reports its GC pauses (Child counts them per phase)
childNodeFlags.push('--trace-gc');
if (values.profile) childNodeFlags.push('--cpu-prof', `--cpu-prof-dir=${values.profile}`);
childNodeFlags.push(...values['node-flags'].split(' ').filter((flag) => flag !== ''));

const RATE_LIMIT_MAX = values['rate-limit'];
const SERVICE_LOG_LEVEL = values['log-level'];
if (!/^\d+$/.test(RATE_LIMIT_MAX)) throw new Error(`--rate-limit must be a whole number, not '${RATE_LIMIT_MAX}'`);

const { config } = benchConfig({ WORKER_CONCURRENCY: String(CONCURRENCY), RATE_LIMIT_MAX: '0' });
const distBench = (file: string) => fileURLToPath(new URL(file, import.meta.url));
const PRODUCER_JS = distBench('../bin/producer.js');
const WORKER_JS = distBench('../bin/worker.js');
const BARE_JS = distBench('./pipeline-bare.js');

const log = (line: string) => process.stdout.write(`${line}\n`);
const progress = (line: string) => log(`  · ${line}`);
const rate = (n: number, seconds: number) => n / seconds;
const f0 = (n: number) => (Number.isFinite(n) ? fmt(n, 0) : '—');
const f1 = (n: number) => (Number.isFinite(n) ? fmt(n, 1) : '—');
const f2 = (n: number) => (Number.isFinite(n) ? fmt(n, 2) : '—');
/** A fraction as a percentage ('—' when not a number: e.g. a fraction of the maximum rate under --latency-only, which measures none). */
const pct = (fraction: number) => (Number.isFinite(fraction) ? `${fmt(fraction * 100, 0)}%` : '—');

/** Environment of every process of the run. */
const baseEnv: Record<string, string> = {
  DATABASE_URL: config.DATABASE_URL,
  ...benchRedisEnv(),
  HOST: '127.0.0.1',
  LOG_LEVEL: 'silent',
  QUEUE_PREFIX: config.QUEUE_PREFIX,
  EVENTS_STREAM: config.EVENTS_STREAM,
  BOOTSTRAP_ADMIN_TOKEN: config.BOOTSTRAP_ADMIN_TOKEN!,
  RATE_LIMIT_MAX: '0',
  WORKER_CONCURRENCY: String(CONCURRENCY),
};
/** Environment of the service's processes (producer, worker): the run's, with --rate-limit and --log-level. */
const serviceEnv: Record<string, string> = { ...baseEnv, RATE_LIMIT_MAX, LOG_LEVEL: SERVICE_LOG_LEVEL };

// ---------------------------------------------------------------- run state and cleanup

let db: Db | undefined;
let redis: RedisClient | undefined;
let watch: EventWatch | undefined;
const queues: Queue[] = [];
const children = new Set<Child>();
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await Promise.allSettled([...children].map((child) => child.stop(8000)));
    killAllChildren();
    await watch?.stop().catch(() => {});
    for (const queue of queues) await queue.close().catch(() => {});
    await db?.destroy().catch(() => {});
    if (redis) {
      try {
        let removed = 0;
        // on a cluster, every node's keys (the run's share one slot: one UNLINK takes many)
        for (const server of serverConnections(redis)) {
          let cursor = '0';
          do {
            const [next, keys] = await server.scan(cursor, 'MATCH', `${config.QUEUE_PREFIX}:*`, 'COUNT', 1000);
            cursor = next;
            if (keys.length) removed += await server.unlink(...keys);
          } while (cursor !== '0');
        }
        await redis.unlink(config.EVENTS_STREAM);
        progress(`removed ${removed} Redis keys under ${config.QUEUE_PREFIX}:`);
      } catch (error) {
        log(`cleanup: Redis keys under ${config.QUEUE_PREFIX}: not removed: ${(error as Error).message}`);
      }
      redis.disconnect();
    }
    await dropDatabase(config).then(
      () => progress(`dropped database ${new URL(config.DATABASE_URL).pathname.slice(1)}`),
      (error: Error) => log(`cleanup: database not dropped: ${error.message}`),
    );
  })();
  return cleaning;
}

process.on('exit', killAllChildren);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`\n${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });
}

function track(child: Child): Child {
  children.add(child);
  child.process.once('exit', () => children.delete(child));
  return child;
}

// ---------------------------------------------------------------- CPU accounting per phase

interface CpuSnap {
  self: number;
  children: Map<string, number>;
  writes: Map<string, number>;
  /** Context switches: each child, the database's Postgres backends (by pid), Redis. */
  switches: Map<string, number>;
  postgresSwitches: Map<number, number>;
  postgres: Map<number, number>;
  redis: number;
  redisCommands: RedisCommandTime;
  /** Sessions ever opened on the bench database (pg_stat_database.sessions). */
  sessions: number;
  /** The service's backends now (not the benchmark's own), by pid: their application_name. */
  backendApps: Map<number, string>;
  machine: { busy: number; total: number };
  /** performance.now() when taken (to pick the children's GC pauses in between). */
  at: number;
  /** The server's WAL so far: bytes (insert position, exact), full-page images and flushes to disk (pg_stat_wal: backends report within a second). */
  wal: WalVolume;
}

/** WAL written: bytes, full-page images, and the times the WAL was flushed to disk (fsync). Server-wide. */
interface WalVolume {
  bytes: number;
  fpi: number;
  syncs: number;
}

/** An LSN ('16/B374D848') as a byte position. */
function lsnBytes(lsn: string): number {
  const [high, low] = lsn.split('/');
  return Number.parseInt(high ?? '0', 16) * 2 ** 32 + Number.parseInt(low ?? '0', 16);
}

/** Redis's script calls so far (INFO commandstats: EVAL and EVALSHA, i.e. BullMQ's Lua), and the microseconds they took. */
interface RedisCommandTime {
  scriptCalls: number;
  scriptUs: number;
}

let redisPids: number[] | undefined;

/** Redis's CPU seconds so far and its script calls, from one INFO (sections cpu and commandstats) per server: every node of a cluster. */
async function redisCounters(): Promise<{ cpu: number; scripts: RedisCommandTime }> {
  const scripts: RedisCommandTime = { scriptCalls: 0, scriptUs: 0 };
  let cpu = 0;
  for (const info of await Promise.all(serverConnections(redis!).map((server) => server.info('cpu', 'commandstats')))) {
    const value = (key: string) => Number(new RegExp(`^${key}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
    for (const [, calls, us] of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+),usec=(\d+)/gm)) {
      scripts.scriptCalls += Number(calls);
      scripts.scriptUs += Number(us);
    }
    cpu += value('used_cpu_sys') + value('used_cpu_user');
  }
  return { cpu, scripts };
}

async function snapCpu(): Promise<CpuSnap> {
  // the service's backends (not the benchmark's own), and the sessions opened so far, in one round trip
  const activity = await sql<{ pids: number[] | null; apps: string[] | null; sessions: string; lsn: string; fpi: string; syncs: string }>`
    with mine as (
      select pid, application_name from pg_stat_activity
      where datname = current_database() and application_name not in ('bench-pipeline', 'bench-wal-watch'))
    select (select sessions from pg_stat_database where datname = current_database()) as sessions,
      pg_current_wal_insert_lsn()::text as lsn, w.wal_fpi as fpi, w.wal_sync as syncs,
      (select array_agg(pid order by pid) from mine) as pids, (select array_agg(application_name order by pid) from mine) as apps
    from pg_stat_wal w`.execute(db!);
  const backends = activity.rows[0]?.pids ?? [];
  const apps = activity.rows[0]?.apps ?? [];
  redisPids ??= await Promise.all(serverConnections(redis!).map(async (server) => Number(/^process_id:(\d+)/m.exec(await server.info('server'))?.[1] ?? Number.NaN)));
  // the awaits first, then every /proc counter at once
  const redisNow = await redisCounters().catch(() => ({ cpu: Number.NaN, scripts: { scriptCalls: Number.NaN, scriptUs: Number.NaN } }));
  const usage = process.cpuUsage();
  const switches = new Map([...children].map((c) => [c.name, contextSwitches(c.pid)]));
  switches.set('bench', contextSwitches(process.pid));
  switches.set(
    'redis',
    redisPids.reduce((sum, pid) => sum + contextSwitches(pid), 0),
  );
  return {
    self: (usage.user + usage.system) / 1e6,
    children: new Map([...children].map((c) => [c.name, cpuSeconds(c.pid)])),
    writes: new Map([...children].map((c) => [c.name, writeSyscalls(c.pid)])),
    switches,
    postgresSwitches: new Map(backends.map((pid) => [pid, contextSwitches(pid)])),
    postgres: new Map(backends.map((pid) => [pid, cpuSeconds(pid)])),
    redis: redisNow.cpu,
    redisCommands: redisNow.scripts,
    sessions: Number(activity.rows[0]?.sessions ?? Number.NaN),
    backendApps: new Map(backends.map((pid, i) => [pid, apps[i] ?? '?'])),
    wal: { bytes: lsnBytes(activity.rows[0]?.lsn ?? '0/0'), fpi: Number(activity.rows[0]?.fpi ?? Number.NaN), syncs: Number(activity.rows[0]?.syncs ?? Number.NaN) },
    machine: machineCpuSeconds(),
    at: performance.now(),
  };
}

interface CpuUse {
  parts: [string, number][];
  /** Write system calls of each child process during the phase. */
  writes: [string, number][];
  /** Context switches during the phase, by process (postgres: the database's backends summed). */
  switches: [string, number][];
  /** Redis's script calls (BullMQ's Lua) during the phase, and the microseconds Redis spent in them. */
  redisScripts: RedisCommandTime;
  /** Postgres sessions opened during the phase (by anyone on the bench database): a connection opened mid-phase is a fork, a login and cold caches on some request's path. */
  sessionsOpened: number;
  /** Of those, the service's still open at the end, by application_name. */
  sessionsOpenedBy: [string, number][];
  machineBusy: number;
  machineTotal: number;
  /** Each child's GC pauses during the phase (those with any). */
  gc: [string, GcPauses][];
  /** WAL written during the phase (the whole server's; nothing else of the run writes meanwhile). */
  wal: WalVolume;
}

async function cpuSince(before: CpuSnap): Promise<CpuUse> {
  const after = await snapCpu();
  const parts: [string, number][] = [['bench', after.self - before.self]];
  for (const [name, seconds] of after.children) parts.push([name, seconds - (before.children.get(name) ?? 0)]);
  const writes: [string, number][] = [];
  for (const [name, count] of after.writes) writes.push([name, count - (before.writes.get(name) ?? 0)]);
  let pg = 0;
  for (const [pid, seconds] of after.postgres) pg += seconds - (before.postgres.get(pid) ?? 0);
  parts.push(['postgres', pg], ['redis(all)', after.redis - before.redis]);
  const switches: [string, number][] = [];
  for (const [name, count] of after.switches) switches.push([name, count - (before.switches.get(name) ?? 0)]);
  let pgSwitches = 0;
  for (const [pid, count] of after.postgresSwitches) if (Number.isFinite(count)) pgSwitches += count - (before.postgresSwitches.get(pid) ?? 0);
  switches.push(['postgres', pgSwitches]);
  const redisScripts = { scriptCalls: after.redisCommands.scriptCalls - before.redisCommands.scriptCalls, scriptUs: after.redisCommands.scriptUs - before.redisCommands.scriptUs };
  const openedBy = new Map<string, number>();
  for (const [pid, app] of after.backendApps) if (!before.backendApps.has(pid)) openedBy.set(app, (openedBy.get(app) ?? 0) + 1);
  const gc = [...children].map((c): [string, GcPauses] => [c.name, gcPausesBetween(c, before.at, after.at)]).filter(([, p]) => p.count > 0);
  return {
    parts,
    writes,
    switches,
    redisScripts,
    sessionsOpened: after.sessions - before.sessions,
    sessionsOpenedBy: [...openedBy],
    machineBusy: after.machine.busy - before.machine.busy,
    machineTotal: after.machine.total - before.machine.total,
    gc,
    wal: { bytes: after.wal.bytes - before.wal.bytes, fpi: after.wal.fpi - before.wal.fpi, syncs: after.wal.syncs - before.wal.syncs },
  };
}

function cpuLine(use: CpuUse, perOps?: { ops: number; what: string }): string {
  // Processes that were idle during the phase are left out.
  const busy = use.parts.filter(([name, s]) => name === 'postgres' || s >= Math.max(0.05, 0.01 * use.machineTotal));
  // other: what no process of the run used (Postgres's background processes such as the WAL
  // writer and the checkpointer, kernel threads writing back dirty pages, anything else running)
  const other = use.machineBusy - use.parts.reduce((sum, [, s]) => sum + (Number.isFinite(s) ? s : 0), 0);
  const parts = `${busy.map(([name, s]) => `${name} ${f1(s)}`).join(', ')}, other ${f1(other)}`;
  const servers = busy.filter(([n]) => n !== 'bench' && n !== 'redis(all)');
  const perOp = perOps && perOps.ops > 0 ? `; cpu ms per ${perOps.what}: ${servers.map(([n, s]) => `${n} ${f2((s * 1000) / perOps.ops)}`).join(', ')}` : '';
  const writes = use.writes.filter(([, n]) => n >= 100);
  const perOpWrites = perOps && perOps.ops > 0 && writes.length ? `; socket writes per ${perOps.what}: ${writes.map(([n, w]) => `${n} ${f1(w / perOps.ops)}`).join(', ')}` : '';
  const switches = use.switches.filter(([, n]) => Number.isFinite(n) && n >= 100);
  const perOpSwitches =
    perOps && perOps.ops > 0 && switches.length
      ? `; context switches per ${perOps.what}: ${switches.map(([n, w]) => `${n} ${f1(w / perOps.ops)}`).join(', ')} (all ${f1(switches.reduce((a, [, w]) => a + w, 0) / perOps.ops)})`
      : '';
  // BullMQ's Lua scripts (add, moveToActive, moveToFinished: its per-job protocol). commandstats
  // times a call from start to end, so on a busy machine a call's time includes Redis waiting for
  // a CPU: the ratio to Redis's CPU can pass 100 %.
  const { scriptCalls, scriptUs } = use.redisScripts;
  const redisSeconds = use.parts.find(([n]) => n === 'redis(all)')?.[1] ?? Number.NaN;
  const perOpScripts =
    perOps && perOps.ops > 0 && scriptCalls >= 100
      ? `; redis scripts per ${perOps.what}: ${f1(scriptCalls / perOps.ops)} calls, ${f0(scriptUs / scriptCalls)} µs each (script time ÷ Redis CPU ${pct(scriptUs / 1e6 / redisSeconds)})`
      : '';
  // WAL: every byte is written, and every flush waited on, by some commit
  const perOpWal =
    perOps && perOps.ops > 0
      ? `; WAL per ${perOps.what}: ${f2(use.wal.bytes / 1024 / perOps.ops)} KB, ${f2(use.wal.fpi / perOps.ops)} full-page images, ${f2(use.wal.syncs / perOps.ops)} flushes`
      : '';
  return `cpu-s: ${parts}; machine busy ${f1(use.machineBusy)} of ${f1(use.machineTotal)}${perOp}${perOpWrites}${perOpSwitches}${perOpScripts}${perOpWal}; Postgres sessions opened ${use.sessionsOpened}${use.sessionsOpenedBy.length ? ` (${use.sessionsOpenedBy.map(([app, n]) => `${app} ${n}`).join(', ')})` : ''}`;
}

/** The GC pauses of a phase, by process: a pause stops everything queued in that process. */
function gcPhrase(use: CpuUse): string {
  if (use.gc.length === 0) return 'none';
  return use.gc.map(([name, p]) => `${name} ${p.count} (${f0(p.ms)} ms in all, longest ${f1(p.longest)})`).join(', ');
}

/**
 * CPU ms per completed command of the service's processes (producer, worker, Postgres, Redis):
 * when the machine's spare CPU is what limits the run, throughput goes as its inverse.
 */
function serviceCpuMs(loop: SyncLoop): number {
  const used = loop.cpu.parts.filter(([name]) => ['producer', 'worker', 'postgres', 'redis(all)'].includes(name)).reduce((sum, [, s]) => sum + s, 0);
  return (used * 1000) / loop.completed;
}

/** A resident-memory range in MB: start / max / end. */
function rssPhrase(r: RssRange): string {
  const mb = (bytes: number) => f0(bytes / 2 ** 20);
  return `${mb(r.start)} / ${mb(r.max)} / ${mb(r.end)} MB (start / max / end, ${r.samples} samples)`;
}

// ---------------------------------------------------------------- helpers

/** When each job was moved to active (BullMQ's processedOn, epoch ms), for the jobs still in Redis. */
async function jobsProcessedOn(jobIds: readonly string[]): Promise<Map<string, number>> {
  const at = new Map<string, number>();
  for (let i = 0; i < jobIds.length; i += 1000) {
    const chunk = jobIds.slice(i, i + 1000);
    const pipeline = redis!.pipeline();
    for (const id of chunk) pipeline.hget(`${config.QUEUE_PREFIX}:${COMMAND_QUEUE}:${id}`, 'processedOn');
    const results = (await pipeline.exec()) ?? [];
    results.forEach(([error, value], j) => {
      if (!error && typeof value === 'string') at.set(chunk[j]!, Number(value));
    });
  }
  return at;
}

async function api<T>(base: string, method: string, path: string, token: string, body?: unknown): Promise<T> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
  return JSON.parse(text) as T;
}

function statuses(result: LoadResult): string {
  return Object.entries(result.statuses)
    .map(([status, n]) => `${status}×${n}`)
    .join(' ');
}

/** Non-expected answers of a load, as a line to report, or ''. */
function anomalies(result: LoadResult, expected: string): string {
  const bad = Object.entries(result.statuses).filter(([status]) => status !== expected);
  if (bad.length === 0) return '';
  return `UNEXPECTED ANSWERS: ${bad.map(([s, n]) => `${s}×${n}`).join(' ')}; first: ${result.firstUnexpected ?? '?'}`;
}

async function pendingCommands(): Promise<number> {
  const r = await sql<{ n: string }>`select count(*) as n from commands where state in ('queued', 'running')`.execute(db!);
  return Number(r.rows[0]?.n ?? 0);
}

async function commandStates(): Promise<Record<string, number>> {
  const r = await sql<{ state: string; n: string }>`select state, count(*) as n from commands group by state`.execute(db!);
  return Object.fromEntries(r.rows.map((row) => [row.state, Number(row.n)]));
}

/** Waits until no command is queued or running; returns the seconds it took. */
async function drainService(timeoutS: number): Promise<number> {
  const start = performance.now();
  while ((await pendingCommands()) > 0) {
    worker?.assertAlive();
    if (performance.now() - start > timeoutS * 1000) throw new Error(`commands still pending after ${timeoutS} s: ${JSON.stringify(await commandStates())}`);
    await sleep(200);
  }
  return (performance.now() - start) / 1000;
}

/** A closed loop at full rate: WARMUP seconds, then D measured seconds and the CPU they used. */
async function measuredClosedLoop(url: URL, next: () => RequestSpec, expected: number): Promise<{ load: LoadResult; cpu: CpuUse }> {
  await closedLoop(url, C, WARMUP, next, (s) => s === expected);
  const before = await snapCpu();
  const load = await closedLoop(url, C, D, next, (s) => s === expected);
  return { load, cpu: await cpuSince(before) };
}

let worker: Child | undefined;

/**
 * One open-loop row at `target` requests/s: the same rate for the warm-up time first (steady
 * state), straight into the measured window; then waits (30 s at most) for the terminal event
 * of every accepted command. Returns the requests, the accepted ones with their job IDs, when
 * the window started, and the CPU used in it.
 */
async function openLoopRow(url: URL, target: number, next: () => RequestSpec) {
  await openLoop(url, target, WARMUP, OPEN_SOCKETS, next);
  const wal = await WalWatch.start(config.DATABASE_URL);
  const before = await snapCpu();
  const started = performance.now();
  const requests = await openLoop(url, target, D, OPEN_SOCKETS, next);
  const cpu = await cpuSince(before);
  const walWaits = await wal.stop();
  const accepted = requests.filter((r) => r.status === 202).map((r) => ({ ...r, jobId: (JSON.parse(r.body) as { job_id: string }).job_id }));
  await watch!.waitFor(
    accepted.map((r) => r.jobId),
    30_000,
  );
  return { started, requests, accepted, cpu, walWaits };
}

// ---------------------------------------------------------------- the service's tokens

/** The service's vault tokens are 'tok-1' … 'tok-<tokenLimit>' in collection 'svc'; each command takes the next one. */
let nextToken = 1;
let tokenLimit = TOKENS;

/** The next unused token of the service's collection (throws when they run out: every client of a loop stops). */
function takeToken(): string {
  const n = nextToken++;
  if (n > tokenLimit) throw new Error(`out of seeded tokens (${tokenLimit}): raise --tokens`);
  return `tok-${n}`;
}

/**
 * Tokens per second a closed loop of (d) is given: more than one takes on this machine (session
 * 14's fastest sustained accept: ~2,000/s), or twice the fastest loop so far.
 */
let syncTokensPerS = 3000;

/** Seeds `count` more tokens for the service unless that many are left (then a checkpoint, so none falls in a measured phase). */
async function ensureTokens(count: number): Promise<void> {
  if (tokenLimit - nextToken + 1 >= count) return;
  const t = performance.now();
  await sql`
    insert into vault_tokens (collection, token_id, object_id, tags)
    select 'svc', 'tok-' || g, 'obj-' || g, array['bench'] from generate_series(${tokenLimit + 1}::int, ${tokenLimit + count}::int) as g`.execute(db!);
  tokenLimit += count;
  await sql`analyze vault_tokens`.execute(db!);
  await sql`checkpoint`.execute(db!);
  progress(`seeded ${count} more tokens (${tokenLimit} in all) in ${f1((performance.now() - t) / 1000)} s`);
}

/** One closed loop of (d): its answers, the commands completed in its window, and what the producer and the machine did meanwhile. */
interface SyncLoop {
  load: LoadResult;
  /** Commands whose command.succeeded event arrived inside the measured window (as the sustained phase counts them). */
  completed: number;
  cpu: CpuUse;
  /** The producer's resident memory, sampled every 200 ms from the warm-up's start to the end of the window. */
  rss: RssRange;
  /** The machine's 1-minute load average at the end of the window. */
  loadAvg: number;
  /** Seconds the commands still queued after the window took to end (the asynchronous loop's backlog). */
  backlogDrainS: number;
}

/** (d) at one connection count: the Piiano delete with Prefer: respond-async, then called synchronously. */
interface SyncRow {
  connections: number;
  async: SyncLoop;
  sync: SyncLoop;
}

/**
 * A closed loop of `connections` on the producer: WARMUP seconds, then D measured; then waits for
 * every command to end, so the next loop starts from an empty queue.
 */
async function syncLoop(url: URL, producerPid: number, connections: number, next: () => RequestSpec, expected: number): Promise<SyncLoop> {
  await ensureTokens(Math.ceil(syncTokensPerS * (WARMUP + D)));
  const rss = new RssSampler(producerPid);
  await closedLoop(url, connections, WARMUP, next, (s) => s === expected);
  const before = await snapCpu();
  const windowStart = performance.now();
  const load = await closedLoop(url, connections, D, next, (s) => s === expected);
  const windowEnd = windowStart + D * 1000;
  const cpu = await cpuSince(before);
  const loadAvg = os.loadavg()[0] ?? Number.NaN;
  const rssRange = rss.stop();
  let completed = 0;
  for (const at of watch!.succeeded.values()) if (at >= windowStart && at <= windowEnd) completed++;
  const backlogDrainS = await drainService(DRAIN_TIMEOUT_S);
  syncTokensPerS = Math.max(syncTokensPerS, (2 * load.ok) / D);
  return { load, completed, cpu, rss: rssRange, loadAvg, backlogDrainS };
}

// ---------------------------------------------------------------- the run

interface Report {
  /** The disk under Postgres, probed alone before the measured phases. */
  disk?: DiskProbe | string;
  bareAccept?: LoadResult;
  bareAcceptCpu?: CpuUse;
  bareDrain?: { jobs: number; seconds: number; failed: number; cpu: CpuUse };
  accept?: LoadResult;
  acceptCpu?: CpuUse;
  drain?: { jobs: number; seconds: number; done: number; cpu: CpuUse; timedOut: boolean };
  sustained?: { load: LoadResult; completed: number; cpu: CpuUse; backlogDrainS: number };
  maxRate?: number;
  latency: LatencyRow[];
  /** The bare pipeline at the same rates: POST /bare/pipeline → bare worker → XADD. */
  bareLatency: BareLatencyRow[];
  bareVerify?: LoadResult;
  bareVerifyCpu?: CpuUse;
  verify?: LoadResult;
  verifyCpu?: CpuUse;
  /** (d) the synchronous Piiano delete against the same loop with Prefer: respond-async, by connections. */
  syncRows: SyncRow[];
}

interface LatencyRow {
  fraction: number;
  rate: number;
  sent: number;
  accepted: number;
  /** Of the accepted, the jobs whose processedOn Redis still had (the segments at "job active" are theirs). */
  activeKnown: number;
  statuses: Record<string, number>;
  firstUnexpected?: string;
  acceptedPerS: number;
  completedPerS: number;
  p50: number;
  p99: number;
  max: number;
  missing: number;
  failed: number;
  http50: number;
  http99: number;
  lag99: number;
  segments: { name: string; p50: number; p99: number }[];
  tail: ReturnType<typeof tailWindows>;
  walWaits: WalWaits;
  cpu: CpuUse;
}

interface BareLatencyRow {
  rate: number;
  accepted: number;
  p50: number;
  p99: number;
  max: number;
  missing: number;
  tail: ReturnType<typeof tailWindows>;
  walWaits: WalWaits;
  cpu: CpuUse;
}

const report: Report = { latency: [], bareLatency: [], syncRows: [] };
let exitCode = 0;
const runStart = performance.now();

try {
  log(
    `bench:pipeline  duration=${D}s connections=${C} WORKER_CONCURRENCY=${CONCURRENCY} tokens=${TOKENS} warmup=${WARMUP}s ` +
      `(node ${process.version}, ${os.cpus().length} cpus, load avg ${os
        .loadavg()
        .map((l) => fmt(l, 2))
        .join(' ')})`,
  );

  // ---- setup: database, tokens, Redis, events reader
  let t = performance.now();
  await migrateToLatest(config.DATABASE_URL);
  db = createDb(config.DATABASE_URL, { max: 3, applicationName: 'bench-pipeline' });
  redis = connectRedis(redisTopology(config), { name: 'bench-pipeline', whenDown: 'wait' });
  await insertCollection(db, 'svc');
  await insertCollection(db, 'bare');
  await sql`
    insert into vault_tokens (collection, token_id, object_id, tags)
    select 'svc', 'tok-' || g, 'obj-' || g, array['bench'] from generate_series(1, ${TOKENS}::int) as g`.execute(db);
  await sql`create table bench_accept (id uuid primary key, body jsonb not null, created_at timestamptz not null default now())`.execute(db);
  await sql`vacuum analyze vault_tokens`.execute(db);
  // the seeding's dirty pages written now, not by a checkpoint in the middle of a measured phase
  await sql`checkpoint`.execute(db);
  watch = new EventWatch(redisTopology(config), config.EVENTS_STREAM);
  progress(`database ${new URL(config.DATABASE_URL).pathname.slice(1)} migrated, ${TOKENS} single tokens seeded in ${f1((performance.now() - t) / 1000)} s`);

  // ---- (a0) the disk under Postgres, with nothing else of the run going on: every commit waits on it
  if (DISK_PROBE_S > 0) {
    report.disk = await sql<{ data_directory: string }>`show data_directory`.execute(db).then(
      ({ rows }) => probeDisk(rows[0]!.data_directory, DISK_PROBE_S),
      (error: Error) => `not measured: Postgres did not say where its data is (${error.message})`,
    );
    progress(`(a0) the disk under Postgres, ${DISK_PROBE_S} s alone: ${diskPhrase(report.disk)}`);
  }

  // ---- the producer (the worker starts later) and the bare HTTP baseline, each its own process
  const producerPort = await freePort();
  const producer = track(spawnNode('producer', PRODUCER_JS, { ...serviceEnv, PORT: String(producerPort) }));
  const producerUrl = new URL(`http://127.0.0.1:${producerPort}`);
  await waitForHttp(producer, `${producerUrl.origin}/readyz`);
  const bareHttpPort = await freePort();
  const bareHttp = track(forkNode('bare-http', BARE_JS, { ...baseEnv, BARE_MODE: 'http', PORT: String(bareHttpPort) }));
  await nextMessage(bareHttp, 'ready', 30_000);
  const bareUrl = new URL(`http://127.0.0.1:${bareHttpPort}`);

  const admin = config.BOOTSTRAP_ADMIN_TOKEN!;
  const issue = async (id: string, kind: string, caps: string[], temporary: boolean) => {
    await api(producerUrl.origin, 'POST', '/v1/subjects', admin, { id, kind, capabilities: caps });
    const body = temporary ? { temporary: true, ttl_seconds: 4 * 3600 } : { temporary: false, name: 'bench' };
    return (await api<{ token: string }>(producerUrl.origin, 'POST', `/v1/subjects/${id}/tokens`, admin, body)).token;
  };
  const writerToken = await issue('bench-writer', 'service', ['tokens:write'], false);
  const gatewayToken = await issue('bench-gateway', 'service', ['tokens:verify'], false);
  const userToken = await issue('bench-user', 'user', [], true);
  progress(`producer (pid ${producer.pid}) ready on ${producerUrl.origin}; bare HTTP baseline (pid ${bareHttp.pid}) on ${bareUrl.origin}; subjects and access tokens issued`);

  // One token per command, never reused.
  const commandBody = (tokenId: string) => JSON.stringify({ type: 'tokens.delete', collection: 'svc', token_ids: [tokenId], reason: 'AppFunctionality' });
  const serviceCommand = (): RequestSpec => ({
    method: 'POST',
    path: '/v1/commands',
    headers: { authorization: `Bearer ${writerToken}`, 'content-type': 'application/json' },
    body: commandBody(takeToken()),
  });
  // (d): Piiano's delete of one token; synchronous (200 {} once the job has ended) unless asked `respond-async` (202)
  const piianoDelete = (prefer?: string) => (): RequestSpec => ({
    method: 'DELETE',
    path: `/api/pvlt/1.0/data/collections/svc/tokens?token_ids=${takeToken()}&reason=AppFunctionality`,
    headers: { authorization: `Bearer ${writerToken}`, ...(prefer ? { prefer } : {}) },
  });
  let bareN = 0;
  const bareCommand = (): RequestSpec => ({
    method: 'POST',
    path: '/bare/commands',
    headers: { authorization: `Bearer ${writerToken}`, 'content-type': 'application/json' },
    body: commandBody(`tok-b${++bareN}`),
  });

  let cpu: CpuSnap; // taken before each measured phase
  let maxRate = Number.NaN;
  if (!LATENCY_ONLY && !SYNC_ONLY) {
    // ---- (a1) bare durable accept
    ({ load: report.bareAccept, cpu: report.bareAcceptCpu } = await measuredClosedLoop(bareUrl, bareCommand, 202));
    progress(`(a) bare accept: ${f0(rate(report.bareAccept.ok, D))} req/s  [${statuses(report.bareAccept)}]`);

    // ---- (b1) service accept, worker stopped: the commands pile up in Postgres and the queue
    ({ load: report.accept, cpu: report.acceptCpu } = await measuredClosedLoop(producerUrl, serviceCommand, 202));
    producer.assertAlive();
    progress(`(b) service accept (worker stopped): ${f0(rate(report.accept.ok, D))} req/s  [${statuses(report.accept)}]`);
    const states = await commandStates();
    const N = states.queued ?? 0;
    if (N === 0) throw new Error(`no command was accepted: ${JSON.stringify(states)}; first unexpected answer: ${report.accept.firstUnexpected}`);

    // ---- (a2) bare worker draining as many jobs as the service has queued
    t = performance.now();
    await sql`
      insert into vault_tokens (collection, token_id, object_id, tags)
      select 'bare', 'tok-' || g, 'obj-' || g, array['bench'] from generate_series(1, ${N}::int) as g`.execute(db);
    await sql`analyze vault_tokens`.execute(db);
    const bareQueue = new Queue(BARE_EXEC_QUEUE, { connection: redis, prefix: config.QUEUE_PREFIX });
    queues.push(bareQueue);
    await bareQueue.pause();
    for (let start = 1; start <= N; start += 1000) {
      const jobs = [];
      for (let g = start; g < Math.min(N + 1, start + 1000); g++) {
        const id = crypto.randomUUID();
        jobs.push({ name: COMMAND_JOB_NAME, data: { command_id: id, collection: 'bare', token_id: `tok-${g}` }, opts: { ...COMMAND_JOB_OPTIONS, jobId: id } });
      }
      await bareQueue.addBulk(jobs);
    }
    const bareWorker = track(forkNode('bare-worker', BARE_JS, { ...baseEnv, BARE_MODE: 'worker', BARE_JOBS: String(N) }));
    await nextMessage(bareWorker, 'ready', 30_000);
    progress(`pre-filled the bare queue with ${N} jobs (and ${N} tokens) in ${f1((performance.now() - t) / 1000)} s`);
    cpu = await snapCpu();
    t = performance.now();
    await bareQueue.resume();
    const drained = await nextMessage<{ type: string; completed: number; failed: number; firstError?: string }>(bareWorker, 'drained', DRAIN_TIMEOUT_S * 1000);
    const bareSeconds = (performance.now() - t) / 1000;
    report.bareDrain = { jobs: N, seconds: bareSeconds, failed: drained.failed, cpu: await cpuSince(cpu) };
    if (drained.failed > 0) log(`  !! bare worker: ${drained.failed} jobs failed; first error: ${drained.firstError}`);
    progress(`(a) bare worker: ${N} jobs in ${f2(bareSeconds)} s = ${f0(rate(N, bareSeconds))} jobs/s`);
    await bareWorker.stop();

    // ---- (b2) service worker draining the N commands accepted above
    const commandQueue = new Queue(COMMAND_QUEUE, { connection: redis, prefix: config.QUEUE_PREFIX });
    queues.push(commandQueue);
    await commandQueue.pause();
    const metricsPort = await freePort();
    worker = track(spawnNode('worker', WORKER_JS, { ...serviceEnv, PORT: '0', METRICS_PORT: String(metricsPort) }));
    await waitForHttp(worker, `http://127.0.0.1:${metricsPort}/metrics`);
    const before = watch.succeeded.size + watch.failed.size;
    cpu = await snapCpu();
    t = performance.now();
    await commandQueue.resume();
    let timedOut = false;
    while (watch.succeeded.size + watch.failed.size - before < N) {
      worker.assertAlive();
      if (performance.now() - t > DRAIN_TIMEOUT_S * 1000) {
        timedOut = true;
        break;
      }
      await sleep(20);
    }
    const drainSeconds = (performance.now() - t) / 1000;
    const done = watch.succeeded.size + watch.failed.size - before;
    report.drain = { jobs: N, seconds: drainSeconds, done, cpu: await cpuSince(cpu), timedOut };
    progress(
      `(b) service worker (pid ${worker.pid}): ${done} of ${N} commands → command.succeeded/failed event in ${f2(drainSeconds)} s = ${f0(rate(done, drainSeconds))} /s${timedOut ? ' (TIMED OUT)' : ''}`,
    );
    await drainService(DRAIN_TIMEOUT_S);
    const afterDrain = await commandStates();
    if (afterDrain.failed)
      log(`  !! ${afterDrain.failed} commands failed: ${JSON.stringify((await sql`select error, count(*) from commands where state = 'failed' group by error`.execute(db)).rows)}`);
  } else {
    // --latency-only (the open-loop rows at --rates, for the service and the bare pipeline) or
    // --sync-only ((d)), nothing else. The full run's earlier phases leave ~100,000 commands
    // behind; so does this, before the worker prepares its statements (a plan made on an empty
    // table would not be the one measured).
    await sql`
      insert into commands (id, type, payload, payload_hash, submitter_id, audit, state, attempts, result, started_at, finished_at)
      select gen_random_uuid(), 'tokens.delete', '{}', '', 'bench-history', '{}', 'succeeded', 1, '{"deleted":1}', now(), now()
      from generate_series(1, 100000)`.execute(db);
    await sql`analyze commands`.execute(db);
    const metricsPort = await freePort();
    worker = track(spawnNode('worker', WORKER_JS, { ...serviceEnv, PORT: '0', METRICS_PORT: String(metricsPort) }));
    await waitForHttp(worker, `http://127.0.0.1:${metricsPort}/metrics`);
  }
  if (!QUICK && !LATENCY_ONLY && !SYNC_ONLY) {
    // ---- (b3) sustained: producer and worker both busy, closed loop at maximum rate
    cpu = await snapCpu();
    const windowStart = performance.now();
    const load = await closedLoop(producerUrl, C, D, serviceCommand, (s) => s === 202);
    const windowEnd = windowStart + D * 1000;
    const sustainedCpu = await cpuSince(cpu);
    let completedInWindow = 0;
    for (const at of watch.succeeded.values()) if (at >= windowStart && at <= windowEnd) completedInWindow++;
    const backlogDrainS = await drainService(DRAIN_TIMEOUT_S);
    report.sustained = { load, completed: completedInWindow, cpu: sustainedCpu, backlogDrainS };
    maxRate = Math.min(rate(load.ok, D), rate(completedInWindow, D));
    report.maxRate = maxRate;
    progress(
      `(b) sustained: accepted ${f0(rate(load.ok, D))}/s, completed ${f0(rate(completedInWindow, D))}/s [${statuses(load)}]; backlog drained in ${f1(backlogDrainS)} s → maximum rate ${f0(maxRate)}/s`,
    );
  }

  if (!LATENCY_ONLY) {
    // ---- (d) the synchronous seed route: each connection sends a one-token Piiano delete and
    // waits for its 200 before the next; against the same loop with Prefer: respond-async, whose
    // throughput is the commands completed (events on the stream) in its window
    for (const connections of SYNC_CONNECTIONS) {
      const asyncLoop = await syncLoop(producerUrl, producer.pid, connections, piianoDelete('respond-async'), 202);
      progress(
        `(d) ${connections} connections, Prefer: respond-async: accepted ${f0(rate(asyncLoop.load.ok, D))}/s, completed ${f0(rate(asyncLoop.completed, D))}/s [${statuses(asyncLoop.load)}]; ` +
          `backlog drained in ${f1(asyncLoop.backlogDrainS)} s (load avg ${f2(asyncLoop.loadAvg)})`,
      );
      const syncLoopResult = await syncLoop(producerUrl, producer.pid, connections, piianoDelete(), 200);
      progress(
        `(d) ${connections} connections, synchronous: ${f0(rate(syncLoopResult.load.ok, D))} req/s, p99 ${f1(percentile(syncLoopResult.load.latencies, 0.99))} ms [${statuses(syncLoopResult.load)}]; ` +
          `producer RSS ${rssPhrase(syncLoopResult.rss)} (load avg ${f2(syncLoopResult.loadAvg)})`,
      );
      report.syncRows.push({ connections, async: asyncLoop, sync: syncLoopResult });
      producer.assertAlive();
    }
  }

  if (QUICK || SYNC_ONLY) await worker.stop();
  else {
    // ---- (b4) open loop at fractions of the maximum rate: request → command.succeeded event
    for (const [fraction, fixed] of [...(LATENCY_ONLY ? [] : FRACTIONS).map((f) => [f, undefined] as const), ...FIXED_RATES.map((r) => [r / maxRate, r] as const)]) {
      const target = Math.max(1, fixed ?? fraction * maxRate);
      await ensureTokens(Math.ceil(target * (WARMUP + D) * 1.2) + 100); // (d) took its share of the seeded tokens
      const { started, requests, accepted, cpu: rowCpu, walWaits } = await openLoopRow(producerUrl, target, serviceCommand);
      const latencies: number[] = [];
      let missing = 0;
      let failed = 0;
      let completed = 0;
      for (const r of accepted) {
        const at = watch.succeeded.get(r.jobId);
        if (at === undefined) {
          if (watch.failed.has(r.jobId)) failed++;
          else missing++;
          latencies.push(Number.POSITIVE_INFINITY);
          continue;
        }
        latencies.push(at - r.sentAt);
        if (at <= started + D * 1000) completed++;
      }
      // Where the time goes, per command: the producer's and the worker's timestamps in Postgres
      // (same machine clock as performance.timeOrigin + performance.now()).
      const stamps = await sql<{ id: string; created: number; started: number; finished: number }>`
        select id, extract(epoch from created_at) * 1000 as created, extract(epoch from started_at) * 1000 as started,
               extract(epoch from finished_at) * 1000 as finished
        from commands where id = any(${accepted.map((r) => r.jobId)}::uuid[])`.execute(db);
      const byId = new Map(stamps.rows.map((row) => [row.id, row]));
      // and BullMQ's: when the worker moved the job to active (processedOn, the worker's clock),
      // for the jobs Redis still keeps (removeOnComplete keeps the last 10,000)
      const activeAt = await jobsProcessedOn(accepted.map((r) => r.jobId));
      const seg = { front: [] as number[], delivery: [] as number[], lane: [] as number[], run: [] as number[], commit: [] as number[] };
      for (const r of accepted) {
        const row = byId.get(r.jobId);
        const at = watch.succeeded.get(r.jobId);
        if (!row || at === undefined) continue;
        const sentEpoch = performance.timeOrigin + r.sentAt;
        const eventEpoch = performance.timeOrigin + at;
        seg.front.push(Number(row.created) - sentEpoch);
        const active = activeAt.get(r.jobId);
        if (active !== undefined) {
          seg.delivery.push(active - Number(row.created));
          seg.lane.push(Number(row.started) - active);
        }
        seg.run.push(Number(row.finished) - Number(row.started));
        seg.commit.push(eventEpoch - Number(row.finished));
      }
      const http = accepted.map((r) => r.answeredAt - r.sentAt);
      const statusCounts: Record<string, number> = {};
      for (const r of requests) statusCounts[String(r.status)] = (statusCounts[String(r.status)] ?? 0) + 1;
      const unexpected = requests.find((r) => r.status !== 202);
      const row: LatencyRow = {
        fraction,
        rate: target,
        sent: requests.length,
        accepted: accepted.length,
        activeKnown: seg.delivery.length,
        statuses: statusCounts,
        ...(unexpected ? { firstUnexpected: `${unexpected.status} ${unexpected.body.slice(0, 300)}` } : {}),
        acceptedPerS: rate(accepted.filter((r) => r.answeredAt <= started + D * 1000).length, D),
        completedPerS: rate(completed, D),
        p50: percentile(latencies, 0.5),
        p99: percentile(latencies, 0.99),
        max: percentile(latencies, 1),
        missing,
        failed,
        http50: percentile(http, 0.5),
        http99: percentile(http, 0.99),
        lag99: percentile(
          requests.map((r) => r.sentAt - r.dueAt),
          0.99,
        ),
        tail: tailWindows(
          accepted.map((r) => r.sentAt),
          latencies,
          started,
          D,
        ),
        segments: [
          { name: 'send → command row (auth, validation, INSERT start)', p50: percentile(seg.front, 0.5), p99: percentile(seg.front, 0.99) },
          { name: 'command row → job active (commit, queue.add, BullMQ delivery; of the jobs Redis still keeps)', p50: percentile(seg.delivery, 0.5), p99: percentile(seg.delivery, 0.99) },
          { name: 'job active → first transaction begins (waiting for a group commit lane)', p50: percentile(seg.lane, 0.5), p99: percentile(seg.lane, 0.99) },
          { name: 'first → final transaction begins (0 for a one-step command)', p50: percentile(seg.run, 0.5), p99: percentile(seg.run, 0.99) },
          { name: 'final transaction begins → event read (tx, relay, XADD, XREAD)', p50: percentile(seg.commit, 0.5), p99: percentile(seg.commit, 0.99) },
        ],
        walWaits,
        cpu: rowCpu,
      };
      report.latency.push(row);
      progress(
        `(b) open loop at ${pct(fraction)} = ${f0(target)}/s: request → event p50 ${f1(row.p50)} ms, p99 ${f1(row.p99)} ms; ` +
          `accepted ${f0(row.acceptedPerS)}/s, completed ${f0(row.completedPerS)}/s${missing ? `, ${missing} events MISSING after 30 s` : ''}`,
      );
      await drainService(DRAIN_TIMEOUT_S);
    }
    await worker.stop();
    worker = undefined;

    // ---- (a3) the bare pipeline at the same rates: the floor of request → event latency here
    const rates = report.latency.map((row) => row.rate);
    const bareTokens = Math.ceil(rates.reduce((a, b) => a + b, 0) * (D + WARMUP) * 1.2) + 100;
    await sql`
      insert into vault_tokens (collection, token_id, object_id, tags)
      select 'bare', 'tok-p' || g, 'obj-p' || g, array['bench'] from generate_series(1, ${bareTokens}::int) as g`.execute(db);
    await sql`analyze vault_tokens`.execute(db);
    const barePipeline = track(forkNode('bare-worker', BARE_JS, { ...baseEnv, BARE_MODE: 'worker', BARE_JOBS: '-1', BARE_QUEUE: BARE_PIPELINE_QUEUE, BARE_EVENTS_STREAM: config.EVENTS_STREAM }));
    await nextMessage(barePipeline, 'ready', 30_000);
    let pipelineN = 0;
    const barePipelineCommand = (): RequestSpec => ({
      method: 'POST',
      path: '/bare/pipeline',
      headers: { authorization: `Bearer ${writerToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'tokens.delete', collection: 'bare', token_ids: [`tok-p${++pipelineN}`], reason: 'AppFunctionality' }),
    });
    for (const target of rates) {
      const { started, accepted, cpu: rowCpu, walWaits } = await openLoopRow(bareUrl, target, barePipelineCommand);
      const latencies = accepted.map((r) => {
        const at = watch!.succeeded.get(r.jobId);
        return at === undefined ? Number.POSITIVE_INFINITY : at - r.sentAt;
      });
      const row: BareLatencyRow = {
        rate: target,
        accepted: accepted.length,
        p50: percentile(latencies, 0.5),
        p99: percentile(latencies, 0.99),
        max: percentile(latencies, 1),
        missing: latencies.filter((l) => !Number.isFinite(l)).length,
        tail: tailWindows(
          accepted.map((r) => r.sentAt),
          latencies,
          started,
          D,
        ),
        walWaits,
        cpu: rowCpu,
      };
      report.bareLatency.push(row);
      progress(`(a) bare pipeline, open loop at ${f0(target)}/s: request → event p50 ${f1(row.p50)} ms, p99 ${f1(row.p99)} ms${row.missing ? `, ${row.missing} events MISSING` : ''}`);
    }
    await barePipeline.stop();

    if (!LATENCY_ONLY) {
      // ---- (c) verify against a bare route running the same SELECT
      const verifySpec = (): RequestSpec => ({ method: 'GET', path: '/v1/auth/verify', headers: { authorization: `Bearer ${gatewayToken}`, 'x-subject-token': userToken } });
      const bareVerifySpec = (): RequestSpec => ({ method: 'GET', path: '/bare/verify', headers: { authorization: `Bearer ${gatewayToken}`, 'x-subject-token': userToken } });
      ({ load: report.bareVerify, cpu: report.bareVerifyCpu } = await measuredClosedLoop(bareUrl, bareVerifySpec, 200));
      progress(`(c) bare verify: ${f0(rate(report.bareVerify.ok, D))} req/s [${statuses(report.bareVerify)}]`);
      ({ load: report.verify, cpu: report.verifyCpu } = await measuredClosedLoop(producerUrl, verifySpec, 200));
      progress(`(c) service verify: ${f0(rate(report.verify.ok, D))} req/s [${statuses(report.verify)}]`);
      producer.assertAlive();
    }
  }
} catch (error) {
  exitCode = 1;
  log(`\nbench:pipeline FAILED: ${(error as Error).stack ?? String(error)}`);
} finally {
  printReport();
  await cleanup();
  log(`total run time ${f0((performance.now() - runStart) / 1000)} s`);
}
process.exit(exitCode);

// ---------------------------------------------------------------- the report

function printReport(): void {
  const r = report;
  const lat = (result: LoadResult) => `p50 ${f1(percentile(result.latencies, 0.5))} ms, p99 ${f1(percentile(result.latencies, 0.99))} ms`;
  const verdicts: string[] = [];
  const verdict = (name: string, value: number, target: number, op: '≥' | '≤', unit = '') => {
    const met = Number.isFinite(value) && (op === '≥' ? value >= target : value <= target);
    verdicts.push(`    ${name.padEnd(52)} ${(f2(value) + unit).padStart(10)}   target ${op} ${target}${unit}   ${met ? 'met' : 'NOT MET'}`);
  };

  log('\n================ bench:pipeline report ================');
  log(
    `machine: ${os.cpus().length} cpus, load avg now ${os
      .loadavg()
      .map((l) => fmt(l, 2))
      .join(' ')} (shared: absolute figures are noisy, ratios matter)`,
  );
  log(
    `settings: ${D} s per measured phase (after ${WARMUP} s warm-up for closed loops), ${C} connections, WORKER_CONCURRENCY=${CONCURRENCY}, the service's RATE_LIMIT_MAX=${RATE_LIMIT_MAX}${RATE_LIMIT_MAX === '0' ? ' (off)' : ''} and LOG_LEVEL=${SERVICE_LOG_LEVEL}; node flags of every child: ${childNodeFlags.join(' ')}`,
  );
  if (r.disk) log(`disk under Postgres (8 KiB written and fdatasync'd every 5 ms for ${DISK_PROBE_S} s before the phases, nothing else running): ${diskPhrase(r.disk)}`);

  // a section is printed when the run measured something of it (--sync-only: (d) alone)
  if (r.bareAccept || r.bareDrain) log('\n(a) baselines');
  if (r.bareAccept) {
    log(`    durable accept, bare Fastify POST (INSERT + queue.add):   ${f0(rate(r.bareAccept.ok, D))} req/s   (${lat(r.bareAccept)})`);
    log(`        ${cpuLine(r.bareAcceptCpu!, { ops: r.bareAccept.ok, what: 'request' })}`);
    const bad = anomalies(r.bareAccept, '202');
    if (bad) log(`        ${bad}`);
  }
  if (r.bareDrain) {
    log(
      `    execution, bare BullMQ worker (BEGIN; DELETE 1; COMMIT):  ${f0(rate(r.bareDrain.jobs, r.bareDrain.seconds))} jobs/s   (${r.bareDrain.jobs} pre-filled jobs drained in ${f2(r.bareDrain.seconds)} s${r.bareDrain.failed ? `, ${r.bareDrain.failed} FAILED` : ''})`,
    );
    log(`        ${cpuLine(r.bareDrain.cpu, { ops: r.bareDrain.jobs, what: 'job' })}`);
  }

  if (r.accept || r.drain || r.sustained || r.latency.length || r.bareLatency.length) log('\n(b) the service (producer and worker: separate processes)');
  if (r.accept) {
    log(`    accepted/s, POST /v1/commands, worker stopped:          ${f0(rate(r.accept.ok, D))} req/s   (${lat(r.accept)})`);
    log(`        ${cpuLine(r.acceptCpu!, { ops: r.accept.ok, what: 'request' })}`);
    const bad = anomalies(r.accept, '202');
    if (bad) log(`        ${bad}`);
  }
  if (r.drain) {
    log(
      `    completed/s, worker draining the accepted commands:     ${f0(rate(r.drain.done, r.drain.seconds))} cmds/s   (${r.drain.done} of ${r.drain.jobs} → terminal event in ${f2(r.drain.seconds)} s${r.drain.timedOut ? ', TIMED OUT' : ''})`,
    );
    log(`        ${cpuLine(r.drain.cpu, { ops: r.drain.done, what: 'command' })}`);
  }
  if (r.sustained) {
    const s = r.sustained;
    log(
      `    sustained, both running, closed loop (${C} connections):  accepted ${f0(rate(s.load.ok, D))}/s, completed ${f0(rate(s.completed, D))}/s   (HTTP ${lat(s.load)}; backlog drained ${f1(s.backlogDrainS)} s after)`,
    );
    log(`        ${cpuLine(s.cpu, { ops: s.completed, what: 'completed command' })}`);
    const bad = anomalies(s.load, '202');
    if (bad) log(`        ${bad}`);
    log(`    maximum rate (min of sustained accepted/s and completed/s): ${f0(r.maxRate!)}/s`);
  }
  if (r.latency.length) {
    log('    request → command.succeeded event on the stream, open loop (fixed rate):');
    log('        % of max   rate/s   accepted/s  completed/s   p50 ms   p99 ms   max ms   HTTP 202 p50/p99 ms   generator lag p99 ms');
    for (const row of r.latency) {
      log(
        `        ${pct(row.fraction).padStart(8)} ${f0(row.rate).padStart(8)} ${f0(row.acceptedPerS).padStart(11)} ${f0(row.completedPerS).padStart(12)} ` +
          `${f1(row.p50).padStart(8)} ${f1(row.p99).padStart(8)} ${f1(row.max).padStart(8)}   ${`${f1(row.http50)} / ${f1(row.http99)}`.padStart(19)}   ${f1(row.lag99).padStart(20)}`,
      );
      if (row.missing || row.failed || row.accepted !== row.sent) {
        log(
          `            !! sent ${row.sent}, 202 ${row.accepted} [${Object.entries(row.statuses)
            .map(([s, n]) => `${s}×${n}`)
            .join(' ')}], failed ${row.failed}, events missing ${row.missing}${row.firstUnexpected ? `; first: ${row.firstUnexpected}` : ''}`,
        );
      }
    }
    log('    where the time goes (p50 / p99 ms per command, from Postgres timestamps; same clock):');
    for (const row of r.latency) {
      log(`        at ${pct(row.fraction)}: ${row.segments.map((s) => `${s.name.split(' (')[0]} ${f1(s.p50)} / ${f1(s.p99)}`).join('; ')} (job active: ${row.activeKnown} of ${row.accepted} jobs)`);
      log(`            p99 tail: ${tailPhrase(row.tail)} of 250 ms`);
      log(`            WAL waits: ${walPhrase(row.walWaits)}`);
      log(`            GC pauses: ${gcPhrase(row.cpu)}`);
      log(`            ${cpuLine(row.cpu, { ops: row.accepted, what: 'command' })}`);
    }
    log(`        (segments: ${r.latency[0]!.segments.map((s) => s.name).join('; ')})`);
    log('        (p99 tail: the requests at or over the p99, by the 250 ms window they were sent in: a stall fills a few windows, steady queueing most)');
  }
  if (r.bareLatency.length) {
    log('    the bare pipeline at the same rates (POST /bare/pipeline: INSERT + queue.add → bare worker: BEGIN; DELETE 1; COMMIT; XADD):');
    log('          rate/s   p50 ms   p99 ms   max ms   service p99 ÷ bare p99');
    for (const row of r.bareLatency) {
      const service = r.latency.find((l) => l.rate === row.rate);
      log(
        `        ${f0(row.rate).padStart(8)} ${f1(row.p50).padStart(8)} ${f1(row.p99).padStart(8)} ${f1(row.max).padStart(8)}   ${(service ? f2(service.p99 / row.p99) : '—').padStart(22)}` +
          `${row.missing ? `   !! ${row.missing} events missing` : ''}`,
      );
      log(`            p99 tail: ${tailPhrase(row.tail)} of 250 ms`);
      log(`            WAL waits: ${walPhrase(row.walWaits)}`);
      log(`            GC pauses: ${gcPhrase(row.cpu)}`);
      log(`            ${cpuLine(row.cpu, { ops: row.accepted, what: 'command' })}`);
    }
  }

  if (r.bareVerify || r.verify) log('\n(c) verify');
  if (r.bareVerify) {
    log(`    bare route, the same SELECT once (no caller auth):      ${f0(rate(r.bareVerify.ok, D))} req/s   (${lat(r.bareVerify)})`);
    log(`        ${cpuLine(r.bareVerifyCpu!, { ops: r.bareVerify.ok, what: 'request' })}`);
    const bad = anomalies(r.bareVerify, '200');
    if (bad) log(`        ${bad}`);
  }
  if (r.verify) {
    log(`    GET /v1/auth/verify (gateway credential + X-Subject-Token): ${f0(rate(r.verify.ok, D))} req/s   (${lat(r.verify)})`);
    log(`        ${cpuLine(r.verifyCpu!, { ops: r.verify.ok, what: 'request' })}`);
    const bad = anomalies(r.verify, '200');
    if (bad) log(`        ${bad}`);
  }

  if (r.syncRows.length) {
    log('\n(d) the synchronous seed route: Piiano DELETE …/collections/svc/tokens?token_ids=<one token>&reason=AppFunctionality, closed loops');
    log('    (each connection sends the next delete once the last answered; every delete matches one token)');
    log('    connections  mode                          req/s  completed/s   HTTP p50 ms   p99 ms   producer RSS start / max / end   load avg   service cpu ms/cmd');
    for (const row of r.syncRows) {
      const line = (mode: string, loop: SyncLoop) =>
        log(
          `    ${String(row.connections).padStart(11)}  ${mode.padEnd(28)} ${f0(rate(loop.load.ok, D)).padStart(6)} ${f0(rate(loop.completed, D)).padStart(12)} ` +
            `${f1(percentile(loop.load.latencies, 0.5)).padStart(13)} ${f1(percentile(loop.load.latencies, 0.99)).padStart(8)}   ${rssPhrase(loop.rss).split(' (')[0]!.padEnd(30)} ${f2(loop.loadAvg).padStart(8)} ${f2(serviceCpuMs(loop)).padStart(20)}`,
        );
      line('Prefer: respond-async → 202', row.async);
      line('synchronous → 200 {}', row.sync);
      for (const [mode, loop, expected] of [
        ['respond-async', row.async, '202'],
        ['synchronous', row.sync, '200'],
      ] as const) {
        log(`        ${mode} at ${row.connections}: ${cpuLine(loop.cpu, { ops: loop.completed, what: 'completed command' })}`);
        log(`            GC pauses: ${gcPhrase(loop.cpu)}; backlog after the window ended in ${f1(loop.backlogDrainS)} s`);
        const bad = anomalies(loop.load, expected);
        if (bad) log(`            ${bad}`);
      }
    }
    log('    (req/s: answers with the expected status inside the window; completed/s: command.succeeded events inside it. A synchronous 200 is sent once the job has ended.');
    log("     service cpu ms/cmd: producer + worker + Postgres + Redis CPU per completed command; when other work holds most of the machine, each loop's throughput goes as its inverse)");
  }

  log('\nratios (service / baseline)');
  if (r.drain && r.bareDrain) verdict('completed/s ÷ bare worker jobs/s', rate(r.drain.done, r.drain.seconds) / rate(r.bareDrain.jobs, r.bareDrain.seconds), 0.5, '≥');
  if (r.accept && r.bareAccept) verdict('accepted/s ÷ bare durable accept', r.accept.ok / r.bareAccept.ok, 0.7, '≥');
  const half = r.latency.find((row) => row.fraction === 0.5);
  if (half) verdict('request → event p99 at 50% of the maximum rate', half.p99, 50, '≤', ' ms');
  // the same p99 against the bare pipeline's at that rate on this machine at this moment: the
  // figure that measures the service rather than the machine (bench/RESULTS.md, session 9)
  const bareHalf = half && r.bareLatency.find((row) => row.rate === half.rate);
  if (half && bareHalf) verdicts.push(`    ${'  the same ÷ bare pipeline p99 at that rate (figure)'.padEnd(52)} ${f2(half.p99 / bareHalf.p99).padStart(10)}   (bare pipeline ${f1(bareHalf.p99)} ms)`);
  if (r.verify && r.bareVerify) verdict('verify req/s ÷ bare SELECT route', r.verify.ok / r.bareVerify.ok, 0.7, '≥');
  if (r.verify && r.bareVerify) {
    const p = (x: LoadResult) => percentile(x.latencies, 0.99);
    verdicts.push(`    ${'verify p99 ÷ bare p99 (figure, no target)'.padEnd(52)} ${f2(p(r.verify) / p(r.bareVerify)).padStart(10)}`);
  }
  if (r.sustained && r.bareAccept) verdicts.push(`    ${'sustained accepted/s ÷ bare durable accept (figure)'.padEnd(52)} ${f2(r.sustained.load.ok / r.bareAccept.ok).padStart(10)}`);
  if (r.sustained && r.bareDrain)
    verdicts.push(`    ${'sustained completed/s ÷ bare worker (figure)'.padEnd(52)} ${f2(rate(r.sustained.completed, D) / rate(r.bareDrain.jobs, r.bareDrain.seconds)).padStart(10)}`);
  for (const row of r.syncRows) {
    verdict(`(d) sync req/s ÷ async completed/s, ${row.connections} conns`, rate(row.sync.load.ok, D) / rate(row.async.completed, D), 0.8, '≥');
    verdicts.push(`    ${`  service cpu/cmd, respond-async ÷ sync (figure)`.padEnd(52)} ${f2(serviceCpuMs(row.async) / serviceCpuMs(row.sync)).padStart(10)}`);
  }
  for (const line of verdicts) log(line);
  log('=======================================================');
}
