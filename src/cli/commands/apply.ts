/**
 * `apply -f FILE|-`: every document of a multi-document YAML (or JSON) file, in order, like kubectl:
 *
 * ```
 * clustervirtualimage.virtualization.deckhouse.io/ubuntu-22.04 created
 * virtualimage.virtualization.deckhouse.io/cirros unchanged
 * ```
 *
 * Empty documents are skipped; a `kind: List` is applied item by item. A document the API refuses prints
 * `error: ...` and the others are still applied; the exit code is then 1. A file that is not valid YAML applies
 * nothing.
 */
import { Command } from 'commander';
import { parseAllDocuments } from 'yaml';
import type { ImageKind } from '../../images/index.ts';
import { qualifiedName, RESOURCES } from '../output/images.ts';
import { CliError, DEFAULT_NAMESPACE, ExitCode, formatError, type CliContext } from './context.ts';

interface ApplyOptions {
  filename: string[];
  namespace?: string;
}

async function readSource(ctx: CliContext, file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const c of ctx.io.stdin) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await ctx.io.readFile(file);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT') throw new CliError(`the path "${file}" does not exist`);
    if (code === 'EISDIR') throw new CliError(`the path "${file}" is a directory; pass a file (or - for standard input)`);
    throw new CliError(`cannot read "${file}": ${(e as Error).message}`);
  }
}

/** The objects of one file, in order: empty documents dropped, `kind: List` expanded. Throws on YAML errors. */
export function parseManifests(text: string, source: string): unknown[] {
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const label = source === '-' ? 'STDIN' : source;
  const list = Array.isArray(docs) ? docs : [docs];
  const out: unknown[] = [];
  list.forEach((doc, i) => {
    const err = doc.errors[0];
    if (err) {
      const where = list.length > 1 ? ` (document ${i + 1})` : '';
      throw new CliError(`error parsing ${label}${where}: ${err.message.split('\n')[0]}`);
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    if (typeof value === 'object' && !Array.isArray(value) && (value as { kind?: unknown }).kind === 'List') {
      const items = (value as { items?: unknown }).items;
      if (Array.isArray(items)) out.push(...items.filter((x) => x !== null && x !== undefined));
      return;
    }
    out.push(value);
  });
  return out;
}

function field(obj: unknown, key: string): unknown {
  return typeof obj === 'object' && obj !== null && !Array.isArray(obj) ? (obj as Record<string, unknown>)[key] : undefined;
}

export function applyCommand(ctx: CliContext): Command {
  return new Command('apply')
    .description('Create or update images from a file or standard input (multi-document YAML or JSON)')
    .requiredOption('-f, --filename <file>', 'file with the manifests; "-" reads standard input (repeatable)', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('-n, --namespace <namespace>', `namespace for VirtualImage manifests that name none (default "${DEFAULT_NAMESPACE}")`)
    .addHelpText(
      'after',
      `
Examples:
  dvcr-importer apply -f ubuntu.yaml
  dvcr-importer apply -f - <<EOF
  apiVersion: virtualization.deckhouse.io/v1alpha2
  kind: ClusterVirtualImage
  metadata:
    name: ubuntu-22.04
  spec:
    dataSource:
      type: HTTP
      http:
        url: https://cloud-images.ubuntu.com/minimal/releases/jammy/release/ubuntu-22.04-minimal-cloudimg-amd64.img
  EOF`,
    )
    .action(async (opts: ApplyOptions, cmd: Command) => {
      const objects: Array<{ obj: unknown; source: string }> = [];
      for (const file of opts.filename) {
        const text = await readSource(ctx, file);
        for (const obj of parseManifests(text, file)) objects.push({ obj, source: file });
      }
      if (objects.length === 0) throw new CliError('no objects passed to apply');
      const client = ctx.clientFor(cmd);
      let failed = false;
      for (const { obj } of objects) {
        try {
          const kind = field(obj, 'kind');
          const ns = field(field(obj, 'metadata'), 'namespace');
          if (kind === 'VirtualImage' && opts.namespace && typeof ns === 'string' && ns !== '' && ns !== opts.namespace) {
            throw new CliError(
              `the namespace from the provided object "${ns}" does not match the namespace "${opts.namespace}". You must pass '--namespace=${ns}' to perform this operation.`,
            );
          }
          const namespace = kind === 'VirtualImage' ? (opts.namespace ?? DEFAULT_NAMESPACE) : undefined;
          const result = await client.apply(obj, namespace ? { namespace } : undefined);
          const applied = result.object;
          const k = applied.kind as ImageKind;
          ctx.out(`${RESOURCES[k] ? qualifiedName(k) : String(k).toLowerCase()}/${applied.metadata.name} ${result.result}\n`);
        } catch (e) {
          failed = true;
          ctx.err(`${formatError(e, ctx.server)}\n`);
        }
      }
      // Each failure was reported above; only the exit code is left to set.
      if (failed) throw new ExitCode(1);
    });
}
