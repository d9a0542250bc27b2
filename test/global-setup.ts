import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Tests that start processes run the compiled entry points (`dist/bin/*.js`), as `npm start`
 * does: a child under `tsx` spends about a second of CPU compiling before it starts. So before
 * any test runs, `dist/` is rebuilt (incrementally) when a source file is newer than the last build.
 */

const root = fileURLToPath(new URL('../', import.meta.url));
const buildInfo = join(root, 'dist', '.tsbuildinfo');
const { include } = JSON.parse(readFileSync(join(root, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
const sources = [...include, 'tsconfig.json', 'tsconfig.build.json', 'package-lock.json'];

function newestChange(path: string): number {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) return 0;
  if (!stat.isDirectory()) return stat.mtimeMs;
  return Math.max(stat.mtimeMs, ...readdirSync(path).map((entry) => newestChange(join(path, entry))));
}

export default function setup(): void {
  const built = statSync(buildInfo, { throwIfNoEntry: false })?.mtimeMs ?? 0;
  if (Math.max(...sources.map((source) => newestChange(join(root, source)))) <= built) return;
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--incremental', '--tsBuildInfoFile', buildInfo], { cwd: root, stdio: 'inherit' });
  // tsc leaves the file as it was when no output changed: mark this build as the newest
  const now = new Date();
  utimesSync(buildInfo, now, now);
}
