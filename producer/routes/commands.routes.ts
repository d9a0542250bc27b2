import { CommandPreview, CommandQuery, CommandRequest, JobIdParams, JobView } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { submit } from '../intake.js';
import { cancelJob, findJobFor, jobView } from '../services/jobs.service.js';
import type { ZodApp } from '../types.js';

/**
 * `POST /v1/commands` (any command, asynchronous; `?dry_run=true` previews it), `GET /v1/jobs/{id}`
 * and `POST /v1/jobs/{id}/cancel` (SPEC §5, §6, §10).
 */
export function commandRoutes(app: ZodApp, deps: AppDeps): void {
  app.post(
    '/v1/commands',
    { config: { family: 'native', cachedCredential: true }, schema: { querystring: CommandQuery, body: CommandRequest, response: { 200: JobView.or(CommandPreview), 202: JobView } } },
    async (request, reply) => {
      return submit(deps, request, reply, { input: request.body, answer: 'native', dryRun: request.query.dry_run === 'true' });
    },
  );

  app.get('/v1/jobs/:id', { config: { family: 'native' }, schema: { params: JobIdParams, response: { 200: JobView } } }, async (request) => {
    return jobView(await findJobFor(deps.db, request.caller, request.params.id));
  });

  // 200: cancelled; 202: a step still holds the job after the wait, and ends it cancelled when it commits
  app.post('/v1/jobs/:id/cancel', { config: { family: 'native' }, schema: { params: JobIdParams, response: { 200: JobView, 202: JobView } } }, async (request, reply) => {
    const { row, done } = await cancelJob(deps, request.caller, request.params.id, request.id);
    if (!done) reply.header('location', `/v1/jobs/${row.id}`);
    return reply.code(done ? 200 : 202).send(jobView(row));
  });
}
