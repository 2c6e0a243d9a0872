/**
 * Image references: `[registry/]repository[:tag][@digest]`, with Docker Hub normalisation.
 */
import { OciError } from './errors.ts';

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const HOST = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::\d{1,5})?$/;

export interface ImageReference {
  /** Registry as users name it: `docker.io`, `quay.io`, `127.0.0.1:5000`. */
  readonly registry: string;
  /** Repository path, e.g. `library/alpine`, `cvi/ubuntu`. */
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

export function isValidTag(s: string): boolean {
  return TAG.test(s);
}

export function isValidRepository(s: string): boolean {
  return s.length > 0 && s.length <= 255 && s.split('/').every((c) => COMPONENT.test(c));
}

function invalid(input: string, why: string): OciError {
  return new OciError(`invalid image reference "${input}": ${why}`, { errorClass: 'permanent', reason: 'InvalidReference' });
}

/**
 * Parses a reference. With neither tag nor digest, the tag is `latest`.
 * The first path component is a registry when it has a `.` or `:`, or is `localhost`.
 */
export function parseReference(input: string): ImageReference {
  const s = input.trim();
  if (s === '') throw invalid(input, 'it is empty');
  if (/\s/.test(s)) throw invalid(input, 'it contains whitespace');
  let rest = s.replace(/^docker:\/\//, '');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) throw invalid(input, `digest "${digest}" is not sha256:<64 hex> or sha512:<128 hex>`);
  }
  let registry = DOCKER_HUB;
  const slash = rest.indexOf('/');
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      if (!HOST.test(first)) throw invalid(input, `registry host "${first}" is not a valid host[:port]`);
      registry = first.toLowerCase();
      rest = rest.slice(slash + 1);
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw invalid(input, `tag "${tag}" must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}`);
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  let repository = rest;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!isValidRepository(repository)) {
    throw invalid(
      input,
      `repository "${repository}" must be lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/'`,
    );
  }
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { registry, repository, tag, digest };
}

/** The host the registry API answers on (`docker.io` -> `registry-1.docker.io`). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB || registry === 'index.docker.io' ? DOCKER_HUB_API : registry;
}

/** The reference a manifest request uses: the digest when there is one, else the tag. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

export function formatReference(ref: ImageReference): string {
  let out = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) out += `:${ref.tag}`;
  if (ref.digest !== undefined) out += `@${ref.digest}`;
  return out;
}
