// Bundles one TypeScript entry of the project (ours inlined, packages left as imports) into
// node_modules/.cache/dvcr-importer/, named by the hash of the result: the project has no build step, and a
// process that runs the bundle carries no TypeScript loader (about 35 MiB for the CLI, 20 MiB per import
// thread). Plain JavaScript, so that bin/dvcr-importer.js can use it before anything can load TypeScript.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const BUNDLE_CACHE = join(ROOT, 'node_modules', '.cache', 'dvcr-importer');

/**
 * Bundles `entry` (a .ts path) and returns the bundle's path. The esbuild binary runs as a child process (its
 * JavaScript API would keep a worker thread alive for synchronous builds, about 25 MiB). No source map
 * (--enable-source-maps cost about 2 MiB per thread); the bundle keeps names and marks each module's part
 * with its path. Concurrent processes write the same content-named file, each through a rename.
 */
export function bundle(entry) {
  const esbuild = createRequire(import.meta.url).resolve('esbuild/bin/esbuild');
  mkdirSync(BUNDLE_CACHE, { recursive: true });
  const tmp = join(BUNDLE_CACHE, `build-${process.pid}-${Date.now()}.tmp.mjs`);
  try {
    const args = ['--bundle', '--platform=node', '--format=esm', '--target=node20', '--packages=external', '--log-level=error'];
    try {
      execFileSync(esbuild, [entry, ...args, `--outfile=${tmp}`], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
    } catch (e) {
      const stderr = String(e.stderr ?? '').trim();
      throw new Error(`esbuild could not bundle ${entry}${stderr ? `: ${stderr}` : ''}`, { cause: e });
    }
    const digest = createHash('sha256').update(readFileSync(tmp)).digest('hex').slice(0, 16);
    const file = join(BUNDLE_CACHE, `${basename(entry).replace(/\.ts$/, '')}-${digest}.mjs`);
    if (!existsSync(file)) renameSync(tmp, file);
    return file;
  } finally {
    rmSync(tmp, { force: true });
  }
}
