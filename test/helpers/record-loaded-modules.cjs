// Preloaded into a child process (NODE_OPTIONS=--require …) by test/integration/tracing-processes.test.ts:
// as the process exits, writes the file of every CommonJS module it loaded (packages imported from
// ESM included) to LOADED_MODULES_FILE, one a line.
const { writeFileSync } = require('node:fs');

process.on('exit', () => writeFileSync(process.env.LOADED_MODULES_FILE, Object.keys(require.cache).join('\n')));
