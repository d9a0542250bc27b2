import cliProgress from 'cli-progress';
import type { RevocationClient } from '../../client/revocation-client.js';
import type { JobView } from '../../contracts/index.js';

/**
 * Follows a job to its end with a progress bar (processed of total, rate, ETA), or without one
 * for `json`. Ctrl-C detaches: the job goes on, and how to follow or cancel it is printed; exit
 * status 130.
 */
export async function follow(api: RevocationClient, jobId: string, json: boolean): Promise<JobView> {
  const bar = new cliProgress.SingleBar(
    { format: ' {bar} {percentage}% | {value}/{total} | {rate}/s | ETA {eta_formatted} | {state}', hideCursor: true, noTTYOutput: true, notTTYSchedule: 5000, etaBuffer: 20 },
    cliProgress.Presets.shades_classic,
  );
  let shown = false;
  const detach = () => {
    if (shown) bar.stop();
    process.stderr.write(`\ndetached from job ${jobId}: it goes on. Follow it: revoke status ${jobId} --follow. Cancel it: revoke cancel ${jobId}\n`);
    process.exit(130);
  };
  process.once('SIGINT', detach);
  const started = Date.now();
  try {
    if (json) return await api.waitForJob(jobId, { pollMs: 250, maxPollMs: 1000 });
    return await api.waitForJob(jobId, {
      pollMs: 250,
      maxPollMs: 500,
      onUpdate: (job) => {
        const processed = job.progress?.processed ?? (job.state === 'succeeded' ? 1 : 0);
        // a long delete's total is counted beside its first batches: null until then
        const counting = job.progress !== null && job.progress.total === null;
        const total = Math.max(job.progress?.total ?? processed, 1);
        const state = counting ? `${job.state}, counting the total` : job.state;
        const rate = Math.round(processed / Math.max(0.001, (Date.now() - started) / 1000));
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
