/**
 * SIGTERM to a worker process mid-import (`dvcr-importer worker`, spawned as in production): it stops taking
 * jobs, lets the running import finish within SHUTDOWN_DEADLINE, or past the deadline hands it back to the
 * queue without spending an attempt; either way it exits 0 and the image ends Ready (by it or by another).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildImageLayout } from '../helpers/fixtures.ts';
import { skopeoCopy } from '../helpers/skopeo.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';
import { importJobId } from '../../queues/imports.ts';

const BIN = new URL('../../bin/dvcr-importer.js', import.meta.url).pathname;

interface WorkerProcess {
  child: ChildProcess;
  /** Resolves with the exit code (null: killed by a signal). */
  exited: Promise<number | null>;
  log(): string;
}

describe('worker SIGTERM', () => {
  let stack: ImportStack;
  let proxy: FaultProxy;
  let work: string;
  const children: ChildProcess[] = [];

  function workerProcess(env: Record<string, string>): WorkerProcess {
    const child = spawn(process.execPath, [BIN, 'worker'], {
      env: stack.workerEnv({ JOB_LOCK_DURATION: '10s', LOG_LEVEL: 'info', ...env }, [proxy.hostPort]),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let log = '';
    child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    return { child, exited, log: () => log };
  }

  async function pushFixture(repo: string): Promise<void> {
    const dir = join(work, repo);
    const disk = join(dir, 'd.img');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    writeFileSync(disk, randomBytes(6 * 1024 * 1024));
    const layout = await buildImageLayout(join(dir, 'layout'), { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }], compression: 'none' }] });
    await skopeoCopy(layout.ref, `docker://${stack.registryHostPort}/src/${repo}:v1`);
  }

  const cvi = (name: string, image: string) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource: { type: 'ContainerImage', containerImage: { image } } },
  });

  async function waitForStall(path: RegExp): Promise<void> {
    for (let i = 0; i < 300 && !proxy.requests.some((r) => r.fault === 'stall' && path.test(r.path)); i++) await sleep(100);
    expect(proxy.requests.some((r) => r.fault === 'stall' && path.test(r.path))).toBe(true);
  }

  beforeAll(async () => {
    stack = await startImportStack();
    proxy = await startFaultProxy(`http://${stack.registryHostPort}`);
    work = mkdtempSync(join(tmpdir(), 'sigterm-'));
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await stack?.close();
    await proxy?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('within the deadline: the running import finishes, no new job is taken, exit 0', async () => {
    await Promise.all([pushFixture('term-a'), pushFixture('term-b')]);
    // The blob stalls for 4 s after 1 MiB: SIGTERM lands while the import is mid-blob.
    proxy.addFault({ method: 'GET', path: /\/v2\/src\/term-a\/blobs\/sha256:/, stallMs: 4000, afterBytes: 1024 * 1024, times: 1 });
    const w = workerProcess({ WORKER_CONCURRENCY: '2', SHUTDOWN_DEADLINE: '30s' });
    const a = await stack.service.apply(cvi('term-a', `${proxy.hostPort}/src/term-a:v1`));
    await waitForStall(/term-a/);

    w.child.kill('SIGTERM');
    await sleep(500);
    // Applied after SIGTERM: a closing worker with a free slot must leave it to others.
    const b = await stack.service.apply(cvi('term-b', `${stack.registryHostPort}/src/term-b:v1`));
    const code = await w.exited;
    expect(code, w.log()).toBe(0);
    expect(w.log()).toMatch(/stopping: no new jobs/);

    const imgA = await stack.store.get('ClusterVirtualImage', undefined, 'term-a');
    expect(imgA?.status.phase, w.log()).toBe('Ready');
    expect(imgA?.status.attempts).toBe(1);
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/term-a')).toEqual([a.object.metadata.uid]);
    // term-b was not touched by the stopping worker: still Pending, its job waiting.
    expect((await stack.store.get('ClusterVirtualImage', undefined, 'term-b'))?.status.phase).toBe('Pending');
    expect(await stack.queue.state(importJobId({ uid: b.object.metadata.uid, generation: b.object.metadata.generation }))).toMatch(/^(waiting|prioritized|delayed)$/);

    const w2 = workerProcess({ WORKER_CONCURRENCY: '1' });
    const imgB = await stack.waitFor('ClusterVirtualImage', 'term-b', ['Ready', 'Failed'], 60_000);
    expect(imgB.status.phase, w2.log()).toBe('Ready');
    w2.child.kill('SIGTERM');
    expect(await w2.exited).toBe(0);
  }, 150_000);

  it('past the deadline: the import is handed back without spending an attempt, exit 0, another worker finishes it', async () => {
    await pushFixture('term-c');
    proxy.addFault({ method: 'GET', path: /\/v2\/src\/term-c\/blobs\/sha256:/, stallMs: 120_000, afterBytes: 1024 * 1024, times: 1 });
    const w = workerProcess({ WORKER_CONCURRENCY: '1', SHUTDOWN_DEADLINE: '2s' });
    const c = await stack.service.apply(cvi('term-c', `${proxy.hostPort}/src/term-c:v1`));
    await waitForStall(/term-c/);

    const t0 = Date.now();
    w.child.kill('SIGTERM');
    const code = await w.exited;
    const took = Date.now() - t0;
    expect(code, w.log()).toBe(0);
    // The deadline, then a cooperative abort (at most the thread's grace period), then the exit.
    expect(took).toBeGreaterThanOrEqual(2000);
    expect(took).toBeLessThan(20_000);

    const jobId = importJobId({ uid: c.object.metadata.uid, generation: c.object.metadata.generation });
    expect(await stack.queue.state(jobId)).toMatch(/^(waiting|delayed)$/);
    const job = await stack.queue.queue.getJob(jobId);
    expect(job?.attemptsMade).toBe(0);
    const mid = await stack.store.get('ClusterVirtualImage', undefined, 'term-c');
    expect(mid?.status.phase).not.toBe('Failed');
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/term-c').catch(() => [])).toEqual([]);

    const w2 = workerProcess({ WORKER_CONCURRENCY: '1' });
    const img = await stack.waitFor('ClusterVirtualImage', 'term-c', ['Ready', 'Failed'], 60_000);
    expect(img.status.phase, w2.log()).toBe('Ready');
    expect(img.status.attempts).toBe(1);
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/term-c')).toEqual([c.object.metadata.uid]);
    w2.child.kill('SIGTERM');
    expect(await w2.exited).toBe(0);
  }, 150_000);
});
