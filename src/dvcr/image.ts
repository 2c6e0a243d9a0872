/**
 * The image written to DVCR: one uncompressed layer, a Docker image config with the labels the platform
 * reads, and a schema2 manifest pushed last, so a tag only ever points at a complete image.
 */
import { Readable } from 'node:stream';
import { MediaType, digestOf, type RegistryClient } from '../oci/index.ts';

export interface DvcrTarget {
  /** `host:port` of DVCR. */
  registry: string;
  /** `cvi/<name>` or `vi/<namespace>/<name>`. */
  repository: string;
  /** The image UID. */
  tag: string;
}

export interface DiskFacts {
  /** Bytes of the disk file kept in DVCR. */
  storedBytes: number;
  /** Virtual size (qcow2/vmdk header) or byte length (raw/iso). */
  virtualSize: number;
  /** qcow2, raw, vmdk, vdi, vhd, vhdx, iso. */
  format: string;
  /** Extra labels of ours (e.g. the original format after a conversion). */
  extraLabels?: Record<string, string>;
}

export interface LayerDescriptor {
  digest: string;
  size: number;
}

export const Labels = {
  size: 'source-image-size',
  virtualSize: 'source-image-virtual-size',
  format: 'source-image-format',
  erofs: 'erofs-compatible-layers',
  /** Ours: the format the disk arrived in, when the importer converted it (`source-image-format` is the stored one). */
  originalFormat: 'source-image-original-format',
} as const;

export function formatTarget(t: DvcrTarget): string {
  return `${t.registry}/${t.repository}:${t.tag}`;
}

export function buildConfig(layer: LayerDescriptor, facts: DiskFacts): Buffer {
  const config = {
    architecture: 'amd64',
    os: 'linux',
    config: {
      Labels: {
        ...facts.extraLabels,
        [Labels.size]: String(facts.storedBytes),
        [Labels.virtualSize]: String(facts.virtualSize),
        [Labels.format]: facts.format,
        [Labels.erofs]: 'true',
      },
    },
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
  };
  return Buffer.from(JSON.stringify(config));
}

export function buildManifest(config: LayerDescriptor, layer: LayerDescriptor): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, size: config.size, digest: config.digest },
      layers: [{ mediaType: MediaType.DockerLayerTar, size: layer.size, digest: layer.digest }],
    }),
  );
}

/**
 * Pushes config and manifest for a layer already in DVCR. The manifest goes last: until it lands, the tag does
 * not exist. Returns the manifest digest.
 */
export async function commitImage(
  client: RegistryClient,
  target: DvcrTarget,
  layer: LayerDescriptor,
  facts: DiskFacts,
  signal?: AbortSignal,
): Promise<string> {
  const config = buildConfig(layer, facts);
  // A config is a few hundred bytes and almost always new (it names this disk's sizes): one POST and one PUT,
  // without asking first whether it is there.
  const cfg = await client.uploadBlob(target.registry, target.repository, () => Readable.from([config]), {
    digest: digestOf(config),
    size: config.length,
    signal,
    checkExisting: false,
    monolithicUpTo: config.length,
  });
  const manifest = buildManifest({ digest: cfg.digest, size: cfg.size }, layer);
  return client.putManifest(target.registry, target.repository, target.tag, manifest, MediaType.DockerManifest, signal);
}

/** Removes the tag's manifest (and so the tag). False when there was nothing. */
export async function removeImage(client: RegistryClient, target: DvcrTarget, signal?: AbortSignal): Promise<boolean> {
  const head = await client.headManifest(
    { registry: target.registry, repository: target.repository, tag: target.tag, digest: undefined },
    signal,
  );
  if (!head?.digest) return false;
  return client.deleteManifest(target.registry, target.repository, head.digest, signal);
}

/** The manifest digest if the image is present in DVCR. */
export async function imagePresent(client: RegistryClient, target: DvcrTarget, signal?: AbortSignal): Promise<string | undefined> {
  const head = await client.headManifest(
    { registry: target.registry, repository: target.repository, tag: target.tag, digest: undefined },
    signal,
  );
  return head ? (head.digest ?? 'present') : undefined;
}
