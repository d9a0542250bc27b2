import type { CommandPreview, JobView } from '../../contracts/index.js';

/** What `revoke` prints for a person (with --json it prints the service's views as they are). */

/** One line (a rotate's mapping after it) saying how a job ended. */
export function summary(job: JobView): string {
  if (job.state === 'failed')
    return `job ${job.job_id} failed: ${job.error?.error_code} ${job.error?.message}${job.error && Object.keys(job.error.context).length ? ` ${JSON.stringify(job.error.context)}` : ''}`;
  if (job.state === 'cancelled') return `job ${job.job_id} cancelled${typeof job.result?.deleted === 'number' ? `: deleted ${job.result.deleted} tokens before it stopped` : ''}`;
  const result = job.result ?? {};
  if (job.type === 'tokens.delete') return `job ${job.job_id} succeeded: deleted ${String(result.deleted)} tokens`;
  if (job.type === 'subject.lockout' || job.type === 'subject.unlock') {
    const { kind, id } = (result.subject ?? {}) as { kind?: string; id?: string };
    if (job.type === 'subject.unlock') return `job ${job.job_id} succeeded: unlocked ${kind} ${id}`;
    return `job ${job.job_id} succeeded: locked out ${kind} ${id}, revoked ${String(result.revoked)} access tokens`;
  }
  if (job.type === 'tokens.rotate') return `job ${job.job_id} succeeded: rotated ${Object.keys((result.mapping as object) ?? {}).length} tokens\n${JSON.stringify(result.mapping, null, 2)}`;
  return `job ${job.job_id} succeeded: ${JSON.stringify(result)}`;
}

const previewVerbs: Record<CommandPreview['type'], [string, string]> = {
  'tokens.delete': ['delete', 'token'],
  'tokens.rotate': ['rotate', 'token'],
  'access_token.revoke': ['revoke', 'access token'],
  'temporary_tokens.revoke_all': ['revoke', 'live temporary token'],
  'subject.lockout': ['revoke', 'access token'],
  'subject.unlock': ['enable', 'locked-out subject'],
};

/** What a dry run found, for a person: how many, up to 20 IDs, a rotate's missing IDs. */
export function previewSummary(preview: CommandPreview): string {
  const [verb, noun] = previewVerbs[preview.type];
  const lines = [`dry run: ${preview.type} would ${verb} ${preview.matches} ${noun}${preview.matches === 1 ? '' : 's'} now; nothing was submitted`];
  if (preview.sample.length > 0) lines.push(`${preview.sample.length < preview.matches ? `first ${preview.sample.length}` : 'all'}: ${preview.sample.join(', ')}`);
  if (preview.missing && preview.missing.length > 0) lines.push(`not found (the rotate would fail with PV3087, rotating nothing): ${preview.missing.join(', ')}`);
  return lines.join('\n');
}
