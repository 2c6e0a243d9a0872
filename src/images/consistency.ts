/**
 * Does DVCR hold exactly what the image store says? One pass over every image in the store and every tag in
 * DVCR's image repositories (`cvi/...`, `vi/...`), returning each disagreement as an {@link Inconsistency}:
 *
 * - a Ready image has its manifest at `<repository>:<uid>`, shaped as the contract says (schema2, one
 *   uncompressed tar layer, config `diff_ids` = that layer), and its config labels agree with the status
 *   (`source-image-size` = `size.storedBytes`, `source-image-virtual-size` = `size.unpackedBytes`,
 *   `source-image-format` = `format`); `status.target.registryURL` names that place. Optionally: the manifest
 *   digest is the one the import committed (`committedDigest`), and the disk file in the layer hashes to
 *   `status.checksums.sha256` (`verifyDisk`, which reads every layer);
 * - an image that is not Ready (nor Terminating: the delete flow removes the tag) has no manifest at its tag;
 * - every tag in an image repository belongs to a Ready (or Terminating) image of that repository;
 * - with `jobState`: no image waits in Pending or Provisioning without a job left that could move it; and no
 *   image stays Terminating longer than `terminatingGraceMs`.
 *
 * Used by `dvcr-importer check` and by the fault suite's final check. It reads, never repairs.
 */
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { Labels, imagePresent } from '../dvcr/image.ts';
import { MediaType, type RegistryClient } from '../oci/index.ts';
import { dvcrImageReference, dvcrRepository } from './repo.ts';
import { refOf, type Image, type ImageKind } from './schema.ts';
import type { ImageStore } from './store.ts';

export type InconsistencyKind =
  /** A Ready image has no manifest at its tag. */
  | 'MissingManifest'
  /** The manifest at a Ready image's tag is not the contract's image (media types, layers, config). */
  | 'MalformedImage'
  /** The manifest digest differs from the one the import committed. */
  | 'DigestMismatch'
  /** Config labels (or the status' registryURL) disagree with the status. */
  | 'StatusMismatch'
  /** The disk file in the layer does not hash to `status.checksums.sha256`. */
  | 'DiskMismatch'
  /** An image that is not Ready has a manifest at its tag. */
  | 'TagWithoutReadyImage'
  /** A tag in an image repository that belongs to no image in the store. */
  | 'OrphanTag'
  /** An image in a non-terminal phase that nothing will move on. */
  | 'Stuck';

export interface Inconsistency {
  kind: InconsistencyKind;
  /** `ClusterVirtualImage/<name>` or `VirtualImage/<namespace>/<name>`, when an image is concerned. */
  image?: string;
  repository: string;
  tag?: string;
  message: string;
}

export interface ConsistencyOptions {
  store: ImageStore;
  dvcr: RegistryClient;
  /** `host:port` of DVCR, as in image references. */
  registry: string;
  /**
   * State of the import job of the image's current generation (`waiting`, `active`, `delayed`, `completed`,
   * `failed`, ..., undefined when there is none). Without it the Stuck check is skipped.
   */
  jobState?: (image: Image) => Promise<string | undefined>;
  /** The manifest digest the import of the image's current generation reported, when known. */
  committedDigest?: (image: Image) => Promise<string | undefined>;
  /** Read every Ready image's layer and check the disk file's sha256 against the status. Default false. */
  verifyDisk?: boolean;
  /** A Terminating image older than this is Stuck (with `jobState`). Default 60 s. */
  terminatingGraceMs?: number;
  now?: () => Date;
  signal?: AbortSignal;
}

/** Job states in which the job will still run and move its image on. */
const LIVE_JOB_STATES = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);
/** Top-level folders of DVCR image repositories (contract: `cvi/<name>`, `vi/<namespace>/<name>`). */
const IMAGE_REPOSITORY = /^(cvi|vi)\//;

export function imageLabel(image: Pick<Image, 'kind' | 'metadata'>): string {
  const ns = image.metadata.namespace ? `${image.metadata.namespace}/` : '';
  return `${image.kind}/${ns}${image.metadata.name}`;
}

export async function checkConsistency(opts: ConsistencyOptions): Promise<Inconsistency[]> {
  const { store, dvcr, registry, signal } = opts;
  const out: Inconsistency[] = [];
  const images: Image[] = [];
  for (const kind of ['ClusterVirtualImage', 'VirtualImage'] as ImageKind[]) images.push(...(await store.list(kind)));
  /** `<repository>:<uid>` -> the image that owns that tag. */
  const owners = new Map<string, Image>();
  for (const image of images) {
    signal?.throwIfAborted();
    const repository = dvcrRepository(registry, refOf(image));
    const tag = image.metadata.uid;
    owners.set(`${repository}:${tag}`, image);
    const at = { image: imageLabel(image), repository, tag };
    const phase = image.status.phase;
    if (phase === 'Ready') {
      out.push(...(await checkReady(image, repository, opts)).map((m) => ({ ...at, ...m })));
    } else if (phase !== 'Terminating' && !image.metadata.deletionTimestamp) {
      if ((await imagePresent(dvcr, { registry, repository, tag }, signal)) !== undefined) {
        out.push({ ...at, kind: 'TagWithoutReadyImage', message: `the image is ${phase}, yet DVCR has a manifest at ${repository}:${tag}` });
      }
    }
    const stuck = await stuckReason(image, opts);
    if (stuck) out.push({ ...at, kind: 'Stuck', message: stuck });
  }
  for (const repository of (await dvcr.listRepositories(registry, signal)).filter((r) => IMAGE_REPOSITORY.test(r))) {
    for (const tag of await dvcr.listTags(registry, repository, signal)) {
      if (!owners.has(`${repository}:${tag}`)) {
        out.push({ kind: 'OrphanTag', repository, tag, message: `DVCR has ${repository}:${tag}, which belongs to no image in the store` });
      }
    }
  }
  return out;
}

type Finding = Pick<Inconsistency, 'kind' | 'message'>;

interface TarEntry extends AsyncIterable<Buffer> {
  header: { name: string; type: string | null };
  resume(): void;
}

async function checkReady(image: Image, repository: string, opts: ConsistencyOptions): Promise<Finding[]> {
  const { dvcr, registry, signal } = opts;
  const tag = image.metadata.uid;
  const found: Finding[] = [];
  const expectedURL = dvcrImageReference(registry, refOf(image), tag);
  if (image.status.target?.registryURL !== expectedURL) {
    found.push({ kind: 'StatusMismatch', message: `status.target.registryURL is ${image.status.target?.registryURL ?? 'unset'}, expected ${expectedURL}` });
  }
  const head = await dvcr.headManifest({ registry, repository, tag, digest: undefined }, signal);
  if (!head) return [...found, { kind: 'MissingManifest', message: `the image is Ready but DVCR has no manifest at ${repository}:${tag}` }];
  const m = await dvcr.getManifest({ registry, repository, tag, digest: undefined }, signal);
  const committed = await opts.committedDigest?.(image);
  if (committed !== undefined && committed !== m.digest) {
    found.push({ kind: 'DigestMismatch', message: `DVCR's manifest at ${repository}:${tag} is ${m.digest}, the import committed ${committed}` });
  }
  if (m.kind !== 'manifest' || m.mediaType !== MediaType.DockerManifest) {
    return [...found, { kind: 'MalformedImage', message: `${repository}:${tag} is a ${m.mediaType}, not a Docker schema2 image manifest` }];
  }
  const layers = m.manifest.layers;
  const layer = layers[0];
  if (layers.length !== 1 || !layer || layer.mediaType !== MediaType.DockerLayerTar) {
    return [...found, { kind: 'MalformedImage', message: `${repository}:${tag} has ${layers.length} layer(s) (${layers.map((l) => l.mediaType).join(', ')}), not one uncompressed tar` }];
  }
  let config: { config?: { Labels?: Record<string, string> }; rootfs?: { diff_ids?: string[] } };
  try {
    config = JSON.parse((await dvcr.getBlobBytes(registry, repository, m.manifest.config, undefined, signal)).toString('utf8')) as typeof config;
  } catch (e) {
    return [...found, { kind: 'MalformedImage', message: `the config of ${repository}:${tag} cannot be read: ${(e as Error).message}` }];
  }
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== 1 || diffIds[0] !== layer.digest) {
    found.push({ kind: 'MalformedImage', message: `the config's diff_ids ${JSON.stringify(diffIds)} are not [${layer.digest}]` });
  }
  const labels = config.config?.Labels ?? {};
  const s = image.status;
  const expected: Array<[string, string | undefined]> = [
    [Labels.size, s.size?.storedBytes],
    [Labels.virtualSize, s.size?.unpackedBytes],
    [Labels.format, s.format],
  ];
  for (const [label, want] of expected) {
    if (labels[label] !== want) {
      found.push({ kind: 'StatusMismatch', message: `label ${label} of ${repository}:${tag} is ${JSON.stringify(labels[label])}, the status says ${JSON.stringify(want)}` });
    }
  }
  if (opts.verifyDisk) {
    const disk = await diskDigest(dvcr, registry, repository, layer, signal);
    const want = s.checksums?.sha256;
    if ('error' in disk) found.push({ kind: 'MalformedImage', message: `the layer of ${repository}:${tag}: ${disk.error}` });
    else if (disk.sha256 !== want) {
      found.push({
        kind: 'DiskMismatch',
        message: `the disk file ${disk.name} in ${repository}:${tag} (${disk.size} bytes, sha256 ${disk.sha256}) is not the one the status describes (${s.size?.storedBytes ?? '?'} bytes, sha256 ${want ?? 'unset'})`,
      });
    }
  }
  return found;
}

/** sha256 and size of the one regular file under `disk/` in the layer (the contract's layer shape). */
async function diskDigest(
  dvcr: RegistryClient,
  registry: string,
  repository: string,
  layer: { digest: string; size: number },
  signal?: AbortSignal,
): Promise<{ name: string; size: number; sha256: string } | { error: string }> {
  const files: Array<{ name: string; size: number; sha256: string }> = [];
  // tar-stream ships no types: the part used here.
  const extract = (tar as unknown as { extract(): NodeJS.WritableStream & AsyncIterable<TarEntry> }).extract();
  const blob = dvcr.openBlob(registry, repository, layer, signal ? { signal } : {});
  try {
    await Promise.all([
      pipeline(blob, extract),
      (async () => {
        for await (const entry of extract) {
          if (entry.header.type === 'file' && /^(\.\/)?disk\/[^/]+$/.test(entry.header.name)) {
            const h = createHash('sha256');
            let size = 0;
            for await (const chunk of entry) {
              h.update(chunk);
              size += chunk.length;
            }
            files.push({ name: entry.header.name, size, sha256: h.digest('hex') });
          } else {
            entry.resume();
          }
        }
      })(),
    ]);
  } catch (e) {
    return { error: (e as Error).message };
  }
  if (files.length !== 1) return { error: `${files.length} disk files (${files.map((f) => f.name).join(', ')}), expected one` };
  return files[0]!;
}

async function stuckReason(image: Image, opts: ConsistencyOptions): Promise<string | undefined> {
  if (!opts.jobState) return undefined;
  const phase = image.status.phase;
  if (phase === 'Terminating' || image.metadata.deletionTimestamp) {
    const since = Date.parse(image.metadata.deletionTimestamp ?? '');
    const age = (opts.now ?? (() => new Date()))().getTime() - since;
    const grace = opts.terminatingGraceMs ?? 60_000;
    return Number.isNaN(since) || age >= grace ? `Terminating for ${Number.isNaN(since) ? '?' : Math.round(age / 1000)} s: the delete did not finish` : undefined;
  }
  // Upload images take no job: their bytes come through the API.
  if ((phase !== 'Pending' && phase !== 'Provisioning') || image.spec.dataSource.type === 'Upload') return undefined;
  const state = await opts.jobState(image);
  if (state !== undefined && LIVE_JOB_STATES.has(state)) return undefined;
  return `the image is ${phase} (generation ${image.metadata.generation}) but its import job is ${state ?? 'gone'}: nothing will move it on`;
}
