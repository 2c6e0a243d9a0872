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
import type { RegistryClient } from '../oci/index.ts';

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
