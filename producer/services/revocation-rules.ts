import { AppError } from '../../contracts/index.js';
import type { AccessTokenWithSubject } from '../../db/repositories/access-token.repository.js';
import type { Caller } from '../access.js';

/**
 * Keystone's rule for deleting an access token: your own needs no capability; another user's
 * needs `security_admin` and the same domain. Throws PV1007 otherwise.
 */
export function authorizeAccessTokenRevoke(caller: Caller, target: AccessTokenWithSubject): void {
  if (target.subject.id === caller.subject.id) return;
  if (!caller.subject.capabilities.includes('security_admin')) {
    throw new AppError('PV1007', { username: caller.subject.id, capability: 'security_admin' });
  }
  if (target.subject.domain_id !== caller.subject.domain_id) {
    throw new AppError('PV1007', { username: caller.subject.id }, 'The token belongs to a user of another domain.');
  }
}

/** Onezone's rule for a user's temporary tokens: the user themself, or `tokens:manage`. */
export function authorizeUserTemporaryTokens(caller: Caller, userId: string): void {
  if (caller.subject.id === userId && caller.subject.kind === 'user') return;
  if (!caller.subject.capabilities.includes('tokens:manage')) {
    throw new AppError('PV1007', { username: caller.subject.id, capability: 'tokens:manage' });
  }
}

/** The provider route acts on the calling provider only. */
export function authorizeProvider(caller: Caller): void {
  if (caller.subject.kind !== 'provider') {
    throw new AppError('PV1007', { username: caller.subject.id }, 'Only a provider may act on the current provider.');
  }
}

/** A provider's temporary tokens: only that provider itself may revoke them, whatever the caller's capabilities. */
export function authorizeCurrentProvider(caller: Caller, providerId: string): void {
  authorizeProvider(caller);
  if (caller.subject.id !== providerId) {
    throw new AppError('PV1007', { username: caller.subject.id }, "A provider's temporary tokens are revoked by that provider only.");
  }
}
