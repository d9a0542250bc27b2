import type { Redis } from 'ioredis';
import { type RedisClient, serverConnections } from './redis-connection.js';

/** Sockets whose writes are held until the end of the current turn (see holdWritesForTurn). */
const held = new WeakSet<object>();

/**
 * Holds the writes of a Redis connection until the end of the current turn of the event loop,
 * so that every command sent on it in this turn goes out in ONE write (`socket.cork()`, then
 * `uncork()` from setImmediate, which runs once this turn's callbacks and promise jobs are done).
 * The Redis counterpart of db/pipelined.ts, for commands that are independent of one another:
 * each keeps its own reply and its own error, nothing waits for a command not yet sent, and
 * nothing is atomic that was not (unlike MULTI). What it saves is the system calls and wake-ups of
 * one write per command (the main cost of a command on this kind of machine: bench/RESULTS.md),
 * without building an ioredis pipeline, which copies every command and script of the connection
 * (BullMQ 6's 64; measured with 5's 52: ~40 µs and ~14 KB each).
 *
 * Calling it again in the same turn does nothing more. A connection not yet connected has no
 * socket: its commands wait in ioredis's offline queue as always, and nothing is held. A cluster
 * client's writes are held on each node's connection: one write per node that gets commands.
 */
export function holdWritesForTurn(redis: RedisClient): void {
  for (const server of serverConnections(redis)) {
    const socket = (server as { stream?: Redis['stream'] }).stream;
    if (!socket || socket.destroyed || held.has(socket)) continue;
    held.add(socket);
    socket.cork();
    setImmediate(() => {
      held.delete(socket);
      socket.uncork();
    });
  }
}
