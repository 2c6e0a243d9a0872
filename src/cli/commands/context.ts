/**
 * What every command gets: where to write, the clock, how to reach the API, how to learn about Ctrl-C, and the
 * errors commands throw. Tests pass their own {@link CliIO} (a fake client, captured output, a fixed clock);
 * `main.ts` passes the process.
 */
import type { Command } from 'commander';
import { ApiError } from '../../api/client.ts';
import type { ImageClientApi } from '../../api/client-types.ts';
import type { ImageKind } from '../../images/index.ts';
import { RESOURCES, resolveResource, type ResourceInfo } from '../output/images.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';
/** kubectl's namespace when none is given. */
export const DEFAULT_NAMESPACE = 'default';

export interface Output {
  write(text: string): unknown;
}

export interface ClientOptions {
  server: string;
  token?: string;
}

export interface Daemons {
  runUp(opts: { listen?: string; dataDir?: string; demo?: { dataBytes: number } }): Promise<void>;
  runWorker(): Promise<void>;
  runServe(opts: { listen?: string }): Promise<void>;
}

export interface CliIO {
  stdout: Output;
  stderr: Output;
  /** Read by `apply -f -`. */
  stdin: AsyncIterable<Buffer | string>;
  env: Record<string, string | undefined>;
  now(): Date;
  /** Makes the API client. */
  createClient(opts: ClientOptions): ImageClientApi;
  /** Calls `handler` on Ctrl-C / SIGTERM until the returned function is called. */
  onInterrupt(handler: () => void): () => void;
  readFile(path: string): Promise<string>;
  /** The long-running commands (loaded on use: they pull in the server and worker code). */
  loadDaemons(): Promise<Daemons>;
}

/**
 * An error a command reports. Printed as `error: <message>` unless `raw` (kubectl's `Error from server (...)` lines
 * are printed as they are).
 */
export class CliError extends Error {
  override readonly name = 'CliError';
  readonly raw: boolean;
  readonly exitCode: number;
  constructor(message: string, opts: { raw?: boolean; exitCode?: number } = {}) {
    super(message);
    this.raw = opts.raw ?? false;
    this.exitCode = opts.exitCode ?? 1;
  }
}

/** Ends a command with an exit code after it has printed what it had to say (nothing more is printed). */
export class ExitCode extends Error {
  override readonly name = 'ExitCode';
  constructor(readonly exitCode: number) {
    super(`exit code ${exitCode}`);
  }
}

/** `Error from server (NotFound): clustervirtualimages "ubuntu" not found` */
export function notFound(info: ResourceInfo, name: string): CliError {
  return new CliError(`Error from server (NotFound): ${info.plural} "${name}" not found`, { raw: true });
}

/** The kind a resource word names, or a kubectl-like error. */
export function resourceOf(word: string): ResourceInfo {
  const info = resolveResource(word);
  if (!info) {
    throw new CliError(
      `the server doesn't have a resource type "${word}"; use cvi (clustervirtualimage) or vi (virtualimage)`,
    );
  }
  return info;
}

/**
 * `TYPE NAME...` or `TYPE/NAME...` (kubectl accepts both): the resource and the names given (maybe none).
 */
export function resourceAndNames(first: string, rest: readonly string[]): { info: ResourceInfo; names: string[] } {
  const slash = first.indexOf('/');
  if (slash >= 0) {
    const info = resourceOf(first.slice(0, slash));
    const names = [first.slice(slash + 1)];
    for (const r of rest) {
      const s = r.indexOf('/');
      if (s < 0) throw new CliError(`there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'dvcr-importer get cvi/ubuntu' instead of 'dvcr-importer get cvi cvi/ubuntu')`);
      if (resourceOf(r.slice(0, s)).kind !== info.kind) throw new CliError(`"${r}": all names must be of one resource type`);
      names.push(r.slice(s + 1));
    }
    if (names.some((n) => n === '')) throw new CliError(`"${first}": a name is required after "/"`);
    return { info, names };
  }
  return { info: resourceOf(first), names: [...rest] };
}

export interface ApiOptions {
  server?: string;
  token?: string;
}

/** The API address: `--server`, else DVCR_IMPORTER_SERVER, else {@link DEFAULT_SERVER}; `host:port` gets `http://`. */
export function serverOf(opts: ApiOptions, env: CliIO['env']): string {
  const raw = (opts.server ?? env.DVCR_IMPORTER_SERVER ?? '').trim() || DEFAULT_SERVER;
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`;
  return url.replace(/\/+$/, '');
}

export class CliContext {
  private client: ImageClientApi | undefined;
  server = DEFAULT_SERVER;

  constructor(readonly io: CliIO) {}

  out(text: string): void {
    this.io.stdout.write(text);
  }

  err(text: string): void {
    this.io.stderr.write(text);
  }

  /** The client for the global `--server` / `--token` of `cmd`. */
  clientFor(cmd: Command): ImageClientApi {
    if (this.client) return this.client;
    const opts = cmd.optsWithGlobals<ApiOptions>();
    this.server = serverOf(opts, this.io.env);
    const token = opts.token ?? this.io.env.API_TOKEN;
    this.client = this.io.createClient(token ? { server: this.server, token } : { server: this.server });
    return this.client;
  }

  /** The namespace of a VirtualImage command: `-n`, else `default`; undefined with `-A` or for cluster-scoped kinds. */
  namespaceFor(info: ResourceInfo, opts: { namespace?: string; allNamespaces?: boolean }): string | undefined {
    if (!info.namespaced || opts.allNamespaces) return undefined;
    return opts.namespace || DEFAULT_NAMESPACE;
  }
}

export function kindInfo(kind: ImageKind): ResourceInfo {
  return RESOURCES[kind];
}

/** The cause chain of an error, to find a network error code under `fetch failed`. */
function causes(e: unknown): Array<{ code?: unknown; message?: unknown }> {
  const out: Array<{ code?: unknown; message?: unknown }> = [];
  let cur: unknown = e;
  for (let i = 0; i < 5 && typeof cur === 'object' && cur !== null; i++) {
    out.push(cur as { code?: unknown; message?: unknown });
    cur = (cur as { cause?: unknown }).cause;
  }
  return out;
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET']);

function withIssues(message: string, issues: readonly string[]): string {
  const missing = issues.filter((m) => m !== '' && !message.includes(m));
  return missing.length ? `${message}\n${missing.map((m) => `  - ${m}`).join('\n')}` : message;
}

/** The line(s) printed for an error (without the trailing newline). */
export function formatError(e: unknown, server: string): string {
  if (e instanceof CliError) return e.raw ? e.message : `error: ${e.message}`;
  const net = causes(e).find((c) => typeof c.code === 'string' && NETWORK_CODES.has(c.code));
  if (net) {
    const detail = typeof net.message === 'string' && net.message ? net.message : String(net.code);
    return `error: cannot reach the API at ${server} (${detail}); is "dvcr-importer up" or "dvcr-importer serve" running? Point --server or DVCR_IMPORTER_SERVER at it`;
  }
  // ApiError messages are written for people already; add any issue the message does not spell out.
  if (e instanceof ApiError) return `error: ${withIssues(e.message, e.issues.map((i) => i.message))}`;
  if (e instanceof Error) {
    const issues = (e as { issues?: unknown }).issues;
    const messages = Array.isArray(issues)
      ? issues.map((i: unknown) => (typeof i === 'object' && i !== null ? (i as { message?: unknown }).message : undefined))
      : [];
    return `error: ${withIssues(e.message || e.name, messages.filter((m): m is string => typeof m === 'string'))}`;
  }
  return `error: ${String(e)}`;
}

/** Parses `30s`, `5m`, `1h30m`, `500ms`, `1.5h` (Go durations; `0` alone is allowed) into milliseconds. */
export function parseDuration(text: string): number {
  const s = text.trim();
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    pos = re.lastIndex;
  }
  if (s === '' || pos !== s.length) throw new CliError(`invalid duration "${text}": use a number with a unit, e.g. 30s, 5m, 1h`);
  const ms = Math.round(total);
  // A timer longer than 2^31-1 ms fires at once, so a longer wait would end immediately (and 400 digits are Infinity).
  if (!(ms <= MAX_TIMER_MS)) throw new CliError(`duration "${text}" is too long: at most 596h`);
  return ms;
}

/** Node's longest timer (about 596 hours). */
const MAX_TIMER_MS = 2 ** 31 - 1;
