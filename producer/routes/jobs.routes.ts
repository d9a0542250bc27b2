import { JobListQuery, JobPage } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { listJobsFor } from '../services/jobs.service.js';
import type { ZodApp } from '../types.js';

/**
 * `GET /v1/jobs?state=&type=&since=&limit=&cursor=` (SPEC §10): the jobs the caller may see,
 * newest first, a page at a time (`next_cursor`).
 */
export function jobRoutes(app: ZodApp, deps: AppDeps): void {
  app.get('/v1/jobs', { config: { family: 'native' }, schema: { querystring: JobListQuery, response: { 200: JobPage } } }, async (request) => {
    return listJobsFor(deps.db, request.caller, request.query);
  });
}
