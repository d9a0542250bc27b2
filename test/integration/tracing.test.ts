import { randomBytes } from 'node:crypto';
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE, type CommandJobData } from '../../contracts/index.js';
import { startTracing } from '../../observability/tracing.js';
import { createCollection, tokenize, waitForJob } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Traces across producer and worker (observability/tracing.ts), with an in-memory exporter: a
 * producer and a worker of their own in this process, which share nothing but Postgres and
 * Redis, so the worker's spans can only find their parent through the job. (Across processes,
 * by OTLP, and with tracing off: tracing-processes.test.ts.)
 */

const exporter = new InMemorySpanExporter();
let stopTracing: (() => Promise<void>) | undefined;

beforeAll(async () => {
  stopTracing = await startTracing({ OTEL_EXPORTER_OTLP_ENDPOINT: undefined, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, 'revocation-test', new SimpleSpanProcessor(exporter));
});

afterAll(async () => {
  await stopTracing?.();
});

const SpanKind = { INTERNAL: 0, SERVER: 1, CLIENT: 2, PRODUCER: 3, CONSUMER: 4 } as const;
const idOf = (span: ReadableSpan) => span.spanContext().spanId;
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;
const traceOf = (span: ReadableSpan) => span.spanContext().traceId;

/** The finished spans of `traceId`, once one named `last` is among them. */
async function spansOf(traceId: string, last: string): Promise<ReadableSpan[]> {
  let spans: ReadableSpan[] = [];
  await expect.poll(() => (spans = exporter.getFinishedSpans().filter((s) => traceOf(s) === traceId)).some((s) => s.name === last), { timeout: 10_000, interval: 50 }).toBe(true);
  return spans;
}

function one(spans: readonly ReadableSpan[], name: string | RegExp): ReadableSpan {
  const found = spans.filter((s) => (typeof name === 'string' ? s.name === name : name.test(s.name)));
  expect(found.map((s) => s.name)).toHaveLength(1);
  return found[0]!;
}

async function submitDelete(stack: Stack, collection: string, tokenId: string, headers: Record<string, string> = {}): Promise<string> {
  const response = await fetch(`${stack.producer.url}/v1/commands`, {
    method: 'POST',
    headers: { ...stack.admin, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ type: 'tokens.delete', collection, token_ids: [tokenId], reason: 'AppFunctionality' }),
  });
  expect(response.status).toBe(202);
  return ((await response.json()) as { job_id: string }).job_id;
}

describe('one trace from the HTTP request to the XADD of the events', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, 'traced');
  });
  afterAll(() => stack?.close());

  it('request → command insert → queue.add → (the job) → process → transaction and XADD, each the parent of the next', async () => {
    const [token] = await tokenize(stack, 'traced', [{ object: { id: 'o1' } }]);
    // the caller's own trace: the request joins it (W3C traceparent)
    const traceId = randomBytes(16).toString('hex');
    const callerSpan = randomBytes(8).toString('hex');
    const jobId = await submitDelete(stack, 'traced', token!, { traceparent: `00-${traceId}-${callerSpan}-01` });
    expect(await waitForJob(stack, jobId)).toMatchObject({ state: 'succeeded' });
    const spans = await spansOf(traceId, 'XADD');

    const request = one(spans, 'POST /v1/commands');
    expect(request.kind).toBe(SpanKind.SERVER);
    expect(parentOf(request)).toBe(callerSpan);
    expect(request.attributes['http.response.status_code']).toBe(202);
    const handler = one(spans, 'handler - serviceRoutes');
    expect(parentOf(handler)).toBe(idOf(request));
    const record = one(spans, 'record command');
    expect(parentOf(record)).toBe(idOf(handler));
    expect(record.attributes).toMatchObject({ 'revocation.command_id': jobId, 'revocation.command_type': 'tokens.delete' });
    const add = one(spans, 'add commands.command');
    expect(add.kind).toBe(SpanKind.PRODUCER);
    expect(parentOf(add)).toBe(idOf(record));

    // the job carries the context: the add span, which is the parent of the worker's span
    const queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection: stack.redis, prefix: stack.config.QUEUE_PREFIX });
    const job = await queue.getJob(jobId);
    await queue.close();
    const carried = JSON.parse(job!.opts.telemetry!.metadata!) as { traceparent: string };
    expect(carried.traceparent).toBe(`00-${traceId}-${idOf(add)}-01`);
    const processed = one(spans, 'process commands');
    expect(processed.kind).toBe(SpanKind.CONSUMER);
    expect(parentOf(processed)).toBe(idOf(add));
    expect(processed.attributes['bullmq.job.id']).toBe(jobId);

    const transaction = one(spans, 'transaction');
    expect(parentOf(transaction)).toBe(idOf(processed));
    const xadd = one(spans, 'XADD');
    expect(xadd.kind).toBe(SpanKind.CLIENT);
    expect(parentOf(xadd)).toBe(idOf(processed));
    expect(xadd.attributes['revocation.events']).toBeGreaterThanOrEqual(2); // tokens.deleted, command.succeeded
    // in order: the XADD starts after the transaction ended (to the millisecond: a span's start
    // time may be taken from the wall clock, which has no finer grain)
    const ms = ([seconds, nanos]: readonly [number, number]) => seconds * 1000 + Math.floor(nanos / 1e6);
    expect(ms(xadd.startTime)).toBeGreaterThanOrEqual(ms(transaction.endTime));
  });

  it('starts a trace of its own for a request that brings none; untraced probes make no span', async () => {
    const [token] = await tokenize(stack, 'traced', [{ object: { id: 'o2' } }]);
    const before = exporter.getFinishedSpans().length;
    expect((await fetch(`${stack.producer.url}/healthz`)).status).toBe(200);
    const jobId = await submitDelete(stack, 'traced', token!);
    expect(await waitForJob(stack, jobId)).toMatchObject({ state: 'succeeded' });
    const findRecord = () => exporter.getFinishedSpans().find((s) => s.name === 'record command' && s.attributes['revocation.command_id'] === jobId);
    await expect.poll(findRecord, { timeout: 10_000 }).toBeDefined();
    const record = findRecord()!;
    const spans = await spansOf(traceOf(record), 'XADD');
    expect(parentOf(one(spans, 'POST /v1/commands'))).toBeUndefined();
    expect(spans.map((s) => s.name)).toEqual(expect.arrayContaining(['record command', 'add commands.command', 'process commands', 'transaction', 'XADD']));
    expect(
      exporter
        .getFinishedSpans()
        .slice(before)
        .filter((s) => s.name.includes('healthz')),
    ).toEqual([]);
  });
});

describe('a group commit: one transaction for several jobs', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false, env: { GROUP_COMMIT_LANES: '1', WORKER_CONCURRENCY: '16' } });
    await createCollection(stack, 'grouped');
  });
  afterAll(() => stack?.close());

  it("is one span in the first job's trace, linked to every job it committed; each job's XADD stays in a trace of its jobs", async () => {
    const tokens = await tokenize(
      stack,
      'grouped',
      Array.from({ length: 12 }, (_, i) => ({ object: { id: `g${i}` } })),
    );
    // the jobs wait while the worker starts, then come at once: all but the first share groups
    const queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection: stack.redis, prefix: stack.config.QUEUE_PREFIX });
    await queue.pause();
    const ids = await Promise.all(tokens.map((token) => submitDelete(stack, 'grouped', token)));
    await stack.startWorker();
    await queue.resume();
    await queue.close();
    for (const id of ids) expect(await waitForJob(stack, id)).toMatchObject({ state: 'succeeded' });

    const finished = () => exporter.getFinishedSpans();
    // every job's worker span, by job
    let processed = new Map<string, ReadableSpan>();
    await expect
      .poll(
        () =>
          (processed = new Map(finished().flatMap((s) => (s.name === 'process commands' && ids.includes(String(s.attributes['bullmq.job.id'])) ? [[String(s.attributes['bullmq.job.id']), s]] : []))))
            .size,
        { timeout: 10_000 },
      )
      .toBe(ids.length);
    const processSpans = new Set([...processed.values()].map(idOf));
    // each job in the trace of its own request, though the producer added the jobs in batches
    const recorded = new Map(finished().flatMap((s) => (s.name === 'record command' ? [[String(s.attributes['revocation.command_id']), traceOf(s)]] : [])));
    for (const [id, span] of processed) expect(traceOf(span)).toBe(recorded.get(id));
    expect(new Set([...processed.values()].map(traceOf)).size).toBe(ids.length);
    const groups = finished().filter((s) => s.name === 'transaction' && Number(s.attributes['revocation.group_commit.steps']) > 1 && s.links.some((l) => processSpans.has(l.context.spanId)));
    expect(groups.length).toBeGreaterThan(0);
    for (const group of groups) {
      const linked = group.links.map((l) => l.context.spanId);
      expect(linked).toHaveLength(Number(group.attributes['revocation.group_commit.steps']));
      expect(linked.every((id) => processSpans.has(id))).toBe(true);
      // its parent is the first job it linked to, in that job's trace
      expect(parentOf(group)).toBe(linked[0]);
      expect(traceOf(group)).toBe(group.links[0]!.context.traceId);
      for (const link of group.links) expect(link.context.traceId).toBe(traceOf([...processed.values()].find((s) => idOf(s) === link.context.spanId)!));
    }
    // every job's step committed in a transaction traced under it or linked to it
    const solo = finished().filter((s) => s.name === 'transaction' && processSpans.has(parentOf(s) ?? ''));
    for (const span of processed.values()) expect(solo.some((t) => parentOf(t) === idOf(span)) || groups.some((g) => g.links.some((l) => l.context.spanId === idOf(span)))).toBe(true);
    // the XADDs of their events: under a group's span (handed over at its commit) or a job's own
    const traces = new Set([...processed.values()].map(traceOf));
    const xadds = () => finished().filter((s) => s.name === 'XADD' && traces.has(traceOf(s)));
    await expect.poll(() => xadds().reduce((n, s) => n + Number(s.attributes['revocation.events']), 0), { timeout: 10_000 }).toBeGreaterThanOrEqual(2 * ids.length);
    const groupSpans = new Set(groups.map(idOf));
    for (const xadd of xadds()) expect(groupSpans.has(parentOf(xadd)!) || processSpans.has(parentOf(xadd)!)).toBe(true);
    expect(xadds().some((xadd) => groupSpans.has(parentOf(xadd)!))).toBe(true);
  });
});
