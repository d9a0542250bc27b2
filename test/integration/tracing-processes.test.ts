import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE, type CommandJobData } from '../../contracts/index.js';
import { createCollection, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { killChildren, PROJECT_ROOT, producerEnv, type ServiceProcess, spawnProducer, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { freePort } from '../helpers/redis-server.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Traces across processes (observability/tracing.ts): a producer process and a worker process,
 * as `npm run producer` and `npm run worker` run them, export their spans by OTLP/HTTP to a
 * collector of this test (the producer in protobuf, the default; the worker in JSON), and the
 * worker's spans continue the producer's trace through the context its job carried. With
 * OTEL_EXPORTER_OTLP_ENDPOINT unset the same processes load no module of OpenTelemetry but its
 * API, which prom-client loads for its exemplars (no-op without an SDK): each records, as it
 * exits, every CommonJS module it loaded (test/helpers/record-loaded-modules.cjs).
 */

interface Export {
  contentType: string;
  body: Buffer;
}

/** An OTLP/HTTP collector on loopback: keeps every export it receives. */
async function startCollector(): Promise<{ url: string; exports: Export[]; close(): Promise<void> }> {
  const exports: Export[] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const contentType = request.headers['content-type'] ?? '';
      if (request.method === 'POST' && request.url === '/v1/traces') exports.push({ contentType, body: Buffer.concat(chunks) });
      // an empty ExportTraceServiceResponse: every span accepted
      response.writeHead(200, { 'content-type': contentType }).end(contentType.includes('json') ? '{}' : '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, exports, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** The spans of the JSON exports, with their resource's service.name. */
function jsonSpans(exports: readonly Export[]): JsonSpan[] {
  return exports
    .filter((e) => e.contentType.includes('json'))
    .flatMap((e) => (JSON.parse(e.body.toString('utf8')) as OtlpJson).resourceSpans)
    .flatMap((r) => {
      const service = r.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
      return r.scopeSpans.flatMap((s) => s.spans.map((span) => ({ ...span, service })));
    });
}

/** The bodies of the protobuf exports, end to end. */
function protobufBodies(exports: readonly Export[]): Buffer {
  return Buffer.concat(exports.filter((e) => e.contentType.includes('protobuf')).map((e) => e.body));
}

interface OtlpJson {
  resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: Omit<JsonSpan, 'service'>[] }[] }[];
}
interface JsonSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  service: string | undefined;
}

/** Modules of OpenTelemetry but its API, by the files they load from. */
const openTelemetry = /node_modules\/(@opentelemetry\/(?!api\/)|bullmq-otel\/|@fastify\/otel\/)/;
const preload = `--require ${join(PROJECT_ROOT, 'test/helpers/record-loaded-modules.cjs')}`;

describe('a producer process and a worker process', () => {
  let stack: Stack;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let dir: string;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
    await createCollection(stack, 'traced');
    collector = await startCollector();
    dir = await mkdtemp(join(tmpdir(), 'tracing-test-'));
  });
  afterAll(async () => {
    await killChildren();
    await collector?.close();
    await stack?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Starts both with `env` added, submits a delete of one token, waits for its events, stops both (SIGTERM: they flush their spans). */
  async function runOne(name: string, env: { producer: Record<string, string>; worker: Record<string, string> }, headers: Record<string, string> = {}) {
    const [token] = await tokenize(stack, 'traced', [{ object: { id: name } }]);
    const modules = { producer: join(dir, `${name}-producer.txt`), worker: join(dir, `${name}-worker.txt`) };
    const producer: ServiceProcess = await spawnProducer(producerEnv(stack.config, await freePort(), 'info', { ...env.producer, NODE_OPTIONS: preload, LOADED_MODULES_FILE: modules.producer }));
    const worker: WorkerProcess = await spawnWorker(stack.config, { env: { ...env.worker, NODE_OPTIONS: preload, LOADED_MODULES_FILE: modules.worker } });
    const response = await fetch(`${producer.url}/v1/commands`, {
      method: 'POST',
      headers: { ...stack.admin, 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ type: 'tokens.delete', collection: 'traced', token_ids: [token], reason: 'AppFunctionality' }),
    });
    expect(response.status).toBe(202);
    const jobId = ((await response.json()) as { job_id: string }).job_id;
    expect(await waitForJob(stack, jobId)).toMatchObject({ state: 'succeeded' });
    await waitForEvents(stack, (events) => events.some((e) => e.type === 'command.succeeded' && e.job_id === jobId));
    const queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection: stack.redis, prefix: stack.config.QUEUE_PREFIX });
    const job = await queue.getJob(jobId);
    await queue.close();
    for (const child of [producer, worker]) child.signal('SIGTERM');
    expect([await producer.exited, await worker.exited]).toEqual([
      { code: 0, signal: null },
      { code: 0, signal: null },
    ]);
    const loaded = { producer: (await readFile(modules.producer, 'utf8')).split('\n'), worker: (await readFile(modules.worker, 'utf8')).split('\n') };
    return { jobId, job: job!, loaded };
  }

  it('with OTEL_EXPORTER_OTLP_ENDPOINT set, export one trace: the worker continues the producer’s, through the context in the job', { timeout: 120_000 }, async () => {
    const traceId = randomBytes(16).toString('hex');
    const { job, loaded } = await runOne(
      'on',
      { producer: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url }, worker: { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' } },
      { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` },
    );
    // the job carries the producer's span that added it
    const carried = JSON.parse(job.opts.telemetry!.metadata!) as { traceparent: string };
    const [, carriedTrace, addSpan] = carried.traceparent.split('-');
    expect(carriedTrace).toBe(traceId);

    // the producer's spans, in protobuf: the trace, the add span and the span names are in them
    const protobuf = protobufBodies(collector.exports);
    for (const bytes of [Buffer.from(traceId, 'hex'), Buffer.from(addSpan!, 'hex')]) expect(protobuf.includes(bytes)).toBe(true);
    for (const text of ['revocation-producer', 'POST /v1/commands', 'record command', 'add commands.command']) expect(protobuf.includes(Buffer.from(text))).toBe(true);

    // the worker's, in JSON: its span of the job is a child of the producer's add span
    const spans = jsonSpans(collector.exports).filter((s) => s.traceId === traceId);
    const named = (name: string) => spans.filter((s) => s.name === name);
    expect(named('process commands')).toHaveLength(1);
    const processed = named('process commands')[0]!;
    expect(processed).toMatchObject({ service: 'revocation-worker', parentSpanId: addSpan, kind: 5 }); // SPAN_KIND_CONSUMER
    expect(named('transaction').map((s) => s.parentSpanId)).toEqual([processed.spanId]);
    expect(named('XADD').map((s) => s.parentSpanId)).toEqual([processed.spanId]);

    for (const list of [loaded.producer, loaded.worker]) expect(list.some((file) => file.includes('node_modules/@opentelemetry/sdk-trace-node/'))).toBe(true);
    expect(loaded.producer.some((file) => file.includes('node_modules/@fastify/otel/'))).toBe(true);
    expect(loaded.worker.some((file) => file.includes('node_modules/bullmq-otel/'))).toBe(true);
  });

  it('with it unset, load no module of OpenTelemetry (but the API prom-client loads) and export nothing', { timeout: 120_000 }, async () => {
    const before = collector.exports.length;
    const { loaded } = await runOne('off', { producer: {}, worker: {} });
    for (const list of [loaded.producer, loaded.worker]) {
      expect(list.some((file) => file.includes('node_modules/bullmq/'))).toBe(true); // what it loaded is recorded
      expect(list.filter((file) => openTelemetry.test(file))).toEqual([]);
    }
    expect(collector.exports.length).toBe(before);
  });
});
