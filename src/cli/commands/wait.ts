/**
 * `wait cvi NAME --for=phase=Ready [--timeout=300s]`, kubectl style, driven by the watch stream (no polling).
 *
 * - met: `clustervirtualimage.virtualization.deckhouse.io/NAME condition met`, then `phase Ready, reason Ready`; exit 0.
 * - timeout: `error: timed out waiting for the condition on clustervirtualimages/NAME (phase Provisioning,
 *   progress 42.1%)`; exit 1.
 * - the image ends Failed while another phase was asked for: `error: clustervirtualimages/NAME failed (phase
 *   Failed, reason ProvisioningFailedTerminally): <status.failure.message>`; exit 1.
 *
 * Also `--for=condition=Ready[=True]`, `--for=delete` and `--for=jsonpath='{.status.format}'=qcow2`.
 */
import { Command } from 'commander';
import { getCondition, IMAGE_PHASES, type Image, type ImagePhase } from '../../images/index.ts';
import { qualifiedName, type ResourceInfo } from '../output/images.ts';
import { formatValue, JsonPathError, jsonpathValues } from '../output/jsonpath.ts';
import { CliError, ExitCode, notFound, parseDuration, resourceAndNames, type CliContext } from './context.ts';
import { forEachEvent } from './watch.ts';

export type WaitFor =
  | { type: 'phase'; phase: ImagePhase }
  | { type: 'condition'; condition: string; status: string }
  | { type: 'delete' }
  | { type: 'jsonpath'; expr: string; value?: string };

const FOR_HELP = 'phase=PHASE, condition=TYPE[=STATUS], delete, or jsonpath={.path}=VALUE';

/** Parses `--for`. */
export function parseWaitFor(text: string): WaitFor {
  const t = text.trim();
  if (t === 'delete') return { type: 'delete' };
  const m = /^(phase|condition|jsonpath)=(.*)$/is.exec(t);
  if (!m?.[1]) throw new CliError(`unrecognized --for "${text}": use ${FOR_HELP}`);
  const what = m[1].toLowerCase();
  const rest = m[2] ?? '';
  if (what === 'phase') {
    const phase = IMAGE_PHASES.find((p) => p.toLowerCase() === rest.toLowerCase());
    if (!phase) throw new CliError(`unknown phase "${rest}" in --for: use one of ${IMAGE_PHASES.join(', ')}`);
    return { type: 'phase', phase };
  }
  if (what === 'condition') {
    const [cond = '', status = 'True', ...extra] = rest.split('=');
    if (!cond || extra.length) throw new CliError(`invalid --for "${text}": use condition=TYPE or condition=TYPE=STATUS, e.g. condition=Ready`);
    const s = status.toLowerCase();
    return { type: 'condition', condition: cond, status: s === 'true' ? 'True' : s === 'false' ? 'False' : s === 'unknown' ? 'Unknown' : status };
  }
  // jsonpath='{.status.phase}'=Ready (the expression may be quoted; without "=VALUE" the field must exist).
  let expr = rest;
  let value: string | undefined;
  const q = rest[0];
  const endQuote = q === "'" || q === '"' ? rest.indexOf(q, 1) : -1;
  if (endQuote > 0) {
    expr = rest.slice(1, endQuote);
    const after = rest.slice(endQuote + 1);
    if (after !== '' && !after.startsWith('=')) throw new CliError(`invalid --for "${text}": use jsonpath='{.path}'=VALUE`);
    if (after !== '') value = after.slice(1);
  } else {
    const close = rest.lastIndexOf('}');
    const eq = close >= 0 ? (rest[close + 1] === '=' ? close + 1 : -1) : rest.indexOf('=');
    if (eq >= 0) {
      expr = rest.slice(0, eq);
      value = rest.slice(eq + 1);
    }
  }
  if (value !== undefined) value = value.replace(/^(['"])(.*)\1$/s, '$2');
  try {
    jsonpathValues({}, expr);
  } catch (e) {
    if (e instanceof JsonPathError) throw new CliError(`invalid jsonpath in --for "${text}": ${e.message}`);
    throw e;
  }
  return value === undefined ? { type: 'jsonpath', expr } : { type: 'jsonpath', expr, value };
}

export type WaitState = 'met' | 'failed' | 'pending';

/** Where an image stands with respect to `want` (`delete` is decided by the object's absence, not here). */
export function waitState(img: Image, want: WaitFor): WaitState {
  let met = false;
  switch (want.type) {
    case 'phase':
      met = img.status.phase === want.phase;
      break;
    case 'condition':
      met = getCondition(img.status, want.condition as Parameters<typeof getCondition>[1])?.status === want.status;
      break;
    case 'jsonpath': {
      const values = jsonpathValues(img, want.expr);
      met = want.value === undefined ? values.length > 0 : values.some((v) => formatValue(v) === want.value);
      break;
    }
    case 'delete':
      return 'pending';
  }
  if (met) return 'met';
  return img.status.phase === 'Failed' ? 'failed' : 'pending';
}

function describeWant(want: WaitFor): string {
  switch (want.type) {
    case 'phase':
      return `phase ${want.phase}`;
    case 'condition':
      return `condition ${want.condition}=${want.status}`;
    case 'delete':
      return 'deletion';
    case 'jsonpath':
      return `${want.expr}${want.value === undefined ? '' : `=${want.value}`}`;
  }
}

/** `phase Provisioning, progress 42.1%` */
function stateOf(img: Image | undefined): string {
  if (!img) return 'not found';
  return img.status.progress !== undefined ? `phase ${img.status.phase}, progress ${img.status.progress}` : `phase ${img.status.phase}`;
}

/** The line after `condition met`: `phase Ready, reason Ready`. */
export function finalLine(img: Image): string {
  const reason = getCondition(img.status, 'Ready')?.reason;
  return `phase ${img.status.phase}${reason ? `, reason ${reason}` : ''}`;
}

/** The error of an image that ended Failed. */
export function failedMessage(info: ResourceInfo, img: Image, want: WaitFor): string {
  const ready = getCondition(img.status, 'Ready');
  const reason = ready?.reason ?? img.status.failure?.reason ?? 'unknown';
  const message = img.status.failure?.message || ready?.message || 'no failure message';
  return `${info.plural}/${img.metadata.name} failed while waiting for ${describeWant(want)} (phase ${img.status.phase}, reason ${reason}): ${message}`;
}

interface WaitOptions {
  for: string;
  timeout: string;
  namespace?: string;
}

export function waitCommand(ctx: CliContext): Command {
  return new Command('wait')
    .description('Wait until an image reaches a phase (or condition), fails, or the timeout passes')
    .argument('<resource>', 'cvi | clustervirtualimage(s) | vi | virtualimage(s), or TYPE/NAME')
    .argument('[name]', 'name of the image')
    .requiredOption('--for <condition>', `what to wait for: ${FOR_HELP}`)
    .option('--timeout <duration>', 'how long to wait: 30s, 5m, 1h (0: check once)', '30s')
    .option('-n, --namespace <namespace>', 'namespace of a VirtualImage (default "default")')
    .addHelpText(
      'after',
      `
Exit codes: 0 when the condition is met; 1 on timeout, when the image ends Failed (and Failed was not asked for),
or when it is deleted while waiting.

Examples:
  dvcr-importer wait cvi ubuntu-22.04 --for=phase=Ready --timeout=300s
  dvcr-importer wait cvi/ubuntu-22.04 --for=condition=Ready --timeout=10m
  dvcr-importer wait cvi ubuntu-22.04 --for=delete`,
    )
    .action(async (resource: string, nameArg: string | undefined, opts: WaitOptions, cmd: Command) => {
      const { info, names } = resourceAndNames(resource, nameArg === undefined ? [] : [nameArg]);
      const name = names[0];
      if (name === undefined || names.length > 1) throw new CliError('name exactly one image to wait for, e.g. "wait cvi ubuntu --for=phase=Ready"');
      const want = parseWaitFor(opts.for);
      const timeoutMs = parseDuration(opts.timeout);
      const namespace = ctx.namespaceFor(info, opts);
      const client = ctx.clientFor(cmd);
      const label = `${qualifiedName(info.kind)}/${name}`;

      const met = (img: Image | undefined): void => {
        ctx.out(`${label} condition met\n`);
        if (img && want.type !== 'delete') ctx.out(`${finalLine(img)}\n`);
      };
      const decide = (img: Image): boolean => {
        const state = waitState(img, want);
        if (state === 'met') {
          met(img);
          return true;
        }
        if (state === 'failed') throw new CliError(failedMessage(info, img, want));
        return false;
      };

      let last = (await client.get(info.kind, name, namespace)) ?? undefined;
      if (!last) {
        if (want.type === 'delete') {
          met(undefined);
          return;
        }
        throw notFound(info, name);
      }
      if (decide(last)) return;

      const controller = new AbortController();
      let timedOut = false;
      let interrupted = false;
      const timer = timeoutMs > 0 ? setTimeout(() => ((timedOut = true), controller.abort()), timeoutMs) : undefined;
      const stop = ctx.io.onInterrupt(() => ((interrupted = true), controller.abort()));
      if (timeoutMs <= 0) {
        timedOut = true;
        controller.abort();
      }
      let deleted = false;
      try {
        const watchOpts: { name: string; namespace?: string; signal: AbortSignal } = { name, signal: controller.signal };
        if (namespace !== undefined) watchOpts.namespace = namespace;
        const end = await forEachEvent(client.watch(info.kind, watchOpts), controller.signal, (ev) => {
          if (ev.type === 'BOOKMARK') return false;
          const img = ev.object;
          if (img.metadata.name !== name || (namespace !== undefined && img.metadata.namespace !== namespace)) return false;
          if (ev.type === 'DELETED') {
            deleted = true;
            if (want.type === 'delete') met(undefined);
            return true;
          }
          last = img;
          return decide(img);
        });
        if (end === 'stopped') {
          if (deleted && want.type !== 'delete') {
            throw new CliError(`${info.plural}/${name} was deleted while waiting for ${describeWant(want)} (last ${stateOf(last)})`);
          }
          return;
        }
        if (interrupted) throw new ExitCode(130);
        if (end === 'ended' && !timedOut) throw new CliError(`the watch of ${info.plural}/${name} ended before the condition was met (${stateOf(last)})`);
        throw new CliError(`timed out waiting for the condition on ${info.plural}/${name} (${stateOf(last)})`);
      } finally {
        if (timer) clearTimeout(timer);
        stop();
      }
    });
}
