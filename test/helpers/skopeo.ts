/**
 * Runs Debian's skopeo (1.9) for tests: the reference client we push fixtures with and check our pushes
 * against. Always `--insecure-policy` and TLS verification off (our registries are plain http on loopback),
 * never reading the user's auth files, and with errors that show the command and skopeo's own message.
 */
import { execFile } from 'node:child_process';

export interface Credentials {
  username: string;
  password: string;
}

export interface SkopeoRunOptions {
  /** Kill skopeo after this long. Default 120 s. */
  timeoutMs?: number;
}

/** skopeo failed: the message holds the arguments (credentials masked) and its stderr. */
export class SkopeoError extends Error {
  constructor(
    readonly args: string[],
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`skopeo ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}):\n${stderr.trim()}`);
    this.name = 'SkopeoError';
  }
}

const CREDS_FLAGS = new Set(['--creds', '--src-creds', '--dest-creds']);

function masked(args: string[]): string[] {
  return args.map((a, i) => (i > 0 && CREDS_FLAGS.has(args[i - 1] ?? '') ? a.replace(/:.*/, ':***') : a));
}

/**
 * Runs `skopeo <args>` and resolves with its stdout. The environment points REGISTRY_AUTH_FILE at a file that
 * does not exist, so only credentials given on the command line are used.
 */
export function skopeo(args: string[], opts: SkopeoRunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'skopeo',
      args,
      {
        timeout: opts.timeoutMs ?? 120_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
        env: { ...process.env, REGISTRY_AUTH_FILE: '/nonexistent/dvcr-importer-tests/auth.json' },
      },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout);
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          return reject(new Error('skopeo is not installed: run `npm run setup` (apt-get install skopeo)'));
        }
        const exit = typeof code === 'number' ? code : null;
        const why = error.killed ? `killed after ${opts.timeoutMs ?? 120_000} ms\n${stderr}` : stderr || error.message;
        reject(new SkopeoError(masked(args), exit, why));
      },
    );
  });
}

function credsArg(flag: string, creds: Credentials | undefined): string[] {
  return creds ? [flag, `${creds.username}:${creds.password}`] : [];
}

export interface CopyOptions extends SkopeoRunOptions {
  srcCreds?: Credentials;
  destCreds?: Credentials;
  /** Copy every image of an index (`--all`), not just the one for this machine. */
  all?: boolean;
  /** Fail rather than change any digest (`--preserve-digests`). Default true. */
  preserveDigests?: boolean;
  /** Convert the manifest (`--format`). */
  format?: 'oci' | 'v2s2';
  /** Further arguments placed before the references. */
  extraArgs?: string[];
}

/** `skopeo copy SRC DEST`, references with their transport: `docker://127.0.0.1:PORT/repo:tag`, `oci:DIR:tag`. */
export async function skopeoCopy(src: string, dest: string, opts: CopyOptions = {}): Promise<void> {
  const args = [
    '--insecure-policy',
    'copy',
    '--quiet',
    '--src-tls-verify=false',
    '--dest-tls-verify=false',
    ...credsArg('--src-creds', opts.srcCreds),
    ...credsArg('--dest-creds', opts.destCreds),
    ...(opts.all ? ['--all'] : []),
    ...(opts.preserveDigests === false || opts.format ? [] : ['--preserve-digests']),
    ...(opts.format ? ['--format', opts.format] : []),
    ...(opts.extraArgs ?? []),
    src,
    dest,
  ];
  await skopeo(args, opts);
}

export interface InspectOptions extends SkopeoRunOptions {
  creds?: Credentials;
}

/** `skopeo inspect --raw REF`: the manifest (or index) bytes exactly as the registry serves them. */
export function skopeoInspectRaw(ref: string, opts: InspectOptions = {}): Promise<string> {
  return skopeo(['--insecure-policy', 'inspect', '--raw', '--tls-verify=false', ...credsArg('--creds', opts.creds), ref], opts);
}

/** `skopeo inspect --config REF`, parsed: the image config of the image for this machine. */
export async function skopeoInspectConfig(ref: string, opts: InspectOptions = {}): Promise<Record<string, unknown>> {
  const out = await skopeo(
    ['--insecure-policy', 'inspect', '--config', '--tls-verify=false', ...credsArg('--creds', opts.creds), ref],
    opts,
  );
  return JSON.parse(out) as Record<string, unknown>;
}

/** A `docker://` reference for `repo:tag` (or `repo@digest`) on a registry at `hostPort`. */
export function dockerRef(hostPort: string, repoAndRef: string): string {
  return `docker://${hostPort}/${repoAndRef}`;
}
