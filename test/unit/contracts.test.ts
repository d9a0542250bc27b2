import { describe, expect, it } from 'vitest';
import { CommandRequest, commandResults, commandTypes, eventTypes, ReasonQuery, reasonFields, RevocationEvent } from '../../contracts/index.js';

describe('contracts: each message derived from one list', () => {
  it('the event union has one envelope per type of EventData, tagged with it', () => {
    expect(RevocationEvent.options.map((o) => o.shape.type.value)).toEqual(eventTypes);
    const deleted = RevocationEvent.safeParse({
      event_id: '8b0b7a4e-0f4c-4a4e-9a35-8b2f0a9d7c11',
      schema_version: 1,
      type: 'tokens.deleted',
      occurred_at: '2026-01-01T00:00:00.000Z',
      job_id: '0d9c3c1a-6a2e-4f0e-9b1a-2f6c0e8d4b22',
      tenant_ids: null,
      audit: { actor: { id: 'a', kind: 'service' }, reason: null, adhoc_reason: null, custom_audit: null, request_id: null, source: 'http' },
      data: { collection: 'c', mapping: { a: 'b' }, batch: { index: 0, last: true } },
    });
    expect(deleted.success).toBe(false); // a tokens.rotated body under the tokens.deleted tag
  });

  it('every command type has its request (with the reason fields) and its result', () => {
    expect(CommandRequest.options.map((o) => o.shape.type.value)).toEqual(commandTypes);
    for (const option of CommandRequest.options) expect(Object.keys(option.shape)).toEqual(expect.arrayContaining(Object.keys(reasonFields)));
    expect(Object.keys(commandResults).sort()).toEqual([...commandTypes].sort());
  });

  it('the vault routes take the same reason fields as command bodies', () => {
    for (const [key, schema] of Object.entries(reasonFields)) expect(ReasonQuery[key as keyof typeof reasonFields]).toBe(schema);
  });
});
