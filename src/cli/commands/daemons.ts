/** `up`, `worker`, `serve`: the long-running processes (src/cli/daemons.ts), each until Ctrl-C / SIGTERM. */
import { Command } from 'commander';
import type { CliContext } from './context.ts';

interface ListenOptions {
  listen?: string;
  dataDir?: string;
}

export function daemonCommands(ctx: CliContext): Command[] {
  const up = new Command('up')
    .description('Run everything in one process tree: the API, a worker, and (unless REDIS_URL / DVCR_URL are set) an embedded Redis and DVCR registry')
    .option('--listen <host:port>', 'API address (default LISTEN from the environment, else 127.0.0.1:8080)')
    .option('--data-dir <dir>', 'folder for the embedded Redis and DVCR data and the log (default .data)')
    .action(async (opts: ListenOptions) => {
      const daemons = await ctx.io.loadDaemons();
      const upOpts: { listen?: string; dataDir?: string } = {};
      if (opts.listen !== undefined) upOpts.listen = opts.listen;
      if (opts.dataDir !== undefined) upOpts.dataDir = opts.dataDir;
      await daemons.runUp(upOpts);
    });
  const worker = new Command('worker')
    .description('Run an import worker: takes import jobs from the queue and writes images to DVCR')
    .action(async () => {
      const daemons = await ctx.io.loadDaemons();
      await daemons.runWorker();
    });
  const serve = new Command('serve')
    .description('Run the HTTP API (and the housekeeping loop) that the CLI and controllers talk to')
    .option('--listen <host:port>', 'API address (default LISTEN from the environment, else 127.0.0.1:8080)')
    .action(async (opts: ListenOptions) => {
      const daemons = await ctx.io.loadDaemons();
      await daemons.runServe(opts.listen !== undefined ? { listen: opts.listen } : {});
    });
  return [up, worker, serve];
}
