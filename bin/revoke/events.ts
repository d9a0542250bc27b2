import { ConfigError, EVENT_FIELD, loadRedisSettings, redisTopology } from '../../contracts/index.js';
import { connectRedis } from '../../db/redis-connection.js';
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
  const redis = connectRedis(redisTopology(settings), { name: 'revocation-cli', whenDown: 'wait' });
  const stream = settings.EVENTS_STREAM;
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
        if (values.json) process.stdout.write(`${raw}\n`);
        else {
          const e = JSON.parse(raw) as { type: string; job_id: string; occurred_at: string; data: Record<string, unknown> };
          const detail = Array.isArray(e.data.token_ids) ? `${e.data.token_ids.length} token IDs` : JSON.stringify(e.data).slice(0, 160);
          process.stdout.write(`${id}  ${e.occurred_at}  ${e.type.padEnd(24)} job ${e.job_id}  ${detail}\n`);
        }
      }
      if (!values.follow && entries.length === 0) break;
    }
  } catch (error) {
    if (!stopping) throw error;
  } finally {
    redis.disconnect();
  }
}
