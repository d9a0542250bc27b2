import type { FastifyInstance } from 'fastify';
import client from 'prom-client';

// Metrics live in prom-client's default registry, so one /metrics shows the producer's and, in
// `npm start`, the worker's. Labels never hold IDs: routes are templates, not URLs.
client.collectDefaultMetrics({ prefix: 'revocation_' });

const httpRequests = new client.Counter({
  name: 'revocation_http_requests_total',
  help: 'HTTP requests answered, by method, route template and status code.',
  labelNames: ['method', 'route', 'status'] as const,
});

const httpDuration = new client.Histogram({
  name: 'revocation_http_request_duration_seconds',
  help: 'Time to answer an HTTP request, by method and route template.',
  labelNames: ['method', 'route'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
});

/** Credential cache lookups of routes that may use it (producer/plugins/credential-cache.ts). */
export const credentialCacheLookups = new client.Counter({
  name: 'revocation_credential_cache_lookups_total',
  help: 'Credential cache lookups on command routes: hit (no lookup query), miss, or expired (the token expired since it was cached).',
  labelNames: ['outcome'] as const,
});

/** Counts every answer and serves GET /metrics (Prometheus text format, no credential). */
export function registerMetrics(app: FastifyInstance): void {
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    if (route === '/metrics') return;
    httpRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });
  app.get('/metrics', { config: { public: true, family: 'native' }, schema: { hide: true } }, async (_request, reply) => {
    return reply.type(client.register.contentType).send(await client.register.metrics());
  });
}
