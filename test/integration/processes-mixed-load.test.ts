import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCollection, tokenize } from '../helpers/api.js';
import { backendsWaitingOnLocks, bounded, duplicates, tokenIdsOf, waitForTerminal } from '../helpers/faults.js';
import { killChildren, producerEnv, spawnProducer, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { freePort, type OwnRedis, startOwnRedis, stopOwnRedisServers } from '../helpers/redis-server.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';
import { prng } from '../helpers/prng.js';

/**
 * SPEC §4.4, concurrency, with real processes: two worker processes and the producer take 2,000
 * deletes by token ID, deletes by tag and rotates over overlapping token sets, submitted
 * concurrently over HTTP. No answer is a 5xx, every command ends, and the result equals a
 * serial order: replaying the audit log in order onto the initial tokens, each command's effect
 * is exactly what it would have done at that point, and the end state is the table. Redis is one
 * of the test's own.
 */

const TOKENS = 3_000;
const GROUPS = 60; // tag g<i % 60>: 50 tokens a tag
const HOT = 150; // half the token IDs commands name are among the first 150, so they collide
const COMMANDS = 2_000;
const IN_FLIGHT = 24;

type Spec = { type: 'tokens.delete'; token_ids: string[] } | { type: 'tokens.delete'; tags: [string] } | { type: 'tokens.rotate'; token_ids: string[] };

/** Sum of a counter's samples in a Prometheus text exposition. */
function counterTotal(text: string, name: string): number {
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  return total;
}

describe('two worker processes and a producer under 2,000 mixed commands over overlapping tokens', () => {
  let redis: OwnRedis;
  let stack: Stack;
  let holder: pg.Client;
  const workers: { process: WorkerProcess; metricsPort: number }[] = [];

  beforeAll(async () => {
    redis = await startOwnRedis();
    stack = await startStack({ worker: false, env: { REDIS_URL: redis.url, WORKER_CONCURRENCY: '4' } });
    holder = new pg.Client({ connectionString: stack.database.url, application_name: 'mixed-load-holder' });
    await holder.connect();
  });

  afterAll(async () => {
    await killChildren();
    await holder?.end().catch(() => {});
    await stack?.close();
    await stopOwnRedisServers();
  });

  it('no 5xx, every command terminal, and the tokens left equal a serial replay of the audit log', { timeout: 180_000 }, async () => {
    const db = stack.database.db;
    const collection = 'mixed';
    await createCollection(stack, collection);
    const initial: string[] = [];
    const tagsOf = new Map<string, string[]>();
    const tags = (i: number) => [`g${i % GROUPS}`];
    for (let from = 0; from < TOKENS; from += 1_000) {
      const items = Array.from({ length: 1_000 }, (_, k) => ({ object: { id: `o${from + k}` }, tags: tags(from + k) }));
      const ids = await tokenize(stack, collection, items);
      ids.forEach((id, k) => tagsOf.set(id, tags(from + k)));
      initial.push(...ids);
    }

    const seed = Number(process.env.MIXED_LOAD_SEED ?? Date.now() % 1_000_000);
    console.info(`mixed load seed ${seed} (MIXED_LOAD_SEED=${seed} replays it)`);
    const random = prng(seed);
    const pick = () => initial[random() < 0.5 ? Math.floor(random() * HOT) : Math.floor(random() * TOKENS)]!;
    const some = () => {
      const n = 1 + Math.floor(random() * 3);
      const ids = new Set<string>();
      while (ids.size < n) ids.add(pick());
      return [...ids];
    };
    const specs: Spec[] = Array.from({ length: COMMANDS }, (): Spec => {
      const r = random();
      if (r < 0.55) return { type: 'tokens.delete', token_ids: some() };
      if (r < 0.97) return { type: 'tokens.rotate', token_ids: some() };
      return { type: 'tokens.delete', tags: [`g${Math.floor(random() * GROUPS)}`] };
    });
    // in the first half (the backlog the workers meet), clusters of six neighbours that name one
    // hot token: taken from the queue together, they may run at the same time and collide
    const CLUSTERS = 40;
    for (let c = 0; c < CLUSTERS; c++) {
      const hot = initial[c]!;
      for (let k = 0; k < 6; k++) specs[c * Math.floor(COMMANDS / 2 / CLUSTERS) + k] = k % 2 === 0 ? { type: 'tokens.rotate', token_ids: [hot] } : { type: 'tokens.delete', token_ids: [hot, pick()] };
    }
    // whether they do depends on timing; to have at least one collision for sure, the first
    // cluster's token is held (FOR UPDATE, unchanged) until two of them wait on it in their
    // transactions: the one that gets it next commits, the other saw the row change after its
    // snapshot (SQLSTATE 40001) and retries
    await holder.query('begin');
    await holder.query('select token_id from vault_tokens where collection = $1 and token_id = $2 for update', [collection, initial[0]]);

    // concurrently over HTTP, to a producer process; the two workers start halfway through, so
    // they meet a backlog (many commands on the same tokens at once) and then the rest as it comes
    const producer = await spawnProducer(producerEnv(stack.config, await freePort(), 'warn'));
    let answered = 0;
    let halfway!: () => void;
    const started = new Promise<void>((resolve) => (halfway = resolve)).then(async () => {
      for (let i = 0; i < 2; i++) {
        const metricsPort = await freePort();
        workers.push({ process: await spawnWorker(stack.config, { logLevel: 'warn', env: { METRICS_PORT: String(metricsPort) } }), metricsPort });
      }
      await expect.poll(() => backendsWaitingOnLocks(db, stack.database.name, 'revocation-worker'), { timeout: 30_000, interval: 20 }).toBeGreaterThanOrEqual(2);
      await holder.query('commit');
    });
    started.catch(() => {}); // awaited below, after the submissions
    const submitStarted = Date.now();
    const answers = await bounded(specs, IN_FLIGHT, async (spec) => {
      const response = await fetch(`${producer.url}/v1/commands`, {
        method: 'POST',
        headers: { ...stack.admin, 'content-type': 'application/json' },
        body: JSON.stringify({ ...spec, collection, reason: 'AppFunctionality' }),
        signal: AbortSignal.timeout(30_000),
      });
      const answer = { status: response.status, body: (await response.json()) as { job_id?: string; error_code?: string } };
      if (++answered === COMMANDS / 2) halfway();
      return answer;
    });
    await started;
    console.info(`${COMMANDS} mixed commands submitted in ${Date.now() - submitStarted} ms`);
    const serverErrors = answers.filter((a) => a.status >= 500);
    expect(serverErrors.map((a) => `${a.status} ${JSON.stringify(a.body)}`)).toEqual([]);
    expect(answers.filter((a) => a.status !== 202).map((a) => `${a.status} ${JSON.stringify(a.body)}`)).toEqual([]);
    const ids = answers.map((a) => a.body.job_id as string);
    expect(duplicates(ids)).toEqual([]);
    const specOf = new Map(ids.map((id, i) => [id, specs[i]!]));

    const took = await waitForTerminal(db, ids, 150_000);
    console.info(`${COMMANDS} mixed commands ended ${took} ms after the last was accepted`);

    // outcomes: succeeded, or the business failure of its type (nothing matched / an ID missing)
    const rows = await db.selectFrom('commands').select(['id', 'type', 'state', 'result', 'error', 'attempts']).where('id', 'in', ids).execute();
    const unexpected = rows.filter((r) => r.state === 'failed' && r.error?.error_code !== (r.type === 'tokens.rotate' ? 'PV3087' : 'PV3009'));
    expect(unexpected.map((r) => `${r.id} ${r.type} ${JSON.stringify(r.error)}`)).toEqual([]);
    const byId = new Map(rows.map((r) => [r.id, r]));

    // the serial replay: audit rows in id order (a transaction that saw another's effect got its
    // ids after that one committed), each checked against what the command would do at that point
    const audit = await db.selectFrom('audit_log').select(['id', 'command_id', 'action', 'data']).where('command_id', 'in', ids).orderBy('id').execute();
    const state = new Map(initial.map((id) => [id, tagsOf.get(id)!]));
    const violations: string[] = [];
    const sorted = (values: Iterable<string>) => [...values].sort();
    const effects = new Map<string, number>();
    for (const row of audit) {
      const id = row.command_id as string;
      const spec = specOf.get(id)!;
      effects.set(id, (effects.get(id) ?? 0) + 1);
      if (row.action === 'tokens.deleted') {
        const deleted = row.data.token_ids as string[];
        const expected = 'tags' in spec ? [...state].filter(([, tagged]) => tagged.includes(spec.tags[0])).map(([t]) => t) : spec.token_ids.filter((t) => state.has(t));
        if (spec.type !== 'tokens.delete' || JSON.stringify(sorted(deleted)) !== JSON.stringify(sorted(expected)))
          violations.push(`${id} deleted ${deleted.length}, a serial run would delete ${JSON.stringify(sorted(expected))}: ${JSON.stringify(sorted(deleted))}`);
        for (const t of deleted) state.delete(t);
        const result = byId.get(id)?.result as { deleted?: number } | null;
        if (result?.deleted !== deleted.length) violations.push(`${id} result ${JSON.stringify(result)} but ${deleted.length} deleted`);
      } else if (row.action === 'tokens.rotated') {
        const mapping = row.data.mapping as Record<string, string>;
        if (spec.type !== 'tokens.rotate' || JSON.stringify(sorted(Object.keys(mapping))) !== JSON.stringify(sorted(spec.token_ids)))
          violations.push(`${id} rotated ${JSON.stringify(mapping)} for ${JSON.stringify(spec)}`);
        for (const [old, fresh] of Object.entries(mapping)) {
          if (!state.has(old) || state.has(fresh)) violations.push(`${id} renamed ${old} (present: ${state.has(old)}) to ${fresh} (present: ${state.has(fresh)})`);
          state.set(fresh, state.get(old)!);
          state.delete(old);
        }
        if (JSON.stringify((byId.get(id)?.result as { mapping?: unknown } | null)?.mapping) !== JSON.stringify(mapping)) violations.push(`${id} result mapping differs from its audit row`);
      } else if (row.action !== 'command.failed') {
        violations.push(`${id} unexpected audit action ${row.action}`);
      }
    }
    expect(violations).toEqual([]);
    // one audit row per command (every delete here fits one batch of 5,000; a failure has its own row)
    expect(ids.filter((id) => effects.get(id) !== 1)).toEqual([]);
    expect(sorted(state.keys())).toEqual(await tokenIdsOf(db, collection));

    // one terminal event per command, matching its state
    const terminal = await db
      .selectFrom('outbox')
      .select(['command_id', 'event'])
      .where('command_id', 'in', ids)
      .where((eb) => eb(eb.ref('event', '->>').key('type'), 'in', ['command.succeeded', 'command.failed']))
      .execute();
    expect(duplicates(terminal.map((r) => r.command_id))).toEqual([]);
    expect(terminal.filter((r) => r.event.type !== `command.${byId.get(r.command_id)?.state}`)).toEqual([]);
    expect(terminal).toHaveLength(ids.length);

    const outcomes = { succeeded: rows.filter((r) => r.state === 'succeeded').length, failed: rows.filter((r) => r.state === 'failed').length };
    const retries = await Promise.all(workers.map(async (w) => counterTotal(await (await fetch(`http://127.0.0.1:${w.metricsPort}/metrics`)).text(), 'revocation_transaction_retries_total')));
    const redelivered = rows.filter((r) => r.attempts > 1).length;
    console.info(`outcomes ${JSON.stringify(outcomes)}; ${state.size} tokens left; conflict retries per worker ${JSON.stringify(retries)}; ${redelivered} commands needed another attempt`);
    expect(outcomes.succeeded).toBeGreaterThan(0);
    expect(retries.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);

    // both workers and the producer drain and exit 0
    producer.signal('SIGTERM');
    for (const w of workers) w.process.signal('SIGTERM');
    const exits = await Promise.race([Promise.all([producer, ...workers.map((w) => w.process)].map((p) => p.exited)), sleep(30_000).then(() => 'still running')]);
    expect(exits).toEqual([0, 1, 2].map(() => ({ code: 0, signal: null })));
  });
});
