import { z } from 'zod';
import { AppError, CollectionParams, DeleteTokensQuery, JobView, RotateTokensQuery } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { accept, type DoneRenderer, storedError } from '../intake.js';
import { prepareCommand } from '../services/command-intake.service.js';
import type { ZodApp } from '../types.js';

const base = '/api/pvlt/1.0/data/collections/:collection';

const deleteResponses = {
  200: z.union([JobView, z.strictObject({})]).describe('Deleted (Prefer: wait), or an Idempotency-Key replay (the job)'),
  202: JobView.describe('Accepted: the job; Location: /v1/jobs/{id}'),
};
const rotateResponses = {
  200: z.union([JobView, z.record(z.string(), z.string())]).describe('Rotated: { old: new } (Prefer: wait), or an Idempotency-Key replay (the job)'),
  202: JobView.describe('Accepted: the job; Location: /v1/jobs/{id}'),
};

const deleted: DoneRenderer = (row, reply) => {
  if (row.state !== 'succeeded') throw storedError(row);
  return reply.code(200).send({});
};

const rotated: DoneRenderer = (row, reply) => {
  if (row.state !== 'succeeded') throw storedError(row);
  return reply.code(200).send((row.result as { mapping: Record<string, string> }).mapping);
};

/** Piiano's delete and rotate, as `tokens.delete` and `tokens.rotate` commands (SPEC §6). */
export function vaultRevocationRoutes(app: ZodApp, deps: AppDeps): void {
  app.delete(`${base}/tokens`, { config: { family: 'piiano', cachedCredential: true }, schema: { params: CollectionParams, querystring: DeleteTokensQuery, response: deleteResponses } }, async (request, reply) => {
    const q = request.query;
    if (!q.token_ids && !q.object_ids && !q.tags) {
      throw new AppError('PV1002', { parameters: 'token_ids,object_ids,tags' }, 'At least one of token_ids, object_ids or tags is required.');
    }
    const { command, audit } = await prepareCommand(deps, request, {
      type: 'tokens.delete',
      collection: request.params.collection,
      token_ids: q.token_ids,
      object_ids: q.object_ids,
      tags: q.tags,
      tenant_id: q.tenant_id,
      archived: q.options?.includes('archived') ?? false,
      reason: q.reason,
      adhoc_reason: q.adhoc_reason,
      custom_audit: q.custom_audit,
    });
    return accept(deps, request, reply, command, audit, deleted);
  });

  app.post(`${base}/rotate/tokens`, { config: { family: 'piiano', cachedCredential: true }, schema: { params: CollectionParams, querystring: RotateTokensQuery, response: rotateResponses } }, async (request, reply) => {
    const q = request.query;
    if (!q.token_ids) throw new AppError('PV1002', { parameters: 'token_ids' }, 'token_ids is required.');
    const { command, audit } = await prepareCommand(deps, request, {
      type: 'tokens.rotate',
      collection: request.params.collection,
      token_ids: q.token_ids,
      reason: q.reason,
      adhoc_reason: q.adhoc_reason,
      custom_audit: q.custom_audit,
    });
    return accept(deps, request, reply, command, audit, rotated);
  });
}
