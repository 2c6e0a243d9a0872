/**
 * The project's root folder (the one with its package.json), whether this code runs from its TypeScript source
 * or from a bundle of it in node_modules/.cache/dvcr-importer/ (bin/bundle.mjs), where `import.meta.url` names
 * the bundle, not the source file.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

function findRoot(from: string): string {
  for (let dir = dirname(from); ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'dvcr-importer') return dir;
    if (dirname(dir) === dir) throw new Error(`dvcr-importer: no package.json of the project above ${from}`);
  }
}

export const PROJECT_ROOT: string = findRoot(fileURLToPath(import.meta.url));

/** A file of the project by its path from the root (`workers/import.thread.ts`), as a file: URL. */
export function projectFile(path: string): URL {
  return pathToFileURL(join(PROJECT_ROOT, path));
}
