import { AppError, JobView, NoContent } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { type SeedSuccess, submit } from '../intake.js';
import { validateKeystoneToken } from '../services/keystone-tokens.service.js';
import type { ZodApp } from '../types.js';
import { KeystoneTokenBody, KeystoneValidateQuery } from '../../contracts/keystone.js';

/** 204 once deleted; with Prefer: respond-async, 202 with the job (200 for an Idempotency-Key replay). */
const revokeResponses = { 200: JobView, 202: JobView, 204: NoContent };

const noContent: SeedSuccess = { status: 204 };

/**
 * Keystone's `DELETE /v3/auth/tokens`: the token named by its secret in X-Subject-Token becomes
 * an `access_token.revoke` command holding only the token's public ID. The secret never
 * enters the queue, the database in clear, or a log.
 */
export function keystoneRoutes(app: ZodApp, deps: AppDeps): void {
  app.delete('/v3/auth/tokens', { config: { family: 'keystone', subjectToken: true }, schema: { response: revokeResponses } }, async (request, reply) => {
    const lookup = request.subjectToken;
    if (!lookup) throw new AppError('PV1002', { header: 'X-Subject-Token' }, 'The X-Subject-Token header must hold the token to delete.');
    // the request is named by its subject token: a retry under the key with another secret is another request (PV3010)
    const identity = { subject_token: lookup.hash.toString('hex') };
    return submit(deps, request, reply, { input: { type: 'access_token.revoke', bySecret: lookup }, answer: { seed: noContent }, identity });
  });

  // Keystone's token validation; Fastify answers HEAD from this GET (the same status and
  // headers, no body). `X-Subject-Token` comes back, as Keystone sends it: no cache keeps it.
  app.get('/v3/auth/tokens', { config: { family: 'keystone', subjectToken: true }, schema: { querystring: KeystoneValidateQuery, response: { 200: KeystoneTokenBody } } }, async (request, reply) => {
    const lookup = request.subjectToken;
    if (!lookup) throw new AppError('PV1002', { header: 'X-Subject-Token' }, 'The X-Subject-Token header must hold the token to validate.');
    const body = validateKeystoneToken(request.caller, lookup, request.query.allow_expired);
    return reply.header('x-subject-token', lookup.secret).header('cache-control', 'no-store').send(body);
  });
}
