/** Waits `ms` milliseconds: Node's promise timer, the one sleep of the tests (the code imports it from Node as well). */
export { setTimeout as sleep } from 'node:timers/promises';
