/**
 * Blob push in the shape that works on every registry:
 *   HEAD (200: already there) -> optional cross-repo mount (201: done, 202: a normal session was opened)
 *   -> POST uploads/ -> one streamed PATCH of the whole body -> PUT <location>&digest=<d> with no body.
 * The digest is computed while the bytes stream, so the caller need not know it in advance. Always the
 * latest Location is used (it may be relative and carries state in its query).
 *
 * A small blob (`monolithicUpTo`) is read into memory first and sent as a monolithic upload instead:
 *   POST uploads/ -> PUT <location>&digest=<d> with the whole body.
 * One request less per blob (a many-small-images run spends most of its registry CPU on requests, not
 * bytes), and a failed PUT can be retried from memory.
 * (distribution 2.8) An interrupted PATCH kills the session: a failed push restarts the blob from byte 0, so
 * retries happen only when the caller can give the bytes again (`source` as a function).
 */
import type { Readable } from 'node:stream';
import { repositoryScope } from './auth.ts';
import { DigestCounter } from './digest.ts';
import { OciError } from './errors.ts';
import { withRetry, type RetryPolicy } from './retry.ts';
import type { Response, Transport } from './transport.ts';

export type BlobSource = Readable | AsyncIterable<Uint8Array> | (() => Readable | AsyncIterable<Uint8Array>);

export interface UploadOptions {
  /** The digest if known in advance: enables the HEAD check and mounts, and is verified. */
  digest?: string;
  /** Bytes, if known: sent as Content-Length. */
  size?: number;
  /** Try a cross-repository mount from this repository (same registry) first. Needs `digest`. */
  mountFrom?: string;
  signal?: AbortSignal;
  /** Called with the number of bytes sent so far, as they are read from the source. */
  onBytes?: (sent: number) => void;
  /**
   * A blob whose `size` is at most this many bytes is read into memory and sent in one PUT (POST, PUT) instead
   * of POST, PATCH, PUT. Default 0: always streamed.
   */
  monolithicUpTo?: number;
  /** With `digest`: HEAD first and skip the upload when the blob is there (default true). */
  checkExisting?: boolean;
  /**
   * For a monolithic upload without `mountFrom`: a repository of the same registry that may already hold the
   * blob, asked once its digest is known (the client's memory of recent pushes). Its mount attempt costs no
   * extra request (the POST that would open the session anyway); a refused one falls back to a plain POST.
   */
  mountCandidate?: (digest: string) => string | undefined;
}

export interface UploadResult {
  digest: string;
  size: number;
  /** How the blob got there. */
  via: 'existing' | 'mount' | 'upload';
}

/**
 * A request on an upload session failed because the session itself is gone (distribution answers 404
 * BLOB_UPLOAD_UNKNOWN / 400 BLOB_UPLOAD_INVALID after a restart with another secret, a purge, or an interrupted
 * PATCH): nothing is wrong with the blob, the push starts again from a new session.
 */
function sessionLost<T>(p: Promise<T>, base: string): Promise<T> {
  return p.catch((e: unknown) => {
    if (e instanceof OciError && (e.reason === 'BLOB_UPLOAD_UNKNOWN' || e.reason === 'BLOB_UPLOAD_INVALID')) {
      throw new OciError(`push blob to ${base}: the registry lost the upload session (${e.message})`, {
        errorClass: 'transient',
        reason: 'UPLOAD_SESSION_LOST',
        ...(e.status !== undefined ? { status: e.status } : {}),
        cause: e,
      });
    }
    throw e;
  });
}

function locationOf(res: { header(n: string): string | undefined; url: URL }, what: string): string {
  const loc = res.header('location');
  if (!loc) throw new OciError(`${what}: the registry answered without a Location`, { errorClass: 'transient', reason: 'NO_LOCATION' });
  return new URL(loc, res.url).href;
}

export async function blobExists(
  transport: Transport,
  registry: string,
  repository: string,
  digest: string,
  scopes: string[],
  signal?: AbortSignal,
): Promise<number | undefined> {
  const what = `HEAD blob ${registry}/${repository}@${digest}`;
  const res = await transport.expect(
    { registry, method: 'HEAD', path: `/v2/${repository}/blobs/${digest}`, scopes, followRedirects: true, signal, what },
    [200, 404],
  );
  res.body.resume();
  if (res.status === 404) return undefined;
  const len = res.header('content-length');
  return len === undefined ? 0 : Number(len);
}

export async function uploadBlob(
  transport: Transport,
  retry: RetryPolicy,
  registry: string,
  repository: string,
  source: BlobSource,
  opts: UploadOptions = {},
): Promise<UploadResult> {
  const push = [repositoryScope(repository, ['pull', 'push'])];
  const base = `${registry}/${repository}`;
  const signal = opts.signal;
  if (opts.digest && opts.checkExisting !== false) {
    const digest = opts.digest;
    const size = await withRetry(`HEAD blob ${base}@${digest}`, () =>
      blobExists(transport, registry, repository, digest, push, signal), retry, { signal });
    if (size !== undefined) return { digest, size, via: 'existing' };
  }
  if (opts.size !== undefined && opts.size <= (opts.monolithicUpTo ?? 0)) {
    return uploadMonolithic(transport, retry, registry, repository, await readAll(source, opts), opts);
  }
  const replayable = typeof source === 'function';
  // A one-shot source can be retried until its first byte is read (a failed POST leaves it untouched).
  let consumed = false;
  // An error of the source itself (e.g. a checksum mismatch from the stream feeding us) is the caller's to
  // classify, not a network failure of the upload: it is passed on unchanged and never retried here.
  let sourceError: { error: unknown } | undefined;
  try {
    return await withRetry(
    `push blob to ${base}`,
    async () => {
      let location: string | undefined;
      if (opts.mountFrom && opts.digest && opts.mountFrom !== repository) {
        const what = `mount blob ${opts.digest} from ${opts.mountFrom} into ${base}`;
        const q = new URLSearchParams({ mount: opts.digest, from: opts.mountFrom });
        const res = await transport.expect(
          {
            registry,
            method: 'POST',
            path: `/v2/${repository}/blobs/uploads/?${q}`,
            scopes: [...push, repositoryScope(opts.mountFrom, ['pull'])],
            signal,
            what,
          },
          [201, 202],
        );
        res.body.resume();
        if (res.status === 201) {
          const size = await blobExists(transport, registry, repository, opts.digest, push, signal);
          return { digest: opts.digest, size: size ?? opts.size ?? 0, via: 'mount' as const };
        }
        location = locationOf(res, what);
      }
      if (!location) {
        const what = `start blob upload to ${base}`;
        const res = await transport.expect(
          { registry, method: 'POST', path: `/v2/${repository}/blobs/uploads/`, scopes: push, signal, what },
          [202],
        );
        res.body.resume();
        location = locationOf(res, what);
      }
      const counter = new DigestCounter('sha256');
      const input = typeof source === 'function' ? source() : source;
      const onBytes = opts.onBytes;
      async function* hashed(): AsyncGenerator<Uint8Array> {
        consumed = true;
        const it = (input as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
        try {
          for (;;) {
            let next: IteratorResult<Uint8Array>;
            try {
              next = await it.next();
            } catch (e) {
              sourceError = { error: e };
              throw e;
            }
            if (next.done) return;
            counter.update(next.value);
            onBytes?.(counter.bytes);
            yield next.value;
          }
        } finally {
          await it.return?.();
        }
      }
      const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
      if (opts.size !== undefined) headers['content-length'] = String(opts.size);
      const patchWhat = `upload blob bytes to ${base}`;
      const patched = await sessionLost(transport.expect(
        { registry, method: 'PATCH', path: location, headers, body: hashed(), scopes: push, signal, what: patchWhat },
        [202, 204],
      ), base);
      patched.body.resume();
      location = locationOf(patched, patchWhat);
      const digest = counter.digest();
      if (opts.digest && digest !== opts.digest) {
        throw new OciError(`push blob to ${base}: the bytes hash to ${digest}, expected ${opts.digest}`, {
          errorClass: 'permanent',
          reason: 'DIGEST_MISMATCH',
        });
      }
      if (opts.size !== undefined && counter.bytes !== opts.size) {
        throw new OciError(`push blob to ${base}: sent ${counter.bytes} bytes, expected ${opts.size}`, {
          errorClass: 'permanent',
          reason: 'SIZE_MISMATCH',
        });
      }
      await completeUpload(transport, { registry, base, location, digest, scopes: push, signal });
      return { digest, size: counter.bytes, via: 'upload' as const };
    },
    retry,
    {
      signal,
      // After that, a retryable failure ends the push at once (still transient: the job can start over).
      onRetry: (e) => {
        if (sourceError) throw sourceError.error;
        if (consumed && !replayable) {
          throw new OciError(`push blob to ${base}: the upload was interrupted and the bytes cannot be read again: ${e.message}`, {
            errorClass: 'transient',
            reason: 'UPLOAD_INTERRUPTED',
            status: e.status,
            cause: e,
          });
        }
      },
    },
  );
  } catch (e) {
    if (sourceError) throw sourceError.error;
    throw e;
  }
}

/**
 * The PUT that ends an upload session: `?digest=` added to the session's latest Location, with the whole body
 * (monolithic) or none (after a PATCH). Checks the digest the registry says it stored.
 */
async function completeUpload(
  transport: Transport,
  u: { registry: string; base: string; location: string; digest: string; body?: Buffer; scopes: string[]; signal: AbortSignal | undefined },
): Promise<void> {
  const put = new URL(u.location);
  put.searchParams.set('digest', u.digest);
  const what = u.body ? `upload blob ${u.digest} to ${u.base}` : `complete blob upload ${u.digest} to ${u.base}`;
  const headers: Record<string, string> = u.body
    ? { 'content-type': 'application/octet-stream', 'content-length': String(u.body.length) }
    : { 'content-length': '0' };
  const done = await sessionLost(
    transport.expect(
      { registry: u.registry, method: 'PUT', path: put.href, headers, ...(u.body ? { body: u.body } : {}), scopes: u.scopes, signal: u.signal, what },
      [201, 204],
    ),
    u.base,
  );
  done.body.resume();
  const confirmed = done.header('docker-content-digest');
  if (confirmed && confirmed !== u.digest) {
    throw new OciError(`${what}: the registry stored ${confirmed}`, { errorClass: 'permanent', reason: 'DIGEST_MISMATCH' });
  }
}

/** The whole (small) source in memory, with its digest checked against what the caller said. */
async function readAll(source: BlobSource, opts: UploadOptions): Promise<{ body: Buffer; digest: string }> {
  const counter = new DigestCounter('sha256');
  const chunks: Buffer[] = [];
  // Errors of the source are the caller's to classify: they pass through unchanged.
  for await (const chunk of (typeof source === 'function' ? source() : source) as AsyncIterable<Uint8Array>) {
    if (opts.size !== undefined && counter.bytes + chunk.byteLength > opts.size) {
      // Never buffer more than was announced.
      throw new OciError(`push blob: the source gave more than the ${opts.size} bytes announced`, { errorClass: 'permanent', reason: 'SIZE_MISMATCH' });
    }
    counter.update(chunk);
    chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    opts.signal?.throwIfAborted();
    opts.onBytes?.(counter.bytes);
  }
  const body = Buffer.concat(chunks);
  const digest = counter.digest();
  if (opts.digest && digest !== opts.digest) {
    throw new OciError(`push blob: the bytes hash to ${digest}, expected ${opts.digest}`, { errorClass: 'permanent', reason: 'DIGEST_MISMATCH' });
  }
  if (opts.size !== undefined && body.length !== opts.size) {
    throw new OciError(`push blob: the source gave ${body.length} bytes, expected ${opts.size}`, { errorClass: 'permanent', reason: 'SIZE_MISMATCH' });
  }
  return { body, digest };
}

/** POST uploads/ (or a mount attempt), then one PUT with the whole body; retried from memory. */
async function uploadMonolithic(
  transport: Transport,
  retry: RetryPolicy,
  registry: string,
  repository: string,
  blob: { body: Buffer; digest: string },
  opts: UploadOptions,
): Promise<UploadResult> {
  const push = [repositoryScope(repository, ['pull', 'push'])];
  const base = `${registry}/${repository}`;
  const { signal } = opts;
  const { body, digest } = blob;
  let from = opts.mountFrom ?? opts.mountCandidate?.(digest);
  const guessed = opts.mountFrom === undefined;
  /** POST uploads/, as a mount attempt from `from` when there is one: 201 mounted, 202 a session to PUT into. */
  const start = async (): Promise<{ res: Response; what: string }> => {
    const mount = from && from !== repository ? new URLSearchParams({ mount: digest, from }) : undefined;
    const what = mount ? `mount blob ${digest} from ${from} into ${base}` : `start blob upload to ${base}`;
    try {
      const res = await transport.expect(
        {
          registry,
          method: 'POST',
          path: `/v2/${repository}/blobs/uploads/${mount ? `?${mount}` : ''}`,
          scopes: mount ? [...push, repositoryScope(from!, ['pull'])] : push,
          signal,
          what,
        },
        mount ? [201, 202] : [202],
      );
      return { res, what };
    } catch (e) {
      // Our own guess was refused (no pull right on that repository, say): upload as if we had not guessed.
      if (!guessed || !mount || !(e instanceof OciError) || e.errorClass !== 'permanent') throw e;
      from = undefined;
      return start();
    }
  };
  return withRetry(
    `push blob to ${base}`,
    async () => {
      const { res: started, what } = await start();
      started.body.resume();
      if (started.status === 201) return { digest, size: body.length, via: 'mount' as const };
      await completeUpload(transport, { registry, base, location: locationOf(started, what), digest, body, scopes: push, signal });
      return { digest, size: body.length, via: 'upload' as const };
    },
    retry,
    { signal },
  );
}
