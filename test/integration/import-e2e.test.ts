import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImageLayout, makeDataDisk, makeIso, type LayerSpec } from '../helpers/fixtures.ts';
import { skopeoCopy, skopeoInspectConfig, skopeoInspectRaw } from '../helpers/skopeo.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';
import { ImportStats } from '../../src/images/index.ts';
import { importerMetricsFrom } from '../../src/api/metrics.ts';


const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('import a container image into DVCR, end to end', () => {
  let stack: ImportStack;
  let work: string;
  let host: string;

  async function pushSource(repo: string, layers: LayerSpec[]): Promise<string> {
    const layout = await buildImageLayout(join(work, `layout-${repo.replace(/\//g, '-')}`), { layers });
    const ref = `${host}/${repo}:v1`;
    await skopeoCopy(layout.ref, `docker://${ref}`);
    return ref;
  }

  function cvi(name: string, image: string, extra: Record<string, unknown> = {}) {
    return {
      apiVersion: 'virtualization.deckhouse.io/v1alpha2',
      kind: 'ClusterVirtualImage',
      metadata: { name },
      spec: { dataSource: { type: 'ContainerImage', containerImage: { image, ...extra } } },
    };
  }

  beforeAll(async () => {
    stack = await startImportStack();
    host = stack.registryHostPort;
    work = mkdtempSync(join(tmpdir(), 'e2e-'));
    stack.startWorker({ threads: 2 });
  });
  afterAll(async () => {
    await stack?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('qcow2 in a gzip layer: Ready with format, sizes, checksum, and a clean DVCR image', async () => {
    const disk = makeDataDisk(work, 'qcow', 24, 'qcow2');
    const bytes = readFileSync(disk);
    const ref = await pushSource('src/qcow2', [{ files: [{ path: 'disk/ubuntu.qcow2', fromFile: disk, uid: 107, gid: 107 }], compression: 'gzip' }]);
    const { object } = await stack.service.apply(cvi('qcow2-gzip', ref));
    const ready = await stack.waitFor('ClusterVirtualImage', 'qcow2-gzip', ['Ready', 'Failed']);
    expect(ready.status.failure).toBeUndefined();
    expect(ready.status).toMatchObject({
      phase: 'Ready',
      progress: '100%',
      format: 'qcow2',
      cdrom: false,
      observedGeneration: 1,
      target: { registryURL: `${host}/cvi/qcow2-gzip:${object.metadata.uid}` },
      size: { storedBytes: String(bytes.length), unpackedBytes: String(24 * 1024 * 1024) },
      checksums: { sha256: sha256(bytes) },
    });
    expect(ready.status.downloadSpeed?.avg).toMatch(/\/s$/);
    expect(ready.status.downloadSpeed?.current).toBeUndefined();

    // DVCR: schema2 manifest with one uncompressed layer; config labels; the layer holds disk/<file> byte-exact.
    const target = `docker://${host}/cvi/qcow2-gzip:${object.metadata.uid}`;
    const manifest = JSON.parse(await skopeoInspectRaw(target));
    expect(manifest.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(manifest.layers).toHaveLength(1);
    expect(manifest.layers[0].mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar');
    const config = await skopeoInspectConfig(target);
    expect((config.config as { Labels: Record<string, string> }).Labels).toEqual({
      'source-image-size': String(bytes.length),
      'source-image-virtual-size': String(24 * 1024 * 1024),
      'source-image-format': 'qcow2',
      'erofs-compatible-layers': 'true',
    });
    const out = join(work, 'dvcr-copy');
    await skopeoCopy(target, `dir:${out}`);
    const layerFile = join(out, manifest.layers[0].digest.slice(7));
    const listing = execFileSync('tar', ['-tvf', layerFile], { encoding: 'utf8' }).trim().split('\n');
    expect(listing).toHaveLength(2);
    expect(listing[1]).toMatch(/^-rw-r--r-- .* disk\/ubuntu\.qcow2$/);
    execFileSync('tar', ['-xf', layerFile, '-C', out]);
    expect(sha256(readFileSync(join(out, 'disk', 'ubuntu.qcow2')))).toBe(sha256(bytes));
  });

  it('raw disk in a zstd layer, ISO uncompressed with cdrom=true', async () => {
    const raw = makeDataDisk(work, 'rawdisk', 8, 'raw');
    const iso = join(work, 'x.iso');
    await makeIso(iso);
    const r1 = await pushSource('src/raw', [{ files: [{ path: 'disk/disk.img', fromFile: raw }], compression: 'zstd' }]);
    const r2 = await pushSource('src/iso', [{ files: [{ path: './disk/install.iso', fromFile: iso }], compression: 'none' }]);
    await stack.service.apply(cvi('raw-zstd', r1));
    await stack.service.apply(cvi('iso-plain', r2));
    const a = await stack.waitFor('ClusterVirtualImage', 'raw-zstd', ['Ready', 'Failed']);
    const b = await stack.waitFor('ClusterVirtualImage', 'iso-plain', ['Ready', 'Failed']);
    expect(a.status).toMatchObject({ phase: 'Ready', format: 'raw', cdrom: false, size: { unpackedBytes: String(8 * 1024 * 1024) } });
    expect(b.status).toMatchObject({ phase: 'Ready', format: 'iso', cdrom: true, size: { storedBytes: String(statSync(iso).size) } });
  });

  it('a disk file that is itself gzip-compressed is stored unwrapped', async () => {
    const disk = makeDataDisk(work, 'inner', 4, 'qcow2');
    execFileSync('gzip', ['-k', '-1', disk]);
    const ref = await pushSource('src/gzdisk', [{ files: [{ path: 'disk/inner.qcow2.gz', fromFile: `${disk}.gz` }], compression: 'none' }]);
    await stack.service.apply(cvi('inner-gz', ref));
    const img = await stack.waitFor('ClusterVirtualImage', 'inner-gz', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({
      phase: 'Ready',
      format: 'qcow2',
      size: { storedBytes: String(statSync(disk).size) },
      checksums: { sha256: sha256(readFileSync(disk)) },
    });
    const cfg = await skopeoInspectConfig(`docker://${img.status.target!.registryURL}`);
    expect((cfg.config as { Labels: Record<string, string> }).Labels['source-image-format']).toBe('qcow2');
  });

  it('no disk file: Failed at once with ProvisioningFailedTerminally and no manifest in DVCR', async () => {
    const ref = await pushSource('src/nodisk', [{ files: [{ path: 'etc/hostname', content: 'x' }] }]);
    const { object } = await stack.service.apply(cvi('no-disk', ref));
    const img = await stack.waitFor('ClusterVirtualImage', 'no-disk', ['Ready', 'Failed']);
    expect(img.status.phase).toBe('Failed');
    expect(img.status.failure).toMatchObject({ reason: 'NoDiskFile', retryable: false });
    expect(img.status.failure!.message).toMatch(/no disk file under \/disk\//);
    expect(img.status.conditions.find((c) => c.type === 'Ready')?.reason).toBe('ProvisioningFailedTerminally');
    expect(img.status.attempts).toBe(1);
    const tags = await stack.dvcr.listTags(host, 'cvi/no-disk');
    expect(tags).not.toContain(object.metadata.uid);
  });

  it('a 0-byte disk file: Failed at once with NotADiskImage, nothing committed', async () => {
    const ref = await pushSource('src/empty', [{ files: [{ path: 'disk/empty.img', content: '' }] }]);
    const { object } = await stack.service.apply(cvi('empty-disk', ref));
    const img = await stack.waitFor('ClusterVirtualImage', 'empty-disk', ['Ready', 'Failed']);
    expect(img.status.failure).toMatchObject({ reason: 'NotADiskImage', retryable: false });
    expect(img.status.failure!.message).toMatch(/empty \(0 bytes\)/);
    expect(img.status.attempts).toBe(1);
    expect(await stack.dvcr.listTags(host, 'cvi/empty-disk').catch(() => [])).not.toContain(object.metadata.uid);
  });

  it('records pool-wide statistics in Redis that /metrics renders', async () => {
    const snap = await new ImportStats(stack.redis, stack.store.prefix).snapshot();
    expect(snap.importsSucceeded).toBe(4);
    expect(snap.bytesImported).toBeGreaterThan(8 * 1024 * 1024); // the raw disk alone is 8 MiB
    expect(snap.failures).toEqual({ NoDiskFile: 1, NotADiskImage: 1 });
    expect(snap.duration.count).toBe(4);
    const text = importerMetricsFrom(snap).render();
    expect(text).toMatch(/^dvcr_importer_import_failures_total\{reason="NoDiskFile"\} 1$/m);
    expect(text).toMatch(/^dvcr_importer_import_duration_seconds_count 4$/m);
    expect(text).toMatch(/^dvcr_importer_import_duration_seconds_bucket\{le="\+Inf"\} 4$/m);
  });
});
