import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';

/**
 * The OpenAPI 3 document, generated from the routes' zod schemas (no second copy of any
 * schema), at /docs/json, with Swagger UI at /docs. Must be registered before the routes.
 */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Revocation service',
        description:
          'Durable, idempotent delete / rotate / revoke-all commands. Seed routes answer as their seed does once the job has ended (at most SYNC_WAIT_SECONDS, default 30; then 503 with the job Location); `Prefer: respond-async` answers 202 with the job at once. `POST /v1/commands` answers 202 with the job; `Prefer: wait=N` waits up to N seconds for it to end. Errors: Piiano and native routes `{error_code, message, context}`, Keystone `{error: {code, title, message}}`, Onezone `{error: {id, details, description}}`.',
        version: '1.0.0',
      },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'An access token: Authorization: Bearer <token>' },
          xAuthToken: { type: 'apiKey', in: 'header', name: 'X-Auth-Token' },
        },
      },
      security: [{ bearer: [] }, { xAuthToken: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(fastifySwaggerUi, { routePrefix: '/docs' });
}
