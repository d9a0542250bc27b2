import fastifyRateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import type { RedisClient } from '../../db/redis-connection.js';
import { AppError } from '../../contracts/index.js';

export interface RateLimitOptions {
  /** Requests per subject per window; 0 turns limiting off. */
  max: number;
  windowSeconds: number;
  /** Counters live in Redis, so every producer instance shares them. */
  redis: RedisClient;
  prefix: string;
}

/**
 * Per-subject rate limiting: 429 PV1011 with Retry-After in the route's envelope. Runs after
 * authentication (so the key is the subject, not an address), never on public routes (health
 * checks, docs, metrics), and lets requests through if Redis cannot count them.
 */
export async function registerRateLimit(app: FastifyInstance, options: RateLimitOptions): Promise<void> {
  if (options.max === 0) return;
  await app.register(fastifyRateLimit, {
    global: true,
    hook: 'preHandler',
    max: options.max,
    timeWindow: options.windowSeconds * 1000,
    redis: options.redis,
    nameSpace: `${options.prefix}:rate-limit:`,
    skipOnError: true,
    allowList: (request) => request.routeOptions.config?.public === true || !request.caller,
    keyGenerator: (request) => `subject:${request.caller?.subject.id ?? request.ip}`,
    errorResponseBuilder: (_request, context) =>
      new AppError('PV1011', { limit: context.max, window_seconds: options.windowSeconds }, `Too many requests: at most ${context.max} per ${options.windowSeconds} s; retry in ${context.after}.`, {
        'retry-after': String(Math.max(1, Math.ceil(context.ttl / 1000))),
      }),
  });
}
