import {
  CollectionParams,
  CountTokensQuery,
  CountTokensResponse,
  QueryTokensBody,
  QueryTokensQuery,
  QueryTokensResponse,
  TokenizeBody,
  TokenizeQuery,
  TokenizeResponse,
} from '../../contracts/index.js';
import { requireCapability, requireCollection, resolveReason, tenantScope } from '../access.js';
import type { AppDeps } from '../app.js';
import { countTokens, searchTokens, tokenize } from '../services/vault-tokens.service.js';
import type { ZodApp } from '../types.js';

const base = '/api/pvlt/1.0/data/collections/:collection';

/** Tokenize, query and count vault tokens (SPEC §6), in Piiano's envelope. */
export function vaultTokenRoutes(app: ZodApp, deps: AppDeps): void {
  const force = deps.config.FORCE_ACCESS_REASON;

  app.post(
    `${base}/tokens`,
    { config: { family: 'piiano' }, schema: { params: CollectionParams, querystring: TokenizeQuery, body: TokenizeBody, response: { 200: TokenizeResponse } } },
    async (request) => {
      requireCapability(request.caller, 'tokens:tokenize');
      requireCollection(request.caller, request.params.collection);
      resolveReason(request.query, force);
      const scope = tenantScope(request.caller.subject, request.headers['x-tenant-id']);
      return tokenize(deps.db, request.params.collection, scope, request.body, request.query.expiration_secs);
    },
  );

  app.post(
    `${base}/query/tokens`,
    { config: { family: 'piiano' }, schema: { params: CollectionParams, querystring: QueryTokensQuery, body: QueryTokensBody, response: { 200: QueryTokensResponse } } },
    async (request) => {
      requireCapability(request.caller, 'tokens:read');
      requireCollection(request.caller, request.params.collection);
      resolveReason(request.query, force);
      const scope = tenantScope(request.caller.subject, request.headers['x-tenant-id']);
      const options = request.query.options ?? [];
      return searchTokens(deps.db, request.params.collection, scope, request.body, { archived: options.includes('archived'), aggregated: options.includes('include_aggregated_data') });
    },
  );

  app.get(`${base}/count/tokens`, { config: { family: 'piiano' }, schema: { params: CollectionParams, querystring: CountTokensQuery, response: { 200: CountTokensResponse } } }, async (request) => {
    requireCapability(request.caller, 'tokens:read');
    requireCollection(request.caller, request.params.collection);
    resolveReason(request.query, force);
    const scope = tenantScope(request.caller.subject, request.headers['x-tenant-id']);
    return countTokens(deps.db, request.params.collection, scope);
  });
}
