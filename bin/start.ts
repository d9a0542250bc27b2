import { migrateToLatest } from '../db/migrate.js';
import { startTracing } from '../observability/tracing.js';
import { startProducer } from '../producer/server.js';
import { startWorker } from '../worker/start-worker.js';
import { configOrExit, createLogger, retryWhileUnreachable, startedOrExit } from './startup.js';
import { closeOnSignal } from './signals.js';

/** `npm start`: migrate, then producer, worker, relay and reconciler in one process. */
const config = configOrExit();
const logger = createLogger(config, 'revocation');
const stopTracing = await startTracing(config, 'revocation');
await startedOrExit(
  logger,
  retryWhileUnreachable(logger, () => migrateToLatest(config.DATABASE_URL)),
);
const worker = await startedOrExit(
  logger,
  retryWhileUnreachable(logger, () => startWorker(config, logger.child({ role: 'worker' }))),
);
const producer = await startedOrExit(logger, startProducer(config, logger.child({ role: 'producer' })));
logger.info({ url: producer.url }, 'revocation service ready');
closeOnSignal(logger, async () => {
  await producer.close();
  await worker.close();
  await stopTracing?.();
});
