import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance } from 'fastify';

export const DASHBOARD_PATH = '/admin/queues';

/**
 * The BullMQ dashboard (bull-board) at /admin/queues, for `subjects:admin` only. A browser
 * signs in with HTTP Basic auth: any user name, the access token as password.
 */
export async function registerQueueDashboard(app: FastifyInstance, queue: Queue): Promise<void> {
  const adapter = new FastifyAdapter();
  adapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({ queues: [new BullMQAdapter(queue, { readOnlyMode: false })], serverAdapter: adapter });
  await app.register(adapter.registerPlugin() as never, { prefix: DASHBOARD_PATH });
}
