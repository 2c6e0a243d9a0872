/**
 * ObjectRef end to end: DVCR is reached through the fault proxy, so every request of the copy is recorded (a
 * mount moves no layer bytes) and the mount can be answered with 202 (the streamed fallback).
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildImageLayout, type LayoutSpec } from '../helpers/fixtures.ts';
import { skopeoCopy, skopeoInspectConfig } from '../helpers/skopeo.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';
import { getCondition, ValidationError, type Image, type ImageKind } from '../../src/images/index.ts';

const API = 'virtualization.deckhouse.io/v1alpha2';

describe('ObjectRef: a copy of a Ready image inside DVCR', () => {
  let stack: ImportStack;
  let proxy: FaultProxy;
  let work: string;
  let host: string;
  let dvcr: string;
  let n = 0;

  async function push(repo: string, spec: LayoutSpec): Promise<string> {
    const layout = await buildImageLayout(join(work, `layout-${n++}`), spec);
    const ref = `${host}/${repo}:v1`;
    await skopeoCopy(layout.ref, `docker://${ref}`);
    return ref;
  }

  function rawDisk(name: string, mib: number): string {
    const path = join(work, name);
    const buf = Buffer.alloc(mib * 1024 * 1024);
    for (let off = 0; off < buf.length; off += 64 * 1024) randomBytes(16 * 1024).copy(buf, off);
    writeFileSync(path, buf);
    return path;
  }

  const manifest = (kind: ImageKind, name: string, dataSource: Record<string, unknown>, namespace?: string) => ({
    apiVersion: API,
    kind,
    metadata: { name, ...(namespace ? { namespace } : {}) },
    spec: { dataSource },
  });
  const objectRef = (ref: Record<string, string>) => ({ type: 'ObjectRef', objectRef: ref });

  async function layerOf(img: Image): Promise<{ digest: string; size: number; labels: Record<string, string> }> {
    const url = img.status.target!.registryURL!;
    const [repoPart, tag] = [url.slice(url.indexOf('/') + 1, url.lastIndexOf(':')), url.slice(url.lastIndexOf(':') + 1)];
    const m = await stack.dvcr.getManifest({ registry: dvcr, repository: repoPart, tag, digest: undefined });
    if (m.kind !== 'manifest') throw new Error('expected an image manifest');
    const layer = m.manifest.layers[0]!;
    const cfg = await skopeoInspectConfig(`docker://${url}`);
    return { digest: layer.digest, size: layer.size, labels: (cfg.config as { Labels: Record<string, string> }).Labels };
  }

  async function jobLogs(img: Image): Promise<string[]> {
    return (await stack.queue.queue.getJobLogs(`${img.metadata.uid}-g${img.metadata.generation}`)).logs;
  }

  async function waitForCondition(kind: ImageKind, name: string, reason: string, namespace?: string): Promise<Image> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const img = await stack.store.get(kind, namespace, name);
      if (img && getCondition(img.status, 'DatasourceReady')?.reason === reason) return img;
      if (Date.now() > deadline) throw new Error(`no DatasourceReady ${reason} on ${name}: ${JSON.stringify(img?.status)}`);
      await sleep(100);
    }
  }

  beforeAll(async () => {
    host = inject('registryHostPort');
    proxy = await startFaultProxy(`http://${host}`);
    dvcr = proxy.hostPort;
    stack = await startImportStack({
      dvcrUrl: proxy.url,
      insecureRegistries: `${host},${proxy.hostPort}`,
      sourceWaitInterval: '1s',
    });
    work = mkdtempSync(join(tmpdir(), 'objectref-'));
    stack.startWorker({ threads: 2 });
  });
  afterAll(async () => {
    await stack?.close();
    await proxy?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('a copy of a Ready ClusterVirtualImage: the layer is mounted (no bytes moved), new repo and uid, status copied', async () => {
    const ref = await push('src/base', { layers: [{ files: [{ path: 'disk/base.img', fromFile: rawDisk('base.img', 3) }] }] });
    await stack.service.apply(manifest('ClusterVirtualImage', 'base', { type: 'ContainerImage', containerImage: { image: ref } }));
    const base = await stack.waitFor('ClusterVirtualImage', 'base', ['Ready', 'Failed']);
    expect(base.status.phase).toBe('Ready');

    proxy.requests.length = 0;
    const { object } = await stack.service.apply(manifest('ClusterVirtualImage', 'copy', objectRef({ kind: 'ClusterVirtualImage', name: 'base' })));
    const copy = await stack.waitFor('ClusterVirtualImage', 'copy', ['Ready', 'Failed']);
    expect(copy.status).toMatchObject({
      phase: 'Ready',
      progress: '100%',
      format: base.status.format,
      cdrom: false,
      size: base.status.size,
      checksums: { sha256: base.status.checksums!.sha256 },
      target: { registryURL: `${dvcr}/cvi/copy:${object.metadata.uid}` },
    });
    expect(object.metadata.uid).not.toBe(base.metadata.uid);
    expect(getCondition(copy.status, 'DatasourceReady')).toMatchObject({ status: 'True' });

    const src = await layerOf(base);
    const dst = await layerOf(copy);
    expect(dst.digest).toBe(src.digest);
    expect(dst.labels).toEqual(src.labels);
    // The mount answered 201, and the only bytes sent into the new repository were the manifest and at most the
    // small config (the copy's config matches its source's, so the client mounts that too when it remembers it).
    const mount = proxy.requests.find((r) => r.method === 'POST' && r.path === '/v2/cvi/copy/blobs/uploads/' && r.url.includes('mount='));
    expect(mount?.url).toContain(`from=${encodeURIComponent('cvi/base')}`);
    expect(mount?.status).toBe(201);
    const into = proxy.requests.filter((r) => (r.method === 'PATCH' || r.method === 'PUT') && r.path.startsWith('/v2/cvi/copy/'));
    expect(into.filter((r) => r.path.includes('/manifests/'))).toHaveLength(1);
    expect(into.filter((r) => r.method === 'PATCH')).toEqual([]);
    expect(into.length).toBeLessThanOrEqual(2);
    for (const r of into) expect(Number(r.headers['content-length'])).toBeLessThan(4096);
    expect((await jobLogs(copy)).join('\n')).toMatch(/mounted layer sha256:[0-9a-f]{64} .* no bytes moved/);

    // The copy stands on its own: deleting the source leaves its layer readable.
    await stack.service.delete('ClusterVirtualImage', undefined, 'base');
    expect(await stack.dvcr.blobExists(dvcr, 'cvi/copy', dst.digest)).toBe(dst.size);
  });

  it('when the registry answers the mount with 202, the layer is streamed across and verified', async () => {
    const ref = await push('src/base2', { layers: [{ files: [{ path: 'disk/b.img', fromFile: rawDisk('b.img', 2) }] }] });
    await stack.service.apply(manifest('ClusterVirtualImage', 'base2', { type: 'ContainerImage', containerImage: { image: ref } }));
    const base = await stack.waitFor('ClusterVirtualImage', 'base2', ['Ready', 'Failed']);
    // A real upload session of the target repository, handed out instead of the mount.
    const session = await fetch(`http://${host}/v2/cvi/copy2/blobs/uploads/`, { method: 'POST' });
    expect(session.status).toBe(202);
    const loc = new URL(session.headers.get('location')!, `http://${host}`);
    proxy.addFault({
      method: 'POST',
      path: /^\/v2\/cvi\/copy2\/blobs\/uploads\/\?mount=/,
      status: 202,
      headers: { location: `${loc.pathname}${loc.search}`, 'content-length': '0' },
    });
    proxy.requests.length = 0;
    await stack.service.apply(manifest('ClusterVirtualImage', 'copy2', objectRef({ kind: 'ClusterVirtualImage', name: 'base2' })));
    const copy = await stack.waitFor('ClusterVirtualImage', 'copy2', ['Ready', 'Failed']);
    expect(copy.status).toMatchObject({ phase: 'Ready', checksums: { sha256: base.status.checksums!.sha256 } });
    const src = await layerOf(base);
    expect((await layerOf(copy)).digest).toBe(src.digest);
    const patches = proxy.requests.filter((r) => r.method === 'PATCH' && r.path.startsWith('/v2/cvi/copy2/'));
    expect(patches.map((p) => Number(p.headers['content-length']))).toContain(src.size);
    expect((await jobLogs(copy)).join('\n')).toContain('the registry did not mount it');
  });

  it('a source that is not Ready yet: Pending with DatasourceReady=False (ImageNotReady), then Ready once it is', async () => {
    const ref = await push('src/slow', { layers: [{ files: [{ path: 'disk/slow.img', fromFile: rawDisk('slow.img', 4) }], compression: 'none' }] });
    // The source's layer comes through the proxy, held for 4 s after 1 MiB.
    proxy.addFault({ method: 'GET', path: /^\/v2\/src\/slow\/blobs\/sha256:/, stallMs: 4000, afterBytes: 1024 * 1024 });
    const viaProxy = ref.replace(host, proxy.hostPort);
    await stack.service.apply(manifest('VirtualImage', 'slow-src', { type: 'ContainerImage', containerImage: { image: viaProxy } }, 'team-a'));
    await stack.waitFor('VirtualImage', 'slow-src', ['Provisioning'], 30_000, 'team-a');

    // No namespace: a VirtualImage refers to one in its own namespace.
    await stack.service.apply(manifest('VirtualImage', 'waiter', objectRef({ kind: 'VirtualImage', name: 'slow-src' }), 'team-a'));
    const waiting = await waitForCondition('VirtualImage', 'waiter', 'ImageNotReady', 'team-a');
    expect(waiting.status.phase).toBe('Pending');
    expect(getCondition(waiting.status, 'DatasourceReady')).toMatchObject({
      status: 'False',
      message: expect.stringContaining('VirtualImage "team-a/slow-src" is not ready yet') as unknown,
    });
    expect(waiting.status.failure).toBeUndefined();

    const src = await stack.waitFor('VirtualImage', 'slow-src', ['Ready', 'Failed'], 60_000, 'team-a');
    expect(src.status.phase).toBe('Ready');
    const done = await stack.waitFor('VirtualImage', 'waiter', ['Ready', 'Failed'], 60_000, 'team-a');
    expect(done.status).toMatchObject({
      phase: 'Ready',
      format: 'raw',
      checksums: src.status.checksums,
      size: src.status.size,
      target: { registryURL: `${dvcr}/vi/team-a/waiter:${done.metadata.uid}` },
    });
    expect(getCondition(done.status, 'DatasourceReady')).toMatchObject({ status: 'True', reason: 'DatasourceReady' });
    // Waiting spent no attempt.
    expect(done.status.attempts).toBe(1);
  });

  it('a missing source fails at once with a clear message; nothing is written to DVCR', async () => {
    await stack.service.apply(manifest('ClusterVirtualImage', 'orphan', objectRef({ kind: 'ClusterVirtualImage', name: 'nope' })));
    const img = await stack.waitFor('ClusterVirtualImage', 'orphan', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({
      phase: 'Failed',
      failure: { reason: 'ClusterImageNotFound', message: 'ClusterVirtualImage "nope" not found', retryable: false },
    });
    expect(getCondition(img.status, 'Ready')).toMatchObject({ reason: 'ProvisioningFailedTerminally', message: 'ClusterVirtualImage "nope" not found' });
    expect(getCondition(img.status, 'DatasourceReady')).toMatchObject({ status: 'False', reason: 'ClusterImageNotFound' });
    // The registry is shared by every test file: look for this image's own tag (its uid).
    expect(await stack.dvcr.listTags(dvcr, 'cvi/orphan')).not.toContain(img.metadata.uid);
  });

  it('validation: other kinds are refused naming the supported ones; conversion does not apply to a copy', async () => {
    const bad = stack.service.apply(manifest('ClusterVirtualImage', 'x', objectRef({ kind: 'VirtualDisk', name: 'd' })));
    await expect(bad).rejects.toThrow(ValidationError);
    await expect(bad).rejects.toThrow('spec.dataSource.objectRef.kind "VirtualDisk": must be one of ClusterVirtualImage, VirtualImage');
    const conv = stack.service.apply({
      ...manifest('ClusterVirtualImage', 'y', objectRef({ kind: 'ClusterVirtualImage', name: 'base' })),
      spec: { dataSource: objectRef({ kind: 'ClusterVirtualImage', name: 'base' }), conversion: { format: 'qcow2' } },
    });
    await expect(conv).rejects.toThrow('spec.conversion: does not apply to an ObjectRef source');
    const cross = stack.service.apply(manifest('VirtualImage', 'z', objectRef({ kind: 'VirtualImage', name: 'a', namespace: 'team-b' }), 'team-a'));
    await expect(cross).rejects.toThrow('a VirtualImage can only refer to a VirtualImage in its own namespace "team-a"');
  });
});
