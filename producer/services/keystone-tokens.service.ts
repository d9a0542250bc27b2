import { AppError, type KeystoneTokenBody } from '../../contracts/index.js';
import type { Caller, SubjectTokenLookup } from '../access.js';
import { checkAccessToken } from './subjects.service.js';

/**
 * Keystone has no token without an end, and its clients parse `expires_at` as a date (a null
 * breaks keystonemiddleware): a named token, which lives until deleted, shows the last instant.
 */
export const NEVER_EXPIRES = '9999-12-31T23:59:59.000000Z';

/** A date in Keystone's format: microseconds and Z (ours have milliseconds). */
function keystoneTime(date: Date): string {
  return date.toISOString().replace(/Z$/, '000Z');
}

/**
 * Keystone's token validation (SPEC §6): the caller checks its own subject's token, or any with
 * `tokens:verify` (else PV1007). Returns Keystone's view of the token, unscoped, of the `token`
 * method; throws PV3006 when it is unknown, revoked or expired (`allowExpired`: an expired token
 * that is not revoked passes).
 */
export function validateKeystoneToken(caller: Caller, lookup: SubjectTokenLookup, allowExpired: boolean): KeystoneTokenBody {
  const outcome = checkAccessToken(caller, lookup, { allowExpired });
  if (!outcome.ok) throw new AppError('PV3006', { reason: outcome.reason }, `The token is ${outcome.reason.replace('_', ' ')}.`);
  const { token, subject } = outcome.found;
  return {
    token: {
      methods: ['token'],
      user: { id: subject.id, name: subject.id, domain: { id: subject.domain_id, name: subject.domain_id } },
      audit_ids: [token.id],
      issued_at: keystoneTime(token.created_at),
      expires_at: token.expires_at ? keystoneTime(token.expires_at) : NEVER_EXPIRES,
    },
  };
}
