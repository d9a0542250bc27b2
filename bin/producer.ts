import { startTracing } from '../observability/tracing.js';
import { startProducer } from '../producer/server.js';
import { configOrExit, createLogger } from './startup.js';
import { closeOnSignal } from './signals.js';

/** `npm run producer`: the HTTP producer alone (run `npm run migrate` first). */
const config = configOrExit();
const logger = createLogger(config, 'revocation-producer');
const stopTracing = await startTracing(config, 'revocation-producer');
const producer = await startProducer(config, logger);
logger.info({ url: producer.url }, 'producer ready');
closeOnSignal(logger, async () => {
  await producer.close();
  await stopTracing?.();
});
