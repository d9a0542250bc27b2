import { randomBytes, randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { insertAccessToken } from '../../db/repositories/access-token.repository.js';
import { hashSecret, newSecret } from '../../producer/secrets.js';
import { sleep } from './sleep.js';
import type { Stack } from './stack.js';

type Method = 'GET' | 'POST' | 'DELETE';

/** A name no other test has: `prefix_` and ten hex digits (a collection name or an ID, if `prefix` is one). */
export const uid = (prefix: string) => `${prefix}_${randomBytes(5).toString('hex')}`;

/** Calls the producer in-process; returns status, headers and the parsed JSON body. */
export async function call(stack: Stack, method: Method, url: string, options: { headers?: Record<string, string>; body?: unknown } = {}) {
  const response: LightMyRequestResponse = await stack.producer.app.inject({
    method,
    url,
    headers: { ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}), ...options.headers },
    ...(options.body !== undefined ? { payload: JSON.stringify(options.body) } : {}),
  });
  const text = response.body;
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  return { status: response.statusCode, headers: response.headers, body: json };
}

export function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

export interface SubjectSpec {
  id?: string;
  kind: 'user' | 'provider' | 'service';
  domain_id?: string;
  capabilities?: string[];
  tenant_ids?: string[] | null;
  collections?: string[] | null;
}

/** Creates a subject with the admin credential and issues it a named token; returns its secret. */
export async function subjectWithToken(stack: Stack, spec: SubjectSpec, token: { temporary: boolean; ttl_seconds?: number } = { temporary: false }) {
  const created = await call(stack, 'POST', '/v1/subjects', { headers: stack.admin, body: spec });
  if (created.status !== 201) throw new Error(`subject: ${created.status} ${JSON.stringify(created.body)}`);
  const issued = await call(stack, 'POST', `/v1/subjects/${created.body.id}/tokens`, { headers: stack.admin, body: token });
  if (issued.status !== 201) throw new Error(`token: ${issued.status} ${JSON.stringify(issued.body)}`);
  return { subject: created.body, token: issued.body.token as string, tokenId: issued.body.token_id as string, headers: bearer(issued.body.token) };
}

/** Issues `subjectId` an access token as the admin (by default a temporary one of ten minutes); returns its secret, ID, expiry and generation. */
export async function issueToken(stack: Stack, subjectId: string, body: { temporary: boolean; ttl_seconds?: number; name?: string } = { temporary: true, ttl_seconds: 600 }) {
  const r = await call(stack, 'POST', `/v1/subjects/${subjectId}/tokens`, { headers: stack.admin, body });
  if (r.status !== 201) throw new Error(`token: ${r.status} ${JSON.stringify(r.body)}`);
  return { token: r.body.token as string, tokenId: r.body.token_id as string, expiresAt: r.body.expires_at as string | null, generation: r.body.generation as number | null };
}

/** A temporary token of `subjectId`, of generation 0, that expired an hour ago, written straight to the database. */
export async function insertExpiredToken(stack: Stack, subjectId: string) {
  const secret = newSecret();
  const expiresAt = new Date(Date.now() - 3600_000);
  const row = await insertAccessToken(stack.database.db, {
    id: randomUUID(),
    subject_id: subjectId,
    secret_hash: hashSecret(secret),
    name: null,
    temporary: true,
    generation: 0,
    expires_at: expiresAt,
  });
  return { token: secret, tokenId: row.id, expiresAt: expiresAt.toISOString() };
}

export async function createCollection(stack: Stack, name: string): Promise<void> {
  const r = await call(stack, 'POST', '/v1/collections', { headers: stack.admin, body: { name } });
  if (r.status !== 201) throw new Error(`collection: ${r.status} ${JSON.stringify(r.body)}`);
}

/** Creates a collection of a name no other test has (see `uid`) as the admin; returns its name. */
export async function freshCollection(stack: Stack, prefix = 'c'): Promise<string> {
  const name = uid(prefix);
  await createCollection(stack, name);
  return name;
}

/** Tokenizes items into a collection as the admin (or `headers`); returns the token IDs. */
export async function tokenize(stack: Stack, collection: string, items: unknown[], headers: Record<string, string> = stack.admin, query = ''): Promise<string[]> {
  const r = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${collection}/tokens?reason=AppFunctionality${query}`, { headers, body: items });
  if (r.status !== 200) throw new Error(`tokenize: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.map((t: { token_id: string }) => t.token_id);
}

/** Creates `collection` and tokenizes `count` objects into it (`o0`, `o1`, …) as the admin; returns the token IDs in order. */
export async function collectionOfTokens(stack: Stack, collection: string, count: number): Promise<string[]> {
  await createCollection(stack, collection);
  return tokenize(
    stack,
    collection,
    Array.from({ length: count }, (_, i) => ({ object: { id: `o${i}` } })),
  );
}

/** Submits a command with POST /v1/commands as the admin (`headers` added); returns its job ID once accepted (202). */
export async function submitCommand(stack: Stack, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<string> {
  const r = await call(stack, 'POST', '/v1/commands', { headers: { ...stack.admin, ...headers }, body });
  if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.job_id as string;
}

/** Polls the job until it ends (or `timeoutMs`); returns its last view. */
export async function waitForJob(stack: Stack, jobId: string, headers: Record<string, string> = stack.admin, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await call(stack, 'GET', `/v1/jobs/${jobId}`, { headers });
    if (r.body?.state === 'succeeded' || r.body?.state === 'failed' || r.body?.state === 'cancelled' || Date.now() > deadline) return r.body;
    await sleep(25);
  }
}

/** Waits until `predicate` holds for the stack's events, or fails after `timeoutMs`. */
export async function waitForEvents(stack: Stack, predicate: (events: Awaited<ReturnType<Stack['events']>>) => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = await stack.events();
    if (predicate(events)) return events;
    if (Date.now() > deadline) throw new Error(`events did not arrive; have ${events.length}: ${events.map((e) => e.type).join(', ')}`);
    await sleep(50);
  }
}
