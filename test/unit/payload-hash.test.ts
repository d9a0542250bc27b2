import { describe, expect, it } from 'vitest';
import type { AuditContext, Command } from '../../contracts/index.js';
import { payloadHash } from '../../producer/services/payload-hash.js';

/**
 * payloadHash is stored with every command and compared on Idempotency-Key replays: a change to
 * its output would answer PV3010 to a client replaying a command recorded before the change.
 * These hashes were computed by the first implementation (Object.entries, sort, map, join).
 */
describe('payloadHash', () => {
  const audit = (changes: Partial<AuditContext> = {}): AuditContext => ({
    actor: { id: 'admin', kind: 'service' },
    tenant_ids: null,
    reason: 'AppFunctionality',
    adhoc_reason: null,
    custom_audit: null,
    request_id: 'r',
    source: 'http',
    ...changes,
  });
  const as = (command: Record<string, unknown>) => command as unknown as Command;

  it('gives the hashes it always gave', () => {
    expect(payloadHash(as({ type: 'tokens.delete', collection: 'c', archived: false, token_ids: ['a', 'b'] }), audit())).toBe('a8bdeb5922b162045aba6e728ee40dc8e9acf29f2cdfd1268bde1cb4b69a5d58');
    expect(payloadHash(as({ token_ids: ['b', 'a'], collection: 'c', type: 'tokens.delete', archived: false }), audit({ tenant_ids: ['t2', 't1'], custom_audit: 'ü "quoted" \u2028' }))).toBe(
      '5f468d03e0ef51120a2d45e81eeece5370bf37c97e421d6b8c5f99d3012941d3',
    );
    expect(payloadHash(as({ type: 'tokens.delete', collection: 'c', archived: true, tags: ['x', 'y'], fields: undefined }), audit({ reason: 'Other', adhoc_reason: 'breach 2026-12' }))).toBe(
      '7c03a0531f078f12770835ad436a5254e6bc7ca417fafb26b95972d733ce65dc',
    );
    expect(payloadHash(as({ type: 'tokens.rotate', collection: 'c', archived: false, token_ids: ['a'], nested: { z: 1, a: [true, null, 2.5] } }), audit())).toBe(
      'a3a6232cdc7ad55fc7050d3d9f6490c3120342d40ebd48d64fd2e868fa3e5bbe',
    );
  });

  it('does not depend on key order, and does on array order, the scope and the reason', () => {
    const command = as({ type: 'tokens.delete', collection: 'c', archived: false, token_ids: ['a', 'b'] });
    const same = as({ token_ids: ['a', 'b'], archived: false, collection: 'c', type: 'tokens.delete' });
    expect(payloadHash(same, audit())).toBe(payloadHash(command, audit()));
    expect(payloadHash(as({ ...command, token_ids: ['b', 'a'] }), audit())).not.toBe(payloadHash(command, audit()));
    expect(payloadHash(command, audit({ tenant_ids: ['t1'] }))).not.toBe(payloadHash(command, audit()));
    expect(payloadHash(command, audit({ reason: 'Other', adhoc_reason: 'x' }))).not.toBe(payloadHash(command, audit()));
    // who asks, and the request's ID, are not part of what the command is
    expect(payloadHash(command, audit({ actor: { id: 'other', kind: 'user' }, request_id: 'r2' }))).toBe(payloadHash(command, audit()));
  });
});
