import type { RevocationEvent } from '../../contracts/index.js';

/** What a service caches about a token it accepted: enough to drop it when it is revoked. */
export interface CachedToken {
  subjectId?: string;
  temporary?: boolean;
  generation?: number | null;
}

/**
 * Example consumer: a service's in-memory cache of tokens it has already validated, kept
 * honest by revocation events. Vault tokens are keyed `collection/token_id`, access tokens by
 * their token ID. Applying an event twice is harmless (dedupe is free: deletes are idempotent).
 */
export class TokenCacheInvalidator {
  readonly vault = new Map<string, unknown>();
  readonly access = new Map<string, CachedToken>();

  apply(event: RevocationEvent): void {
    switch (event.type) {
      case 'tokens.deleted':
        for (const id of event.data.token_ids) this.vault.delete(`${event.data.collection}/${id}`);
        return;
      case 'tokens.rotated':
        for (const oldId of Object.keys(event.data.mapping)) this.vault.delete(`${event.data.collection}/${oldId}`);
        return;
      case 'access_token.revoked':
        // one token (a revoke), or a batch of a lockout's
        for (const id of 'token_ids' in event.data ? event.data.token_ids : [event.data.token_id]) this.access.delete(id);
        return;
      case 'subject.locked':
        // nothing the subject holds authenticates any more; its tokens' own events follow
        for (const [id, token] of this.access) if (token.subjectId === event.data.subject.id) this.access.delete(id);
        return;
      case 'temporary_tokens.revoked':
        for (const [id, token] of this.access) {
          if (token.subjectId === event.data.subject.id && token.temporary && (token.generation ?? -1) < event.data.generation) this.access.delete(id);
        }
        return;
      case 'subject.unlocked': // old tokens stay revoked: nothing to drop
      case 'command.succeeded':
      case 'command.failed':
      case 'command.cancelled':
        return;
    }
  }
}
