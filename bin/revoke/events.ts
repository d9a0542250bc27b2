import { ConfigError, EVENT_FIELD, loadRedisSettings, redisTopology } from '../../contracts/index.js';
import { once } from 'node:events';
import { connectRedis, pingRedis } from '../../db/redis-connection.js';
import { type Flags, usageError } from './args.js';

/** Where the events are: the Redis flags if any is given (the environment's topology is then ignored), else the environment. */
function eventSource(values: Flags) {
  const flags = {
    REDIS_URL: values['redis-url'],
    REDIS_CLUSTER_NODES: values['redis-cluster-nodes'],
    REDIS_SENTINELS: values['redis-sentinels'],
    REDIS_SENTINEL_MASTER: values['redis-sentinel-master'],
  };
  const fromFlags = Object.values(flags).some((v) => v !== undefined);
  try {
    return loadRedisSettings({ ...process.env, ...(fromFlags ? flags : {}), ...(values.stream !== undefined ? { EVENTS_STREAM: values.stream } : {}) });
  } catch (error) {
    if (error instanceof ConfigError) usageError(error.issues.join('; '));
    throw error;
  }
}

/** `revoke events`: the stream's events from the start (or --from), one a line; with --follow, new ones as they come until Ctrl-C. */
export async function events(values: Flags): Promise<void> {
  const settings = eventSource(values);
  const topology = redisTopology(settings);
  await pingRedis(topology, 'revocation-cli').catch((error: unknown) => {
    throw new Error(`cannot reach Redis: ${(error as Error).message}`);
  });
  // once connected, an outage is waited out (and said once on stderr)
  const redis = connectRedis(topology, { name: 'revocation-cli', whenDown: 'wait' });
  let down = false;
  redis.on('error', (error: Error) => {
    if (!down) process.stderr.write(`revoke: Redis: ${error.message}; retrying\n`);
    down = true;
  });
  redis.on('ready', () => (down = false));
  const stream = settings.EVENTS_STREAM;
  let printed = 0;
  /** Writes a line, waiting while a slow reader (a pipe) has not taken the ones before. */
  const print = async (line: string) => {
    printed++;
    if (!process.stdout.write(`${line}\n`)) await once(process.stdout, 'drain');
  };
  let last = values.from ?? (values.follow ? '$' : '0');
  let stopping = false;
  process.on('SIGINT', () => {
    stopping = true;
    redis.disconnect();
  });
  try {
    for (;;) {
      const reply = values.follow ? await redis.xread('COUNT', 500, 'BLOCK', 5000, 'STREAMS', stream, last) : await redis.xread('COUNT', 500, 'STREAMS', stream, last);
      const entries = reply?.[0]?.[1] ?? [];
      for (const [id, fields] of entries) {
        last = id;
        const raw = fields[fields.indexOf(EVENT_FIELD) + 1] ?? '{}';
        if (values.json) await print(raw);
        else {
          const e = JSON.parse(raw) as { type: string; job_id: string; occurred_at: string; data: Record<string, unknown> };
          const detail = Array.isArray(e.data.token_ids) ? `${e.data.token_ids.length} token IDs` : JSON.stringify(e.data).slice(0, 160);
          await print(`${id}  ${e.occurred_at}  ${e.type.padEnd(24)} job ${e.job_id}  ${detail}`);
        }
      }
      if (!values.follow && entries.length === 0) break;
    }
    if (printed === 0 && !values.follow) process.stderr.write(`revoke: no events in stream ${stream}${values.from ? ` after ${values.from}` : ''}\n`);
  } catch (error) {
    if (!stopping) throw error;
  } finally {
    redis.disconnect();
  }
}
