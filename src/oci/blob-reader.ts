/**
 * Streamed blob GET with verification: size and digest are checked while the bytes flow, extra bytes fail,
 * redirects (e.g. to presigned storage URLs) are followed without credentials, and a dropped connection
 * resumes with `Range: bytes=N-` (asking the registry again, since a presigned URL may have expired). A server
 * that answers a Range request with 200 is read from the start and the bytes we already have are skipped.
 */
import { Readable } from 'node:stream';
import { DigestCounter, parseDigest } from './digest.ts';
import { OciError, errorFromNetwork } from './errors.ts';
import type { Descriptor } from './manifest.ts';
import { repositoryScope } from './auth.ts';
import { withRetry, type RetryPolicy } from './retry.ts';
import type { Transport } from './transport.ts';

export interface BlobReadOptions {
  signal?: AbortSignal;
  /** Resumes allowed without progress in between. Default 5. */
  maxResumes?: number;
  /** Called after a resume, for logs. */
  onResume?: (offset: number, cause: OciError) => void;
}

const RESET_RESUMES_AFTER = 1024 * 1024;

export function readBlob(
  transport: Transport,
  retry: RetryPolicy,
  registry: string,
  repository: string,
  desc: Pick<Descriptor, 'digest' | 'size'>,
  opts: BlobReadOptions = {},
): Readable {
  // Each chunk stays the Buffer it arrived as: a byte-mode Readable's async iterator would hand out everything
  // buffered as one fresh Buffer, copying most of the blob once more. 16 chunks of ~64 KiB: about 1 MiB ahead.
  return Readable.from(blobChunks(transport, retry, registry, repository, desc, opts), {
    objectMode: true,
    highWaterMark: 16,
  });
}

async function* blobChunks(
  transport: Transport,
  retry: RetryPolicy,
  registry: string,
  repository: string,
  desc: Pick<Descriptor, 'digest' | 'size'>,
  opts: BlobReadOptions,
): AsyncGenerator<Buffer> {
  const { algorithm } = parseDigest(desc.digest);
  const counter = new DigestCounter(algorithm);
  const what = `GET blob ${registry}/${repository}@${desc.digest}`;
  const maxResumes = opts.maxResumes ?? 5;
  let resumes = 0;
  let offsetAtLastResume = 0;
  for (;;) {
    const offset = counter.bytes;
    const res = await withRetry(
      what,
      () =>
        transport.expect(
          {
            registry,
            method: 'GET',
            path: `/v2/${repository}/blobs/${desc.digest}`,
            headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
            scopes: [repositoryScope(repository, ['pull'])],
            followRedirects: true,
            signal: opts.signal,
            what,
          },
          offset > 0 ? [200, 206] : [200],
        ),
      retry,
      { signal: opts.signal },
    );
    let skip = 0;
    if (offset > 0 && res.status === 206) {
      const cr = res.header('content-range');
      const m = cr ? /^bytes (\d+)-/.exec(cr) : null;
      if (!m || Number(m[1]) !== offset) {
        res.body.destroy();
        throw new OciError(`${what}: resume at byte ${offset} got Content-Range "${cr ?? ''}"`, {
          errorClass: 'transient',
          reason: 'BAD_RANGE',
        });
      }
    } else if (offset > 0) {
      skip = offset; // 200: the whole blob again; drop what we already passed on
    }
    const len = res.header('content-length');
    if (len !== undefined && offset === 0 && Number(len) !== desc.size) {
      res.body.destroy();
      throw new OciError(`${what}: size mismatch: the manifest says ${desc.size} bytes, the registry sends ${len}`, {
        errorClass: 'permanent',
        reason: 'SIZE_MISMATCH',
      });
    }
    try {
      for await (const raw of res.body) {
        let chunk = raw as Buffer;
        if (skip > 0) {
          if (chunk.length <= skip) {
            skip -= chunk.length;
            continue;
          }
          chunk = chunk.subarray(skip);
          skip = 0;
        }
        if (counter.bytes + chunk.length > desc.size) {
          throw new OciError(`${what}: the registry sent more than the ${desc.size} bytes the manifest declares`, {
            errorClass: 'permanent',
            reason: 'SIZE_MISMATCH',
          });
        }
        counter.update(chunk);
        yield chunk;
      }
      if (counter.bytes < desc.size) {
        throw new OciError(`${what}: connection ended at byte ${counter.bytes} of ${desc.size}`, {
          errorClass: 'transient',
          reason: 'SHORT_READ',
        });
      }
    } catch (raw) {
      res.body.destroy();
      if (opts.signal?.aborted) throw opts.signal.reason ?? raw;
      const e = raw instanceof OciError ? raw : errorFromNetwork(what, raw);
      if (e.errorClass === 'permanent') throw e;
      if (counter.bytes - offsetAtLastResume >= RESET_RESUMES_AFTER) resumes = 0;
      if (++resumes > maxResumes) throw e;
      offsetAtLastResume = counter.bytes;
      opts.onResume?.(counter.bytes, e);
      continue;
    }
    const got = counter.digest();
    if (got !== desc.digest) {
      throw new OciError(`${what}: digest mismatch: the content hashes to ${got}`, {
        errorClass: 'permanent',
        reason: 'DIGEST_MISMATCH',
      });
    }
    return;
  }
}
