import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, createCollection, subjectWithToken, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/g;
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i;
const DELETE_ROUTE = '/api/pvlt/1.0/data/collections/:collection/tokens';

/** Parses the Prometheus text exposition format; throws on a line that is not in it. */
function parseMetrics(text: string): { samples: Sample[]; types: Map<string, string>; helps: Set<string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (comment) {
      if (comment[1] === 'TYPE') types.set(comment[2]!, comment[3]!);
      else helps.add(comment[2]!);
      continue;
    }
    const match = SAMPLE_LINE.exec(line);
    if (!match) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    const labelText = match[2] ?? '';
    let consumed = 0;
    for (const label of labelText.matchAll(LABEL)) {
      labels[label[1]!] = label[2]!;
      consumed += label[0].length;
    }
    if (consumed !== labelText.length) throw new Error(`malformed labels: ${line}`);
    // values are Go floats: Prometheus accepts NaN and ±Inf in any case (prom-client writes `Nan`)
    const raw = match[3]!;
    const value = /^nan$/i.test(raw) ? NaN : /^\+?inf$/i.test(raw) ? Infinity : /^-inf$/i.test(raw) ? -Infinity : Number(raw);
    if (Number.isNaN(value) && !/^nan$/i.test(raw)) throw new Error(`malformed value: ${line}`);
    samples.push({ name: match[1]!, labels, value });
  }
  return { samples, types, helps };
}

/** The family a sample belongs to (histogram samples carry a suffix). */
function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return types.get(base) === 'histogram' || types.get(base) === 'summary' ? base : undefined;
}

describe('GET /metrics', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, 'cards');
  });
  afterAll(() => stack?.close());

  async function scrape(): Promise<{ text: string; samples: Sample[] }> {
    const response = await fetch(`${stack.producer.url}/metrics`);
    expect(response.status).toBe(200);
    const text = await response.text();
    return { text, samples: parseMetrics(text).samples };
  }

  /** The sum of every series of `name` whose labels include `labels`. */
  async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const { samples } = await scrape();
    return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
  }

  it('answers without a credential in the Prometheus text format', async () => {
    const response = await fetch(`${stack.producer.url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const { samples, types, helps } = parseMetrics(await response.text());
    expect(samples.length).toBeGreaterThan(0);
    for (const sample of samples) {
      const family = familyOf(sample.name, types);
      expect(family, `${sample.name} has a # TYPE line`).toBeDefined();
      expect(helps.has(family!), `${family} has a # HELP line`).toBe(true);
    }
    expect(types.get('revocation_http_requests_total')).toBe('counter');
    expect(types.get('revocation_http_request_duration_seconds')).toBe('histogram');
    expect(types.get('revocation_commands_total')).toBe('counter');
    expect(types.get('revocation_job_duration_seconds')).toBe('histogram');
    expect(types.get('revocation_transaction_retries_total')).toBe('counter');
    expect(types.get('revocation_reconciler_requeued_total')).toBe('counter');
    expect(types.get('revocation_events_published_total')).toBe('counter');
    expect(types.get('revocation_outbox_lag_seconds')).toBe('gauge');
    expect(types.get('revocation_queue_jobs')).toBe('gauge');
    expect(types.get('revocation_group_commit_size')).toBe('histogram');
  });

  it('counts a succeeded delete: its command, its HTTP route template, its job duration and its events', async () => {
    const ids = await tokenize(stack, 'cards', [
      { object: { id: 'm1' }, tags: ['metrics-ok'] },
      { object: { id: 'm2' }, tags: ['metrics-ok'] },
    ]);
    const succeeded = { type: 'tokens.delete', outcome: 'succeeded' };
    const acceptedRequests = { method: 'DELETE', route: DELETE_ROUTE, status: '202' };
    const before = {
      commands: await metric('revocation_commands_total', succeeded),
      requests: await metric('revocation_http_requests_total', acceptedRequests),
      durations: await metric('revocation_http_request_duration_seconds_count', { method: 'DELETE', route: DELETE_ROUTE }),
      jobs: await metric('revocation_job_duration_seconds_count', { type: 'tokens.delete' }),
      events: await metric('revocation_events_published_total'),
    };

    const accepted = await call(stack, 'DELETE', '/api/pvlt/1.0/data/collections/cards/tokens?tags=metrics-ok&reason=AppFunctionality', { headers: { ...stack.admin, prefer: 'respond-async' } });
    expect(accepted.status).toBe(202);
    const job = await waitForJob(stack, accepted.body.job_id);
    expect(job).toMatchObject({ state: 'succeeded', result: { deleted: ids.length } });
    await waitForEvents(stack, (es) => es.some((e) => e.type === 'command.succeeded' && e.job_id === job.job_id));

    await expect.poll(() => metric('revocation_commands_total', succeeded)).toBe(before.commands + 1);
    await expect.poll(() => metric('revocation_http_requests_total', acceptedRequests)).toBe(before.requests + 1);
    await expect.poll(() => metric('revocation_http_request_duration_seconds_count', { method: 'DELETE', route: DELETE_ROUTE })).toBe(before.durations + 1);
    await expect.poll(() => metric('revocation_job_duration_seconds_count', { type: 'tokens.delete' })).toBe(before.jobs + 1);
    // tokens.deleted and command.succeeded
    await expect.poll(() => metric('revocation_events_published_total')).toBeGreaterThanOrEqual(before.events + 2);
  });

  it('reports the queue by state and the outbox lag', async () => {
    const { samples } = await scrape();
    const queueStates = samples.filter((s) => s.name === 'revocation_queue_jobs').map((s) => s.labels.state);
    expect(new Set(queueStates)).toEqual(new Set(['waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized']));
    for (const s of samples.filter((x) => x.name === 'revocation_queue_jobs')) expect(s.value).toBeGreaterThanOrEqual(0);
    const lag = samples.filter((s) => s.name === 'revocation_outbox_lag_seconds');
    expect(lag).toHaveLength(1);
    expect(lag[0]!.value).toBeGreaterThanOrEqual(0);
  });

  it('counts a failed command with outcome="failed"', async () => {
    const failed = { type: 'tokens.delete', outcome: 'failed' };
    const succeeded = { type: 'tokens.delete', outcome: 'succeeded' };
    const before = { failed: await metric('revocation_commands_total', failed), succeeded: await metric('revocation_commands_total', succeeded) };

    // nothing carries this tag: the delete fails with PV3009
    const accepted = await call(stack, 'POST', '/v1/commands', {
      headers: stack.admin,
      body: { type: 'tokens.delete', collection: 'cards', tags: ['metrics-no-such-tag'], reason: 'AppFunctionality' },
    });
    expect(accepted.status).toBe(202);
    const job = await waitForJob(stack, accepted.body.job_id);
    expect(job).toMatchObject({ state: 'failed', error: { error_code: 'PV3009' } });

    await expect.poll(() => metric('revocation_commands_total', failed)).toBe(before.failed + 1);
    expect(await metric('revocation_commands_total', succeeded)).toBe(before.succeeded);
  });

  it('labels routes by template: no label value holds a UUID or a token', async () => {
    const holder = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:read'] });
    const jobId = randomUUID();
    const tokenId = randomUUID();
    // requests whose URLs carry IDs and secrets, matched and unmatched, answered and refused
    await call(stack, 'GET', `/v1/jobs/${jobId}`, { headers: stack.admin });
    await call(stack, 'GET', `/v1/jobs/${jobId}`, { headers: holder.headers });
    await call(stack, 'DELETE', `/api/pvlt/1.0/data/collections/cards/tokens?token_ids=${tokenId}&reason=AppFunctionality`, { headers: stack.admin });
    await call(stack, 'GET', `/no/such/route/${jobId}/${holder.token}`, { headers: stack.admin });
    await call(stack, 'GET', `/v1/jobs/${holder.token}`, { headers: stack.admin });
    await call(stack, 'GET', `/admin/queues/queue/commands/${jobId}`, { headers: stack.admin });
    await expect.poll(() => metric('revocation_http_requests_total', { route: '/v1/jobs/:id', status: '404' })).toBeGreaterThanOrEqual(2);

    const { text, samples } = await scrape();
    expect(text).not.toMatch(UUID);
    expect(text).not.toContain(holder.token);
    expect(text).not.toContain(holder.tokenId);
    expect(text).not.toContain(ADMIN_TOKEN);
    expect(text).not.toMatch(/rvk_[A-Za-z0-9_-]{8,}/);
    const routes = new Set(samples.filter((s) => s.name === 'revocation_http_requests_total').map((s) => s.labels.route));
    expect(routes).toContain('/v1/jobs/:id');
    expect(routes).toContain(DELETE_ROUTE);
    for (const route of routes) expect(route).not.toContain(jobId);
  });
});
