import type { RevocationClient } from '../../client/revocation-client.js';
import { JobListQuery, type JobView } from '../../contracts/index.js';
import { type Flags, usageError } from './args.js';

/** `revoke jobs`: the filter flags are checked against the route's own schema (bad usage, exit 2). */
export async function jobs(api: RevocationClient, values: Flags): Promise<void> {
  if (values.all && values.cursor !== undefined) usageError('jobs takes --cursor or --all, not both');
  const flags = { state: values.state, type: values.type, since: values.since, limit: values.limit, cursor: values.cursor };
  const parsed = JobListQuery.safeParse(Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)));
  if (!parsed.success) usageError(parsed.error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; '));
  const { state, type, since, limit, cursor } = parsed.data;
  const filter = { ...(state && { state }), ...(type && { type }), ...(since && { since }), limit };
  // the table's header goes out with the first answer, so that an error leaves no table behind
  let header = !values.json;
  const print = (job?: JobView) => {
    if (header) process.stdout.write(`${jobLine()}\n`);
    header = false;
    if (job) process.stdout.write(`${values.json ? JSON.stringify(job) : jobLine(job)}\n`);
  };
  if (values.all) {
    for await (const job of api.jobs(filter)) print(job);
    print();
    return;
  }
  const page = await api.listJobs({ ...filter, ...(cursor !== undefined && { cursor }) });
  print();
  for (const job of page.jobs) print(job);
  if (page.next_cursor !== null) process.stderr.write(`more: --cursor ${page.next_cursor}\n`);
}

/** A row of the `revoke jobs` table; without a job, its header. */
function jobLine(job?: JobView): string {
  const outcome = (j: JobView) => {
    if (j.error) return `${j.error.error_code} ${j.error.message}`;
    if (j.progress) return `${j.progress.processed}/${j.progress.total ?? '?'}`;
    if (j.result && typeof j.result.deleted === 'number') return `deleted ${j.result.deleted}`;
    if (j.result && typeof j.result.revoked === 'number') return `revoked ${j.result.revoked}`;
    return '';
  };
  const cells = job ? [job.job_id, job.type, job.state, job.created_at, job.finished_at ?? '-', outcome(job)] : ['JOB ID', 'TYPE', 'STATE', 'CREATED', 'FINISHED', 'OUTCOME'];
  const widths = [36, 27, 9, 24, 24];
  return cells
    .map((c, i) => (i < widths.length ? c.padEnd(widths[i]!) : c))
    .join('  ')
    .trimEnd();
}
