/** `up`, `worker`, `serve`: the long-running processes (src/cli/daemons.ts), each until Ctrl-C / SIGTERM; and `check` (src/cli/check.ts). */
import { Command } from 'commander';
import { ExitCode, type CliContext } from './context.ts';

interface ListenOptions {
  listen?: string;
  dataDir?: string;
  demo?: boolean;
  demoSize?: string;
}

/** `512Mi`, `1Gi`, `200M`: bytes. */
export function parseDemoSize(s: string): number {
  const m = /^(\d+)(Mi|Gi|M|G)?$/.exec(s.trim());
  if (!m) throw new Error(`--demo-size "${s}": use a size like 256Mi or 1Gi`);
  const n = Number(m[1]) * { Mi: 2 ** 20, Gi: 2 ** 30, M: 1e6, G: 1e9, '': 2 ** 20 }[m[2] ?? '']!;
  if (n < 2 ** 20 || n > 64 * 2 ** 30) throw new Error(`--demo-size "${s}": between 1Mi and 64Gi`);
  return n;
}

export function daemonCommands(ctx: CliContext): Command[] {
  const up = new Command('up')
    .description('Run everything in one process tree: the API, a worker, and (unless REDIS_URL / DVCR_URL are set) an embedded Redis and DVCR registry')
    .option('--listen <host:port>', 'API address (default LISTEN from the environment, else 127.0.0.1:8080)')
    .option('--data-dir <dir>', 'folder for the embedded Redis and DVCR data and the log (default .data)')
    .option('--demo', 'also import a demo image: a qcow2 built here with qemu-img, pushed as a containerDisk (works offline)')
    .option('--demo-size <size>', 'data in the demo disk', '512Mi')
    .action(async (opts: ListenOptions) => {
      const daemons = await ctx.io.loadDaemons();
      const upOpts: { listen?: string; dataDir?: string; demo?: { dataBytes: number } } = {};
      if (opts.listen !== undefined) upOpts.listen = opts.listen;
      if (opts.dataDir !== undefined) upOpts.dataDir = opts.dataDir;
      if (opts.demo) upOpts.demo = { dataBytes: parseDemoSize(opts.demoSize ?? '512Mi') };
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
  const check = new Command('check')
    .description(
      'Compare the images in Redis with DVCR (same environment as worker: REDIS_URL, REDIS_PREFIX, DVCR_URL, ...): ' +
        'prints every inconsistency, exit code 1 when there is one',
    )
    .option('--verify-disk', "also read every Ready image's layer and check its disk file's sha256")
    .action(async (opts: { verifyDisk?: boolean }) => {
      const { runCheck } = await import('../check.ts');
      const code = await runCheck({ verifyDisk: opts.verifyDisk === true, out: (s) => ctx.out(s) });
      if (code !== 0) throw new ExitCode(code);
    });
  return [up, worker, serve, check];
}
