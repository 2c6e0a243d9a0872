/** The import thread's code bundled for piscina: plain JavaScript that a thread loads without tsx. */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
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
