/**
 * `get cvi|vi [NAME...] [-o wide|json|yaml|name|jsonpath=...] [-w] [-n NS | -A]`, kubectl style:
 *
 * ```
 * NAME           PHASE          CDROM   PROGRESS   AGE
 * ubuntu-22.04   Provisioning   false   28.2%      6s
 * ```
 *
 * `-w` prints the table, then a new row whenever an image's phase or progress changes, until Ctrl-C.
 */
import { Command, Option } from 'commander';
import type { ImageClientApi } from '../../api/client-types.ts';
import type { Image } from '../../images/index.ts';
import { jsonpath, JsonPathError, parseJsonPath } from '../output/jsonpath.ts';
import {
  listOf,
  objectName,
  sortImages,
  tableHeader,
  tableRow,
  toJson,
  toYaml,
  type ResourceInfo,
  type RowOptions,
} from '../output/images.ts';
import { columnWidths, formatRow, table } from '../output/table.ts';
import { CliError, ExitCode, notFound, resourceAndNames, type CliContext } from './context.ts';
import { forEachEvent } from './watch.ts';

export type OutputFormat =
  | { type: 'table'; wide: boolean }
  | { type: 'json' }
  | { type: 'yaml' }
  | { type: 'name' }
  | { type: 'jsonpath'; template: string };

const ALLOWED = 'json, yaml, name, wide, jsonpath=<template>';

/** Parses `-o`: `wide`, `json`, `yaml`, `name`, `jsonpath=<template>` (the template may be quoted). */
export function parseOutputFormat(value: string | undefined): OutputFormat {
  if (value === undefined || value === '') return { type: 'table', wide: false };
  if (value === 'wide') return { type: 'table', wide: true };
  if (value === 'json' || value === 'yaml' || value === 'name') return { type: value };
  const m = /^jsonpath(?:=(.*))?$/s.exec(value);
  if (m) {
    let template = m[1] ?? '';
    if (template.length >= 2 && (template[0] === "'" || template[0] === '"') && template.endsWith(template[0])) {
      template = template.slice(1, -1);
    }
    if (template === '') throw new CliError('template format specified but no template given: use -o jsonpath=\'{.status.phase}\'');
    try {
      parseJsonPath(template);
    } catch (e) {
      if (e instanceof JsonPathError) throw new CliError(`error parsing jsonpath ${template}: ${e.message}`);
      throw e;
    }
    return { type: 'jsonpath', template };
  }
  throw new CliError(`unable to match a printer suitable for the output format "${value}", allowed formats are: ${ALLOWED}`);
}

interface GetOptions {
  output?: string;
  watch?: boolean;
  namespace?: string;
  allNamespaces?: boolean;
  headers: boolean;
}

/** The whole output of a one-shot `get` of `images`; `single` when exactly one object was asked for by name. */
export function renderImages(images: Image[], format: OutputFormat, opts: { single: boolean; now: Date; rows?: RowOptions; headers?: boolean }): string {
  switch (format.type) {
    case 'table': {
      const rowOpts: RowOptions = { ...opts.rows, wide: format.wide };
      const rows = images.map((img) => tableRow(img, opts.now, rowOpts));
      return table(opts.headers === false ? rows : [tableHeader(rowOpts), ...rows]);
    }
    case 'json':
      return toJson(opts.single && images[0] ? images[0] : listOf(images));
    case 'yaml':
      return toYaml(opts.single && images[0] ? images[0] : listOf(images));
    case 'name':
      return images.map((img) => `${objectName(img)}\n`).join('');
    case 'jsonpath':
      return jsonpath(opts.single && images[0] ? images[0] : listOf(images), format.template);
  }
}

function noResources(info: ResourceInfo, namespace: string | undefined): string {
  return info.namespaced && namespace !== undefined ? `No resources found in ${namespace} namespace.\n` : 'No resources found\n';
}

async function getOnce(ctx: CliContext, client: ImageClientApi, info: ResourceInfo, names: string[], namespace: string | undefined, format: OutputFormat, opts: GetOptions): Promise<void> {
  const rows: RowOptions = { withNamespace: info.namespaced && namespace === undefined };
  if (names.length === 0) {
    const images = sortImages(await client.list(info.kind, namespace));
    if (images.length === 0 && format.type !== 'json' && format.type !== 'yaml' && format.type !== 'jsonpath') {
      ctx.err(noResources(info, namespace));
      return;
    }
    ctx.out(renderImages(images, format, { single: false, now: ctx.io.now(), rows, headers: opts.headers }));
    return;
  }
  const found: Image[] = [];
  const missing: string[] = [];
  for (const name of names) {
    const img = await client.get(info.kind, name, namespace);
    if (img) found.push(img);
    else missing.push(name);
  }
  if (found.length > 0) {
    ctx.out(renderImages(found, format, { single: names.length === 1, now: ctx.io.now(), rows, headers: opts.headers }));
  }
  for (const name of missing) ctx.err(`${notFound(info, name).message}\n`);
  if (missing.length) throw new ExitCode(1);
}

/** What a watch row depends on: a new row is printed when this changes. */
function rowKey(img: Image): string {
  return `${img.status.phase}\u0000${img.status.progress ?? ''}`;
}

function uidOf(img: Image): string {
  return img.metadata.uid || `${img.metadata.namespace ?? ''}/${img.metadata.name}`;
}

async function getWatch(ctx: CliContext, client: ImageClientApi, info: ResourceInfo, names: string[], namespace: string | undefined, format: OutputFormat, opts: GetOptions): Promise<void> {
  if (names.length > 1) throw new CliError('watch is only supported on individual resources and resource collections, but 2 or more resources were found; name one image or none');
  const name = names[0];
  const rowOpts: RowOptions = { withNamespace: info.namespaced && namespace === undefined, wide: format.type === 'table' && format.wide };

  const controller = new AbortController();
  const stop = ctx.io.onInterrupt(() => controller.abort());
  try {
    let initial: Image[];
    if (name !== undefined) {
      const img = await client.get(info.kind, name, namespace);
      if (!img) throw notFound(info, name);
      initial = [img];
    } else {
      initial = sortImages(await client.list(info.kind, namespace));
    }

    const printed = new Map<string, string>();
    let widths: number[] = [];
    let headerDone = opts.headers === false;
    let count = 0;
    const print = (images: Image[]): void => {
      if (images.length === 0) return;
      for (const img of images) printed.set(uidOf(img), rowKey(img));
      if (format.type === 'table') {
        const rows = images.map((img) => tableRow(img, ctx.io.now(), rowOpts));
        const header = headerDone ? [] : [tableHeader(rowOpts)];
        widths = columnWidths([...header, ...rows], widths);
        ctx.out([...header, ...rows].map((r) => formatRow(r, widths)).join(''));
        headerDone = true;
      } else if (format.type === 'yaml') {
        ctx.out(images.map((img) => `${count++ > 0 ? '---\n' : ''}${toYaml(img)}`).join(''));
      } else {
        ctx.out(images.map((img) => renderImages([img], format, { single: true, now: ctx.io.now() })).join(''));
      }
    };
    print(initial);

    const watchOpts: { name?: string; namespace?: string; signal: AbortSignal } = { signal: controller.signal };
    if (name !== undefined) watchOpts.name = name;
    if (namespace !== undefined) watchOpts.namespace = namespace;
    await forEachEvent(client.watch(info.kind, watchOpts), controller.signal, (ev) => {
      if (ev.type === 'BOOKMARK') return;
      const img = ev.object;
      if (name !== undefined && img.metadata.name !== name) return;
      if (namespace !== undefined && img.metadata.namespace !== namespace) return;
      if (ev.type === 'DELETED') {
        printed.delete(uidOf(img));
        return;
      }
      if (printed.get(uidOf(img)) !== rowKey(img)) print([img]);
    });
  } finally {
    stop();
  }
}

export function getCommand(ctx: CliContext): Command {
  return new Command('get')
    .description('Display one or many images (cvi, clustervirtualimage; vi, virtualimage)')
    .argument('<resource>', 'cvi | clustervirtualimage(s) | vi | virtualimage(s), or TYPE/NAME')
    .argument('[name...]', 'names of the images; all when none')
    .addOption(new Option('-o, --output <format>', `output format: ${ALLOWED}`))
    .option('-w, --watch', 'after listing, watch for changes of phase or progress (Ctrl-C to stop)')
    .option('-n, --namespace <namespace>', 'namespace of VirtualImages (default "default")')
    .option('-A, --all-namespaces', 'VirtualImages of every namespace')
    .option('--no-headers', 'do not print the table header')
    .addHelpText(
      'after',
      `
Examples:
  dvcr-importer get cvi
  dvcr-importer get cvi ubuntu-22.04 -w
  dvcr-importer get cvi ubuntu-22.04 -o wide
  dvcr-importer get cvi some-image -o jsonpath='{.status.imageUploadURLs}'
  dvcr-importer get vi -A`,
    )
    .action(async (resource: string, rest: string[], opts: GetOptions, cmd: Command) => {
      const { info, names } = resourceAndNames(resource, rest);
      const format = parseOutputFormat(opts.output);
      const namespace = ctx.namespaceFor(info, opts);
      const client = ctx.clientFor(cmd);
      if (opts.watch) await getWatch(ctx, client, info, names, namespace, format, opts);
      else await getOnce(ctx, client, info, names, namespace, format, opts);
    });
}
