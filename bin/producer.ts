import { startTracing } from '../observability/tracing.js';
import { startProducer } from '../producer/server.js';
import { configOrExit, createLogger, startedOrExit } from './startup.js';
import { closeOnSignal } from './signals.js';

/** `npm run producer`: the HTTP producer alone (run `npm run migrate` first). */
const config = configOrExit();
const logger = createLogger(config, 'revocation-producer');
const stopTracing = await startTracing(config, 'revocation-producer');
// not retried: a producer answers 503 while Postgres is out of reach (it fails only if it must make the bootstrap admin)
const producer = await startedOrExit(logger, startProducer(config, logger));
logger.info({ url: producer.url }, 'producer ready');
closeOnSignal(logger, async () => {
  await producer.close();
  await stopTracing?.();
});
