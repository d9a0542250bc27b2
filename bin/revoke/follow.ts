import cliProgress from 'cli-progress';
import type { RevocationClient } from '../../client/revocation-client.js';
import { type JobView, terminalStates } from '../../contracts/index.js';

/**
 * Follows a job to its end with a progress bar (processed of total, rate, ETA), or without one
 * for `json`. Ctrl-C detaches: the job goes on, and how to follow or cancel it is printed; exit
 * status 130. With `announce`, "accepted job ID" goes to stderr once Ctrl-C detaches, not before.
 */
export async function follow(api: RevocationClient, jobId: string, json: boolean, announce = false): Promise<JobView> {
  const bar = new cliProgress.SingleBar(
    {
      format: ' {bar} {percentage}% | {value}/{total} | {rate}/s | ETA {eta_formatted} | {state}',
      // cli-progress's own formatter prints an unknown ETA ('NULL', 'INF') as 'LLs', 'NFs'
      formatTime: (eta, options, roundTo) => (typeof eta === 'number' ? cliProgress.Format.TimeFormat(eta, options, roundTo) : '-'),
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 5000,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  let shown = false;
  const detach = () => {
    if (shown) bar.stop();
    process.stderr.write(`\ndetached from job ${jobId}: it goes on. Follow it: revoke status ${jobId} --follow. Cancel it: revoke cancel ${jobId}\n`);
    process.exit(130);
  };
  process.once('SIGINT', detach);
  if (announce) process.stderr.write(`accepted job ${jobId}\n`);
  try {
    if (json) return await api.waitForJob(jobId, { pollMs: 250, maxPollMs: 1000 });
    return await api.waitForJob(jobId, {
      pollMs: 250,
      maxPollMs: 500,
      onUpdate: (job) => {
        const processed = job.progress?.processed ?? (job.state === 'succeeded' ? 1 : 0);
        // a long delete's total is counted beside its first batches: null until then (and for good if it was cancelled first)
        const counting = job.progress !== null && job.progress.total === null && !terminalStates.includes(job.state);
        const total = Math.max(job.progress?.total ?? processed, 1);
        const state = counting ? `${job.state}, counting the total` : job.state;
        // over the job's own run, so that a job followed late (or already ended) shows its real rate
        const ran = (job.finished_at ? Date.parse(job.finished_at) : Date.now()) - (job.started_at ? Date.parse(job.started_at) : Date.now());
        const rate = Math.round(processed / Math.max(0.001, ran / 1000));
        if (!shown) bar.start(total, processed, { rate, state });
        shown = true;
        bar.setTotal(total);
        bar.update(processed, { rate, state });
      },
    });
  } finally {
    process.off('SIGINT', detach);
    if (shown) bar.stop();
  }
}
