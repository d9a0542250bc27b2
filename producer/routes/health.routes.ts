import { sql } from 'kysely';
import { z } from 'zod';
import { TIMED_OUT, timeLimit } from '../../db/time-limit.js';
import type { AppDeps } from '../app.js';
import type { ZodApp } from '../types.js';

/** Resolves when the dependency answers; throws (or rejects) otherwise. */
export type HealthProbe = () => Promise<unknown>;

const ReadyBody = z.object({
  status: z.enum(['ready', 'unavailable']),
  checks: z.record(z.string(), z.string()),
  warnings: z.array(z.string()),
});

/** Resolves with warnings about a dependency's settings; they never make the service unready. */
export type HealthAdvisor = () => Promise<string[]>;

async function check(probe: HealthProbe, timeoutMs: number): Promise<string> {
  try {
    return (await timeLimit(probe(), timeoutMs)) === TIMED_OUT ? 'error: timed out' : 'ok';
  } catch (error) {
    return `error: ${(error as Error).message}`;
  }
}

/**
 * `/healthz`: the process answers. `/readyz`: Postgres and every probe answer within 2 s
 * (else 503), with warnings about risky settings (Redis eviction policy).
 */
export function healthRoutes(app: ZodApp, deps: AppDeps): void {
  app.get('/healthz', { config: { public: true, family: 'native' }, schema: { hide: true } }, async () => ({ status: 'ok' }));

  app.get('/readyz', { config: { public: true, family: 'native' }, schema: { response: { 200: ReadyBody, 503: ReadyBody } } }, async (_request, reply) => {
    const probes: Record<string, HealthProbe> = { postgres: () => sql`select 1`.execute(deps.db), ...deps.probes };
    const names = Object.keys(probes);
    const results = await Promise.all(names.map((name) => check(probes[name]!, 2000)));
    const checks = Object.fromEntries(names.map((name, i) => [name, results[i]!]));
    const ready = results.every((r) => r === 'ok');
    const warnings = (await Promise.all((deps.advisors ?? []).map((advise) => advise().catch(() => [])))).flat();
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable', checks, warnings });
  });
}
