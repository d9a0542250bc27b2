import { setTimeout as sleep } from 'node:timers/promises';
import type { z } from 'zod';
import {
  type CommandInput,
  CommandPreview,
  type CommandType,
  JobPage,
  type JobState,
  JobView,
  type SubjectRef,
  SubjectTokensPage,
  SubjectView,
  terminalStates,
  type UpdateSubjectBody,
} from '../contracts/index.js';

export interface ClientOptions {
  /** e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** An access token (the secret). */
  token: string;
  /** Recorded as the audit `source` of commands: 'client' (default) or 'cli'. */
  source?: 'client' | 'cli';
  fetch?: typeof fetch;
}

/** An answer that was not a success; `body` holds the service's error envelope. */
export class RevocationApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    const envelope = body as { error_code?: string; message?: string } | undefined;
    super(envelope?.message ? `${status} ${envelope.error_code ?? ''}: ${envelope.message}` : `HTTP ${status}`);
    this.name = 'RevocationApiError';
  }

  get errorCode(): string | undefined {
    return (this.body as { error_code?: string } | undefined)?.error_code;
  }
}

export interface SubmitOptions {
  /** Makes the submission safe to retry: the same key and command give the same job. */
  idempotencyKey?: string;
  /** Seconds the service may hold the request for the job to end (`Prefer: wait`); it cuts them to its SYNC_WAIT_SECONDS (default 30). */
  waitSeconds?: number;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Called with each polled view (progress, state). */
  onUpdate?: (job: JobView) => void;
  /** First poll interval; doubles up to maxPollMs. */
  pollMs?: number;
  maxPollMs?: number;
}

/** Which jobs `listJobs` asks for (GET /v1/jobs); every field optional. */
export interface JobFilter {
  state?: JobState;
  type?: CommandType;
  /** Jobs created at or after this: a Date, or an ISO 8601 date (2024-05-01) or date-time with an offset. */
  since?: Date | string;
  /** Jobs per page: 1 to 500, default 50. */
  limit?: number;
  /** The `next_cursor` of the previous page. */
  cursor?: string;
}

/**
 * A typed client of the revocation service for other services: submit any command, read and
 * wait for jobs. Every answer is validated against the contracts.
 */
export class RevocationClient {
  private readonly fetch: typeof fetch;

  constructor(private readonly options: ClientOptions) {
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  private async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown; headers: Headers }> {
    const response = await this.fetch(new URL(path, this.options.baseUrl), {
      method,
      headers: {
        authorization: `Bearer ${this.options.token}`,
        'x-request-source': this.options.source ?? 'client',
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...headers,
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (response.status >= 400) throw new RevocationApiError(response.status, parsed);
    return { status: response.status, body: parsed, headers: response.headers };
  }

  /** Submits a command (`POST /v1/commands`). Returns its job view; throws RevocationApiError on 4xx/5xx. */
  async submit(command: CommandInput, options: SubmitOptions = {}): Promise<JobView & { replayed: boolean }> {
    const headers: Record<string, string> = {};
    if (options.idempotencyKey) headers['idempotency-key'] = options.idempotencyKey;
    if (options.waitSeconds !== undefined) headers.prefer = `wait=${Math.max(0, Math.floor(options.waitSeconds))}`; // the service cuts it to its SYNC_WAIT_SECONDS
    const answer = await this.request('POST', '/v1/commands', command, headers);
    return { ...JobView.parse(answer.body), replayed: answer.headers.get('idempotent-replayed') === 'true' };
  }

  /**
   * What the command would touch if it ran now (`POST /v1/commands?dry_run=true`): the same
   * validation and authorization as submit, and nothing is recorded, changed or enqueued.
   * Throws RevocationApiError on 4xx/5xx (503 PV1009 when counting takes too long).
   */
  async preview(command: CommandInput): Promise<CommandPreview> {
    return CommandPreview.parse((await this.request('POST', '/v1/commands?dry_run=true', command)).body);
  }

  /**
   * Cancels a job (`POST /v1/jobs/{id}/cancel`): a queued job never runs, a running bulk delete
   * stops after the batch in progress. Returns the job view: cancelled (its result says what was
   * done), or still running when a step held it past the wait (the step ends it cancelled when it
   * commits); cancelling a cancelled job returns it again. Throws RevocationApiError: 409 PV3011
   * when the job already succeeded or failed, 409 PV3013 when it is a lockout that has started,
   * 404 PV3005 when it is not the caller's to see.
   */
  async cancel(jobId: string): Promise<JobView> {
    return JobView.parse((await this.request('POST', `/v1/jobs/${encodeURIComponent(jobId)}/cancel`)).body);
  }

  /** The job's current view (`GET /v1/jobs/{id}`). */
  async job(id: string): Promise<JobView> {
    return JobView.parse((await this.request('GET', `/v1/jobs/${encodeURIComponent(id)}`)).body);
  }

  /**
   * One page of the jobs the caller may see, newest first (`GET /v1/jobs`): its own, or every
   * job for `subjects:admin`. `next_cursor` asks for the next page; null on the last one.
   */
  async listJobs(filter: JobFilter = {}): Promise<JobPage> {
    const query = new URLSearchParams();
    if (filter.state !== undefined) query.set('state', filter.state);
    if (filter.type !== undefined) query.set('type', filter.type);
    if (filter.since !== undefined) query.set('since', filter.since instanceof Date ? filter.since.toISOString() : filter.since);
    if (filter.limit !== undefined) query.set('limit', String(filter.limit));
    if (filter.cursor !== undefined) query.set('cursor', filter.cursor);
    const search = query.toString();
    return JobPage.parse((await this.request('GET', `/v1/jobs${search ? `?${search}` : ''}`)).body);
  }

  /** Every job `listJobs(filter)` would list, page after page (`limit` is the page size). */
  async *jobs(filter: Omit<JobFilter, 'cursor'> = {}): AsyncGenerator<JobView, void, undefined> {
    let cursor: string | undefined;
    do {
      const page = await this.listJobs({ ...filter, ...(cursor !== undefined && { cursor }) });
      yield* page.jobs;
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
  }

  /**
   * Polls the job with backoff until it ends (succeeded, failed or cancelled); returns the final view. Throws on
   * timeout (the job goes on running: poll again later).
   */
  async waitForJob(id: string, options: WaitOptions = {}): Promise<JobView> {
    const deadline = Date.now() + (options.timeoutMs ?? 10 * 60_000);
    let delay = options.pollMs ?? 100;
    for (;;) {
      const job = await this.job(id);
      options.onUpdate?.(job);
      if (terminalStates.includes(job.state)) return job;
      if (Date.now() + delay > deadline) throw new Error(`job ${id} did not end in time (state ${job.state})`);
      await sleep(delay);
      delay = Math.min(options.maxPollMs ?? 2000, delay * 2);
    }
  }

  /** Submits, then waits for the job to end: `Prefer: wait` first, polling after that. */
  async run(command: CommandInput, options: SubmitOptions & WaitOptions = {}): Promise<JobView> {
    const job = await this.submit(command, { ...options, waitSeconds: options.waitSeconds ?? 10 });
    if (terminalStates.includes(job.state)) return job;
    return this.waitForJob(job.job_id, options);
  }

  /**
   * Locks the subject out (`subject.lockout`, SPEC §10) and waits for the job to end: the
   * subject is disabled when the job starts, and the job's result says how many of its access
   * tokens were revoked (`{ subject, revoked }`). Needs `subjects:admin`, or `security_admin`
   * in the subject's domain.
   */
  async lockout(subject: SubjectRef, options: SubmitOptions & WaitOptions = {}): Promise<JobView> {
    return this.run({ type: 'subject.lockout', subject }, options);
  }

  /** Enables a locked-out subject again (`subject.unlock`) and waits for the job to end; its old tokens stay revoked. */
  async unlock(subject: SubjectRef, options: SubmitOptions & WaitOptions = {}): Promise<JobView> {
    return this.run({ type: 'subject.unlock', subject }, options);
  }

  /** The subject (`GET /v1/subjects/{id}`, `subjects:admin`), `disabled_at` set while it is locked out. */
  async getSubject(id: string): Promise<SubjectView> {
    return SubjectView.parse((await this.request('GET', `/v1/subjects/${encodeURIComponent(id)}`)).body);
  }

  /** Replaces the grants named (`PATCH /v1/subjects/{id}`, `subjects:admin`); they hold from the next request on. Returns the subject. */
  async updateSubject(id: string, changes: z.input<typeof UpdateSubjectBody>): Promise<SubjectView> {
    return SubjectView.parse((await this.request('PATCH', `/v1/subjects/${encodeURIComponent(id)}`, changes)).body);
  }

  /** A page of the subject's access tokens, by token ID (`GET /v1/subjects/{id}/tokens`, `subjects:admin`); pass `next_after` as `after` for the next. */
  async listSubjectTokens(id: string, page: { after?: string; limit?: number } = {}): Promise<SubjectTokensPage> {
    const query = new URLSearchParams();
    if (page.after !== undefined) query.set('after', page.after);
    if (page.limit !== undefined) query.set('limit', String(page.limit));
    const text = query.toString();
    const suffix = text ? `?${text}` : '';
    return SubjectTokensPage.parse((await this.request('GET', `/v1/subjects/${encodeURIComponent(id)}/tokens${suffix}`)).body);
  }
}
