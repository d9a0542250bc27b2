import { migrateToLatest } from '../db/migrate.js';
import { configOrExit, createLogger } from './startup.js';

/** `npm run migrate`: creates the database if missing and applies pending migrations. */
const config = configOrExit();
const logger = createLogger(config, 'migrate');
try {
  const { results } = await migrateToLatest(config.DATABASE_URL);
  const applied = (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
  logger.info({ applied }, applied.length ? 'migrations applied' : 'database is up to date');
} catch (error) {
  logger.fatal({ err: error }, 'migration failed');
  process.exitCode = 1;
}
