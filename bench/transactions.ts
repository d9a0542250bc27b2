/**
 * bench/transactions: the worker's transaction for one short command, as it runs on the worker's
 * pool (pg pipeline mode with pipelined transaction boundaries, db/pipelined.ts) against its
 * baseline in the same run: the same statements through a plain pool, where Kysely waits for
 * each answer (BEGIN, lock the command row, DELETE the token, the commit statement, COMMIT: five
 * round trips, against three). A third variant is the step on the job's copy of the command
 * (runCarriedStep): no lock statement, the DELETE goes out with BEGIN and the commit statement
 * locks and checks the row (two round trips). One connection, one transaction at a time, so the
 * time per transaction is its latency; rounds alternate between the variants.
 * Usage: npm run bench:transactions [-- --transactions 2000 --rounds 3]
 */
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import type { AuditContext, Command } from '../contracts/index.js';
import { createDb } from '../db/create-db.js';
import type { Db } from '../db/database.js';
import { migrateToLatest } from '../db/migrate.js';
import { insertCollection } from '../db/repositories/collection.repository.js';
import { commitStep } from '../db/repositories/command-step.repository.js';
import { lockCommands } from '../db/repositories/command.repository.js';
import { toEvents } from '../worker/event-envelope.js';
import { cpuSeconds } from './pipeline-kit.js';
import { benchConfig, dropDatabase, fmt, median } from './support.js';

const { values } = parseArgs({ options: { transactions: { type: 'string', default: '2000' }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.transactions);
const ROUNDS = Number(values.rounds);
const { config } = benchConfig();
const audit: AuditContext = { actor: { id: 'bench', kind: 'service' }, tenant_ids: null, reason: 'AppFunctionality', adhoc_reason: null, custom_audit: null, request_id: 'bench', source: 'http' };

/** Every command's payload (what a job's copy says, and the row holds). */
const payload: Command = { type: 'tokens.delete', collection: 'tx', token_ids: ['tok'], archived: false };

/**
 * Runs one worker-shaped transaction per command on `db`, one after another, locking the command
 * row first or (`carried`) leaving the lock to the commit statement; returns µs per transaction
 * of wall time, client CPU and backend CPU.
 */
async function run(db: Db, commands: string[], tokens: string[], carried = false): Promise<{ wall: number; client: number; backend: number }> {
  const [backend] = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)).rows;
  const backendBefore = cpuSeconds(backend!.pid);
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < commands.length; i++) {
    const id = commands[i]!;
    await db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (trx) => {
        if (!carried) await lockCommands(trx, [id]);
        await sql`delete from vault_tokens where collection = 'tx' and token_id = ${tokens[i]!}`.execute(trx);
        await commitStep(trx, {
          id,
          start: true,
          audit,
          entries: [{ action: 'tokens.deleted', collection: 'tx', data: { token_ids: [tokens[i]!] } }],
          events: toEvents(id, audit, [
            { type: 'tokens.deleted', data: { collection: 'tx', token_ids: [tokens[i]!], batch: { index: 0, last: true } } },
            { type: 'command.succeeded', data: { command_type: 'tokens.delete', result: { deleted: 1 } } },
          ]),
          end: { state: 'succeeded', result: { deleted: 1 } },
          ...(carried ? { expected: { payload, audit } } : {}),
        });
      });
  }
  const wall = performance.now() - start;
  const used = process.cpuUsage(cpu);
  const n = commands.length;
  return { wall: (wall * 1000) / n, client: (used.user + used.system) / n, backend: ((cpuSeconds(backend!.pid) - backendBefore) * 1e6) / n };
}

await migrateToLatest(config.DATABASE_URL);
const plain = createDb(config.DATABASE_URL, { max: 1, applicationName: 'bench-transactions-plain' });
const pipelined = createDb(config.DATABASE_URL, { max: 1, pipeline: true, applicationName: 'bench-transactions-pipelined' });
try {
  await insertCollection(plain, 'tx');
  const total = N * ROUNDS * 3 + 300;
  const commands = Array.from({ length: total }, () => randomUUID());
  await sql`
    insert into commands (id, type, payload, payload_hash, submitter_id, audit, state)
    select id, 'tokens.delete', ${JSON.stringify(payload)}, '', 'bench', ${JSON.stringify(audit)}, 'queued' from unnest(${commands}::uuid[]) as id`.execute(plain);
  await sql`insert into vault_tokens (collection, token_id, object_id, tags) select 'tx', 'tok-' || g, 'obj-' || g, '{}' from generate_series(1, ${total}::int) as g`.execute(plain);
  await sql`vacuum analyze`.execute(plain);
  const tokens = commands.map((_, i) => `tok-${i + 1}`);
  let next = 0;
  const take = (n: number) => {
    const slice = { commands: commands.slice(next, next + n), tokens: tokens.slice(next, next + n) };
    next += n;
    return slice;
  };
  const variants = [
    ['plain', plain, false],
    ['pipelined', pipelined, false],
    ['carried', pipelined, true],
  ] as const;
  type Variant = (typeof variants)[number][0];
  // warm-up: statements prepared, plans cached, on both connections
  for (const [, db, carried] of variants) {
    const w = take(100);
    await run(db, w.commands, w.tokens, carried);
  }
  const results: Record<Variant, Awaited<ReturnType<typeof run>>[]> = { plain: [], pipelined: [], carried: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, db, carried] of variants) {
      const batch = take(N);
      const r = await run(db, batch.commands, batch.tokens, carried);
      results[name].push(r);
      console.log(`round ${round + 1} ${name.padEnd(9)}: ${fmt(r.wall, 0)} µs per transaction; CPU µs client ${fmt(r.client, 0)}, backend ${fmt(r.backend, 0)}`);
    }
  }
  const m = (name: Variant, key: 'wall' | 'client' | 'backend') => median(results[name].map((r) => r[key]));
  const ratios = (name: Variant, base: Variant) =>
    `time ${fmt(m(name, 'wall') / m(base, 'wall'), 2)}, client CPU ${fmt(m(name, 'client') / m(base, 'client'), 2)}, backend CPU ${fmt(m(name, 'backend') / m(base, 'backend'), 2)}`;
  console.log(`\nmedians over ${ROUNDS} rounds of ${N} transactions (lock, DELETE, commit statement):`);
  console.log(`  baseline, plain pool (5 round trips): ${fmt(m('plain', 'wall'), 0)} µs; CPU client ${fmt(m('plain', 'client'), 0)}, backend ${fmt(m('plain', 'backend'), 0)}`);
  console.log(`  worker pool, pipelined (3 round trips): ${fmt(m('pipelined', 'wall'), 0)} µs; CPU client ${fmt(m('pipelined', 'client'), 0)}, backend ${fmt(m('pipelined', 'backend'), 0)}`);
  console.log(
    `  worker pool, the job's copy (2 round trips: no lock statement): ${fmt(m('carried', 'wall'), 0)} µs; CPU client ${fmt(m('carried', 'client'), 0)}, backend ${fmt(m('carried', 'backend'), 0)}`,
  );
  console.log(`  pipelined ÷ plain: ${ratios('pipelined', 'plain')}`);
  console.log(`  copy ÷ plain: ${ratios('carried', 'plain')}`);
  console.log(`  copy ÷ pipelined: ${ratios('carried', 'pipelined')}`);
} finally {
  await plain.destroy();
  await pipelined.destroy();
  await dropDatabase(config);
}
