import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AuditContext, type EventOf, LockoutAuditData, MAX_TOKEN_IDS_PER_EVENT, RevocationEvent, TokensDeletedAuditData } from '../../contracts/index.js';
import { lockoutBatchBounds, revokeAndRecordAccessTokens } from '../../db/repositories/access-token-revocation.repository.js';
import { auditRows } from '../../db/repositories/audit-log.repository.js';
import type { BatchResult } from '../../db/repositories/bulk-batch.repository.js';
import { insertCollection } from '../../db/repositories/collection.repository.js';
import { outboxEventsOf, unpublishedEventsOf } from '../../db/repositories/outbox.repository.js';
import { seedNamedAccessTokens, seedVaultTokens } from '../../db/repositories/seed.repository.js';
import { upsertSubject } from '../../db/repositories/subject.repository.js';
import { deleteAndRecordVaultTokens } from '../../db/repositories/vault-token-delete.repository.js';
import { toEvents } from '../../worker/event-envelope.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/**
 * The records a bulk batch's statement writes in SQL (executeBatchStatement: the tag delete's and
 * the lockout's) are the contracts' messages: each event parses as RevocationEvent and each audit
 * row's data as its audit schema, with nothing left over; the relay reads the same events from the
 * outbox as the worker got from the statement; and both batches treat an empty batch alike.
 */

const audit: AuditContext = {
  actor: { id: 'admin', kind: 'service' },
  tenant_ids: null,
  reason: 'FraudPreventionSecurityAndCompliance',
  adhoc_reason: null,
  custom_audit: 'INC-7 "quoted"',
  request_id: 'r-1',
  source: 'http',
};
const subject = { id: 'mallory', kind: 'user', domain_id: 'default' };

/** Parses a message with its schema and checks that the schema kept all of it (no unknown or misnamed field). */
function parsesWhole<T>(schema: { parse(value: unknown): T }, value: unknown): T {
  const parsed = schema.parse(value);
  expect(parsed).toEqual(value);
  return parsed;
}

describe('the messages a bulk batch writes in SQL', () => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase();
    await insertCollection(database.db, 'cards');
    await seedVaultTokens(database.db, { collection: 'cards', count: 5000, tag: 'breach', tagRatio: 0.5, tenantId: null, objectPrefix: 'o-' });
    await upsertSubject(database.db, { ...subject, kind: 'user', capabilities: [], tenant_ids: null, collections: null });
    await seedNamedAccessTokens(database.db, subject.id, 2500);
  });

  afterAll(async () => {
    await database?.drop();
  });

  const tagDelete = (commandId: string, afterId: string, eventIndex: number) =>
    database.db.transaction().execute((trx) =>
      deleteAndRecordVaultTokens(trx, 'cards', null, { tags: ['breach'], archived: false }, afterId, 2500, {
        audit: auditRows(commandId, audit, [{ action: 'tokens.deleted', collection: 'cards', data: {} }])[0]!,
        event: toEvents(commandId, audit, [{ type: 'tokens.deleted', data: { collection: 'cards', token_ids: [], batch: { index: 0, last: false } } }])[0] as EventOf<'tokens.deleted'>,
        eventIndex,
        idsPerEvent: MAX_TOKEN_IDS_PER_EVENT,
      }),
    );

  const lockoutBatch = (commandId: string, afterId: string, upTo: string | null, eventIndex: number) =>
    database.db.transaction().execute((trx) =>
      revokeAndRecordAccessTokens(trx, subject.id, afterId, upTo, {
        audit: auditRows(commandId, audit, [{ action: 'access_token.revoked', collection: null, data: { subject } }])[0]!,
        event: toEvents(commandId, audit, [{ type: 'access_token.revoked', data: { token_ids: [], subject, batch: { index: 0, last: false } } }])[0] as EventOf<'access_token.revoked'>,
        eventIndex,
        idsPerEvent: MAX_TOKEN_IDS_PER_EVENT,
      }),
    );

  const auditOf = async (commandId: string) => (await database.db.selectFrom('audit_log').selectAll().where('command_id', '=', commandId).orderBy('id').execute()).map((r) => r.data);

  /** The events the statement returned, parsed whole; the relay reads the same from the outbox (the command's last ones). */
  async function eventsOf(commandId: string, batch: BatchResult): Promise<RevocationEvent[]> {
    const events = batch.outbox.map((e) => parsesWhole(RevocationEvent, JSON.parse(e.event)));
    const n = events.length;
    expect((await outboxEventsOf(database.db, commandId)).slice(-n)).toEqual(events);
    const relayed = (await unpublishedEventsOf(database.db, commandId)).slice(-n);
    expect(relayed.map((e) => e.id)).toEqual(batch.outbox.map((e) => e.id));
    expect(relayed.map((e) => JSON.parse(e.event) as unknown)).toEqual(events);
    return events;
  }

  it('a tag delete batch: tokens.deleted events and audit rows, one each per 1,000 IDs, event i with audit row i’s IDs', async () => {
    const commandId = randomUUID();
    const batch = await tagDelete(commandId, '0', 3);
    expect(batch).toMatchObject({ n: 2500, more: false });
    const events = await eventsOf(commandId, batch);
    expect(events.map((e) => e.type)).toEqual(['tokens.deleted', 'tokens.deleted', 'tokens.deleted']);
    const data = events.map((e) => e.data as EventOf<'tokens.deleted'>['data']);
    expect(data.map((d) => [d.collection, d.token_ids.length, d.batch])).toEqual([
      ['cards', 1000, { index: 3, last: false }],
      ['cards', 1000, { index: 4, last: false }],
      ['cards', 500, { index: 5, last: true }],
    ]);
    expect(events.every((e) => e.job_id === commandId && e.audit.custom_audit === audit.custom_audit)).toBe(true);
    const rows = (await auditOf(commandId)).map((d) => parsesWhole(TokensDeletedAuditData, d));
    expect(rows.map((r) => r.batch)).toEqual([
      { index: 3, size: 1000 },
      { index: 4, size: 1000 },
      { index: 5, size: 500 },
    ]);
    expect(rows.map((r) => r.token_ids)).toEqual(data.map((d) => d.token_ids));
    expect(new Set(rows.flatMap((r) => r.token_ids)).size).toBe(2500);
  });

  it('a lockout batch: access_token.revoked events and audit rows with the subject, one each per 1,000 IDs', async () => {
    const commandId = randomUUID();
    const bounds = await lockoutBatchBounds(database.db, subject.id, '', 2000);
    expect(bounds).toHaveLength(1);
    const first = await lockoutBatch(commandId, '', bounds[0]!, 0);
    expect(first).toMatchObject({ n: 2000, more: true, lastId: bounds[0] });
    const events = await eventsOf(commandId, first);
    const last = await lockoutBatch(commandId, bounds[0]!, null, first.outbox.length);
    expect(last).toMatchObject({ n: 500, more: false });
    events.push(...(await eventsOf(commandId, last)));
    const data = events.map((e) => e.data as Extract<EventOf<'access_token.revoked'>['data'], { token_ids: string[] }>);
    expect(data.map((d) => [d.subject, d.token_ids.length, d.batch])).toEqual([
      [subject, 1000, { index: 0, last: false }],
      [subject, 1000, { index: 1, last: false }],
      [subject, 500, { index: 2, last: true }],
    ]);
    // batches are token-ID ranges: every ID of the first is at most the bound, every ID of the last above it
    expect(data.slice(0, 2).every((d) => d.token_ids.every((id) => id <= bounds[0]!))).toBe(true);
    expect(data[2]!.token_ids.every((id) => id > bounds[0]!)).toBe(true);
    const rows = (await auditOf(commandId)).map((d) => parsesWhole(LockoutAuditData, d));
    expect(rows.map((r) => [r.subject, r.batch])).toEqual([
      [subject, { index: 0, size: 1000 }],
      [subject, { index: 1, size: 1000 }],
      [subject, { index: 2, size: 500 }],
    ]);
    expect(rows.map((r) => r.token_ids)).toEqual(data.map((d) => d.token_ids));
  });

  it('an empty batch, in either: after earlier batches one event with no IDs marked last and no audit row; as the first batch nothing', async () => {
    // the tests above took every tagged token and every token of the subject
    for (const [later, first] of [
      [() => tagDelete(randomUUID(), '0', 7), () => tagDelete(randomUUID(), '0', 0)],
      [() => lockoutBatch(randomUUID(), '', null, 7), () => lockoutBatch(randomUUID(), '', null, 0)],
    ] as const) {
      const batch = await later();
      expect(batch).toMatchObject({ n: 0, more: false });
      const commandId = batch.outbox[0]!.commandId;
      const events = await eventsOf(commandId, batch);
      expect(events).toHaveLength(1);
      expect(events[0]!.data).toMatchObject({ token_ids: [], batch: { index: 7, last: true } });
      expect(await auditOf(commandId)).toEqual([]);
      expect(await first()).toEqual({ n: 0, lastId: null, more: false, outbox: [] });
    }
  });
});
