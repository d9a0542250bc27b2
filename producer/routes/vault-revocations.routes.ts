import { z } from 'zod';
import { AppError, CollectionParams, DeleteTokensQuery, JobView, RotateTokensQuery } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { type SeedSuccess, submit } from '../intake.js';
import type { ZodApp } from '../types.js';

const base = '/api/pvlt/1.0/data/collections/:collection';

const accepted = JobView.describe('Prefer: respond-async: the job, still running; Location: /v1/jobs/{id}');
const deleteResponses = {
  200: z.union([z.strictObject({}), JobView]).describe('Deleted: the tokens are gone (or, with Prefer: respond-async, an Idempotency-Key replay: the job)'),
  202: accepted,
};
const rotateResponses = {
  200: z.union([z.record(z.string(), z.string()), JobView]).describe('Rotated: { old: new } (or, with Prefer: respond-async, an Idempotency-Key replay: the job)'),
  202: accepted,
};

const deleted: SeedSuccess = { status: 200, body: {} };
const rotated: SeedSuccess = (result) => ({ status: 200, body: (result as { mapping: Record<string, string> }).mapping });

/** Piiano's delete and rotate, as `tokens.delete` and `tokens.rotate` commands answered as Piiano does (SPEC §5, §6). */
export function vaultRevocationRoutes(app: ZodApp, deps: AppDeps): void {
  app.delete(
    `${base}/tokens`,
    { config: { family: 'piiano', cachedCredential: true }, schema: { params: CollectionParams, querystring: DeleteTokensQuery, response: deleteResponses } },
    async (request, reply) => {
      const q = request.query;
      if (!q.token_ids && !q.object_ids && !q.tags) {
        throw new AppError('PV1002', { parameters: 'token_ids,object_ids,tags' }, 'At least one of token_ids, object_ids or tags is required.');
      }
      const input = {
        type: 'tokens.delete' as const,
        collection: request.params.collection,
        token_ids: q.token_ids,
        object_ids: q.object_ids,
        tags: q.tags,
        tenant_id: q.tenant_id,
        archived: q.options?.includes('archived') ?? false,
        reason: q.reason,
        adhoc_reason: q.adhoc_reason,
        custom_audit: q.custom_audit,
      };
      return submit(deps, request, reply, { input, answer: { seed: deleted } });
    },
  );

  app.post(
    `${base}/rotate/tokens`,
    { config: { family: 'piiano', cachedCredential: true }, schema: { params: CollectionParams, querystring: RotateTokensQuery, response: rotateResponses } },
    async (request, reply) => {
      const q = request.query;
      if (!q.token_ids) throw new AppError('PV1002', { parameters: 'token_ids' }, 'token_ids is required.');
      const input = {
        type: 'tokens.rotate' as const,
        collection: request.params.collection,
        token_ids: q.token_ids,
        reason: q.reason,
        adhoc_reason: q.adhoc_reason,
        custom_audit: q.custom_audit,
      };
      return submit(deps, request, reply, { input, answer: { seed: rotated } });
    },
  );
}
