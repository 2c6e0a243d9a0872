/**
 * `dvcr-importer up --demo`: the offline quick start. Builds a small real disk with qemu-img, pushes it as a
 * containerDisk (`FROM scratch` + `/disk/demo.qcow2`) to a registry on this machine, applies a
 * ClusterVirtualImage for it, and prints its rows as `get cvi -w` would until it is Ready.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { commitImage } from '../dvcr/image.ts';
import { diskLayer, layerSize } from '../dvcr/layer.ts';
import { stringify as yamlStringify } from 'yaml';
import type { ImageService } from '../api/service.ts';
import type { Image } from '../images/index.ts';
import type { RegistryClient } from '../oci/index.ts';
import { tableHeader, tableRow } from './output/images.ts';
import { columnWidths, formatRow } from './output/table.ts';

const run = promisify(execFile);

/**
 * Writes a qcow2 of `dataBytes` of mixed content (random and zero blocks, like a real system disk) into `dir`.
 */
export async function buildDemoDisk(dir: string, dataBytes: number): Promise<string> {
  const raw = join(dir, 'demo.raw');
  const fh = await open(raw, 'w');
  try {
    const block = 1024 * 1024;
    for (let off = 0; off < dataBytes; off += block) {
      // Three of four MiB carry data, every fourth stays sparse: qcow2 then has something to skip.
      if ((off / block) % 4 !== 3) await fh.write(randomBytes(block), 0, block, off);
    }
    await fh.truncate(dataBytes);
  } finally {
    await fh.close();
  }
  const qcow2 = join(dir, 'demo.qcow2');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  await rm(raw);
  return qcow2;
}

/** Pushes a disk file as a one-layer containerDisk image to `registry/repository:tag`. */
export async function pushContainerDisk(
  client: RegistryClient,
  registry: string,
  repository: string,
  tag: string,
  file: string,
  format: string,
): Promise<string> {
  const { size } = await stat(file);
  const name = file.split('/').pop()!;
  const layer = await client.uploadBlob(registry, repository, () => diskLayer(name, size, createReadStream(file, { highWaterMark: 1 << 20 })), {
    size: layerSize(name, size),
  });
  await commitImage(client, { registry, repository, tag }, { digest: layer.digest, size: layer.size }, { storedBytes: size, virtualSize: size, format });
  return `${registry}/${repository}:${tag}`;
}

export async function prepareDemoSource(client: RegistryClient, registry: string, dataBytes: number, tmp: string): Promise<string> {
  const dir = await mkdtemp(join(tmp, 'dvcr-demo-'));
  try {
    const disk = await buildDemoDisk(dir, dataBytes);
    return await pushContainerDisk(client, registry, 'demo/containerdisk', 'latest', disk, 'qcow2');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export function demoManifest(image: string): Record<string, unknown> {
  return {
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name: 'demo-disk' },
    spec: { dataSource: { type: 'ContainerImage', containerImage: { image } } },
  };
}

export interface DemoOptions {
  /** Bytes of data in the demo disk. */
  dataBytes: number;
  /** Where the source image goes (`host:port`); the same client writes it. */
  sourceRegistry: string;
  client: RegistryClient;
  service: ImageService;
  tmpDir: string;
  log: (line: string) => void;
  /** Stops watching early (Ctrl-C). */
  signal?: AbortSignal;
}

/** Builds and pushes the demo source, applies `demo-disk`, prints its rows until Ready or Failed. */
export async function runDemo(opts: DemoOptions): Promise<Image | undefined> {
  const { log, service } = opts;
  log(`demo: building a ${Math.round(opts.dataBytes / 2 ** 20)} MiB qcow2 disk with qemu-img and pushing it as a containerDisk...`);
  const source = await prepareDemoSource(opts.client, opts.sourceRegistry, opts.dataBytes, opts.tmpDir);
  log(`demo: source image ${source}`);
  // A fresh demo every run: an earlier demo-disk (Ready, so frozen) goes first.
  if (await service.get('ClusterVirtualImage', undefined, 'demo-disk')) {
    await service.delete('ClusterVirtualImage', undefined, 'demo-disk');
  }
  const manifest = demoManifest(source);
  log('demo: applying');
  log(
    yamlStringify(manifest)
      .trimEnd()
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n'),
  );
  const applied = await service.apply(manifest);
  log('demo: watching (like `dvcr-importer get cvi demo-disk -w`):');
  let widths: number[] | undefined;
  let last = '';
  // One row per phase/progress change. The applied object (Pending) is the first: a worker may take the
  // import before the watch starts, and the watch then begins with the image already Provisioning.
  const show = (object: Image): boolean => {
    const row = tableRow(object, new Date());
    const key = `${object.status.phase}|${object.status.progress ?? ''}`;
    if (key === last) return false;
    last = key;
    if (!widths) {
      widths = columnWidths([tableHeader(), row, ['demo-disk', 'Provisioning', 'false', '100.0%', '999s']]);
      log(formatRow(tableHeader(), widths).trimEnd());
    }
    log(formatRow(row, widths).trimEnd());
    const phase = object.status.phase;
    if (phase === 'Failed') log(`demo: failed: ${object.status.failure?.message ?? ''}`);
    return phase === 'Ready' || phase === 'Failed';
  };
  if (show(applied.object)) return applied.object;
  for await (const ev of service.watch('ClusterVirtualImage', { name: 'demo-disk', ...(opts.signal ? { signal: opts.signal } : {}) })) {
    if (ev.type === 'BOOKMARK' || ev.type === 'DELETED') continue;
    if (show(ev.object)) return ev.object;
  }
  return undefined;
}
