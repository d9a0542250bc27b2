import {
  AppError,
  CreateSubjectBody,
  IssueAccessTokenBody,
  IssuedAccessToken,
  SubjectIdParams,
  SubjectTokensPage,
  SubjectTokensQuery,
  SubjectView,
  UpdateSubjectBody,
  VerifiedAccessToken,
} from '../../contracts/index.js';
import { requireCapability } from '../access.js';
import type { AppDeps } from '../app.js';
import { createSubject, getSubject, issueAccessToken, listSubjectTokens, updateSubject, verifyAccessToken } from '../services/subjects.service.js';
import type { ZodApp } from '../types.js';

/** Subjects, access tokens and verification (SPEC §6, native routes). */
export function subjectRoutes(app: ZodApp, deps: AppDeps): void {
  app.post('/v1/subjects', { config: { family: 'native' }, schema: { body: CreateSubjectBody, response: { 201: SubjectView } } }, async (request, reply) => {
    requireCapability(request.caller, 'subjects:admin');
    return reply.code(201).send(await createSubject(deps.db, request.body));
  });

  app.get('/v1/subjects/:id', { config: { family: 'native' }, schema: { params: SubjectIdParams, response: { 200: SubjectView } } }, async (request) => {
    requireCapability(request.caller, 'subjects:admin');
    return getSubject(deps.db, request.params.id);
  });

  app.patch('/v1/subjects/:id', { config: { family: 'native' }, schema: { params: SubjectIdParams, body: UpdateSubjectBody, response: { 200: SubjectView } } }, async (request) => {
    requireCapability(request.caller, 'subjects:admin');
    return updateSubject(deps.db, request.params.id, request.body);
  });

  app.get('/v1/subjects/:id/tokens', { config: { family: 'native' }, schema: { params: SubjectIdParams, querystring: SubjectTokensQuery, response: { 200: SubjectTokensPage } } }, async (request) => {
    requireCapability(request.caller, 'subjects:admin');
    return listSubjectTokens(deps.db, request.params.id, request.query);
  });

  app.post(
    '/v1/subjects/:id/tokens',
    { config: { family: 'native' }, schema: { params: SubjectIdParams, body: IssueAccessTokenBody, response: { 201: IssuedAccessToken } } },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return reply.code(201).send(await issueAccessToken(deps.db, request.caller, request.params.id, request.body));
    },
  );

  app.get('/v1/auth/verify', { config: { family: 'native', subjectToken: true }, schema: { response: { 200: VerifiedAccessToken } } }, async (request) => {
    const lookup = request.subjectToken;
    if (!lookup) throw new AppError('PV1002', { header: 'X-Subject-Token' }, 'The X-Subject-Token header must hold the access token to verify.');
    const outcome = verifyAccessToken(request.caller, lookup);
    if (!outcome.ok) throw new AppError('PV3006', { reason: outcome.reason }, `The access token is ${outcome.reason.replace('_', ' ')}.`);
    return outcome.token;
  });
}
