/**
 * The README quick start, as a newcomer runs it: `dvcr-importer up --demo` with no REDIS_URL / DVCR_URL
 * starts an embedded Redis and DVCR, imports the demo image (Pending -> Provisioning -> Ready), answers the
 * CLI, and stops everything on Ctrl-C.
 */
import { describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const BIN = new URL('../../bin/dvcr-importer.js', import.meta.url).pathname;
const run = promisify(execFile);

describe('README quick start', () => {
  it('up --demo imports a real image, serves the CLI, and stops cleanly on Ctrl-C', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'quickstart-'));
    const env = { ...process.env };
    for (const k of ['REDIS_URL', 'DVCR_URL', 'API_TOKEN', 'LISTEN']) delete env[k];
    const child = spawn(process.execPath, [BIN, 'up', '--demo', '--demo-size', '24Mi', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'data')], {
      env,
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const deadline = Date.now() + 90_000;
      while (!/Press Ctrl-C to stop/.test(out) && child.exitCode === null && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
      }
      const rows = out.split('\n').filter((l) => l.startsWith('demo-disk '));
      expect(out).toMatch(/^NAME {8}PHASE {10}CDROM {3}PROGRESS {3}AGE$/m);
      expect(rows.map((r) => r.split(/\s+/)[1])).toEqual(expect.arrayContaining(['Pending', 'Provisioning', 'Ready']));
      expect(rows.at(-1)).toMatch(/^demo-disk\s+Ready\s+false\s+100%\s+\d+s$/);

      // The embedded registry is on loopback: `up` allows loopback sources (SSRF guard) and says so.
      expect(out).toMatch(/^ {2}Sources: public addresses and 127\.0\.0\.0\/8, ::1\/128 +\(loopback allowed for the embedded registry/m);
      const api = /API: +(http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
      expect(api).toBeDefined();
      const { stdout } = await run(process.execPath, [BIN, 'get', 'cvi', 'demo-disk', '-o', 'json', '--server', api!]);
      const image = JSON.parse(stdout);
      expect(image.status).toMatchObject({ phase: 'Ready', format: 'qcow2', cdrom: false, progress: '100%' });
      const pids = [...out.matchAll(/embedded, pid (\d+)/g)].map((m) => Number(m[1]));
      expect(pids).toHaveLength(2);

      child.kill('SIGINT');
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      expect(code).toBe(0);
      for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
