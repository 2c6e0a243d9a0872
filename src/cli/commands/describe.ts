/** `describe cvi|vi [NAME...]`: the kubectl-describe-like text of each image (all of them when no name is given). */
import { Command } from 'commander';
import { describe } from '../output/describe.ts';
import { sortImages } from '../output/images.ts';
import { ExitCode, notFound, resourceAndNames, type CliContext } from './context.ts';

interface DescribeOptions {
  namespace?: string;
  allNamespaces?: boolean;
}

export function describeCommand(ctx: CliContext): Command {
  return new Command('describe')
    .description('Show the details of images: spec, status, sizes, checksums, failure and conditions')
    .argument('<resource>', 'cvi | clustervirtualimage(s) | vi | virtualimage(s), or TYPE/NAME')
    .argument('[name...]', 'names of the images; all when none')
    .option('-n, --namespace <namespace>', 'namespace of VirtualImages (default "default")')
    .option('-A, --all-namespaces', 'VirtualImages of every namespace')
    .addHelpText('after', '\nExamples:\n  dvcr-importer describe cvi ubuntu-22.04')
    .action(async (resource: string, rest: string[], opts: DescribeOptions, cmd: Command) => {
      const { info, names } = resourceAndNames(resource, rest);
      const namespace = ctx.namespaceFor(info, opts);
      const client = ctx.clientFor(cmd);
      if (names.length === 0) {
        const images = sortImages(await client.list(info.kind, namespace));
        if (images.length === 0) {
          ctx.err(info.namespaced && namespace !== undefined ? `No resources found in ${namespace} namespace.\n` : 'No resources found\n');
          return;
        }
        ctx.out(images.map((img) => describe(img)).join('\n\n'));
        return;
      }
      let missing = 0;
      let first = true;
      for (const name of names) {
        const img = await client.get(info.kind, name, namespace);
        if (!img) {
          missing++;
          ctx.err(`${notFound(info, name).message}\n`);
          continue;
        }
        ctx.out(`${first ? '' : '\n\n'}${describe(img)}`);
        first = false;
      }
      if (missing) throw new ExitCode(1);
    });
}
