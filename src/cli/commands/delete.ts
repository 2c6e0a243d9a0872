/** `delete cvi|vi NAME...`: `clustervirtualimage.virtualization.deckhouse.io "NAME" deleted`. */
import { Command } from 'commander';
import { qualifiedName } from '../output/images.ts';
import { CliError, ExitCode, notFound, resourceAndNames, type CliContext } from './context.ts';

interface DeleteOptions {
  namespace?: string;
  ignoreNotFound?: boolean;
}

export function deleteCommand(ctx: CliContext): Command {
  return new Command('delete')
    .description('Delete images: the import is cancelled and the image removed from DVCR')
    .argument('<resource>', 'cvi | clustervirtualimage(s) | vi | virtualimage(s), or TYPE/NAME')
    .argument('[name...]', 'names of the images')
    .option('-n, --namespace <namespace>', 'namespace of VirtualImages (default "default")')
    .option('--ignore-not-found', 'treat "not found" as a successful delete')
    .addHelpText('after', '\nExamples:\n  dvcr-importer delete cvi ubuntu-22.04')
    .action(async (resource: string, rest: string[], opts: DeleteOptions, cmd: Command) => {
      const { info, names } = resourceAndNames(resource, rest);
      if (names.length === 0) throw new CliError('resource(s) were provided, but no name was specified: name the images to delete');
      const namespace = ctx.namespaceFor(info, opts);
      const client = ctx.clientFor(cmd);
      let missing = 0;
      for (const name of names) {
        const deleted = await client.delete(info.kind, name, namespace);
        if (deleted) {
          ctx.out(`${qualifiedName(info.kind)} "${name}" deleted\n`);
        } else if (!opts.ignoreNotFound) {
          missing++;
          ctx.err(`${notFound(info, name).message}\n`);
        }
      }
      if (missing) throw new ExitCode(1);
    });
}
