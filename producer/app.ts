import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { RedisClient } from '../db/redis-connection.js';
import type { Logger } from 'pino';
import { AppError, type Config } from '../contracts/index.js';
import type { Db } from '../db/database.js';
import { httpTracing } from '../observability/tracing.js';
import type { RouteFamily } from './plugins/error-envelopes.js';
import { installAuthentication } from './plugins/authenticate.js';
import type { CredentialCache } from './plugins/credential-cache.js';
import { installErrorHandling, sendError, toAppError } from './plugins/error-handler.js';
import { registerMetrics } from './plugins/metrics.js';
import { registerOpenApi } from './plugins/openapi.js';
import { registerQueueDashboard } from './plugins/queue-dashboard.js';
import { registerRateLimit } from './plugins/rate-limit.js';
import { registerSecurityHeaders } from './plugins/security-headers.js';
import type { CommandBus } from './services/command-bus.js';
import type { JobWaiter } from './services/job-waiter.js';
import { auditRoutes } from './routes/audit.routes.js';
import { collectionRoutes } from './routes/collections.routes.js';
import { commandRoutes } from './routes/commands.routes.js';
import { jobRoutes } from './routes/jobs.routes.js';
import { keystoneRoutes } from './routes/keystone.routes.js';
import { onezoneRoutes } from './routes/onezone.routes.js';
import { vaultRevocationRoutes } from './routes/vault-revocations.routes.js';
import { type HealthAdvisor, healthRoutes, type HealthProbe } from './routes/health.routes.js';
import { subjectRoutes } from './routes/subjects.routes.js';
import { vaultTokenRoutes } from './routes/vault-tokens.routes.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Set when the server is shutting down: new requests get 503 with Retry-After. */
    draining: boolean;
  }
  interface FastifyContextConfig {
    /** Which seed's error envelope this route answers in. */
    family?: RouteFamily;
    /** No credential needed (health checks). */
    public?: boolean;
    /** Look up the X-Subject-Token with the caller's credential (request.subjectToken). */
    subjectToken?: boolean;
  }
}

/** What the app is built from; the caller owns each and closes it (server.ts does). */
export interface AppDeps {
  config: Config;
  db: Db;
  logger: Logger;
  /** Records and enqueues commands. */
  bus: CommandBus;
  /** Where a request's caller comes from: a read of its credential, or lately authenticated callers. */
  credentials: CredentialCache;
  /** Waits for jobs to end (`Prefer: wait`). */
  waiter: JobWaiter;
  /** Readiness probes beyond Postgres (Redis, …), by name. */
  probes?: Record<string, HealthProbe>;
  /** Settings warnings shown by /readyz. */
  advisors?: HealthAdvisor[];
  /** Shared counters of the rate limiter; no limiting without it. */
  rateLimitRedis?: RedisClient;
}

export type App = FastifyInstance;

/** Largest request body: 10,000 tokenize items with ten tags each fit. */
export const BODY_LIMIT = 8 * 1024 * 1024;

/**
 * Builds the HTTP app without listening, so tests drive it with `app.inject`. Routes
 * authenticate, validate, record and answer; rules live in handlers, SQL in repositories.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- the instance's logger type is Fastify's, not pino's
    loggerInstance: deps.logger as FastifyBaseLogger,
    // draining requests get our own 503 (see the onRequest hook), in the route's envelope
    return503OnClosing: false,
    bodyLimit: BODY_LIMIT,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : crypto.randomUUID();
    },
    requestIdHeader: false,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 500 },
    // Errors the router raises before any route matches — a path that is not valid
    // percent-encoded UTF-8 (FST_ERR_BAD_URL), a parameter over maxParamLength
    // (FST_ERR_MAX_PARAM_LENGTH) — in the URL's family envelope (400 PV1002), not Fastify's body.
    frameworkErrors: (error, request, reply) => {
      void sendError(request, reply, toAppError(error));
    },
  });
  // before every hook and route: a request's span is active in all of them
  const tracing = httpTracing();
  if (tracing) await app.register(tracing);
  // first of the onRequest hooks, so that an answer any later hook gives (401, 503) has them too
  registerSecurityHeaders(app);
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
    // draining: the answers to requests still in flight close their keep-alive connection, or
    // the client's open connection would hold the shutdown until keepAliveTimeout (72 s)
    if (app.draining) reply.header('connection', 'close');
  });
  app.decorate('draining', false);
  app.addHook('onRequest', async () => {
    if (app.draining) throw new AppError('PV1010', {}, 'The service is shutting down; retry on another instance.', { 'retry-after': '2', connection: 'close' });
  });
  installAuthentication(app, deps.credentials);
  installErrorHandling(app, (request) => deps.credentials.confirm(request));
  // Documentation is public; it is registered before the routes so it sees them all.
  app.addHook('onRoute', (route) => {
    if (route.url.startsWith('/docs')) route.config = { ...route.config, public: true, family: 'native' };
  });
  if (deps.rateLimitRedis) {
    await registerRateLimit(app, { max: deps.config.RATE_LIMIT_MAX, windowSeconds: deps.config.RATE_LIMIT_WINDOW_SECONDS, redis: deps.rateLimitRedis, prefix: deps.config.QUEUE_PREFIX });
  }
  await registerOpenApi(app);
  registerMetrics(app);
  await registerQueueDashboard(app, deps.bus.queue);

  const typed = app.withTypeProvider<ZodTypeProvider>();
  // named: a trace's handler span is `handler - serviceRoutes` (an anonymous plugin is named by its source text)
  await typed.register(async function serviceRoutes(scope) {
    const routes = scope.withTypeProvider<ZodTypeProvider>();
    for (const register of [healthRoutes, collectionRoutes, subjectRoutes, vaultTokenRoutes, vaultRevocationRoutes, keystoneRoutes, onezoneRoutes, commandRoutes, jobRoutes, auditRoutes]) {
      register(routes, deps);
    }
  });
  return app;
}
