import { decodeJobCursor, encodeJobCursor, isIsoDay, type JobListQuery, type JobPage } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { listCommands } from '../../db/repositories/command.repository.js';
import type { Caller } from '../access.js';
import { jobView } from './commands.service.js';

/**
 * The page of jobs the caller may see (SPEC §5: the jobs it submitted; every job for
 * `subjects:admin`), newest first, starting after `query.cursor`. `next_cursor` is null on the
 * last page: one row more than the page is read to know.
 */
export async function listJobsFor(db: Db, caller: Caller, query: JobListQuery): Promise<JobPage> {
  const { subject } = caller;
  const rows = await listCommands(
    db,
    {
      submitterId: subject.capabilities.includes('subjects:admin') ? undefined : subject.id,
      state: query.state,
      type: query.type,
      since: query.since !== undefined && isIsoDay(query.since) ? `${query.since}T00:00:00Z` : query.since,
      after: query.cursor !== undefined ? decodeJobCursor(query.cursor) : undefined,
    },
    query.limit + 1,
  );
  const page = rows.slice(0, query.limit);
  const last = page.at(-1);
  return { jobs: page.map(jobView), next_cursor: rows.length > query.limit && last ? encodeJobCursor(last.position) : null };
}
