import { createServer, type Server } from 'node:http';
import type { Queue } from 'bullmq';
import client from 'prom-client';
import type { Db } from '../db/database.js';
import { outboxLagSeconds } from '../db/repositories/outbox.repository.js';
import { TIMED_OUT, timeLimit } from '../db/time-limit.js';

/** What the gauges read when scraped: the latest worker started in this process. */
let source: { db: Db; queue: Queue } | undefined;

/**
 * Points the gauges at a worker's pool and queue, registering them on the first call: a process
 * that runs no worker (a producer alone, which counts the jobs it cancels in commandsFinished)
 * shows no outbox or queue gauge rather than a zero it never read.
 */
export function setMetricsSource(db: Db, queue: Queue): void {
  if (!source) registerGauges();
  source = { db, queue };
}

/**
 * Counted by the process whose transaction ended the command: a worker for succeeded, failed, and
 * cancelled by its next step; the producer that served `POST /v1/jobs/{id}/cancel` for a job the
 * cancel itself ended.
 */
export const commandsFinished = new client.Counter({
  name: 'revocation_commands_total',
  help: 'Commands that ended, by type and outcome (succeeded, failed, cancelled).',
  labelNames: ['type', 'outcome'] as const,
});

export const jobDuration = new client.Histogram({
  name: 'revocation_job_duration_seconds',
  help: 'Time from a job attempt start to the command ending, by command type.',
  labelNames: ['type'] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
});

export const transactionRetries = new client.Counter({
  name: 'revocation_transaction_retries_total',
  help: 'Transactions run again after a conflict, by SQLSTATE.',
  labelNames: ['sqlstate'] as const,
});

export const groupCommitSize = new client.Histogram({
  name: 'revocation_group_commit_size',
  help: 'Command steps committed per shared transaction (group commit); a step that ran alone is not counted.',
  buckets: [2, 4, 8, 16, 32, 64],
});

export const reconcilerRequeued = new client.Counter({
  name: 'revocation_reconciler_requeued_total',
  help: 'Unfinished commands the reconciler enqueued again.',
});

export const eventsPublished = new client.Counter({
  name: 'revocation_events_published_total',
  help: 'Outbox events added to the Redis Stream (by the worker that committed them, or by the outbox relay).',
});

const queueStates = ['waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized'] as const;

/** What `read` gives within a second, else undefined: a scrape answers while Postgres or Redis is out of reach. */
async function withinASecond<T>(read: Promise<T>): Promise<T | undefined> {
  const outcome = await timeLimit(read, 1000).catch(() => undefined);
  return outcome === TIMED_OUT ? undefined : outcome;
}

function registerGauges(): void {
  new client.Gauge({
    name: 'revocation_outbox_lag_seconds',
    help: 'Age of the oldest event not yet published (0 when none waits; NaN when Postgres does not answer).',
    async collect() {
      this.set(source ? ((await withinASecond(outboxLagSeconds(source.db))) ?? NaN) : 0);
    },
  });
  new client.Gauge({
    name: 'revocation_queue_jobs',
    help: 'BullMQ jobs of the command queue, by state (absent when Redis does not answer).',
    labelNames: ['state'] as const,
    async collect() {
      if (!source) return;
      const counts = await withinASecond(source.queue.getJobCounts(...queueStates));
      if (counts === undefined) this.reset();
      else for (const state of queueStates) this.set({ state }, counts[state] ?? 0);
    },
  });
}

/** A bare /metrics server for a worker running without the producer. */
export function serveMetrics(port: number, host: string): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.url !== '/metrics') {
      response.writeHead(404).end();
      return;
    }
    client.register.metrics().then(
      (text) => response.writeHead(200, { 'content-type': client.register.contentType }).end(text),
      () => response.writeHead(500).end(),
    );
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}
