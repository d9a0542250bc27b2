/**
 * Tools of bench/pipeline: an HTTP load generator (closed loop at maximum rate, open loop at a
 * fixed rate), a reader of the events stream, child processes, and CPU accounting from /proc.
 * Everything talks to 127.0.0.1 only.
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { EVENT_FIELD, type RedisTopology } from '../contracts/index.js';
import { connectRedis, type RedisClient } from '../db/redis-connection.js';

/** Queue names of the baselines (under the run's QUEUE_PREFIX, so the cleanup finds them). */
export const BARE_ACCEPT_QUEUE = 'bare-accept';
export const BARE_EXEC_QUEUE = 'bare-exec';
/** The bare pipeline (POST /bare/pipeline → bare worker → XADD): the floor of request → event latency. */
export const BARE_PIPELINE_QUEUE = 'bare-pipeline';

// ---------------------------------------------------------------- statistics

/** The p-th percentile (0 < p ≤ 1) of values, nearest rank; NaN when empty. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

/**
 * Where the slowest 1 % of requests (latency ≥ p99) were sent: how many of the `windowMs` windows
 * of the measured phase hold them, out of all, and how many the worst window holds. A p99 made by
 * one stall (a checkpoint, a pause, a backlog draining) sits in a few windows; one made by steady
 * queueing spreads over most of them.
 */
export interface TailWindows {
  slow: number;
  windows: number;
  of: number;
  worst: number;
  /** Wall-clock start (epoch ms) of the window holding the most of them: to match with a sampler's log. */
  worstAt: number;
}

export function tailWindows(sentAt: readonly number[], latencies: readonly number[], start: number, seconds: number, windowMs = 250): TailWindows {
  const p99 = percentile([...latencies], 0.99);
  const counts = new Map<number, number>();
  let slow = 0;
  latencies.forEach((latency, i) => {
    if (!(latency >= p99)) return;
    slow++;
    const window = Math.floor((sentAt[i]! - start) / windowMs);
    counts.set(window, (counts.get(window) ?? 0) + 1);
  });
  let worst = 0;
  let worstWindow = 0;
  for (const [window, count] of counts) if (count > worst) [worst, worstWindow] = [count, window];
  return { slow, windows: counts.size, of: Math.ceil((seconds * 1000) / windowMs), worst, worstAt: performance.timeOrigin + start + worstWindow * windowMs };
}

/** An epoch-ms instant as a UTC clock time to the millisecond (14:05:09.250), to match with a sampler's log. */
export function clockTime(epochMs: number): string {
  return `${new Date(epochMs).toISOString().slice(11, 23)} UTC`;
}

/** tailWindows as a short phrase. */
export function tailPhrase(t: TailWindows): string {
  return `${t.slow} slowest in ${t.windows} of ${t.of} windows (worst ${t.worst}, sent from ${clockTime(t.worstAt)})`;
}

// ---------------------------------------------------------------- HTTP load

export interface RequestSpec {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface HttpAnswer {
  status: number;
  body: string;
}

export function keepAliveAgent(maxSockets: number): http.Agent {
  return new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
}

/** One request over `agent`; resolves with status and body (errors reject). */
export function send(agent: http.Agent, base: URL, spec: RequestSpec): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const headers = spec.body === undefined ? spec.headers : { ...spec.headers, 'content-length': String(Buffer.byteLength(spec.body)) };
    const request = http.request({ agent, host: base.hostname, port: base.port, method: spec.method, path: spec.path, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(spec.body);
  });
}

export interface LoadResult {
  /** Seconds the load ran (the measured window). */
  seconds: number;
  /** Answers with an expected status that arrived inside the window. */
  ok: number;
  /** Every answer by status ('error' for a transport error), in or after the window. */
  statuses: Record<string, number>;
  /** Latency (ms) of each expected answer inside the window. */
  latencies: number[];
  /** First unexpected answer, to report what went wrong. */
  firstUnexpected?: string;
}

function describe(answer: HttpAnswer | Error): string {
  return answer instanceof Error ? `transport error: ${answer.message}` : `${answer.status} ${answer.body.slice(0, 300)}`;
}

/**
 * Closed loop: `connections` clients, each sending its next request as soon as the previous
 * answered, for `seconds`. `next(i)` builds the i-th request; `expected` says which statuses count.
 */
export async function closedLoop(base: URL, connections: number, seconds: number, next: (i: number) => RequestSpec, expected: (status: number) => boolean): Promise<LoadResult> {
  const agent = keepAliveAgent(connections);
  const result: LoadResult = { seconds, ok: 0, statuses: {}, latencies: [] };
  let index = 0;
  let failure: unknown;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const client = async () => {
    while (performance.now() < deadline && failure === undefined) {
      let spec: RequestSpec;
      try {
        spec = next(index++);
      } catch (error) {
        failure ??= error; // e.g. out of seeded tokens: every client stops
        return;
      }
      const sent = performance.now();
      let answer: HttpAnswer | Error;
      try {
        answer = await send(agent, base, spec);
      } catch (error) {
        answer = error as Error;
      }
      const now = performance.now();
      const key = answer instanceof Error ? 'error' : String(answer.status);
      result.statuses[key] = (result.statuses[key] ?? 0) + 1;
      if (!(answer instanceof Error) && expected(answer.status)) {
        if (now <= deadline) {
          result.ok++;
          result.latencies.push(now - sent);
        }
      } else {
        result.firstUnexpected ??= describe(answer);
        if (answer instanceof Error) await sleep(10);
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, client));
  agent.destroy();
  if (failure !== undefined) throw failure;
  return result;
}

export interface OpenLoopRequest {
  /** performance.now() when the request was handed to the socket layer. */
  sentAt: number;
  /** performance.now() when it was due by the schedule (sentAt − dueAt is the generator's lag). */
  dueAt: number;
  answeredAt: number;
  status: number | 'error';
  body: string;
}

/**
 * Open loop: sends `rate` requests per second for `seconds` on a fixed schedule, whatever the
 * answers, with up to `maxSockets` requests in flight. Returns every request.
 */
export async function openLoop(base: URL, rate: number, seconds: number, maxSockets: number, next: (i: number) => RequestSpec): Promise<OpenLoopRequest[]> {
  const agent = keepAliveAgent(maxSockets);
  const requests: OpenLoopRequest[] = [];
  await atRate(rate, seconds, (i, dueAt) => {
    const record: OpenLoopRequest = { dueAt, sentAt: performance.now(), answeredAt: Number.NaN, status: 'error', body: '' };
    requests.push(record);
    return send(agent, base, next(i)).then(
      (answer) => {
        record.answeredAt = performance.now();
        record.status = answer.status;
        record.body = answer.body;
      },
      (error: Error) => {
        record.answeredAt = performance.now();
        record.body = error.message;
      },
    );
  });
  agent.destroy();
  return requests;
}

/**
 * Calls `fire(i, dueAt)` `rate` times a second for `seconds` on a fixed schedule from now (`dueAt`:
 * the performance.now() the i-th call was due), whatever its promises take, then waits for them
 * all. Returns how many it fired.
 */
export async function atRate(rate: number, seconds: number, fire: (i: number, dueAt: number) => Promise<unknown>): Promise<number> {
  const total = Math.max(1, Math.round(rate * seconds));
  const inFlight: Promise<unknown>[] = [];
  const start = performance.now();
  await new Promise<void>((resolve) => {
    // each tick fires what is due and sleeps until the next is due (a 1 ms interval would wake
    // the generator 1,000 times a second whatever the rate: CPU the system under test needs)
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
      while (inFlight.length < due) inFlight.push(fire(inFlight.length, start + (inFlight.length * 1000) / rate));
      if (inFlight.length >= total) return resolve();
      setTimeout(tick, Math.max(0, start + (inFlight.length * 1000) / rate - performance.now()));
    };
    tick();
  });
  await Promise.all(inFlight);
  return total;
}

// ---------------------------------------------------------------- Postgres's WAL and its disk

/** What a WalWatch saw: its samples, how many found a statement stuck on the WAL for `stuckMs` or more, the longest and when. */
export interface WalWaits {
  samples: number;
  stuck: number;
  stuckMs: number;
  longestMs: number;
  /** Epoch ms of the sample that saw the longest. */
  longestAt: number;
}

/**
 * Samples pg_stat_activity every `intervalMs` on a connection of its own: how long the oldest
 * running statement of the database that is waiting on the WAL (writing or flushing it, or
 * making a new segment) has been running. Every commit waits for the WAL flush, so a disk
 * stall holds them all, the service's and the baselines' alike; statements here take well under
 * a millisecond, so a statement's age while it waits is about the time it has waited.
 */
export class WalWatch {
  private readonly client: pg.Client;
  private running = true;
  private loop: Promise<void> | undefined;
  private readonly seen: WalWaits;

  private constructor(databaseUrl: string, stuckMs: number) {
    this.client = new pg.Client({ connectionString: databaseUrl, application_name: 'bench-wal-watch' });
    this.seen = { samples: 0, stuck: 0, stuckMs, longestMs: 0, longestAt: Number.NaN };
  }

  static async start(databaseUrl: string, intervalMs = 20, stuckMs = 10): Promise<WalWatch> {
    const watch = new WalWatch(databaseUrl, stuckMs);
    await watch.client.connect();
    watch.loop = watch.sample(intervalMs);
    return watch;
  }

  private async sample(intervalMs: number): Promise<void> {
    while (this.running) {
      const { rows } = await this.client.query<{ ms: number | null }>(
        `select max(extract(epoch from clock_timestamp() - query_start) * 1000)::float8 as ms from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid() and state = 'active'
           and wait_event in ('WALWrite', 'WALSync', 'WALInitWrite', 'WALInitSync')`,
      );
      const ms = rows[0]?.ms ?? 0;
      this.seen.samples++;
      if (ms >= this.seen.stuckMs) this.seen.stuck++;
      if (ms > this.seen.longestMs) [this.seen.longestMs, this.seen.longestAt] = [ms, Date.now()];
      await sleep(intervalMs);
    }
  }

  async stop(): Promise<WalWaits> {
    this.running = false;
    await this.loop;
    await this.client.end();
    return { ...this.seen };
  }
}

/** WalWaits as a short phrase. */
export function walPhrase(w: WalWaits): string {
  if (w.stuck === 0) return `no statement seen waiting on the WAL for ${w.stuckMs} ms or more (${w.samples} samples)`;
  return `a statement waited on the WAL up to ${w.longestMs.toFixed(0)} ms (at ${clockTime(w.longestAt)}); ${w.stuck} of ${w.samples} samples saw one ≥ ${w.stuckMs} ms`;
}

/** What probeDisk measured: the time of each fdatasync, and the stalls among them. */
export interface DiskProbe {
  syncs: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** fdatasync calls that took 20 ms or more, and 100 ms or more. */
  over20: number;
  over100: number;
}

/**
 * The disk under Postgres, alone: writes 8 KiB and fdatasyncs it every `gapMs` for `seconds`, as a
 * commit's WAL flush does, in a scratch file on the file system of Postgres's data directory
 * (`os.tmpdir()` when it is on the same device). Every durable pipeline waits for this on each
 * commit: stalls of 100 ms here and no pipeline keeps a 50 ms p99. They come and go over
 * minutes, so a probe before the phases is read beside each row's WAL waits. Returns a reason
 * instead when it cannot measure the right disk (`dataDir`, Postgres's `data_directory`, not on
 * this machine, or no scratch directory on its file system).
 */
export async function probeDisk(dataDir: string, seconds: number, gapMs = 5): Promise<DiskProbe | string> {
  const device = (path: string) => statSync(path, { throwIfNoEntry: false })?.dev;
  const dataDevice = device(dataDir);
  if (dataDevice === undefined) return `not measured: Postgres's data directory ${dataDir} is not on this machine`;
  const dir = tmpdir();
  if (device(dir) !== dataDevice) return `not measured: ${dir} is not on the file system of Postgres's data directory (${dataDir})`;
  const file = join(dir, `bench-disk-probe-${process.pid}`);
  const handle = await open(file, 'w');
  const block = Buffer.alloc(8192, 120);
  const times: number[] = [];
  try {
    const end = performance.now() + seconds * 1000;
    for (let i = 0; performance.now() < end; i++) {
      await handle.write(block, 0, block.length, (i % 1024) * block.length);
      const t = performance.now();
      await handle.datasync();
      times.push(performance.now() - t);
      await sleep(gapMs);
    }
  } finally {
    await handle.close();
    await unlink(file);
  }
  return {
    syncs: times.length,
    p50: percentile(times, 0.5),
    p99: percentile(times, 0.99),
    p999: percentile(times, 0.999),
    max: percentile(times, 1),
    over20: times.filter((t) => t >= 20).length,
    over100: times.filter((t) => t >= 100).length,
  };
}

/** A DiskProbe as a short phrase. */
export function diskPhrase(d: DiskProbe | string): string {
  if (typeof d === 'string') return d;
  const ms = (n: number) => n.toFixed(n < 10 ? 2 : 0);
  return `fdatasync p50 ${ms(d.p50)}, p99 ${ms(d.p99)}, p99.9 ${ms(d.p999)}, max ${ms(d.max)} ms; ${d.over20} of ${d.syncs} took ≥ 20 ms, ${d.over100} ≥ 100 ms`;
}

// ---------------------------------------------------------------- events stream

/**
 * Reads the events stream from its start on its own Redis connection (XREAD BLOCK) and notes
 * when each command's terminal event arrived (performance.now()).
 */
export class EventWatch {
  readonly succeeded = new Map<string, number>();
  readonly failed = new Map<string, number>();
  events = 0;
  private running = true;
  private readonly redis: RedisClient;
  private readonly loop: Promise<void>;
  error: Error | undefined;

  constructor(
    topology: RedisTopology,
    private readonly stream: string,
  ) {
    this.redis = connectRedis(topology, { name: 'bench-pipeline-events', whenDown: 'wait' });
    this.redis.on('error', () => {});
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    let cursor = '0';
    while (this.running) {
      let reply: [string, [string, string[]][]][] | null;
      try {
        reply = await this.redis.xread('COUNT', 5000, 'BLOCK', 250, 'STREAMS', this.stream, cursor);
      } catch (error) {
        if (!this.running) return;
        this.error = error as Error;
        await sleep(100);
        continue;
      }
      const now = performance.now();
      for (const [id, fields] of reply?.[0]?.[1] ?? []) {
        cursor = id;
        this.events++;
        const raw = fields[fields.indexOf(EVENT_FIELD) + 1];
        if (raw === undefined) continue;
        const event = JSON.parse(raw) as { type?: string; job_id?: string };
        if (!event.job_id) continue;
        if (event.type === 'command.succeeded' && !this.succeeded.has(event.job_id)) this.succeeded.set(event.job_id, now);
        else if (event.type === 'command.failed' && !this.failed.has(event.job_id)) this.failed.set(event.job_id, now);
      }
    }
  }

  /** Resolves when every job in `ids` has its terminal event, or after `timeoutMs`. */
  async waitFor(ids: string[], timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let pending = ids.filter((id) => !this.succeeded.has(id) && !this.failed.has(id));
    while (pending.length > 0 && performance.now() < deadline) {
      await sleep(50);
      pending = pending.filter((id) => !this.succeeded.has(id) && !this.failed.has(id));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.redis.disconnect();
    await this.loop.catch(() => {});
  }
}

// ---------------------------------------------------------------- processes

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A child process we started: its output tail (for crash reports) and how it ended. */
export class Child {
  private tail = '';
  /** The process's GC pauses, if it runs with `--trace-gc`: when the line arrived (performance.now()) and how long the pause was. */
  readonly gcPauses: { at: number; ms: number }[] = [];
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exitPromise: Promise<void>;

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
  ) {
    const keep = (text: string) => {
      this.tail = (this.tail + text).slice(-4000);
    };
    // stdout: GC lines (--trace-gc) are noted, not kept as output
    let partial = '';
    process.stdout?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      const at = performance.now();
      for (const line of lines) {
        const pause = gcPause(line);
        if (pause === undefined) keep(`${line}\n`);
        else this.gcPauses.push({ at, ms: pause });
      }
    });
    process.stdout?.on('end', () => keep(partial));
    process.stderr?.on('data', (chunk: Buffer) => keep(chunk.toString('utf8')));
    this.exitPromise = new Promise((resolve) =>
      process.once('exit', (code, signal) => {
        this.exited = { code, signal };
        resolve();
      }),
    );
    live.add(this);
    void this.exitPromise.then(() => live.delete(this));
  }

  get pid(): number {
    return this.process.pid ?? 0;
  }

  /** Throws, with its last output, if the process has ended. */
  assertAlive(): void {
    if (this.exited) throw new Error(`${this.name} (pid ${this.pid}) exited (code ${this.exited.code}, signal ${this.exited.signal}); last output:\n${this.output()}`);
  }

  output(): string {
    return this.tail.trim() || '(none)';
  }

  /** SIGTERM (the service drains), then SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.exited) return;
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), graceMs);
    await this.exitPromise;
    clearTimeout(timer);
  }
}

const live = new Set<Child>();

/** Kills every child still running (last resort, when the bench itself exits). */
export function killAllChildren(): void {
  for (const child of live) child.process.kill('SIGKILL');
}

/**
 * The pause of a `--trace-gc` line (`[pid:addr]  1234 ms: Scavenge 48.6 (68.3) -> 37.2 (69.8) MB,
 * 10.16 / 0.30 ms ...`: the first figure after the sizes is the main thread's pause), or undefined.
 */
export function gcPause(line: string): number | undefined {
  const match = /ms: (?:Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Compact)\b[^,]*, ([\d.]+) \/ [\d.]+ ms/.exec(line);
  return match ? Number(match[1]) : undefined;
}

/** GC pauses of a process in a phase: how many, their sum and the longest (ms). */
export interface GcPauses {
  count: number;
  ms: number;
  longest: number;
}

/** The pauses of `child` whose lines arrived between `from` and `to` (performance.now()). */
export function gcPausesBetween(child: Child, from: number, to: number): GcPauses {
  const pauses = child.gcPauses.filter((p) => p.at >= from && p.at <= to);
  return { count: pauses.length, ms: pauses.reduce((a, p) => a + p.ms, 0), longest: pauses.reduce((a, p) => Math.max(a, p.ms), 0) };
}

/** Extra node flags of every child (bench:pipeline: `--trace-gc`, whose pauses Child counts, and what its options add, e.g. --cpu-prof). */
export const childNodeFlags: string[] = [];

export function spawnNode(name: string, script: string, env: Record<string, string>): Child {
  const child = spawn(process.execPath, [...childNodeFlags, script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  return new Child(name, child);
}

/** A child speaking IPC (the baselines); messages are `{ type, ... }` objects. */
export function forkNode(name: string, script: string, env: Record<string, string>): Child {
  const child = fork(script, [], { env: { ...process.env, ...env }, execArgv: [...childNodeFlags], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  return new Child(name, child);
}

/** Resolves with the child's next IPC message of `type`; rejects if it exits or times out. */
export function nextMessage<T extends { type: string }>(child: Child, type: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown) => {
      if ((message as { type?: string })?.type !== type) return;
      cleanup();
      resolve(message as T);
    };
    const onExit = () => {
      cleanup();
      reject(new Error(`${child.name} exited before '${type}'; last output:\n${child.output()}`));
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${child.name}: no '${type}' within ${timeoutMs} ms; last output:\n${child.output()}`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      child.process.off('message', onMessage);
      child.process.off('exit', onExit);
    };
    child.process.on('message', onMessage);
    child.process.once('exit', onExit);
  });
}

/** Polls `url` until it answers 200 (the child must stay alive meanwhile). */
export async function waitForHttp(child: Child, url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    child.assertAlive();
    try {
      const response = await fetch(url);
      await response.arrayBuffer();
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    if (performance.now() > deadline) throw new Error(`${child.name}: ${url} not ready within ${timeoutMs} ms; last output:\n${child.output()}`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------- CPU accounting

const ticksPerSecond = 100; // USER_HZ on Linux

/** CPU seconds (user + system) a process has used so far; 0 when /proc cannot tell. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
  } catch {
    return 0;
  }
}

/**
 * Write system calls a process has made so far (/proc/<pid>/io syscw): every socket write to
 * Postgres, Redis or an HTTP client is one, so per operation it counts round trips. NaN when
 * /proc cannot tell.
 */
export function writeSyscalls(pid: number): number {
  try {
    return Number(/^syscw:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? Number.NaN);
  } catch {
    return Number.NaN;
  }
}

/**
 * Context switches of a process so far, every thread summed (/proc/<pid>/task/<tid>/status,
 * voluntary and not): each is a wake-up or a preemption. On this virtual machine a wake-up costs
 * far more than the work most of them do, so per operation this says what a design costs at
 * moderate load better than its CPU time at full load. NaN when unknown.
 */
export function contextSwitches(pid: number): number {
  try {
    let total = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      total += Number(/^voluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0) + Number(/^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1] ?? 0);
    }
    return total;
  } catch {
    return Number.NaN;
  }
}

/** Resident memory of a process now, in bytes (/proc/<pid>/status VmRSS); NaN when unknown. */
export function rssBytes(pid: number): number {
  try {
    return Number(/^VmRSS:\s*(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN) * 1024;
  } catch {
    return Number.NaN;
  }
}

/** What an RssSampler saw: the first sample, the largest, the last, and how many it took. */
export interface RssRange {
  start: number;
  max: number;
  end: number;
  samples: number;
}

/**
 * Samples a process's resident memory every `intervalMs` from now until stop(): a server that
 * keeps something per connection or per waiting request grows while the load runs.
 */
export class RssSampler {
  private readonly range: RssRange;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    intervalMs = 200,
  ) {
    const first = rssBytes(pid);
    this.range = { start: first, max: first, end: first, samples: 1 };
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  private sample(): void {
    const bytes = rssBytes(this.pid);
    if (!Number.isFinite(bytes)) return;
    this.range.max = Math.max(this.range.max, bytes);
    this.range.end = bytes;
    this.range.samples++;
  }

  stop(): RssRange {
    clearInterval(this.timer);
    this.sample();
    return { ...this.range };
  }
}

/** CPU seconds used by the whole machine (every core), from /proc/stat; 0 when unknown. */
export function machineCpuSeconds(): { busy: number; total: number } {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const values = line.trim().split(/\s+/).slice(1).map(Number);
    const total = values.reduce((a, b) => a + b, 0);
    const idle = (values[3] ?? 0) + (values[4] ?? 0);
    return { busy: (total - idle) / ticksPerSecond, total: total / ticksPerSecond };
  } catch {
    return { busy: 0, total: 0 };
  }
}
