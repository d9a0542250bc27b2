import { CommandRequest, JobIdParams, JobView } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { submit } from '../intake.js';
import { findJobFor, jobView } from '../services/jobs.service.js';
import type { ZodApp } from '../types.js';

/** `POST /v1/commands` (any command, asynchronous) and `GET /v1/jobs/{id}` (SPEC §5, §6). */
export function commandRoutes(app: ZodApp, deps: AppDeps): void {
  app.post('/v1/commands', { config: { family: 'native', cachedCredential: true }, schema: { body: CommandRequest, response: { 200: JobView, 202: JobView } } }, async (request, reply) => {
    return submit(deps, request, reply, { input: request.body, answer: 'native' });
  });

  app.get('/v1/jobs/:id', { config: { family: 'native' }, schema: { params: JobIdParams, response: { 200: JobView } } }, async (request) => {
    return jobView(await findJobFor(deps.db, request.caller, request.params.id));
  });
}
