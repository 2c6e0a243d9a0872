/**
 * What a piscina thread loads: the import thread's code as one plain-JavaScript module (our TypeScript bundled
 * by esbuild, the packages left as imports), so the threads start without tsx. With tsx every thread loaded
 * the TypeScript loader and got a loader-hooks thread of its own: about 45 MiB per idle thread against about
 * 25 MiB bundled (bench/results.md, session 4).
 *
 * The bundle goes to node_modules/.cache/dvcr-importer/ (inside the project, so that its package imports
 * resolve), named by the hash of its content: worker processes starting together write the same file, each
 * through a rename, and a changed source gets a new name. When bundling is not possible the thread runs the
 * TypeScript through tsx as before.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface ThreadEntry {
  /** The module piscina loads (a file: URL). */
  filename: string;
  /** The threads' execArgv. */
  execArgv: string[];
  /** Why the TypeScript is loaded through tsx instead of a bundle; undefined when bundled. */
  fallback?: string;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CACHE = join(ROOT, 'node_modules', '.cache', 'dvcr-importer');
const built = new Map<string, ThreadEntry>();

/** The entry for a thread module of ours (a .ts file URL), bundled once per process and content. */
export function threadEntry(source: URL): ThreadEntry {
  const known = built.get(source.href);
  if (known) return known;
  let entry: ThreadEntry;
  try {
    entry = { filename: pathToFileURL(bundle(fileURLToPath(source))).href, execArgv: [] };
  } catch (e) {
    entry = { filename: source.href, execArgv: tsxImport(), fallback: (e as Error).message };
  }
  built.set(source.href, entry);
  return entry;
}

/**
 * Bundles `path` into the cache; returns the bundle's path. The esbuild binary runs as a child process: its
 * JavaScript API would keep a worker thread of its own alive for synchronous builds (about 25 MiB).
 */
function bundle(path: string): string {
  const esbuild = createRequire(import.meta.url).resolve('esbuild/bin/esbuild');
  mkdirSync(CACHE, { recursive: true });
  const tmp = join(CACHE, `build-${process.pid}-${Date.now()}.tmp.mjs`);
  try {
    // No source map: --enable-source-maps cost about 2 MiB per thread; the bundle keeps names and marks each
    // module's part with its path, so a stack trace still leads to the source.
    const args = ['--bundle', '--platform=node', '--format=esm', '--target=node20', '--packages=external'];
    try {
      execFileSync(esbuild, [path, ...args, '--log-level=error', `--outfile=${tmp}`], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
    } catch (e) {
      const stderr = String((e as { stderr?: Buffer }).stderr ?? '').trim();
      throw new Error(`esbuild could not bundle ${path}${stderr ? `: ${stderr}` : ''}`, { cause: e });
    }
    const digest = createHash('sha256').update(readFileSync(tmp)).digest('hex').slice(0, 16);
    const file = join(CACHE, `${path.replace(/^.*\//, '').replace(/\.ts$/, '')}-${digest}.mjs`);
    if (!existsSync(file)) renameSync(tmp, file);
    return file;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** execArgv that lets a thread load TypeScript (Node 20 cannot by itself). */
export function tsxImport(): string[] {
  const require = createRequire(import.meta.url);
  return ['--import', pathToFileURL(require.resolve('tsx')).href];
}
