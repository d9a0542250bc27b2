import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, createCollection, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

describe('a delete by tag, end to end', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, 'cards');
  });
  afterAll(() => stack?.close());

  it('accepts with 202, runs in the worker, and publishes tokens.deleted then command.succeeded', async () => {
    const ids = await tokenize(stack, 'cards', [
      { object: { id: 'o1' }, tags: ['breach'] },
      { object: { id: 'o2' }, tags: ['breach'] },
      { object: { id: 'o3' }, tags: ['other'] },
    ]);
    const accepted = await call(stack, 'DELETE', '/api/pvlt/1.0/data/collections/cards/tokens?tags=breach&reason=AppFunctionality', { headers: { ...stack.admin, prefer: 'respond-async' } });
    expect(accepted.status).toBe(202);
    expect(accepted.headers.location).toBe(`/v1/jobs/${accepted.body.job_id}`);
    const job = await waitForJob(stack, accepted.body.job_id);
    expect(job).toMatchObject({ state: 'succeeded', result: { deleted: 2 }, attempts: 1 });
    const events = await waitForEvents(stack, (es) => es.some((e) => e.type === 'command.succeeded'));
    const deleted = events.find((e) => e.type === 'tokens.deleted');
    expect(deleted?.data).toMatchObject({ collection: 'cards', batch: { index: 0, last: true } });
    expect(new Set((deleted?.data as { token_ids: string[] }).token_ids)).toEqual(new Set(ids.slice(0, 2)));
  });
});
