import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { createDb } from '../db/create-db.js';
import { migrateToLatest } from '../db/migrate.js';
import { insertCollection } from '../db/repositories/collection.repository.js';
import { seedTemporaryAccessTokens, seedVaultTokens } from '../db/repositories/seed.repository.js';
import { upsertSubject } from '../db/repositories/subject.repository.js';
import { configOrExit } from './startup.js';

const usage = `Loads demo and benchmark data straight into Postgres (DATABASE_URL).

  npm run seed -- --collection cards --tokens 1000000 --tag breach-1 --tag-ratio 0.1
  npm run seed -- --subject alice --temporary-tokens 100000

Options:
  --collection NAME        collection to fill (created if missing)
  --tokens N               vault tokens to insert
  --tag TAG                tag carried by a share of them (default breach-1)
  --tag-ratio R            that share, 0..1 (default 0.1: every 10th token)
  --tenant ID              tenant of the tokens (default none)
  --subject ID             user subject to create if missing
  --temporary-tokens N     temporary access tokens to issue to --subject
  --help`;

function parseArguments() {
  try {
    return parseArgs({
      options: {
        collection: { type: 'string' },
        tokens: { type: 'string' },
        tag: { type: 'string', default: 'breach-1' },
        'tag-ratio': { type: 'string', default: '0.1' },
        tenant: { type: 'string' },
        subject: { type: 'string' },
        'temporary-tokens': { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    });
  } catch (error) {
    return fail((error as Error).message);
  }
}
const { values } = parseArguments();

function fail(message: string): never {
  process.stderr.write(`seed: ${message}\n\n${usage}\n`);
  process.exit(2);
}

function count(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 100_000_000) fail(`--${name} must be a whole number from 0 to 100000000`);
  return n;
}

if (values.help) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}
const tokens = count('tokens', values.tokens);
const temporary = count('temporary-tokens', values['temporary-tokens']);
const ratio = Number(values['tag-ratio']);
if (!(ratio >= 0 && ratio <= 1)) fail('--tag-ratio must be a number from 0 to 1');
if (tokens !== undefined && !values.collection) fail('--tokens needs --collection');
if (temporary !== undefined && !values.subject) fail('--temporary-tokens needs --subject');
if (tokens === undefined && temporary === undefined) fail('nothing to seed: give --tokens or --temporary-tokens');

const config = configOrExit();
await migrateToLatest(config.DATABASE_URL);
const db = createDb(config.DATABASE_URL, { max: 1, applicationName: 'revocation-seed' });
try {
  if (tokens !== undefined && values.collection) {
    const started = Date.now();
    await insertCollection(db, values.collection);
    const tagged = await seedVaultTokens(db, { collection: values.collection, count: tokens, tag: values.tag, tagRatio: ratio, tenantId: values.tenant ?? null, objectPrefix: 'obj-' });
    await sql`analyze vault_tokens`.execute(db);
    process.stdout.write(`seeded ${tokens} tokens in ${values.collection} (${tagged} tagged ${values.tag}) in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
  if (temporary !== undefined && values.subject) {
    const started = Date.now();
    await upsertSubject(db, { id: values.subject, kind: 'user', domain_id: 'default', capabilities: [], tenant_ids: null, collections: null });
    await seedTemporaryAccessTokens(db, values.subject, temporary, 7 * 24 * 3600);
    process.stdout.write(`issued ${temporary} temporary tokens to ${values.subject} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
} finally {
  await db.destroy();
}
