/** Our TypeScript bundled to run without tsx: the import thread's code (piscina) and the CLI (bin). */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { bundle, BUNDLE_CACHE } from '../../bin/bundle.mjs';
import { PROJECT_ROOT, projectFile } from '../../src/paths.ts';
import { threadEntry } from '../../workers/thread-entry.ts';

const THREAD = new URL('../../workers/import.thread.ts', import.meta.url);

describe('threadEntry', () => {
  it('bundles the import thread into the cache, named by its content, once per process', () => {
    const entry = threadEntry(THREAD);
    expect(entry.fallback).toBeUndefined();
    expect(entry.execArgv.join(' ')).not.toContain('tsx');
    const file = fileURLToPath(entry.filename);
    expect(file).toMatch(/node_modules\/\.cache\/dvcr-importer\/import\.thread-[0-9a-f]{16}\.mjs$/);
    expect(existsSync(file)).toBe(true);
    // Our modules are inside it; packages stay imports, resolved from the project's node_modules.
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('function importTask');
    expect(text).toMatch(/from "piscina"/);
    expect(threadEntry(THREAD)).toBe(entry);
  });

  it('a thread without tsx loads it and finds the task function', async () => {
    const { filename } = threadEntry(THREAD);
    const worker = new Worker(
      `import(${JSON.stringify(filename)}).then((m) => require('node:worker_threads').parentPort.postMessage(typeof m.default), (e) => require('node:worker_threads').parentPort.postMessage(String(e)))`,
      { eval: true, execArgv: [] },
    );
    try {
      const said = await new Promise((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      expect(said).toBe('function');
    } finally {
      await worker.terminate();
    }
  });

  it('falls back to the TypeScript through tsx when it cannot bundle, and says why', () => {
    const missing = new URL('../../workers/no-such-thread.ts', import.meta.url);
    const entry = threadEntry(missing);
    expect(entry.filename).toBe(missing.href);
    expect(entry.execArgv[0]).toBe('--import');
    expect(entry.execArgv[1]).toContain('tsx');
    expect(entry.fallback).toMatch(/no-such-thread/);
  });
});

describe('bundles and the project root', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

  it('PROJECT_ROOT is the project folder, from the source and from a bundle in the cache', async () => {
    expect(PROJECT_ROOT).toBe(root);
    expect(fileURLToPath(projectFile('package.json'))).toBe(`${root}/package.json`);
    const file = bundle(fileURLToPath(new URL('../../src/paths.ts', import.meta.url)));
    expect(dirname(file)).toBe(BUNDLE_CACHE);
    const bundled = (await import(pathToFileURL(file).href)) as { PROJECT_ROOT: string };
    expect(bundled.PROJECT_ROOT).toBe(root);
  });

  it('the command runs from a bundle, without tsx: --version reads package.json from there', () => {
    const version = (JSON.parse(readFileSync(`${root}/package.json`, 'utf8')) as { version: string }).version;
    const run = spawnSync(process.execPath, [`${root}/bin/dvcr-importer.js`, '--version'], { encoding: 'utf8' });
    expect(run.status).toBe(0);
    expect(run.stdout.trim()).toBe(version);
    // The fallback says so on stderr ("running through tsx"): nothing there means the bundle ran.
    expect(run.stderr).toBe('');
  });
});
