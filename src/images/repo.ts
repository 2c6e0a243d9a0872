/**
 * Where an image lives in DVCR (contract, "The image written to DVCR"): repository `cvi/<name>` for a
 * ClusterVirtualImage, `vi/<namespace>/<name>` for a VirtualImage, tag = the resource uid. A distribution
 * repository name (registry host plus path) is at most 255 characters; a longer one has its last path component
 * cut and suffixed with `-<hash>`, a short sha256 of the full uncut path, so the result is deterministic and two
 * long names sharing a prefix still differ.
 */
import { createHash } from 'node:crypto';
import type { ImageRef } from './schema.ts';

/** Distribution's limit on `host/path` (docker/distribution reference.NameTotalLengthMax). */
export const MAX_REPOSITORY_NAME_LENGTH = 255;
/** Hex characters of the hash suffix of a cut repository path. */
export const REPOSITORY_HASH_LENGTH = 8;

/** `cvi/<name>` or `vi/<namespace>/<name>`, uncut. */
export function repositoryPath(ref: ImageRef): string {
  if (ref.kind === 'ClusterVirtualImage') return `cvi/${ref.name}`;
  if (!ref.namespace) throw new TypeError(`VirtualImage "${ref.name}" has no namespace`);
  return `vi/${ref.namespace}/${ref.name}`;
}

/**
 * The repository path inside `registry` (`host[:port][/prefix]`), cut to fit {@link MAX_REPOSITORY_NAME_LENGTH}
 * together with the registry. Only the last component (the image name) is cut, so the `cvi/` and `vi/<ns>/`
 * structure stays. Throws when the registry itself leaves no room for a name.
 */
export function dvcrRepository(registry: string, ref: ImageRef): string {
  const full = repositoryPath(ref);
  const host = trimRegistry(registry);
  const budget = MAX_REPOSITORY_NAME_LENGTH - host.length - 1; // "/" between host and path
  if (full.length <= budget) return full;
  const slash = full.lastIndexOf('/');
  const parent = full.slice(0, slash + 1);
  const name = full.slice(slash + 1);
  const hash = createHash('sha256').update(full).digest('hex').slice(0, REPOSITORY_HASH_LENGTH);
  const room = budget - parent.length - 1 - hash.length; // "-" before the hash
  if (room < 1) {
    throw new RangeError(
      `registry "${host}" is too long for DVCR repository "${full}": host and path must fit in ${MAX_REPOSITORY_NAME_LENGTH} characters`,
    );
  }
  // A component may not end with a separator: drop trailing '-' '.' '_' left by the cut.
  const cut = name.slice(0, room).replace(/[-._]+$/, '');
  return `${parent}${cut || name.slice(0, 1)}-${hash}`;
}

/** The full DVCR reference of one image generation: `dvcr.example/cvi/ubuntu:<uid>` (`status.target.registryURL`). */
export function dvcrImageReference(registry: string, ref: ImageRef, uid: string): string {
  return `${trimRegistry(registry)}/${dvcrRepository(registry, ref)}:${uid}`;
}

function trimRegistry(registry: string): string {
  return registry.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '');
}
