/**
 * Entry point of the `dvcr-importer` command (bin/dvcr-importer.js imports this file): runs the command line of
 * this process against the real API client and exits with its code. See commands/program.ts for the commands.
 */
import { readFile } from 'node:fs/promises';
import { ImageClient } from '../api/client.ts';
import { runCli } from './commands/program.ts';
import type { CliIO, Daemons } from './commands/context.ts';

function onInterrupt(handler: () => void): () => void {
  const on = (): void => handler();
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return () => {
    process.off('SIGINT', on);
    process.off('SIGTERM', on);
  };
}

// `get ... | head`: a closed pipe is not an error worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

const processIO: CliIO = {
  stdout: process.stdout,
  stderr: process.stderr,
  // Touched only by `apply -f -`.
  get stdin() {
    return process.stdin;
  },
  env: process.env,
  now: () => new Date(),
  createClient: (opts) => new ImageClient(opts),
  onInterrupt,
  readFile: (path) => readFile(path, 'utf8'),
  loadDaemons: async (): Promise<Daemons> => import('./daemons.ts'),
};

const code = await runCli(process.argv.slice(2), processIO);
process.exitCode = code;
// Let pending output drain, then leave even if a keep-alive socket or timer of a library lingers.
setTimeout(() => process.exit(code), 1000).unref();
