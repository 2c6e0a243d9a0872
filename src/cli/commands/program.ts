/**
 * The `dvcr-importer` command tree and {@link runCli}, which runs one command line against a {@link CliIO} and
 * returns the exit code (0 ok, 1 errors; 130 for an interrupted `wait`). Nothing here touches `process` directly,
 * so tests run commands in-process with a fake client.
 */
import { Command, CommanderError } from 'commander';
import { applyCommand } from './apply.ts';
import { CliContext, CliError, DEFAULT_SERVER, ExitCode, formatError, type CliIO } from './context.ts';
import { daemonCommands } from './daemons.ts';
import { deleteCommand } from './delete.ts';
import { describeCommand } from './describe.ts';
import { getCommand } from './get.ts';
import { packageVersion, versionCommand } from './version.ts';
import { waitCommand } from './wait.ts';

/** Builds the command tree; commands write through `ctx`. */
export function createProgram(ctx: CliContext): Command {
  const program = new Command('dvcr-importer')
    .description('Import virtual-machine images into DVCR, the in-cluster OCI registry, and manage them kubectl-style')
    .option('-s, --server <url>', `API address (default DVCR_IMPORTER_SERVER, else ${DEFAULT_SERVER})`)
    .option('--token <token>', 'bearer token for the API (default API_TOKEN)')
    .version(packageVersion(), '--version', 'print the version')
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => ctx.out(s),
      writeErr: (s) => ctx.err(s),
    })
    .exitOverride();
  program.addHelpText(
    'after',
    `
Resources: cvi (clustervirtualimage, clustervirtualimages), vi (virtualimage, virtualimages).

Examples:
  dvcr-importer up                                   # API, worker, Redis and DVCR on this machine
  dvcr-importer apply -f ubuntu.yaml
  dvcr-importer get cvi -w
  dvcr-importer wait cvi ubuntu-22.04 --for=phase=Ready --timeout=10m
  dvcr-importer describe cvi ubuntu-22.04
  dvcr-importer delete cvi ubuntu-22.04`,
  );
  const commands = [
    ...daemonCommands(ctx),
    applyCommand(ctx),
    getCommand(ctx),
    describeCommand(ctx),
    deleteCommand(ctx),
    waitCommand(ctx),
    versionCommand(ctx),
  ];
  for (const c of commands) {
    // Settings `program.command()` would copy (addCommand does not): output, exit override, suggestions.
    c.copyInheritedSettings(program);
    program.addCommand(c);
  }
  return program;
}

/** Runs one command line (`argv` without node and the script) and returns the exit code. */
export async function runCli(argv: readonly string[], io: CliIO): Promise<number> {
  const ctx = new CliContext(io);
  const program = createProgram(ctx);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has printed its message (or the help / version) already.
      return e.exitCode;
    }
    if (e instanceof ExitCode) return e.exitCode;
    if (e instanceof CliError && e.message === '') return e.exitCode;
    ctx.err(`${formatError(e, ctx.server)}\n`);
    return e instanceof CliError ? e.exitCode : 1;
  }
}
