/**
 * Conversion (ours) end to end: `spec.conversion.format` and the worker default CONVERT_TO, with real qemu-img,
 * a real registry and the worker's scratch folder checked empty after every import (also after failures), plus
 * stream-optimised VMDKs (metadata at the end) from a container image and over HTTP.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';
import { buildImageLayout, type LayoutSpec } from '../helpers/fixtures.ts';
import { skopeoCopy, skopeoInspectConfig } from '../helpers/skopeo.ts';
import { startHttpServer, type TestHttpServer } from '../helpers/http-server.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';
import { getCondition, type Image } from '../../src/images/index.ts';

const MiB = 1024 * 1024;
const API = 'virtualization.deckhouse.io/v1alpha2';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let work: string;
let scratch: string;
let n = 0;

function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { cwd: work, stdio: ['ignore', 'pipe', 'pipe'] }).toString('utf8');
}

async function push(host: string, repo: string, spec: LayoutSpec): Promise<string> {
  const layout = await buildImageLayout(join(work, `layout-${n++}`), spec);
  const ref = `${host}/${repo}:v1`;
  await skopeoCopy(layout.ref, `docker://${ref}`);
  return ref;
}

const cvi = (name: string, dataSource: Record<string, unknown>, conversion?: string) => ({
  apiVersion: API,
  kind: 'ClusterVirtualImage',
  metadata: { name },
  spec: { dataSource, ...(conversion ? { conversion: { format: conversion } } : {}) },
});
const fromImage = (image: string) => ({ type: 'ContainerImage', containerImage: { image } });

/** The disk file stored in DVCR for a Ready image, written to `out`. */
async function storedDisk(stack: ImportStack, img: Image, out: string): Promise<{ name: string; size: number }> {
  const url = img.status.target!.registryURL!;
  const slash = url.indexOf('/');
  const colon = url.lastIndexOf(':');
  const ref = { registry: url.slice(0, slash), repository: url.slice(slash + 1, colon), tag: url.slice(colon + 1), digest: undefined };
  const m = await stack.dvcr.getManifest(ref);
  if (m.kind !== 'manifest' || m.manifest.layers.length !== 1) throw new Error('expected one layer');
  const ex = extract();
  let found: { name: string; size: number } | undefined;
  ex.on('entry', (header, stream, next) => {
    if (header.type === 'file' && header.name.startsWith('disk/')) {
      found = { name: header.name.slice('disk/'.length), size: header.size ?? 0 };
      void pipeline(stream, createWriteStream(out)).then(() => next(), next);
    } else {
      stream.resume();
      stream.on('end', () => next());
    }
  });
  await pipeline(stack.dvcr.openBlob(ref.registry, ref.repository, m.manifest.layers[0]!), ex);
  if (!found) throw new Error('no disk file in the layer');
  return found;
}

async function labelsOf(img: Image): Promise<Record<string, string>> {
  const cfg = await skopeoInspectConfig(`docker://${img.status.target!.registryURL!}`);
  return (cfg.config as { Labels: Record<string, string> }).Labels;
}

function expectScratchEmpty(): void {
  expect(readdirSync(scratch)).toEqual([]);
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'convert-e2e-'));
  scratch = join(work, 'scratch');
  mkdirSync(scratch);
  // The worker threads (created by startWorker) take their scratch folder from this variable.
  process.env.DVCR_IMPORTER_TMPDIR = scratch;
  // A sparse raw disk: 64 MiB long, 3 MiB of data.
  const raw = Buffer.alloc(64 * MiB);
  randomBytes(MiB).copy(raw, 0);
  randomBytes(2 * MiB).copy(raw, 30 * MiB);
  writeFileSync(join(work, 'sparse.raw'), raw);
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'qcow2', 'sparse.raw', 'disk.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'disk.qcow2', '-F', 'qcow2', 'overlay.qcow2');
  mkdirSync(join(work, 'iso'));
  writeFileSync(join(work, 'iso/hello.txt'), 'hello\n');
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-o', join(work, 'disk.iso'), join(work, 'iso')], { stdio: ['ignore', 'ignore', 'pipe'] });
  // A stream-optimised VMDK as VMware writes it: the grain directory is found through a footer at the end.
  // 60 MiB of incompressible data, so that its head (1 MiB probe sample) and tail (50 MiB) leave a gap between.
  const big = Buffer.alloc(64 * MiB);
  randomBytes(60 * MiB).copy(big, 2 * MiB);
  writeFileSync(join(work, 'big.raw'), big);
  qemuImg('convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'big.raw', 'qemu-stream.vmdk');
  const so = readFileSync(join(work, 'qemu-stream.vmdk'));
  const header = Buffer.from(so.subarray(0, 512));
  const atEnd = Buffer.from(so);
  atEnd.fill(0xff, 56, 64); // gdOffset = GD_AT_END
  const marker = Buffer.alloc(512);
  marker.writeUInt32LE(3, 12); // MARKER_FOOTER
  writeFileSync(join(work, 'footer.vmdk'), Buffer.concat([atEnd, marker, header, Buffer.alloc(512)]));
});

afterAll(() => {
  delete process.env.DVCR_IMPORTER_TMPDIR;
  rmSync(work, { recursive: true, force: true });
});

describe('conversion per image (spec.conversion), no worker default', () => {
  let stack: ImportStack;
  let srv: TestHttpServer;
  let host: string;

  beforeAll(async () => {
    // A small probe sample: the VMDK tests below then need the kept tail.
    stack = await startImportStack({ probeSampleSize: '1Mi' });
    host = stack.registryHostPort;
    srv = await startHttpServer();
    stack.startWorker({ threads: 2 });
  });
  afterAll(async () => {
    await stack?.close();
    await srv?.close();
  });
  beforeEach(() => expectScratchEmpty());

  it('raw -> qcow2 over HTTP shrinks a sparse raw disk; status and labels say qcow2, the original format is kept', async () => {
    const raw = readFileSync(join(work, 'sparse.raw'));
    srv.file('/sparse.raw', { body: raw });
    await stack.service.apply(cvi('raw-to-qcow2', { type: 'HTTP', http: { url: `${srv.url}/sparse.raw` } }, 'qcow2'));
    const img = await stack.waitFor('ClusterVirtualImage', 'raw-to-qcow2', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'qcow2', originalFormat: 'raw', cdrom: false, size: { unpackedBytes: String(64 * MiB) } });
    const stored = Number(img.status.size!.storedBytes);
    expect(stored).toBeLessThan(8 * MiB);
    const file = join(work, 'stored-1');
    const disk = await storedDisk(stack, img, file);
    expect(disk).toEqual({ name: 'sparse.qcow2', size: stored });
    expect(img.status.checksums?.sha256).toBe(sha256(readFileSync(file)));
    qemuImg('compare', '-q', '-f', 'raw', '-F', 'qcow2', 'sparse.raw', file);
    expect(await labelsOf(img)).toMatchObject({
      'source-image-format': 'qcow2',
      'source-image-original-format': 'raw',
      'source-image-size': String(stored),
      'source-image-virtual-size': String(64 * MiB),
    });
    expectScratchEmpty();
  });

  it('qcow2 -> raw from a container image (gzip layer): stored as raw of the full virtual size', async () => {
    const ref = await push(host, 'src/q2r', { layers: [{ files: [{ path: 'disk/disk.qcow2', fromFile: join(work, 'disk.qcow2') }] }] });
    await stack.service.apply(cvi('qcow2-to-raw', fromImage(ref), 'raw'));
    const img = await stack.waitFor('ClusterVirtualImage', 'qcow2-to-raw', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'raw', originalFormat: 'qcow2', size: { storedBytes: String(64 * MiB), unpackedBytes: String(64 * MiB) } });
    const file = join(work, 'stored-2');
    expect((await storedDisk(stack, img, file)).name).toBe('disk.raw');
    expect(readFileSync(file).equals(readFileSync(join(work, 'sparse.raw')))).toBe(true);
    expect((await labelsOf(img))['source-image-original-format']).toBe('qcow2');
    expectScratchEmpty();
  });

  it('skipped when the format already matches, and for an ISO (an ISO stays an ISO)', async () => {
    const q = await push(host, 'src/same', { layers: [{ files: [{ path: 'disk/disk.qcow2', fromFile: join(work, 'disk.qcow2') }] }] });
    const iso = await push(host, 'src/iso', { layers: [{ files: [{ path: 'disk/disk.iso', fromFile: join(work, 'disk.iso') }] }] });
    await stack.service.apply(cvi('same', fromImage(q), 'qcow2'));
    await stack.service.apply(cvi('iso', fromImage(iso), 'qcow2'));
    const same = await stack.waitFor('ClusterVirtualImage', 'same', ['Ready', 'Failed']);
    const cd = await stack.waitFor('ClusterVirtualImage', 'iso', ['Ready', 'Failed']);
    expect(same.status).toMatchObject({ phase: 'Ready', format: 'qcow2', checksums: { sha256: sha256(readFileSync(join(work, 'disk.qcow2'))) } });
    expect(same.status.originalFormat).toBeUndefined();
    expect(cd.status).toMatchObject({ phase: 'Ready', format: 'iso', cdrom: true, checksums: { sha256: sha256(readFileSync(join(work, 'disk.iso'))) } });
    expect(cd.status.originalFormat).toBeUndefined();
    expect(await labelsOf(cd)).not.toHaveProperty('source-image-original-format');
    const logs = (await stack.queue.queue.getJobLogs(`${cd.metadata.uid}-g1`)).logs.join('\n');
    expect(logs).toContain('is an ISO image: stored as it is, no conversion to qcow2');
    expectScratchEmpty();
  });

  it('a refusal after the disk was spooled for conversion (backing file) leaves the scratch folder empty', async () => {
    srv.file('/overlay.qcow2', { body: readFileSync(join(work, 'overlay.qcow2')) });
    await stack.service.apply(cvi('overlay', { type: 'HTTP', http: { url: `${srv.url}/overlay.qcow2` } }, 'raw'));
    const img = await stack.waitFor('ClusterVirtualImage', 'overlay', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Failed', failure: { reason: 'BackingFile', retryable: false } });
    expect(await stack.dvcr.listTags(host, 'cvi/overlay')).toEqual([]);
    expectScratchEmpty();
  });

  it('a copy (ObjectRef) of a converted image keeps its original format', async () => {
    await stack.service.apply({
      apiVersion: API,
      kind: 'ClusterVirtualImage',
      metadata: { name: 'copy-of-converted' },
      spec: { dataSource: { type: 'ObjectRef', objectRef: { kind: 'ClusterVirtualImage', name: 'raw-to-qcow2' } } },
    });
    const img = await stack.waitFor('ClusterVirtualImage', 'copy-of-converted', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'qcow2', originalFormat: 'raw' });
    expect((await labelsOf(img))['source-image-original-format']).toBe('raw');
  });

  describe('stream-optimised VMDK (grain directory found through the footer at the end)', () => {
    const vmdk = () => readFileSync(join(work, 'footer.vmdk'));

    it('from a container image: Ready with the virtual size of its header', async () => {
      expect(vmdk().length).toBeGreaterThan(52 * MiB);
      const ref = await push(host, 'src/vmdk', { layers: [{ files: [{ path: 'disk/disk.vmdk', fromFile: join(work, 'footer.vmdk') }] }] });
      await stack.service.apply(cvi('vmdk-image', fromImage(ref)));
      const img = await stack.waitFor('ClusterVirtualImage', 'vmdk-image', ['Ready', 'Failed'], 90_000);
      expect(img.status).toMatchObject({
        phase: 'Ready',
        format: 'vmdk',
        size: { storedBytes: String(vmdk().length), unpackedBytes: String(64 * MiB) },
        checksums: { sha256: sha256(vmdk()) },
      });
      expectScratchEmpty();
    });

    it.each([true, false])('over HTTP (Content-Length %s): Ready with the virtual size of its header', async (contentLength) => {
      const name = `vmdk-http-${contentLength ? 'cl' : 'nocl'}`;
      srv.file(`/${name}.vmdk`, { body: vmdk(), contentLength });
      await stack.service.apply(cvi(name, { type: 'HTTP', http: { url: `${srv.url}/${name}.vmdk` } }));
      const img = await stack.waitFor('ClusterVirtualImage', name, ['Ready', 'Failed'], 90_000);
      expect(img.status).toMatchObject({
        phase: 'Ready',
        format: 'vmdk',
        size: { storedBytes: String(vmdk().length), unpackedBytes: String(64 * MiB) },
      });
      expectScratchEmpty();
    });

    it('and converted to qcow2 on the way in', async () => {
      srv.file('/conv.vmdk', { body: vmdk() });
      await stack.service.apply(cvi('vmdk-to-qcow2', { type: 'HTTP', http: { url: `${srv.url}/conv.vmdk` } }, 'qcow2'));
      const img = await stack.waitFor('ClusterVirtualImage', 'vmdk-to-qcow2', ['Ready', 'Failed'], 90_000);
      expect(img.status).toMatchObject({ phase: 'Ready', format: 'qcow2', originalFormat: 'vmdk', size: { unpackedBytes: String(64 * MiB) } });
      const file = join(work, 'stored-vmdk');
      await storedDisk(stack, img, file);
      qemuImg('compare', '-q', '-f', 'raw', '-F', 'qcow2', 'big.raw', file);
      expectScratchEmpty();
    });
  });
});

describe('the worker default (CONVERT_TO) and the conversion timeout', () => {
  let stack: ImportStack;
  let host: string;

  beforeAll(async () => {
    stack = await startImportStack({ convertTo: 'qcow2', convertTimeout: '1ms', importAttempts: 1 });
    host = stack.registryHostPort;
    stack.startWorker({ threads: 1 });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('a raw disk is converted by default; qemu-img is killed at the timeout: Failed (ConvertTimeout), scratch empty', async () => {
    const ref = await push(host, 'src/default', { layers: [{ files: [{ path: 'disk/d.raw', fromFile: join(work, 'sparse.raw') }] }] });
    await stack.service.apply(cvi('by-default', fromImage(ref)));
    const img = await stack.waitFor('ClusterVirtualImage', 'by-default', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Failed', failure: { reason: 'ConvertTimeout', retryable: true } });
    expect(img.status.failure?.message).toContain('qemu-img convert of d.raw from raw to qcow2 did not finish within 1 ms');
    expect(getCondition(img.status, 'Ready')?.reason).toBe('ProvisioningFailed');
    expect(await stack.dvcr.listTags(host, 'cvi/by-default')).toEqual([]);
    expectScratchEmpty();
  });

  it("the image's own conversion wins over the default: raw asked for a raw disk means no conversion", async () => {
    const ref = await push(host, 'src/keep', { layers: [{ files: [{ path: 'disk/d.raw', fromFile: join(work, 'sparse.raw') }] }] });
    await stack.service.apply(cvi('keep-raw', fromImage(ref), 'raw'));
    const img = await stack.waitFor('ClusterVirtualImage', 'keep-raw', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'raw', size: { storedBytes: String(statSync(join(work, 'sparse.raw')).size) } });
    expect(img.status.originalFormat).toBeUndefined();
    expectScratchEmpty();
  });
});
