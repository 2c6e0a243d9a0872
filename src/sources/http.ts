/**
 * The HTTP data source: one GET streamed straight through (no temp file, no body held in memory), with
 *
 * - redirects followed by hand (at most `maxRedirects`; credentials in any URL are refused, none are sent);
 * - TLS with the image's `caBundle` (trusted in addition to the system CAs) or, for the source host only when
 *   the caller says it is listed insecure, without verification;
 * - `Content-Length` trusted but verified: the stream fails when the body is shorter or longer;
 * - resumption of a dropped connection with `Range: bytes=N-`, guarded by `If-Range`, when the server offered
 *   `Accept-Ranges: bytes` and a validator (strong ETag, else Last-Modified). A 206 continues the stream. A 200
 *   means the file changed or the server ignored the range: when neither ETag nor Last-Modified nor the length
 *   changed the bytes already read are skipped, otherwise the attempt fails as transient (and restarts);
 * - an idle timeout: no byte for `idleTimeoutMs` ends the download (transient). Time the consumer spends not
 *   reading does not count: the socket is paused then;
 * - an HTML page or a tiny body answered with 200 refused before a byte is handed on (`DiskError`
 *   `NotADiskImage`);
 * - checksums over the raw bytes: a mismatch is the stream's error, emitted instead of `end`.
 *
 * Errors are `OciError` (see http-errors.ts) except the disk verdicts (`DiskError`) and aborts (the signal's
 * reason).
 */
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootCertificates } from 'node:tls';
import { Agent, request, type Dispatcher } from 'undici';
import { algorithmsFor, HASH_ALGORITHMS, HASH_HEX_LENGTH, MultiHash, verifyChecksums, type Checksums } from '../disk/checksum.ts';
import { DiskError } from '../disk/errors.ts';
import { sniffCompression } from '../disk/sniff.ts';
import { guardedConnector, type AddressPolicy } from '../oci/address-policy.ts';
import { OciError } from '../oci/errors.ts';
import { isDrop, networkError, parseSourceUrl, redactUrl, statusError } from './http-errors.ts';
import {
  acceptsByteRanges,
  downloadFileName,
  headerValue,
  ifRangeValidator,
  looksLikeHtml,
  MIN_DISK_IMAGE_BYTES,
  parseContentRange,
  representationOf,
  sameRepresentation,
  type Representation,
} from './http-headers.ts';

export interface HttpSourceOptions {
  /** http or https; never with credentials (`user:pass@`). */
  url: string;
  /** PEM CA certificates to trust in addition to the system's, for every host of the download. */
  caBundle?: string;
  /**
   * Skip TLS verification for the host of `url` (only when that host is listed insecure). Hosts reached by a
   * redirect elsewhere are verified.
   */
  insecure?: boolean;
  /** Hex digests over the raw bytes as delivered; every one given must match. */
  checksums?: Checksums;
  /** No byte for this long ends the download (transient `IDLE_TIMEOUT`). Default 10 minutes. */
  idleTimeoutMs?: number;
  /** Default 10. */
  maxRedirects?: number;
  /**
   * Which addresses may be connected to (SSRF guard), checked after DNS resolution for the first host and every
   * redirect target; a refused one fails the download with a permanent `SOURCE_ADDRESS_REFUSED` before any
   * connection is made. Undefined: no check (the pipeline always passes one).
   */
  addressPolicy?: AddressPolicy;
  /** Resumes (Range requests after a dropped connection) per download. Default 10. */
  maxResumes?: number;
  signal?: AbortSignal;
  /** Called as bytes arrive: bytes of the file read so far, and its length when known. */
  onBytes?: (bytesRead: number, total: number | undefined) => void;
}

export interface HttpDownload {
  /** From `Content-Disposition` or the final URL's path, sanitised to one plain name, e.g. `ubuntu.img`. */
  readonly name: string;
  /** `Content-Length` of the answer; undefined when the server did not say. */
  readonly size: number | undefined;
  /** The final URL after redirects, redacted (no query): for logs. */
  readonly url: string;
  /**
   * The raw bytes. Fails (instead of ending) on a short or long body, a failed resume, the idle timeout, or a
   * checksum mismatch; destroying it closes the connection.
   */
  readonly stream: Readable;
  /** The digests computed (the algorithms given in `checksums`); only once the stream has ended. */
  checksums(): Checksums;
}

export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_MAX_REDIRECTS = 10;
export const DEFAULT_MAX_RESUMES = 10;

const USER_AGENT = 'dvcr-importer/0.1';
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
/** Delay before the second and later tries of one resume when the resume request itself fails. */
const RESUME_BACKOFF_MS = 250;
const RESUME_BACKOFF_CAP_MS = 5_000;

interface Settings {
  idleTimeoutMs: number;
  maxRedirects: number;
  maxResumes: number;
  signal: AbortSignal | undefined;
  onBytes: ((bytesRead: number, total: number | undefined) => void) | undefined;
}

/** Refuses checksums that cannot be right (wrong length, not hex) before a byte is downloaded. */
function validateChecksums(checksums: Checksums): void {
  for (const a of HASH_ALGORITHMS) {
    const v = checksums[a];
    if (v === undefined) continue;
    const hex = v.trim();
    if (hex.length !== HASH_HEX_LENGTH[a] || !/^[0-9a-fA-F]+$/.test(hex)) {
      throw new OciError(`the ${a} checksum must be ${HASH_HEX_LENGTH[a]} hex digits, got "${v.slice(0, 140)}"`, {
        errorClass: 'permanent',
        reason: 'INVALID_CHECKSUM',
      });
    }
  }
}

/** The dispatchers of one download: one verifying agent, and one without verification for an insecure host. */
class Dispatchers {
  readonly #ca: string[] | undefined;
  readonly #insecureHost: string | undefined;
  readonly #timeoutMs: number;
  readonly #policy: AddressPolicy | undefined;
  #verifying: Agent | undefined;
  #unverified: Agent | undefined;

  constructor(opts: { caBundle: string | undefined; insecureHost: string | undefined; timeoutMs: number; policy?: AddressPolicy | undefined }) {
    this.#policy = opts.policy;
    this.#ca = opts.caBundle ? [...rootCertificates, opts.caBundle] : undefined;
    this.#insecureHost = opts.insecureHost;
    this.#timeoutMs = opts.timeoutMs;
  }

  for(url: URL): Dispatcher {
    const insecure = url.protocol === 'https:' && url.host === this.#insecureHost;
    if (insecure) return (this.#unverified ??= this.#agent(false));
    return (this.#verifying ??= this.#agent(true));
  }

  #agent(verify: boolean): Agent {
    const tls = { rejectUnauthorized: verify, ...(verify && this.#ca ? { ca: this.#ca } : {}) };
    return new Agent({
      connect: this.#policy ? guardedConnector(this.#policy, tls) : tls,
      // Waiting for the head and for each body chunk are both idle time; undici does not count the time the
      // body is paused because its reader is slow.
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
      connections: 2,
    });
  }

  /** Closes every connection now. */
  destroy(): void {
    for (const a of [this.#verifying, this.#unverified]) a?.destroy().catch(() => undefined);
    this.#verifying = this.#unverified = undefined;
  }
}

type Body = Dispatcher.ResponseData['body'];

/**
 * Closes a response body we are done with. Undici fails a body destroyed before its end with an abort error;
 * nobody listens for it any more, so it is swallowed here rather than crashing the process.
 */
function discard(body: Body): void {
  body.on('error', () => undefined);
  body.destroy();
}

interface Answer {
  url: URL;
  res: Dispatcher.ResponseData;
}

/** GET `start`, following redirects by hand. Network failures are classified; HTTP statuses are not. */
async function get(start: URL, headers: Record<string, string>, dispatchers: Dispatchers, s: Settings): Promise<Answer> {
  let url = start;
  for (let hops = 0; ; hops++) {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: 'GET',
        headers: { 'user-agent': USER_AGENT, accept: '*/*', 'accept-encoding': 'identity', ...headers },
        dispatcher: dispatchers.for(url),
        signal: s.signal,
      });
    } catch (e) {
      if (s.signal?.aborted) throw e;
      throw networkError(url, e, s.idleTimeoutMs);
    }
    if (!REDIRECT_STATUS.has(res.statusCode)) return { url, res };
    const location = headerValue(res.headers, 'location');
    discard(res.body);
    if (location === undefined) {
      throw new OciError(`HTTP ${res.statusCode} without a Location header for ${redactUrl(url)}`, {
        errorClass: 'permanent',
        reason: 'BAD_REDIRECT',
        status: res.statusCode,
      });
    }
    if (hops >= s.maxRedirects) {
      throw new OciError(`GET ${redactUrl(start)}: more than ${s.maxRedirects} redirects`, {
        errorClass: 'permanent',
        reason: 'TOO_MANY_REDIRECTS',
      });
    }
    url = parseSourceUrl(location, url, `the redirect target (from ${redactUrl(url)})`);
  }
}

/**
 * The file's bytes as one sequence of chunks across connections: counts them, checks them against the known
 * length, and resumes after a drop. `next()` answers null at the end of the file.
 */
class RangeReader {
  /** Bytes of the file handed out so far. */
  offset = 0;
  /** The file's length, when known (Content-Length, or a resume's Content-Range). */
  total: number | undefined;
  resumes = 0;
  readonly first: Representation;
  readonly #validator: string | undefined;
  readonly #resumable: boolean;
  #url: URL;
  #body: Body;
  #chunks: AsyncIterator<Buffer>;
  /** Bytes to discard from the current body (a 200 answer to a resume, same file). */
  #skip = 0;
  #destroyed = false;

  constructor(
    answer: Answer,
    private readonly dispatchers: Dispatchers,
    private readonly s: Settings,
  ) {
    this.#url = answer.url;
    this.#body = answer.res.body;
    this.#chunks = this.#body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    this.first = representationOf(answer.res.headers);
    this.total = this.first.length;
    this.#validator = ifRangeValidator(this.first);
    this.#resumable = acceptsByteRanges(headerValue(answer.res.headers, 'accept-ranges')) && this.#validator !== undefined;
  }

  get url(): URL {
    return this.#url;
  }

  async next(): Promise<Buffer | null> {
    for (;;) {
      let r: IteratorResult<Buffer>;
      try {
        r = await this.#chunks.next();
      } catch (e) {
        await this.#resume(e);
        continue;
      }
      if (r.done) {
        // A body that ended cleanly but early (close-delimited, a shorter range than asked, or a repeated 200
        // that stopped before the part already read) is a drop too.
        if ((this.total !== undefined && this.offset < this.total) || this.#skip > 0) {
          await this.#resume(undefined);
          continue;
        }
        return null;
      }
      let chunk = r.value;
      if (this.#skip > 0) {
        if (chunk.length <= this.#skip) {
          this.#skip -= chunk.length;
          continue;
        }
        chunk = chunk.subarray(this.#skip);
        this.#skip = 0;
      }
      if (this.total !== undefined && this.offset + chunk.length > this.total) {
        discard(this.#body);
        throw new OciError(
          `GET ${redactUrl(this.#url)}: the body is longer than the ${this.total} bytes announced`,
          { errorClass: 'transient', reason: 'LONG_BODY' },
        );
      }
      this.offset += chunk.length;
      this.s.onBytes?.(this.offset, this.total);
      return chunk;
    }
  }

  #of(): string {
    return this.total === undefined ? `${this.offset} bytes` : `${this.offset} of ${this.total} bytes`;
  }

  /** After the current body failed with `cause` (or ended early): continue with a Range request, or throw. */
  async #resume(cause: unknown): Promise<void> {
    const s = this.s;
    if (s.signal?.aborted) throw s.signal.reason;
    if (this.#destroyed) throw cause ?? new Error('the download was closed');
    if (cause !== undefined && !isDrop(cause)) throw networkError(this.#url, cause, s.idleTimeoutMs);
    discard(this.#body);
    const where = redactUrl(this.#url);
    const how = cause === undefined ? 'ended early' : `broke (${(cause as { message?: string })?.message ?? String(cause)})`;
    if (!this.#resumable) {
      throw new OciError(
        `GET ${where}: the connection ${how} after ${this.#of()}, and the server does not support resuming ` +
          '(Accept-Ranges: bytes with an ETag or Last-Modified): the download starts again',
        { errorClass: 'transient', reason: cause === undefined ? 'SHORT_BODY' : 'CONNECTION_DROPPED', cause },
      );
    }
    let failedTries = 0;
    let last: unknown = cause;
    for (;;) {
      if (this.resumes >= s.maxResumes) {
        throw new OciError(`GET ${where}: the connection ${how} after ${this.#of()}; gave up after ${s.maxResumes} resumes`, {
          errorClass: 'transient',
          reason: 'RESUME_LIMIT',
          cause: last,
        });
      }
      this.resumes++;
      if (failedTries > 0) {
        await sleep(Math.min(RESUME_BACKOFF_MS * 2 ** (failedTries - 1), RESUME_BACKOFF_CAP_MS), undefined, { signal: s.signal });
      }
      let answer: Answer;
      try {
        answer = await get(this.#url, { range: `bytes=${this.offset}-`, 'if-range': this.#validator! }, this.dispatchers, s);
      } catch (e) {
        if (s.signal?.aborted) throw e;
        // A network failure of the resume request itself: try again while resumes remain.
        if (e instanceof OciError && e.errorClass === 'transient' && e.status === undefined && e.reason !== 'IDLE_TIMEOUT') {
          failedTries++;
          last = e;
          continue;
        }
        throw e;
      }
      this.#accept(answer);
      return;
    }
  }

  /** Takes the answer to a resume as the current body, or throws why it cannot continue the file. */
  #accept({ url, res }: Answer): void {
    const where = redactUrl(url);
    const fail = (message: string, reason: string): OciError => {
      discard(res.body);
      return new OciError(`GET ${where}: ${message}`, { errorClass: 'transient', reason, status: res.statusCode });
    };
    const now = representationOf(res.headers);
    if (res.statusCode === 206) {
      const range = parseContentRange(headerValue(res.headers, 'content-range'));
      if (range === undefined || range.start !== this.offset) {
        throw fail(`asked to resume at byte ${this.offset}, the server answered ${headerValue(res.headers, 'content-range') ?? 'no Content-Range'}`, 'RESUME_MISMATCH');
      }
      // If-Range should have caught a change; a differing length or strong ETag still proves one.
      const guardedByEtag = this.first.etag !== undefined && ifRangeValidator(this.first) === this.first.etag;
      const changed =
        (range.total !== undefined && this.total !== undefined && range.total !== this.total) ||
        (guardedByEtag && now.etag !== undefined && now.etag !== this.first.etag);
      if (changed) throw fail('the file changed on the server during the download: the download starts again', 'SOURCE_CHANGED');
      this.total ??= range.total;
      this.#skip = 0;
    } else if (res.statusCode === 200 || res.statusCode === 203) {
      if (!sameRepresentation(this.first, now)) {
        const detail =
          now.etag !== this.first.etag
            ? `ETag ${this.first.etag ?? 'none'} -> ${now.etag ?? 'none'}`
            : now.lastModified !== this.first.lastModified
              ? `Last-Modified ${this.first.lastModified ?? 'none'} -> ${now.lastModified ?? 'none'}`
              : `length ${this.first.length ?? 'unknown'} -> ${now.length ?? 'unknown'}`;
        throw fail(
          `the server answered the resume at byte ${this.offset} with the whole file, which changed (${detail}): the download starts again`,
          'SOURCE_CHANGED',
        );
      }
      // The same file, the range ignored: read it again from the start and skip what was handed out.
      this.#skip = this.offset;
    } else if (res.statusCode === 416) {
      throw fail(`the server refused to resume at byte ${this.offset} (HTTP 416): the file may have shrunk`, 'RESUME_REFUSED');
    } else {
      discard(res.body);
      const e = statusError(url, res.statusCode, res.headers);
      // The first request succeeded, so a refusal now (an expired pre-signed link, a file being replaced) is
      // not final: the attempt restarts from the original URL, and that answer is classified for good.
      if (e.errorClass !== 'permanent') throw e;
      throw new OciError(`${e.message} (while resuming at byte ${this.offset}): the download starts again`, {
        errorClass: 'transient',
        reason: e.reason,
        status: e.status,
      });
    }
    this.#url = url;
    this.#body = res.body;
    this.#chunks = res.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  destroy(): void {
    this.#destroyed = true;
    discard(this.#body);
  }
}

/** The download as a Readable: head chunks first, then the reader's; hashes every chunk; verifies at the end. */
class DownloadStream extends Readable {
  readonly #pending: Buffer[];
  #ended: boolean;
  readonly #reader: RangeReader;
  readonly #hash: MultiHash;
  readonly #expected: Checksums;
  readonly #cleanup: () => void;
  #pumping = false;
  digest: Checksums | undefined;

  constructor(init: { head: Buffer[]; ended: boolean; reader: RangeReader; expected: Checksums; cleanup: () => void }) {
    super({ highWaterMark: 256 * 1024 });
    this.#pending = init.head;
    this.#ended = init.ended;
    this.#reader = init.reader;
    this.#expected = init.expected;
    this.#hash = new MultiHash(algorithmsFor(init.expected));
    this.#cleanup = init.cleanup;
  }

  override _read(): void {
    if (!this.#pumping) void this.#pump();
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      for (;;) {
        const chunk = this.#pending.shift() ?? (this.#ended ? null : await this.#reader.next());
        if (this.destroyed) return;
        if (chunk === null) {
          this.#ended = true;
          this.#finish();
          this.push(null);
          return;
        }
        this.#hash.update(chunk);
        if (!this.push(chunk)) return;
      }
    } catch (e) {
      this.destroy(e as Error);
    } finally {
      this.#pumping = false;
    }
  }

  /** At the end of the bytes, before `end` is emitted: the length and every checksum must be right. */
  #finish(): void {
    const r = this.#reader;
    if (r.total !== undefined && r.offset !== r.total) {
      throw new OciError(`GET ${redactUrl(r.url)}: the body ended after ${r.offset} of ${r.total} bytes`, {
        errorClass: 'transient',
        reason: 'SHORT_BODY',
      });
    }
    const digest = this.#hash.digest();
    verifyChecksums(this.#expected, digest);
    this.digest = digest;
    this.#cleanup();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#cleanup();
    callback(error);
  }
}

/**
 * Opens the download: follows redirects, checks the answer and its first bytes (at least 512 unless the body is
 * shorter), and returns the stream. Throws what is known before streaming: HTTP errors, an HTML page or a tiny
 * body, bad URLs and checksums, TLS and network failures.
 */
export async function openHttpSource(opts: HttpSourceOptions): Promise<HttpDownload> {
  opts.signal?.throwIfAborted();
  const start = parseSourceUrl(opts.url);
  const expected: Checksums = { ...opts.checksums };
  validateChecksums(expected);
  const s: Settings = {
    idleTimeoutMs: opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
    maxRedirects: opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
    maxResumes: opts.maxResumes ?? DEFAULT_MAX_RESUMES,
    signal: opts.signal,
    onBytes: opts.onBytes,
  };
  const dispatchers = new Dispatchers({
    caBundle: opts.caBundle,
    insecureHost: opts.insecure ? start.host : undefined,
    timeoutMs: s.idleTimeoutMs,
    policy: opts.addressPolicy,
  });
  let reader: RangeReader | undefined;
  let stream: DownloadStream | undefined;
  const onAbort = () => stream?.destroy(opts.signal?.reason as Error);
  const cleanup = () => {
    opts.signal?.removeEventListener('abort', onAbort);
    reader?.destroy();
    dispatchers.destroy();
  };
  try {
    const answer = await get(start, {}, dispatchers, s);
    const { url, res } = answer;
    if (res.statusCode !== 200 && res.statusCode !== 203) {
      discard(res.body);
      throw statusError(url, res.statusCode, res.headers);
    }
    reader = new RangeReader(answer, dispatchers, s);
    // The head: enough bytes to tell an HTML page or a tiny body from a disk image before handing any on.
    const head: Buffer[] = [];
    let headBytes = 0;
    let ended = false;
    while (headBytes < MIN_DISK_IMAGE_BYTES) {
      const chunk = await reader.next();
      if (chunk === null) {
        ended = true;
        break;
      }
      head.push(chunk);
      headBytes += chunk.length;
    }
    const first = Buffer.concat(head, headBytes);
    const contentType = headerValue(res.headers, 'content-type');
    if (looksLikeHtml(first, contentType)) {
      throw new DiskError(
        `the server answered with an HTML page, not a disk image (Content-Type ${contentType ?? 'none'}) for ` +
          `${redactUrl(url)}: the URL probably leads to a web page (a download, login or error page); use the ` +
          'direct link to the image file',
        { reason: 'NotADiskImage', permanent: true },
      );
    }
    if (ended && headBytes < MIN_DISK_IMAGE_BYTES && sniffCompression(first) === null) {
      throw new DiskError(
        `the server answered with only ${headBytes} bytes for ${redactUrl(url)}: too small to be a disk image`,
        { reason: 'NotADiskImage', permanent: true },
      );
    }
    stream = new DownloadStream({ head, ended, reader, expected, cleanup });
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const download = stream;
    return {
      name: downloadFileName(headerValue(res.headers, 'content-disposition'), url),
      size: reader.first.length,
      url: redactUrl(url),
      stream: download,
      checksums() {
        if (download.digest === undefined) throw new Error('HttpDownload.checksums() before the stream has ended');
        return { ...download.digest };
      },
    };
  } catch (e) {
    cleanup();
    throw e;
  }
}
