import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandTypes } from '../../contracts/index.js';
import { servedRoutes } from '../helpers/routes.js';
import { type Stack, startStack } from '../helpers/stack.js';

type Operation = { parameters?: { in: string; name: string; required?: boolean }[]; requestBody?: { content?: Record<string, { schema?: JsonSchema }> } };
type JsonSchema = { oneOf?: JsonSchema[]; anyOf?: JsonSchema[]; properties?: Record<string, JsonSchema>; required?: string[]; enum?: unknown[]; const?: unknown };
type OpenApiDocument = { openapi: string; info: { title: string; version: string }; paths: Record<string, Record<string, Operation>> };

const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);

/** Every route of SPEC §6 (documented methods and paths, OpenAPI templates). */
const SPEC_ROUTES = [
  'POST /v1/commands',
  'GET /v1/jobs/{id}',
  'POST /v1/jobs/{id}/cancel',
  'GET /v1/jobs',
  'POST /v1/collections',
  'POST /api/pvlt/1.0/data/collections/{collection}/tokens',
  'POST /api/pvlt/1.0/data/collections/{collection}/query/tokens',
  'GET /api/pvlt/1.0/data/collections/{collection}/count/tokens',
  'DELETE /api/pvlt/1.0/data/collections/{collection}/tokens',
  'POST /api/pvlt/1.0/data/collections/{collection}/rotate/tokens',
  'DELETE /v3/auth/tokens',
  'DELETE /api/v3/onezone/provider/tokens/temporary',
  'DELETE /api/v3/onezone/users/{id}/tokens/temporary',
  'GET /api/v3/onezone/provider/tokens/temporary',
  'GET /api/v3/onezone/users/{id}/tokens/temporary',
  'POST /v1/subjects',
  'POST /v1/subjects/{id}/tokens',
  'GET /v1/auth/verify',
  // SPEC §10
  'GET /v1/subjects/{id}',
  'PATCH /v1/subjects/{id}',
  'GET /v1/subjects/{id}/tokens',
  'GET /readyz',
];

/**
 * Routes Fastify serves that are not part of the API document on purpose: the documentation
 * itself, the queue dashboard (a browser UI), and the operational endpoints the code marks
 * `schema: { hide: true }` (liveness and the Prometheus scrape).
 */
function isOutsideApi(path: string): boolean {
  return path.startsWith('/docs') || path.startsWith('/admin/queues') || path === '/healthz' || path === '/metrics';
}

function documentedRoutes(doc: OpenApiDocument): string[] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.keys(item)
      .filter((key) => HTTP_METHODS.has(key))
      .map((method) => `${method.toUpperCase()} ${path}`),
  );
}

describe('the OpenAPI document at /docs', () => {
  let stack: Stack;
  let doc: OpenApiDocument;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    const response = await fetch(`${stack.producer.url}/docs/json`);
    doc = (await response.json()) as OpenApiDocument;
  });
  afterAll(() => stack?.close());

  it('is served as JSON at /docs/json without a credential', async () => {
    const response = await fetch(`${stack.producer.url}/docs/json`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await response.json()) as OpenApiDocument;
    expect(body.openapi).toMatch(/^3\./);
    expect(body.info.title).toBe('Revocation service');
  });

  it('is a valid OpenAPI 3 document', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc));
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toMatch(/^3\./);
  });

  it('declares every path template parameter as a required path parameter', () => {
    for (const [path, item] of Object.entries(doc.paths)) {
      const names = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      for (const [method, operation] of Object.entries(item)) {
        if (!HTTP_METHODS.has(method)) continue;
        const declared = (operation.parameters ?? []).filter((p) => p.in === 'path');
        expect(declared.map((p) => p.name).sort(), `${method.toUpperCase()} ${path}`).toEqual([...names].sort());
        for (const parameter of declared) expect(parameter.required, `${method.toUpperCase()} ${path} {${parameter.name}}`).toBe(true);
      }
    }
  });

  it('documents every route of SPEC §6 with its method', () => {
    const documented = new Set(documentedRoutes(doc));
    const missing = SPEC_ROUTES.filter((route) => !documented.has(route));
    expect(missing).toEqual([]);
  });

  it('documents every API route Fastify serves, and documents no route it does not serve', () => {
    // HEAD left out (Fastify adds it to every GET); paths in OpenAPI form (`{id}`)
    const served = servedRoutes(stack.producer.app)
      .filter((r) => r.method !== 'HEAD')
      .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}')}`);
    // the parser saw the tree: the routes every install has are in it
    expect(served).toEqual(expect.arrayContaining(['POST /v1/commands', 'GET /v1/jobs/{id}', 'GET /healthz', 'GET /metrics']));
    const api = served.filter((route) => !isOutsideApi(route.split(' ')[1] ?? ''));
    expect(new Set(documentedRoutes(doc))).toEqual(new Set(api));
    for (const route of documentedRoutes(doc)) {
      const [method, path] = route.split(' ') as [string, string];
      expect(stack.producer.app.hasRoute({ method: method, url: path.replace(/\{(\w+)\}/g, ':$1') }), route).toBe(true);
    }
  });

  it('gives POST /v1/commands a JSON request body schema with every command type', () => {
    const schema = doc.paths['/v1/commands']?.post?.requestBody?.content?.['application/json']?.schema;
    expect(schema).toBeDefined();
    const members = schema?.oneOf ?? schema?.anyOf ?? [];
    const types = members.flatMap((member) => {
      const tag = member.properties?.type;
      return tag?.const !== undefined ? [tag.const] : (tag?.enum ?? []);
    });
    expect(new Set(types)).toEqual(new Set(commandTypes));
    expect(types).toHaveLength(commandTypes.length);
    expect(types).toEqual(expect.arrayContaining(['subject.lockout', 'subject.unlock']));
    for (const member of members) expect(member.required).toContain('type');
    const byType = (type: string) => members.find((m) => m.properties?.type?.enum?.includes(type) || m.properties?.type?.const === type);
    expect(byType('tokens.delete')?.required).toContain('collection');
    expect(byType('tokens.rotate')?.required).toEqual(expect.arrayContaining(['collection', 'token_ids']));
    expect(byType('access_token.revoke')?.required).toContain('token_id');
    expect(byType('temporary_tokens.revoke_all')?.required).toContain('subject');
    expect(byType('subject.lockout')?.required).toContain('subject');
    expect(byType('subject.lockout')?.properties?.subject?.properties?.kind?.enum).toEqual(['user', 'provider', 'service']);
    expect(byType('subject.unlock')?.required).toContain('subject');
  });

  it('documents the dry run and the cancel of SPEC §10: dry_run on POST /v1/commands, its preview answer, the cancel route and the cancelled state', () => {
    type Responses = Record<string, { content?: Record<string, { schema?: JsonSchema }> }>;
    const submit = doc.paths['/v1/commands']?.post as Operation & { responses?: Responses };
    const dryRun = submit.parameters?.find((p) => p.in === 'query' && p.name === 'dry_run') as { schema?: JsonSchema } | undefined;
    expect(dryRun?.schema?.enum).toEqual(['true', 'false']);
    const answers = submit.responses?.['200']?.content?.['application/json']?.schema;
    const shapes = answers?.anyOf ?? answers?.oneOf ?? [];
    expect(shapes.map((shape) => Object.keys(shape.properties ?? {}).sort())).toEqual(expect.arrayContaining([['matches', 'missing', 'sample', 'type']]));
    const cancel = doc.paths['/v1/jobs/{id}/cancel']?.post as Operation & { responses?: Responses };
    expect(Object.keys(cancel.responses ?? {})).toEqual(expect.arrayContaining(['200', '202']));
    const view = cancel.responses?.['200']?.content?.['application/json']?.schema;
    expect(view?.properties?.state?.enum).toEqual(['queued', 'running', 'succeeded', 'failed', 'cancelled']);
  });

  it('serves the Swagger UI at /docs as HTML without a credential', async () => {
    const response = await fetch(`${stack.producer.url}/docs`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await response.text();
    expect(html).toMatch(/<html/i);
    expect(html).toMatch(/swagger/i);
  });
});
