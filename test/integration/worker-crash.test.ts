/**
 * A worker process killed with SIGKILL mid-import: the job's lock expires, another worker process takes it
 * over, and the image still ends Ready with exactly one manifest in DVCR.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImageLayout } from '../helpers/fixtures.ts';
import { skopeoCopy } from '../helpers/skopeo.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';

const BIN = new URL('../../bin/dvcr-importer.js', import.meta.url).pathname;

describe('worker crash', () => {
  let stack: ImportStack;
  let proxy: FaultProxy;
  let work: string;
  const children: ChildProcess[] = [];

  function workerProcess(): ChildProcess {
    const child = spawn(process.execPath, [BIN, 'worker'], {
      env: stack.workerEnv({ JOB_LOCK_DURATION: '3s', WORKER_CONCURRENCY: '1', LOG_LEVEL: 'warn' }, [proxy.hostPort]),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    return child;
  }

  beforeAll(async () => {
    stack = await startImportStack();
    proxy = await startFaultProxy(`http://${stack.registryHostPort}`);
    work = mkdtempSync(join(tmpdir(), 'crash-'));
  });
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await stack?.close();
    await proxy?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('another worker finishes the job; one manifest in DVCR', async () => {
    const disk = join(work, 'd.img');
    writeFileSync(disk, randomBytes(6 * 1024 * 1024));
    const layout = await buildImageLayout(join(work, 'layout'), { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }], compression: 'none' }] });
    await skopeoCopy(layout.ref, `docker://${stack.registryHostPort}/src/crash:v1`);
    // The first worker gets stuck mid-blob (the proxy holds the body after 1 MiB), then dies.
    proxy.addFault({ method: 'GET', path: /\/v2\/src\/crash\/blobs\/sha256:/, stallMs: 60_000, afterBytes: 1024 * 1024, times: 1 });
    const first = workerProcess();
    const { object } = await stack.service.apply({
      apiVersion: 'virtualization.deckhouse.io/v1alpha2',
      kind: 'ClusterVirtualImage',
      metadata: { name: 'crash' },
      spec: { dataSource: { type: 'ContainerImage', containerImage: { image: `${proxy.hostPort}/src/crash:v1` } } },
    });
    await stack.waitFor('ClusterVirtualImage', 'crash', ['Provisioning'], 30_000);
    // Wait until the stalled blob request is in flight, then kill the worker outright.
    for (let i = 0; i < 100 && !proxy.requests.some((r) => r.fault === 'stall'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(proxy.requests.some((r) => r.fault === 'stall')).toBe(true);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));

    workerProcess();
    const ready = await stack.waitFor('ClusterVirtualImage', 'crash', ['Ready', 'Failed'], 60_000);
    expect(ready.status.phase).toBe('Ready');
    expect(ready.status.attempts).toBeGreaterThanOrEqual(1);
    const tags = await stack.dvcr.listTags(stack.registryHostPort, 'cvi/crash');
    expect(tags).toEqual([object.metadata.uid]);
    const m = await stack.dvcr.getManifest({ registry: stack.registryHostPort, repository: 'cvi/crash', tag: object.metadata.uid, digest: undefined });
    expect(m.kind).toBe('manifest');
  }, 120_000);
});
