/** What `timeLimit` gives for work that has not settled in time. */
export const TIMED_OUT = Symbol('timed out');

/**
 * The outcome of `work` (a wait on Postgres or Redis), or TIMED_OUT if it has not settled within
 * `ms`. A promise cannot be stopped: the work goes on, its outcome unread. Rejects as `work` does.
 */
export async function timeLimit<T>(work: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<typeof TIMED_OUT>((resolve) => (timer = setTimeout(resolve, ms, TIMED_OUT)))]);
  } finally {
    clearTimeout(timer);
  }
}
