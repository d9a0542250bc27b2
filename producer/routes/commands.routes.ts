import { CommandRequest, JobIdParams, JobView } from '../../contracts/index.js';
import type { AppDeps } from '../app.js';
import { accept, type DoneRenderer } from '../intake.js';
import { prepareCommand } from '../services/command-intake.service.js';
import { findJobFor, jobView } from '../services/commands.service.js';
import type { ZodApp } from '../types.js';

/** Native routes answer a finished job with its view, failed or not. */
const view: DoneRenderer = (row, reply) => reply.code(200).send(jobView(row));

/** `POST /v1/commands` (any command) and `GET /v1/jobs/{id}` (SPEC §5, §6). */
export function commandRoutes(app: ZodApp, deps: AppDeps): void {
  app.post('/v1/commands', { config: { family: 'native', cachedCredential: true }, schema: { body: CommandRequest, response: { 200: JobView, 202: JobView } } }, async (request, reply) => {
    const { command, audit } = await prepareCommand(deps, request, request.body);
    return accept(deps, request, reply, command, audit, view);
  });

  app.get('/v1/jobs/:id', { config: { family: 'native' }, schema: { params: JobIdParams, response: { 200: JobView } } }, async (request) => {
    return jobView(await findJobFor(deps.db, request.caller, request.params.id));
  });
}
