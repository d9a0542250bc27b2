import { describe, expect, it } from 'vitest';
import { Command, isShortCommand, SHORT_COMMAND_TOKENS } from '../../contracts/index.js';

const ids = (n: number) => Array.from({ length: n }, (_, i) => `t${i}`);
const short = (command: Record<string, unknown>) => isShortCommand(Command.parse(command));

describe('isShortCommand: which commands may share a transaction (group commit)', () => {
  it('a delete or rotate of up to SHORT_COMMAND_TOKENS named tokens is short, one more is not', () => {
    expect(short({ type: 'tokens.delete', collection: 'c', token_ids: ids(1) })).toBe(true);
    expect(short({ type: 'tokens.delete', collection: 'c', token_ids: ids(SHORT_COMMAND_TOKENS) })).toBe(true);
    expect(short({ type: 'tokens.delete', collection: 'c', token_ids: ids(SHORT_COMMAND_TOKENS + 1) })).toBe(false);
    expect(short({ type: 'tokens.delete', collection: 'c', token_ids: ids(60), object_ids: ids(41) })).toBe(false);
    expect(short({ type: 'tokens.delete', collection: 'c', object_ids: ids(3) })).toBe(true);
    expect(short({ type: 'tokens.rotate', collection: 'c', token_ids: ids(SHORT_COMMAND_TOKENS) })).toBe(true);
    expect(short({ type: 'tokens.rotate', collection: 'c', token_ids: ids(SHORT_COMMAND_TOKENS + 1) })).toBe(false);
  });

  it('a delete by tags or by tenant is long, however few IDs it also names', () => {
    expect(short({ type: 'tokens.delete', collection: 'c', tags: ['breach'] })).toBe(false);
    expect(short({ type: 'tokens.delete', collection: 'c', token_ids: ids(1), tags: ['breach'] })).toBe(false);
    expect(short({ type: 'tokens.delete', collection: 'c', token_ids: ids(1), tenant_id: 'acme' })).toBe(false);
  });

  it('revoking an access token or every temporary token of a subject is short', () => {
    expect(short({ type: 'access_token.revoke', token_id: 'abc' })).toBe(true);
    expect(short({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: 'alice' } })).toBe(true);
  });
});
