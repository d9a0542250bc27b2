import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, type OwnRedis, startOwnRedis } from './redis-server.js';
import { sleep } from './sleep.js';

/**
 * A Redis Cluster of the test's own: `masters` redis-servers (cluster mode, no replicas) on
 * free ports, joined by `redis-cli --cluster create`. Each node keeps an append-only file in its
 * directory (`appendonly yes`, unless `appendonly: false`), so a node killed and started again
 * comes back with its keys.
 * The nodes are OwnRedis servers: `stopOwnRedisServers()` stops them and removes their
 * directories.
 */
export interface OwnRedisCluster {
  nodes: OwnRedis[];
  /** REDIS_CLUSTER_NODES for these nodes: `127.0.0.1:p1,127.0.0.1:p2,…`. */
  setting: string;
  /** The node serving the slot of `key` (for a hash tag such as `{x}:y`, the slot of `x`). */
  nodeFor(key: string): Promise<OwnRedis>;
  /** Resolves once every running node says `cluster_state:ok` (throws after `timeoutMs`). */
  waitUntilOk(timeoutMs?: number): Promise<void>;
}

const run = promisify(execFile);

export async function startOwnRedisCluster(masters = 3, { appendonly = true } = {}): Promise<OwnRedisCluster> {
  const nodes: OwnRedis[] = [];
  for (let i = 0; i < masters; i++) {
    // the cluster bus port is set (Redis 7): port + 10000 may be taken or out of range
    const busPort = await freePort();
    nodes.push(
      await startOwnRedis({
        args: (dir) => [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, 'nodes.conf'),
          '--cluster-port',
          String(busPort),
          '--cluster-node-timeout',
          '5000',
          '--appendonly',
          appendonly ? 'yes' : 'no',
        ],
      }),
    );
  }
  const addresses = nodes.map((n) => `127.0.0.1:${n.port}`);
  await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });

  async function waitUntilOk(timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(nodes.filter((n) => n.running()).map((n) => n.query('CLUSTER', 'INFO').then(String, () => '')));
      if (states.every((info) => info.includes('cluster_state:ok'))) return;
      if (Date.now() > deadline) throw new Error(`the cluster is not ok after ${timeoutMs} ms:\n${states.join('\n')}`);
      await sleep(100);
    }
  }
  await waitUntilOk();

  return {
    nodes,
    setting: addresses.join(','),
    waitUntilOk,
    async nodeFor(key) {
      const asker = nodes.find((n) => n.running()) ?? nodes[0]!;
      const slot = Number(await asker.query('CLUSTER', 'KEYSLOT', key));
      // CLUSTER SLOTS: [[from, to, [host, port, id], …replicas], …]
      const ranges = (await asker.query('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
      const owner = ranges.find(([from, to]) => from <= slot && slot <= to)?.[2][1];
      const node = nodes.find((n) => n.port === owner);
      if (!node) throw new Error(`no node serves slot ${slot} of ${key}`);
      return node;
    },
  };
}
