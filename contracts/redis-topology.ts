import { z } from 'zod';
import { DEFAULT_QUEUE_PREFIX } from './queue.js';

/** A Redis server's (or a sentinel's) address. */
export interface RedisNode {
  host: string;
  port: number;
}

/** What the service connects to: one server, a Redis Cluster, or a primary found through Sentinel. */
export type RedisTopology = { kind: 'single'; url: string } | { kind: 'cluster'; nodes: RedisNode[]; auth: RedisAuth } | { kind: 'sentinel'; sentinels: RedisNode[]; master: string; auth: RedisAuth };

/** Credentials and TLS given in URL-form entries (`rediss://user:password@host:port`), for every node. */
export interface RedisAuth {
  username?: string;
  password?: string;
  tls: boolean;
}

/** The queue prefix with a Redis Cluster when QUEUE_PREFIX is unset: a hash tag, so a queue's keys share one slot. */
export const DEFAULT_CLUSTER_QUEUE_PREFIX = `{${DEFAULT_QUEUE_PREFIX}}`;

/** The events stream with a Redis Cluster when neither QUEUE_PREFIX nor EVENTS_STREAM is set. */
export const DEFAULT_CLUSTER_EVENTS_STREAM = `${DEFAULT_CLUSTER_QUEUE_PREFIX}:events`;

/** A QUEUE_PREFIX that is a Redis Cluster hash tag: every key under it hashes by the text between the braces. */
export const isHashTag = (prefix: string): boolean => /^\{[^\s{}]+\}$/.test(prefix);

/**
 * The events stream's default name: `revocation:events` on one server or with Sentinel; with a
 * cluster, `<QUEUE_PREFIX>:events` (e.g. `{revocation}:events`), in the queue's hash slot.
 */
export function defaultEventsStream(cluster: boolean, queuePrefix: string): string {
  return cluster ? `${queuePrefix}:events` : `${DEFAULT_QUEUE_PREFIX}:events`;
}

const entryHint = 'host:port entries separated by commas (or redis:// / rediss:// URLs with credentials)';

/**
 * A comma-separated list of `host:port` (port defaults to `defaultPort`), or of URLs
 * `redis[s]://[user:password@]host:port` whose credentials and TLS then apply to every node; the
 * entries must agree on them.
 */
export const nodeList = (defaultPort: number) =>
  z.string().transform((value, ctx): { nodes: RedisNode[]; auth: RedisAuth } => {
    const nodes: RedisNode[] = [];
    let auth: RedisAuth | undefined;
    for (const raw of value.split(',').map((e) => e.trim())) {
      const text = raw.includes('://') ? raw : `redis://${raw}`;
      const url = URL.canParse(text) ? new URL(text) : undefined;
      if (!raw || !url || !/^rediss?:$/.test(url.protocol) || !url.hostname || (url.pathname !== '' && url.pathname !== '/') || url.search) {
        ctx.addIssue({ code: 'custom', message: `must be ${entryHint}` });
        return z.NEVER;
      }
      nodes.push({ host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: url.port ? Number(url.port) : defaultPort });
      const given: RedisAuth = {
        tls: url.protocol === 'rediss:',
        ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
        ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      };
      if (auth && JSON.stringify(auth) !== JSON.stringify(given)) {
        ctx.addIssue({ code: 'custom', message: 'entries disagree on credentials or TLS (they apply to every node: give them alike, or in every entry)' });
        return z.NEVER;
      }
      auth = given;
    }
    return { nodes, auth: auth ?? { tls: false } };
  });

type Env = Record<string, string>;

/**
 * Fills the defaults that depend on the topology, when unset: with REDIS_CLUSTER_NODES,
 * QUEUE_PREFIX `{revocation}` and EVENTS_STREAM `<prefix>:events`; with REDIS_SENTINELS,
 * EVENTS_MIN_REPLICAS 1 (a failover promotes a replica: what only the old primary had is lost).
 * Changes `input` in place.
 */
export function applyTopologyDefaults(input: Env): void {
  if (input.REDIS_SENTINELS) input.EVENTS_MIN_REPLICAS ??= '1';
  if (!input.REDIS_CLUSTER_NODES) return;
  input.QUEUE_PREFIX ??= DEFAULT_CLUSTER_QUEUE_PREFIX;
  input.EVENTS_STREAM ??= defaultEventsStream(true, input.QUEUE_PREFIX);
}

/**
 * What is wrong with the combination of Redis settings in `input` (set variables only), each
 * as `NAME: message`. One topology at a time: REDIS_URL, REDIS_CLUSTER_NODES, or
 * REDIS_SENTINELS with REDIS_SENTINEL_MASTER. With a cluster, QUEUE_PREFIX must be a hash tag:
 * BullMQ's scripts touch several keys of a queue at once, which a cluster allows only within
 * one slot (CROSSSLOT otherwise). The events stream may live in any slot: nothing writes it
 * together with the queue's keys (each XADD is a command of its own).
 */
export function topologyIssues(input: Env): string[] {
  const issues: string[] = [];
  const cluster = Boolean(input.REDIS_CLUSTER_NODES);
  const sentinel = Boolean(input.REDIS_SENTINELS);
  if (cluster && sentinel) issues.push('REDIS_CLUSTER_NODES: set REDIS_CLUSTER_NODES (a Redis Cluster) or REDIS_SENTINELS (a primary watched by Sentinel), not both');
  if (input.REDIS_URL && (cluster || sentinel)) {
    issues.push(`REDIS_URL: set REDIS_URL (one Redis server) or ${cluster ? 'REDIS_CLUSTER_NODES' : 'REDIS_SENTINELS'}, not both`);
  }
  if (sentinel && !input.REDIS_SENTINEL_MASTER) issues.push('REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS: the name the sentinels know the primary by (`sentinel monitor <name> …`)');
  if (!sentinel && input.REDIS_SENTINEL_MASTER) issues.push('REDIS_SENTINEL_MASTER: only used with REDIS_SENTINELS, which is not set');
  if (cluster && input.EVENTS_MIN_REPLICAS && input.EVENTS_MIN_REPLICAS !== '0') {
    issues.push("EVENTS_MIN_REPLICAS: not supported with REDIS_CLUSTER_NODES (WAIT would reach a node of its own choosing, not the stream's): leave it unset");
  }
  const prefix = input.QUEUE_PREFIX;
  if (cluster && prefix !== undefined && !isHashTag(prefix)) {
    issues.push(
      `QUEUE_PREFIX: with REDIS_CLUSTER_NODES it must be a hash tag such as ${DEFAULT_CLUSTER_QUEUE_PREFIX}, so that every key of the queue lives in one slot; set QUEUE_PREFIX=${DEFAULT_CLUSTER_QUEUE_PREFIX} (and EVENTS_STREAM=${defaultEventsStream(true, DEFAULT_CLUSTER_QUEUE_PREFIX)}) or leave both unset (got ${JSON.stringify(prefix)})`,
    );
  }
  return issues;
}

/** The topology a validated configuration names. */
export function redisTopology(settings: {
  REDIS_URL: string;
  REDIS_CLUSTER_NODES?: { nodes: RedisNode[]; auth: RedisAuth } | undefined;
  REDIS_SENTINELS?: { nodes: RedisNode[]; auth: RedisAuth } | undefined;
  REDIS_SENTINEL_MASTER?: string | undefined;
}): RedisTopology {
  if (settings.REDIS_CLUSTER_NODES) return { kind: 'cluster', ...settings.REDIS_CLUSTER_NODES };
  if (settings.REDIS_SENTINELS) return { kind: 'sentinel', sentinels: settings.REDIS_SENTINELS.nodes, auth: settings.REDIS_SENTINELS.auth, master: settings.REDIS_SENTINEL_MASTER ?? '' };
  return { kind: 'single', url: settings.REDIS_URL };
}
