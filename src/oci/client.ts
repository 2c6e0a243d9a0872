/**
 * `RegistryClient`: the OCI distribution client the importer pulls and pushes with.
 * Transport concerns (TLS, auth, redirects, per-host limits) live in Transport; retries live here, around
 * operations that can be repeated.
 */
import type { Readable } from 'node:stream';
import { repositoryScope } from './auth.ts';
import { readBlob, type BlobReadOptions } from './blob-reader.ts';
import { blobExists, uploadBlob, type BlobSource, type UploadOptions, type UploadResult } from './blob-upload.ts';
import { digestOf } from './digest.ts';
import { OciError } from './errors.ts';
import {
  formatPlatform,
  listPlatforms,
  MANIFEST_ACCEPT,
  MANIFEST_PUT_LIMIT,
  MANIFEST_READ_LIMIT,
  parseManifest,
  selectPlatform,
  type Descriptor,
  type ImageManifest,
  type Manifest,
  type Platform,
} from './manifest.ts';
import { formatReference, manifestReference, type ImageReference } from './reference.ts';
import { DEFAULT_RETRY, withRetry, type RetryPolicy } from './retry.ts';
import { readLimited, Transport, type TransportOptions } from './transport.ts';

/** How many recently pushed blobs a client remembers as mount sources. */
const RECENT_BLOBS = 1024;

export interface RegistryClientOptions extends TransportOptions {
  retry?: Partial<RetryPolicy>;
}

export interface ResolvedImage {
  ref: ImageReference;
  /** The image manifest chosen (after platform selection). */
  manifest: ImageManifest;
  /** Digest of the image manifest. */
  digest: string;
  /** Digests of the indexes walked through, outermost first. */
  indexes: string[];
}

export interface ManifestHead {
  digest: string | undefined;
  mediaType: string | undefined;
  size: number | undefined;
}

export class RegistryClient {
  readonly transport: Transport;
  readonly retry: RetryPolicy;

  constructor(opts: RegistryClientOptions = {}) {
    this.transport = new Transport(opts);
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
  }

  /** Checks that the registry answers (and learns its auth). */
  async ping(registry: string, signal?: AbortSignal): Promise<void> {
    await this.transport.base(registry, signal);
  }

  async getManifest(ref: ImageReference, signal?: AbortSignal): Promise<Manifest> {
    const reference = manifestReference(ref);
    const what = `GET manifest ${formatReference(ref)}`;
    return withRetry(
      what,
      async () => {
        const res = await this.transport.expect(
          {
            registry: ref.registry,
            method: 'GET',
            path: `/v2/${ref.repository}/manifests/${reference}`,
            headers: { accept: MANIFEST_ACCEPT },
            scopes: [repositoryScope(ref.repository, ['pull'])],
            signal,
            what,
          },
          [200],
        );
        const declared = res.header('content-length');
        if (declared !== undefined && Number(declared) > MANIFEST_READ_LIMIT) {
          res.body.destroy();
          throw new OciError(`${what}: manifest of ${declared} bytes is over the ${MANIFEST_READ_LIMIT}-byte limit`, {
            errorClass: 'permanent',
            reason: 'SIZE_LIMIT',
          });
        }
        const bytes = await readLimited(res.body, MANIFEST_READ_LIMIT, what);
        return parseManifest(bytes, {
          contentType: res.header('content-type'),
          expectedDigest: ref.digest,
          headerDigest: res.header('docker-content-digest'),
          what,
        });
      },
      this.retry,
      { signal },
    );
  }

  /** HEAD a manifest: undefined when it does not exist. */
  async headManifest(ref: ImageReference, signal?: AbortSignal): Promise<ManifestHead | undefined> {
    const what = `HEAD manifest ${formatReference(ref)}`;
    return withRetry(
      what,
      async () => {
        const res = await this.transport.expect(
          {
            registry: ref.registry,
            method: 'HEAD',
            path: `/v2/${ref.repository}/manifests/${manifestReference(ref)}`,
            headers: { accept: MANIFEST_ACCEPT },
            scopes: [repositoryScope(ref.repository, ['pull'])],
            signal,
            what,
          },
          [200, 404],
        );
        res.body.resume();
        if (res.status === 404) return undefined;
        const len = res.header('content-length');
        return {
          digest: res.header('docker-content-digest'),
          mediaType: res.header('content-type'),
          size: len === undefined ? undefined : Number(len),
        };
      },
      this.retry,
      { signal },
    );
  }

  /**
   * Resolves a reference to one image manifest, choosing `platform` (default linux/amd64) from indexes,
   * nested ones included.
   */
  async resolveImage(
    ref: ImageReference,
    opts: { platform?: Platform; signal?: AbortSignal } = {},
  ): Promise<ResolvedImage> {
    const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
    const indexes: string[] = [];
    let current: ImageReference = ref;
    for (let depth = 0; depth < 4; depth++) {
      const m = await this.getManifest(current, opts.signal);
      if (m.kind === 'manifest') return { ref, manifest: m.manifest, digest: m.digest, indexes };
      indexes.push(m.digest);
      const chosen = selectPlatform(m.index, platform);
      if (!chosen) {
        const have = listPlatforms(m.index);
        throw new OciError(
          `${formatReference(ref)} has no image for platform ${formatPlatform(platform)}; it has: ${have.join(', ') || 'none'}`,
          { errorClass: 'permanent', reason: 'PLATFORM_NOT_FOUND' },
        );
      }
      current = { registry: ref.registry, repository: ref.repository, tag: undefined, digest: chosen.digest };
    }
    throw new OciError(`${formatReference(ref)}: indexes nested too deep`, { errorClass: 'permanent', reason: 'MANIFEST_INVALID' });
  }

  /** Pushes a manifest (after its blobs). Returns its digest. */
  async putManifest(
    registry: string,
    repository: string,
    reference: string,
    bytes: Buffer,
    mediaType: string,
    signal?: AbortSignal,
  ): Promise<string> {
    const what = `PUT manifest ${registry}/${repository}:${reference}`;
    if (bytes.length > MANIFEST_PUT_LIMIT) {
      throw new OciError(`${what}: manifest of ${bytes.length} bytes is over the registry's ${MANIFEST_PUT_LIMIT}-byte limit`, {
        errorClass: 'permanent',
        reason: 'SIZE_LIMIT',
      });
    }
    const digest = digestOf(bytes);
    return withRetry(
      what,
      async () => {
        const res = await this.transport.expect(
          {
            registry,
            method: 'PUT',
            path: `/v2/${repository}/manifests/${reference}`,
            headers: { 'content-type': mediaType },
            body: bytes,
            scopes: [repositoryScope(repository, ['pull', 'push'])],
            signal,
            what,
          },
          [201, 200],
        );
        res.body.resume();
        const stored = res.header('docker-content-digest');
        if (stored && stored !== digest) {
          throw new OciError(`${what}: the registry stored ${stored}, we sent ${digest}`, {
            errorClass: 'permanent',
            reason: 'DIGEST_MISMATCH',
          });
        }
        return digest;
      },
      this.retry,
      { signal },
    );
  }

  /** Deletes a manifest by digest (and with it every tag pointing at it). False when it was not there. */
  async deleteManifest(registry: string, repository: string, digest: string, signal?: AbortSignal): Promise<boolean> {
    const what = `DELETE manifest ${registry}/${repository}@${digest}`;
    return withRetry(
      what,
      async () => {
        const res = await this.transport.expect(
          {
            registry,
            method: 'DELETE',
            path: `/v2/${repository}/manifests/${digest}`,
            scopes: [repositoryScope(repository, ['pull', 'push', 'delete'])],
            signal,
            what,
          },
          [202, 200, 404],
        );
        res.body.resume();
        return res.status !== 404;
      },
      this.retry,
      { signal },
    );
  }

  async listTags(registry: string, repository: string, signal?: AbortSignal): Promise<string[]> {
    const what = `list tags of ${registry}/${repository}`;
    return withRetry(
      what,
      async () => {
        const res = await this.transport.expect(
          {
            registry,
            method: 'GET',
            path: `/v2/${repository}/tags/list`,
            scopes: [repositoryScope(repository, ['pull'])],
            signal,
            what,
          },
          [200, 404],
        );
        if (res.status === 404) {
          res.body.resume();
          return [];
        }
        const body = JSON.parse((await readLimited(res.body, MANIFEST_READ_LIMIT, what)).toString('utf8')) as {
          tags?: string[] | null;
        };
        return body.tags ?? [];
      },
      this.retry,
      { signal },
    );
  }

  /**
   * Every repository of the registry (`GET /v2/_catalog`, following its `Link: <...>; rel="next"` pages).
   * Needs the `registry:catalog:*` scope on a token registry.
   */
  async listRepositories(registry: string, signal?: AbortSignal): Promise<string[]> {
    const what = `list repositories of ${registry}`;
    const out: string[] = [];
    let path: string | undefined = '/v2/_catalog?n=1000';
    for (let page = 0; path !== undefined; page++) {
      if (page >= 10_000) throw new OciError(`${what}: more than 10000 catalog pages`, { errorClass: 'permanent', reason: 'CATALOG_TOO_LONG' });
      const current: string = path;
      const { repositories, next } = await withRetry(
        what,
        async () => {
          const res = await this.transport.expect(
            { registry, method: 'GET', path: current, scopes: ['registry:catalog:*'], signal, what },
            [200],
          );
          const body = JSON.parse((await readLimited(res.body, MANIFEST_READ_LIMIT, what)).toString('utf8')) as {
            repositories?: string[] | null;
          };
          const link = /<([^>]+)>\s*;\s*rel="?next"?/i.exec(res.header('link') ?? '');
          return { repositories: body.repositories ?? [], next: link ? link[1] : undefined };
        },
        this.retry,
        { signal },
      );
      out.push(...repositories);
      path = next;
    }
    return out;
  }

  /** A verifying stream of a blob's bytes (size and digest checked; resumes with Range). */
  openBlob(
    registry: string,
    repository: string,
    desc: Pick<Descriptor, 'digest' | 'size'>,
    opts: BlobReadOptions = {},
  ): Readable {
    return readBlob(this.transport, this.retry, registry, repository, desc, opts);
  }

  /** A small blob (config) read whole, verified, up to `limit` bytes. */
  async getBlobBytes(
    registry: string,
    repository: string,
    desc: Pick<Descriptor, 'digest' | 'size'>,
    limit = MANIFEST_READ_LIMIT,
    signal?: AbortSignal,
  ): Promise<Buffer> {
    if (desc.size > limit) {
      throw new OciError(`blob ${desc.digest} of ${desc.size} bytes is over the ${limit}-byte limit`, {
        errorClass: 'permanent',
        reason: 'SIZE_LIMIT',
      });
    }
    return readLimited(this.openBlob(registry, repository, desc, { signal }), limit, `GET blob ${desc.digest}`);
  }

  async blobExists(registry: string, repository: string, digest: string, signal?: AbortSignal): Promise<number | undefined> {
    return withRetry(
      `HEAD blob ${registry}/${repository}@${digest}`,
      () => blobExists(this.transport, registry, repository, digest, [repositoryScope(repository, ['pull'])], signal),
      this.retry,
      { signal },
    );
  }

  /**
   * Pushes a blob (see blob-upload.ts). A small (monolithic) one is mounted instead when this client recently
   * pushed the same digest to another repository of the registry: importing one disk into several images moves
   * its bytes once.
   */
  async uploadBlob(registry: string, repository: string, source: BlobSource, opts: UploadOptions = {}): Promise<UploadResult> {
    const res = await uploadBlob(this.transport, this.retry, registry, repository, source, {
      mountCandidate: (digest) => this.recentBlobs.get(`${registry} ${digest}`),
      ...opts,
    });
    this.remember(registry, repository, res.digest);
    return res;
  }

  /** Where this client last pushed each digest (`registry digest` -> repository), newest last, bounded. */
  private readonly recentBlobs = new Map<string, string>();

  private remember(registry: string, repository: string, digest: string): void {
    const key = `${registry} ${digest}`;
    this.recentBlobs.delete(key);
    this.recentBlobs.set(key, repository);
    if (this.recentBlobs.size > RECENT_BLOBS) this.recentBlobs.delete(this.recentBlobs.keys().next().value!);
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}
