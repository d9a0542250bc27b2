import type { CommandType } from '../../contracts/index.js';
import { deleteTokensHandler } from './delete-tokens.handler.js';
import type { CommandHandler } from './handler.js';
import { revokeAccessTokenHandler } from './revoke-access-token.handler.js';
import { revokeTemporaryTokensHandler } from './revoke-temporary-tokens.handler.js';
import { rotateTokensHandler } from './rotate-tokens.handler.js';
import { subjectLockoutHandler } from './subject-lockout.handler.js';
import { subjectUnlockHandler } from './subject-unlock.handler.js';

/** One handler per command type; a new type does not compile until it has one. */
export const handlers: { [T in CommandType]: CommandHandler<T> } = {
  'tokens.delete': deleteTokensHandler,
  'tokens.rotate': rotateTokensHandler,
  'access_token.revoke': revokeAccessTokenHandler,
  'temporary_tokens.revoke_all': revokeTemporaryTokensHandler,
  'subject.lockout': subjectLockoutHandler,
  'subject.unlock': subjectUnlockHandler,
};
