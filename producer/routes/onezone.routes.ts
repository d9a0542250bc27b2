import { z } from 'zod';
import { AppError, Identifier, JobView, NoContent } from '../../contracts/index.js';
import { findSubject } from '../../db/repositories/subject.repository.js';
import type { AppDeps } from '../app.js';
import { type SeedSuccess, submit } from '../intake.js';
import { authorizeProvider, authorizeUserTemporaryTokens } from '../services/command-rules.js';
import type { ZodApp } from '../types.js';

const UserParams = z.strictObject({ id: Identifier });
const Generation = z.object({ generation: z.number().int() });

/** 204 once revoked; with Prefer: respond-async, 202 with the job (200 for an Idempotency-Key replay). */
const revokeResponses = { 200: JobView, 202: JobView, 204: NoContent };

const noContent: SeedSuccess = { status: 204 };

/** Onezone's "revoke all temporary tokens" of a user or of the calling provider (SPEC §6). */
export function onezoneRoutes(app: ZodApp, deps: AppDeps): void {
  const options = { config: { family: 'onezone' as const } };
  // the DELETEs record commands: their caller may come from the credential cache
  const commandOptions = { config: { family: 'onezone' as const, cachedCredential: true } };

  app.delete('/api/v3/onezone/users/:id/tokens/temporary', { ...commandOptions, schema: { params: UserParams, response: revokeResponses } }, async (request, reply) => {
    const input = { type: 'temporary_tokens.revoke_all' as const, subject: { kind: 'user' as const, id: request.params.id } };
    return submit(deps, request, reply, { input, answer: { seed: noContent } });
  });

  app.delete('/api/v3/onezone/provider/tokens/temporary', { ...commandOptions, schema: { response: revokeResponses } }, async (request, reply) => {
    const input = { type: 'temporary_tokens.revoke_all' as const, subject: { kind: 'provider' as const, id: request.caller.subject.id } };
    return submit(deps, request, reply, { input, answer: { seed: noContent } });
  });

  app.get('/api/v3/onezone/users/:id/tokens/temporary', { ...options, schema: { params: UserParams, response: { 200: Generation } } }, async (request) => {
    authorizeUserTemporaryTokens(request.caller, request.params.id);
    const subject = await findSubject(deps.db, request.params.id);
    if (!subject || subject.kind !== 'user') throw new AppError('PV3003', { subject_id: request.params.id });
    return { generation: subject.temporary_generation };
  });

  app.get('/api/v3/onezone/provider/tokens/temporary', { ...options, schema: { response: { 200: Generation } } }, async (request) => {
    authorizeProvider(request.caller);
    return { generation: request.caller.subject.temporary_generation };
  });
}
