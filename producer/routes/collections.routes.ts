import { AppError, CollectionView, CreateCollectionBody } from '../../contracts/index.js';
import { insertCollection } from '../../db/repositories/collection.repository.js';
import { requireCapability } from '../access.js';
import type { AppDeps } from '../app.js';
import type { ZodApp } from '../types.js';

/** `POST /v1/collections` (subjects:admin): 201 with the collection; 409 PV3002 if it exists. */
export function collectionRoutes(app: ZodApp, deps: AppDeps): void {
  app.post('/v1/collections', { config: { family: 'native' }, schema: { body: CreateCollectionBody, response: { 201: CollectionView } } }, async (request, reply) => {
    requireCapability(request.caller, 'subjects:admin');
    const row = await insertCollection(deps.db, request.body.name);
    if (!row) throw new AppError('PV3002', { collection: request.body.name });
    return reply.code(201).send({ name: row.name, created_at: row.created_at.toISOString() });
  });
}
