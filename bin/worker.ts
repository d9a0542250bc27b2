import { startTracing } from '../observability/tracing.js';
import { serveMetrics } from '../worker/metrics.js';
import { startWorker } from '../worker/start-worker.js';
import { configOrExit, createLogger, retryWhileUnreachable, startedOrExit } from './startup.js';
import { closeOnSignal } from './signals.js';

/** `npm run worker`: a worker with the outbox relay and the reconciler (run `npm run migrate` first). */
const config = configOrExit();
const logger = createLogger(config, 'revocation-worker');
const stopTracing = await startTracing(config, 'revocation-worker');
const worker = await startedOrExit(
  logger,
  retryWhileUnreachable(logger, () => startWorker(config, logger)),
);
const metrics = config.METRICS_PORT ? await serveMetrics(config.METRICS_PORT, config.HOST) : undefined;
logger.info({ concurrency: config.WORKER_CONCURRENCY, metrics_port: config.METRICS_PORT ?? null }, 'worker ready');
closeOnSignal(logger, async () => {
  metrics?.close();
  await worker.close();
  await stopTracing?.();
});
