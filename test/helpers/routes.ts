import type { FastifyInstance } from 'fastify';

export interface ServedRoute {
  method: string;
  /** Fastify's form: `/v1/jobs/:id`, wildcards as `*`. */
  path: string;
}

/**
 * Every (method, path) pair the app serves, read from its route tree as `printRoutes` prints
 * it: each line a node whose path extends its parent's, its methods in brackets. HEAD routes are
 * included (Fastify adds one per GET). With `commonPrefix: false` (the default) a wildcard shows
 * as a bare `*` child (`/docs*`); with `true` the tree is split at shared prefixes and the
 * wildcard keeps its slash (`/docs/*`), a path `findRoute` accepts.
 */
export function servedRoutes(app: FastifyInstance, commonPrefix = false): ServedRoute[] {
  const prefixes: string[] = [];
  const routes: ServedRoute[] = [];
  for (const line of app.printRoutes({ commonPrefix }).split('\n')) {
    const match = /^((?:│ {3}| {4})*)(?:├── |└── )(.+?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!match) continue;
    const depth = (match[1] ?? '').length / 4;
    const path = (prefixes[depth - 1] ?? '') + match[2];
    prefixes.length = depth;
    prefixes.push(path);
    for (const method of match[3]?.split(', ') ?? []) routes.push({ method, path });
  }
  return routes;
}
