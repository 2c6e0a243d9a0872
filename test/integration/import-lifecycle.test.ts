import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImageLayout, makeDataDisk, whiteout, type LayoutSpec } from '../helpers/fixtures.ts';
import { skopeoCopy, skopeoInspectConfig } from '../helpers/skopeo.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';
import { SpecFrozenError } from '../../src/images/index.ts';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');


describe('image lifecycle and source shapes', () => {
  let stack: ImportStack;
  let work: string;
  let host: string;
  let proxy: FaultProxy;
  let n = 0;

  async function push(repo: string, spec: LayoutSpec): Promise<string> {
    const layout = await buildImageLayout(join(work, `layout-${n++}`), spec);
    const ref = `${host}/${repo}:v1`;
    await skopeoCopy(layout.ref, `docker://${ref}`, layout.images.length > 1 ? { all: true } : {});
    return ref;
  }

  const cvi = (name: string, image: string, extra: Record<string, unknown> = {}) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource: { type: 'ContainerImage', containerImage: { image, ...extra } } },
  });

  beforeAll(async () => {
    stack = await startImportStack();
    host = stack.registryHostPort;
    proxy = await startFaultProxy(`http://${host}`);
    work = mkdtempSync(join(tmpdir(), 'lifecycle-'));
    stack.startWorker({ threads: 2 });
  });
  afterAll(async () => {
    await stack?.close();
    await proxy?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('multi-layer image: an upper whiteout removes the lower disk file and the upper one wins', async () => {
    const lower = makeDataDisk(work, 'lower', 2);
    const upper = makeDataDisk(work, 'upper', 3);
    const ref = await push('src/layers', {
      layers: [
        { files: [{ path: 'disk/old.qcow2', fromFile: lower }], compression: 'gzip' },
        { files: [whiteout('disk/old.qcow2'), { path: 'disk/new.qcow2', fromFile: upper }], compression: 'zstd' },
        { files: [{ path: 'etc/motd', content: 'hello' }], compression: 'none' },
      ],
    });
    await stack.service.apply(cvi('layers', ref));
    const img = await stack.waitFor('ClusterVirtualImage', 'layers', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'qcow2', checksums: { sha256: sha256(readFileSync(upper)) } });
  });

  it('manifest list with two platforms: linux/amd64 by default, linux/arm64 when asked', async () => {
    const amd = makeDataDisk(work, 'amd', 1, 'raw');
    const arm = makeDataDisk(work, 'arm', 2, 'raw');
    const ref = await push('src/multiarch', {
      layers: [],
      platforms: [
        { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ files: [{ path: 'disk/d.img', fromFile: amd }] }] },
        { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [{ files: [{ path: 'disk/d.img', fromFile: arm }] }] },
      ],
    });
    await stack.service.apply(cvi('multi-amd', ref));
    await stack.service.apply(cvi('multi-arm', ref, { platform: 'linux/arm64' }));
    const a = await stack.waitFor('ClusterVirtualImage', 'multi-amd', ['Ready', 'Failed']);
    const b = await stack.waitFor('ClusterVirtualImage', 'multi-arm', ['Ready', 'Failed']);
    expect(a.status.checksums?.sha256).toBe(sha256(readFileSync(amd)));
    expect(b.status.checksums?.sha256).toBe(sha256(readFileSync(arm)));
  });

  it('a spec change before Ready cancels the running import; the new generation ends Ready', async () => {
    const slow = makeDataDisk(work, 'slow', 8, 'raw');
    const fast = makeDataDisk(work, 'fast', 1, 'raw');
    const slowRef = await push('src/slow', { layers: [{ files: [{ path: 'disk/slow.img', fromFile: slow }], compression: 'none' }] });
    const fastRef = await push('src/fast', { layers: [{ files: [{ path: 'disk/fast.img', fromFile: fast }], compression: 'none' }] });
    // The slow source goes through the proxy, which holds the blob body after 1 MiB.
    const viaProxy = slowRef.replace(host, proxy.hostPort);
    await stack.service.apply(cvi('respec', viaProxy));
    proxy.addFault({ method: 'GET', path: /\/v2\/src\/slow\/blobs\/sha256:/, stallMs: 30_000, afterBytes: 1024 * 1024, times: 1 });
    await stack.waitFor('ClusterVirtualImage', 'respec', ['Provisioning']);
    const { object, specChanged } = await stack.service.apply(cvi('respec', fastRef));
    expect(specChanged).toBe(true);
    expect(object.metadata.generation).toBe(2);
    expect(object.status.phase).toBe('Pending');
    const img = await stack.waitFor('ClusterVirtualImage', 'respec', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', observedGeneration: 2, checksums: { sha256: sha256(readFileSync(fast)) } });
    // Generation 1 stopped (cancelled or superseded) and never wrote over generation 2's manifest.
    expect(['failed', 'completed']).toContain(await stack.queue.state(`${object.metadata.uid}-g1`));
    const cfg = await skopeoInspectConfig(`docker://${img.status.target!.registryURL}`);
    expect((cfg.config as { Labels: Record<string, string> }).Labels['source-image-size']).toBe(String(readFileSync(fast).length));
    proxy.clearFaults();

    // Ready: the spec is frozen, with upstream's message.
    await expect(stack.service.apply(cvi('respec', slowRef))).rejects.toThrow(SpecFrozenError);
    await expect(stack.service.apply(cvi('respec', slowRef))).rejects.toThrow(
      'ClusterVirtualImage is in a Ready state: configuration changes are not available',
    );
  });

  it('two workers and a burst of spec changes: one result, the newest generation wins', async () => {
    stack.startWorker({ threads: 2 }); // a second worker racing the first for the same image's jobs
    const refs: string[] = [];
    const sums: string[] = [];
    for (let i = 0; i < 4; i++) {
      const disk = makeDataDisk(work, `race${i}`, 2 + i, 'raw');
      sums.push(sha256(readFileSync(disk)));
      refs.push(await push(`src/race${i}`, { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }] }] }));
    }
    let uid = '';
    for (const ref of refs) {
      const { object } = await stack.service.apply(cvi('race', ref));
      uid = object.metadata.uid;
      await new Promise((r) => setTimeout(r, 30));
    }
    const img = await stack.waitFor('ClusterVirtualImage', 'race', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', observedGeneration: 4, checksums: { sha256: sums[3] } });
    expect(await stack.dvcr.listTags(host, 'cvi/race')).toEqual([uid]);
    // What DVCR holds is the newest generation's disk, whatever the older jobs did meanwhile.
    const cfg = await skopeoInspectConfig(`docker://${img.status.target!.registryURL}`);
    expect((cfg.config as { Labels: Record<string, string> }).Labels['source-image-size']).toBe(String(5 * 1024 * 1024));
    for (let g = 1; g <= 3; g++) expect(['completed', 'failed', undefined]).toContain(await stack.queue.state(`${uid}-g${g}`));
  });

  it('delete: Terminating, the DVCR tag goes, then the object', async () => {
    const disk = makeDataDisk(work, 'del', 1, 'raw');
    const ref = await push('src/del', { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }] }] });
    const { object } = await stack.service.apply(cvi('to-delete', ref));
    await stack.waitFor('ClusterVirtualImage', 'to-delete', ['Ready']);
    expect(await stack.dvcr.listTags(host, 'cvi/to-delete')).toContain(object.metadata.uid);
    const marked = await stack.service.delete('ClusterVirtualImage', undefined, 'to-delete');
    expect(marked.status.phase).toBe('Terminating');
    expect(await stack.service.get('ClusterVirtualImage', undefined, 'to-delete')).toBeNull();
    expect(await stack.dvcr.listTags(host, 'cvi/to-delete')).not.toContain(object.metadata.uid);
  });

  it('a Ready image whose manifest vanished becomes ImageLost, and Ready again when it returns', async () => {
    const disk = makeDataDisk(work, 'lost', 1, 'raw');
    const ref = await push('src/lost', { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }] }] });
    const { object } = await stack.service.apply(cvi('lost', ref));
    await stack.waitFor('ClusterVirtualImage', 'lost', ['Ready']);
    const repo = 'cvi/lost';
    const tagRef = { registry: host, repository: repo, tag: object.metadata.uid, digest: undefined };
    const m = await stack.dvcr.getManifest(tagRef);
    await stack.dvcr.deleteManifest(host, repo, m.digest);
    expect((await stack.service.reconcile()).lost).toContain('ClusterVirtualImage/lost');
    expect((await stack.service.get('ClusterVirtualImage', undefined, 'lost'))?.status.phase).toBe('ImageLost');
    await stack.dvcr.putManifest(host, repo, object.metadata.uid, m.bytes, m.mediaType);
    expect((await stack.service.reconcile()).found).toContain('ClusterVirtualImage/lost');
    expect((await stack.service.get('ClusterVirtualImage', undefined, 'lost'))?.status.phase).toBe('Ready');
  });

  it('VirtualImage (namespaced) lands in vi/<namespace>/<name>', async () => {
    const disk = makeDataDisk(work, 'vi', 1, 'raw');
    const ref = await push('src/vi', { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }] }] });
    const { object } = await stack.service.apply({
      apiVersion: 'virtualization.deckhouse.io/v1alpha2',
      kind: 'VirtualImage',
      metadata: { name: 'my-vi', namespace: 'team-a' },
      spec: { storage: 'ContainerRegistry', dataSource: { type: 'ContainerImage', containerImage: { image: ref } } },
    });
    const img = await stack.waitFor('VirtualImage', 'my-vi', ['Ready', 'Failed'], 60_000, 'team-a');
    expect(img.status.target?.registryURL).toBe(`${host}/vi/team-a/my-vi:${object.metadata.uid}`);
  });
});
