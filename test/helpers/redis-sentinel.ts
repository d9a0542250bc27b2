import { type OwnRedis, startOwnRedis } from './redis-server.js';
import { sleep } from './sleep.js';

/**
 * A primary watched by Sentinel, of the test's own: a primary, one replica of it, and three
 * sentinels (quorum 2) on free ports; none persists anything (the replica holds the copy). All
 * are OwnRedis servers: `stopOwnRedisServers()` stops them and removes their directories.
 */
export interface OwnSentinelGroup {
  /** The name the sentinels monitor the primary by (REDIS_SENTINEL_MASTER). */
  master: string;
  /** The two data servers: the first starts as the primary. */
  servers: OwnRedis[];
  sentinels: OwnRedis[];
  /** REDIS_SENTINELS for these sentinels: `127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3`. */
  setting: string;
  /** The port of the primary the sentinels name now. */
  primaryPort(): Promise<number>;
  /**
   * SENTINEL FAILOVER: the replica becomes the primary, the old primary its replica. Resolves
   * once the sentinels name the new primary and it has its replica back (throws after 30 s).
   */
  failover(): Promise<void>;
}

const sentinelInfo = async (sentinel: OwnRedis) => String(await sentinel.query('INFO', 'sentinel').catch(() => ''));

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await sleep(100);
  }
}

export async function startOwnSentinelGroup(master = 'revocation-primary'): Promise<OwnSentinelGroup> {
  const primary = await startOwnRedis();
  const replica = await startOwnRedis({ args: () => ['--replicaof', '127.0.0.1', String(primary.port)] });
  await until('the replica is in sync', async () => String(await replica.query('INFO', 'replication')).includes('master_link_status:up'));
  const sentinels: OwnRedis[] = [];
  for (let i = 0; i < 3; i++) {
    sentinels.push(
      await startOwnRedis({
        sentinel: (_port, dir) =>
          [
            `dir ${dir}`,
            `sentinel monitor ${master} 127.0.0.1 ${primary.port} 2`,
            `sentinel down-after-milliseconds ${master} 2000`,
            `sentinel failover-timeout ${master} 10000`,
            `sentinel parallel-syncs ${master} 1`,
            '',
          ].join('\n'),
      }),
    );
  }
  // each sentinel knows the replica and the two other sentinels (they meet through the primary, every 2 s)
  for (const sentinel of sentinels) await until('the sentinels know one another', async () => /status=ok,.*slaves=1,sentinels=3/.test(await sentinelInfo(sentinel)));

  const primaryPort = async () => Number(((await sentinels[0]!.query('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', master)) as [string, string])[1]);
  return {
    master,
    servers: [primary, replica],
    sentinels,
    setting: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
    primaryPort,
    async failover() {
      const before = await primaryPort();
      const reply = await sentinels[0]!.query('SENTINEL', 'FAILOVER', master);
      if (reply !== 'OK') throw new Error(`SENTINEL FAILOVER: ${String(reply)}`);
      const promoted = [primary, replica].find((s) => s.port !== before)!;
      for (const sentinel of sentinels) {
        await until('the sentinels name the new primary', async () => (await sentinelInfo(sentinel)).includes(`address=127.0.0.1:${promoted.port},slaves=1`));
      }
      await until('the old primary replicates the new one', async () => String(await promoted.query('INFO', 'replication')).includes('connected_slaves:1'));
    },
  };
}
