import type { Attributes, Context, Span, Tracer } from '@opentelemetry/api';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-node';
import type { Telemetry } from 'bullmq';
import type { FastifyPluginCallback } from 'fastify';
import type { Config } from '../contracts/index.js';

/**
 * Traces across processes (OpenTelemetry): one trace from the HTTP request through the command's
 * insert, its BullMQ job (bullmq-otel puts the trace context in the job), the worker's transaction,
 * to the XADD of its events.
 *
 * Invariant: nothing of OpenTelemetry is loaded unless startTracing turned tracing on (an
 * OTLP endpoint configured, or a test's span processor): it alone imports the SDK, the
 * exporters, bullmq-otel and @fastify/otel, and until then every helper below just runs its
 * function. (prom-client loads the API, a no-op without an SDK, for its exemplars.)
 *
 * Work done for several traces at once (a group commit's transaction, one batch of XADDs for
 * events of several commands) is one span whose parent is the first of them and which links to
 * each: the OTel way for a batch. The other jobs' traces reach it through its links.
 */

/** Tracing as started: what the helpers use. */
interface Started {
  api: typeof import('@opentelemetry/api');
  tracer: Tracer;
  /** BullMQ's telemetry option (bullmq-otel). */
  bullmq: Telemetry;
  /** The HTTP spans (@fastify/otel). */
  http: FastifyPluginCallback;
}

let started: Started | undefined;

/** A trace context to carry across a batch (what activeTrace returns). */
export type TraceContext = Context;

/** The settings tracing reads (contracts/config.ts); the SDK reads its other OTEL_* variables itself. */
export type TracingSettings = Pick<Config, 'OTEL_EXPORTER_OTLP_ENDPOINT' | 'OTEL_EXPORTER_OTLP_PROTOCOL'>;

/** Routes probed every few seconds: no trace of their own. */
const untracedRoutes = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * Turns tracing on for this process when OTEL_EXPORTER_OTLP_ENDPOINT is set (spans go there by
 * OTLP/HTTP, in batches), or when a test passes `spanProcessor` (spans go to it as well): a tracer
 * provider with `service.name` = `serviceName` (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
 * win), W3C trace-context propagation, and contexts that follow async calls. Call it before the
 * app and the BullMQ queues and workers are made. Returns what flushes the spans not yet
 * exported and turns tracing off again (call it last), or undefined when tracing stays off.
 */
export async function startTracing(settings: TracingSettings, serviceName: string, spanProcessor?: SpanProcessor): Promise<(() => Promise<void>) | undefined> {
  if (started) throw new Error('tracing is already on in this process');
  const endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!endpoint && !spanProcessor) return undefined;
  const [api, sdk, resources, { BullMQOtel }, { FastifyOtelInstrumentation }] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/resources'),
    import('bullmq-otel'),
    import('@fastify/otel'),
  ]);
  const spanProcessors = spanProcessor ? [spanProcessor] : [];
  if (endpoint) {
    // the exporter reads the endpoint, OTEL_EXPORTER_OTLP_HEADERS, … from the environment
    const { OTLPTraceExporter } =
      settings.OTEL_EXPORTER_OTLP_PROTOCOL === 'http/json' ? await import('@opentelemetry/exporter-trace-otlp-http') : await import('@opentelemetry/exporter-trace-otlp-proto');
    spanProcessors.push(new sdk.BatchSpanProcessor(new OTLPTraceExporter()));
  }
  const resource = resources
    .defaultResource()
    .merge(resources.resourceFromAttributes({ 'service.name': serviceName }))
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new sdk.NodeTracerProvider({ resource, spanProcessors });
  provider.register();
  const http = new FastifyOtelInstrumentation({
    instrumentHooks: false,
    ignorePaths: (route) => untracedRoutes.has(route.url.split('?')[0]!),
    requestHook: (span, request) => {
      if (request.routeOptions.url) span.updateName(`${request.method} ${request.routeOptions.url}`);
    },
  });
  started = { api, tracer: api.trace.getTracer('revocation-service'), bullmq: new BullMQOtel({ tracerName: 'bullmq' }), http: http.plugin() };
  return async () => {
    http.disable();
    await provider.shutdown();
    api.trace.disable();
    api.context.disable();
    api.propagation.disable();
    started = undefined;
  };
}

/** BullMQ's `telemetry` option for a Queue or a Worker: bullmq-otel when tracing is on. */
export function queueTelemetry(): { telemetry?: Telemetry } {
  return started ? { telemetry: started.bullmq } : {};
}

/** The Fastify plugin of the HTTP spans when tracing is on: register it before any hook or route. */
export function httpTracing(): FastifyPluginCallback | undefined {
  return started?.http;
}

/** The trace context active here, for work that a batch does later (undefined: tracing is off). */
export function activeTrace(): Context | undefined {
  return started?.api.context.active();
}

/** Runs `fn` with `trace` as the active context (as it is when undefined). */
export function withTrace<T>(trace: Context | undefined, fn: () => T): T {
  return started && trace ? started.api.context.with(trace, fn) : fn();
}

export interface SpanOptions {
  kind?: 'internal' | 'client';
  attributes?: Attributes;
  /**
   * The traces the work is done for: the span's parent is the first, and with more than one it
   * links to each. Without them, its parent is the active context.
   */
  traces?: readonly (Context | undefined)[];
}

/**
 * Runs `fn` in a new span `name`, active while it runs, ended when it settles (an error is
 * recorded on it, then thrown as it was). With tracing off, `fn(undefined)` and nothing else.
 */
export function inSpan<T>(name: string, fn: (span: Span | undefined) => Promise<T>, options: SpanOptions = {}): Promise<T> {
  return started ? spanned(started, name, fn, options) : fn(undefined);
}

async function spanned<T>({ api, tracer }: Started, name: string, fn: (span: Span) => Promise<T>, options: SpanOptions): Promise<T> {
  const traces = [...new Set(options.traces)].filter((trace) => trace !== undefined);
  const parent = traces[0] ?? api.context.active();
  const links = traces.length > 1 ? traces.flatMap((trace) => api.trace.getSpanContext(trace) ?? []).map((context) => ({ context })) : [];
  const kind = options.kind === 'client' ? api.SpanKind.CLIENT : api.SpanKind.INTERNAL;
  const span = tracer.startSpan(name, { kind, links, ...(options.attributes ? { attributes: options.attributes } : {}) }, parent);
  try {
    return await api.context.with(api.trace.setSpan(parent, span), () => fn(span));
  } catch (error) {
    span.recordException(error instanceof Error ? error : String(error));
    span.setStatus({ code: api.SpanStatusCode.ERROR, ...(error instanceof Error ? { message: error.message } : {}) });
    throw error;
  } finally {
    span.end();
  }
}
