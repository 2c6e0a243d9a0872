/**
 * What a piscina thread loads: the import thread's code as one plain-JavaScript module (bin/bundle.mjs: our
 * TypeScript bundled by esbuild, the packages left as imports), so the threads start without tsx. With tsx
 * every thread loaded the TypeScript loader and got a loader-hooks thread of its own: about 45-50 MiB per idle
 * thread against about 30 MiB bundled (bench/results.md, session 4). When bundling is not possible the thread
 * runs the TypeScript through tsx as before.
 */
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Logger } from 'pino';
import { bundle } from '../bin/bundle.mjs';
import { projectFile } from '../src/paths.ts';

export interface ThreadEntry {
  /** The module piscina loads (a file: URL). */
  filename: string;
  /** The threads' execArgv. */
  execArgv: string[];
  /** Why the TypeScript is loaded through tsx instead of a bundle; undefined when bundled. */
  fallback?: string;
}

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

/** The piscina `filename` and `execArgv` for import threads (workers/import.thread.ts); logs a fallback to tsx. */
export function importThreadOptions(logger: Pick<Logger, 'warn'>): { filename: string; execArgv: string[] } {
  const entry = threadEntry(projectFile('workers/import.thread.ts'));
  if (entry.fallback) logger.warn({ err: entry.fallback }, 'import threads load the TypeScript through tsx: bundling failed');
  return { filename: entry.filename, execArgv: entry.execArgv };
}

/** execArgv that lets a thread load TypeScript (Node 20 cannot by itself). */
export function tsxImport(): string[] {
  const require = createRequire(import.meta.url);
  return ['--import', pathToFileURL(require.resolve('tsx')).href];
}
