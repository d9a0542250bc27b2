import { AppError, JobView, NoContent } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { accept, type DoneRenderer, storedError } from '../intake.js';
import { earlierUnderKey, prepareCommand } from '../services/command-intake.service.js';
import { validateKeystoneToken } from '../services/keystone-tokens.service.js';
import type { ZodApp } from '../types.js';
import { KeystoneTokenBody, KeystoneValidateQuery } from '../../contracts/keystone.js';

/** 202 with the job; 204 when done within Prefer: wait; 200 for an Idempotency-Key replay. */
const revokeResponses = { 200: JobView, 202: JobView, 204: NoContent };

const noContent: DoneRenderer = (row, reply) => {
  if (row.state !== 'succeeded') throw storedError(row);
  return reply.code(204).send();
};

/**
 * Keystone's `DELETE /v3/auth/tokens`: the token named by its secret in X-Subject-Token becomes
 * an `access_token.revoke` command holding only the token's public ID. The secret never
 * enters the queue, the database in clear, or a log.
 */
export function keystoneRoutes(app: ZodApp, deps: AppDeps): void {
  app.delete('/v3/auth/tokens', { config: { family: 'keystone', subjectToken: true }, schema: { response: revokeResponses } }, async (request, reply) => {
    const lookup = request.subjectToken;
    if (!lookup) throw new AppError('PV1002', { header: 'X-Subject-Token' }, 'The X-Subject-Token header must hold the token to delete.');
    // a retry of a delete that ran: the token is gone, and the key's earlier command names it
    const earlier = lookup.found ? undefined : await earlierUnderKey(deps.db, request);
    const tokenId = lookup.found?.token.id ?? (earlier?.payload.type === 'access_token.revoke' ? earlier.payload.token_id : undefined);
    if (tokenId === undefined) throw new AppError('PV3006', {}, 'The subject token could not be found.');
    const { command, audit } = await prepareCommand(deps, request, { type: 'access_token.revoke', token_id: tokenId });
    return accept(deps, request, reply, command, audit, noContent);
  });

  // Keystone's token validation; Fastify answers HEAD from this GET (the same status and
  // headers, no body). `X-Subject-Token` comes back, as Keystone sends it: no cache keeps it.
  app.get(
    '/v3/auth/tokens',
    { config: { family: 'keystone', subjectToken: true }, schema: { querystring: KeystoneValidateQuery, response: { 200: KeystoneTokenBody } } },
    async (request, reply) => {
      const lookup = request.subjectToken;
      if (!lookup) throw new AppError('PV1002', { header: 'X-Subject-Token' }, 'The X-Subject-Token header must hold the token to validate.');
      const body = validateKeystoneToken(request.caller, lookup, request.query.allow_expired);
      return reply.header('x-subject-token', lookup.secret).header('cache-control', 'no-store').send(body);
    },
  );
}
