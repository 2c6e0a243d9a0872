/**
 * `UploadService`: the lifecycle of `Upload` images on the API side.
 *
 * - **Waiting.** A new generation of an Upload image gets a token (src/images/upload-tokens.ts) and goes
 *   `Pending -> WaitForUserUpload` with `status.imageUploadURLs`:
 *   - `external`: `<PUBLIC_URL>/upload/<token>` (PUBLIC_URL is where users reach the API, e.g. through an
 *     ingress); without PUBLIC_URL, the API's own URL;
 *   - `inCluster`: `<the API's listen URL>/upload/<token>`, for clients next to the API (a listen address of
 *     0.0.0.0 or :: is shown as this host's name).
 * - **Timeout.** Every entry into WaitForUserUpload schedules a delayed job (queues/uploads.ts); when it fires
 *   and the image is still waiting, with no upload started since, the image fails with `WaitForUserUploadTimeout`
 *   (UPLOAD_TIMEOUT, default 10 minutes). Reconcile checks the same as a backstop.
 * - **Upload.** `begin(token)` finds the image of a token and takes its upload lock (one upload at a time per
 *   image, across API processes); `receive(...)` hands the body to the `UploadRunner` (the data plane in a worker
 *   thread, workers/upload-runner.ts) and settles the token: revoked once Ready or Failed; kept, with a fresh
 *   timeout, when the image waits again after an interrupted or failed upload.
 * - **Housekeeping** (`reconcile`, from ImageService's periodic pass): a Pending Upload image gets its URL; a
 *   waiting one without a live token gets a new one; a Provisioning one whose upload lock is gone (its API process
 *   died) waits again; an overdue wait times out.
 *
 * The token never appears in logs, errors or jobs: only in the status, which is the point.
 */
import { hostname } from 'node:os';
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import type { UploadTimeoutData } from '../../queues/uploads.ts';
import {
  onFailed,
  onWaitForUpload,
  refOf,
  StaleWriteError,
  UPLOAD_TIMEOUT_REASON,
  type Image,
  type ImageFailure,
  type ImageStore,
  type ImageUploadURLs,
  type UploadLock,
  type UploadTokens,
} from '../images/index.ts';
import type { ImportFailure } from '../pipeline/types.ts';
import type { UploadLifecycle } from './service.ts';

/**
 * What an upload's data plane reports back. It writes Provisioning, progress and Ready itself (the import
 * control plane shared with the worker); what a failure means for the image is decided here.
 */
export type UploadRunResult =
  /** The image is Ready. */
  | { outcome: 'ready'; image: Image }
  /** The upload failed; `interrupted` when the client went away (or the upload was aborted) before the end. */
  | { outcome: 'failed'; failure: ImportFailure; interrupted: boolean }
  /** The image was not waiting any more, or a spec change or delete took over during the upload. */
  | { outcome: 'superseded'; message: string };

/** How one upload ended, as written to the image. */
export type UploadOutcome =
  /** The image is Ready. */
  | { outcome: 'ready'; image: Image }
  /** The image Failed for good (checksum mismatch, not a disk image, ...). */
  | { outcome: 'failed'; failure: ImageFailure }
  /** The image waits for a new upload: the client went away (`interrupted`) or a transient failure. */
  | { outcome: 'waiting'; failure: ImageFailure; interrupted: boolean }
  /** The image was not waiting any more, or a spec change or delete took over during the upload. */
  | { outcome: 'superseded'; message: string };

export interface UploadRunRequest {
  /** The image as read after the lock was taken (WaitForUserUpload, or Provisioning left by a dead upload). */
  image: Image;
  /** The request; its body is the disk file. */
  body: IncomingMessage;
  /** Content-Length, when sent. */
  size: number | undefined;
  /** Aborts the upload (server shutdown, lost lock); the image then waits again. */
  signal: AbortSignal;
}

/** The data plane of uploads: moves the body into DVCR off the main thread and writes the status as it goes. */
export interface UploadRunner {
  run(req: UploadRunRequest): Promise<UploadRunResult>;
  close(): Promise<void>;
}

/** Schedules the timeout check of one wait (queues/uploads.ts `UploadTimeouts`). */
export interface UploadTimeoutScheduler {
  schedule(data: UploadTimeoutData, delayMs: number): Promise<void>;
}

export interface UploadServiceOptions {
  store: ImageStore;
  tokens: UploadTokens;
  timeouts: UploadTimeoutScheduler;
  /** The data plane; without one, uploads are answered 503 (status and URLs still work). */
  runner?: UploadRunner;
  /** UPLOAD_TIMEOUT in ms. */
  timeoutMs: number;
  /** PUBLIC_URL: the base of `imageUploadURLs.external`. */
  publicUrl?: string | undefined;
  /** A request body that sends nothing for this long is cut (IDLE_TIMEOUT). */
  idleTimeoutMs?: number;
  logger?: Logger | undefined;
  /** Upload lock TTL; renewed at a third of it. Default 30 s. */
  lockTtlMs?: number;
}

/** An error answer of the upload endpoint. */
export interface UploadRefusal {
  status: 404 | 409 | 503;
  code: string;
  message: string;
}

/** An upload that may proceed: the lock is held until `receive` ends (or `release` for one not received). */
export interface UploadSession {
  image: Image;
  lock: UploadLock;
}

const DEFAULT_LOCK_TTL_MS = 30_000;

/** `600000` -> `10m`, `2000` -> `2s`, `1500` -> `1500ms`. */
export function formatDuration(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000 && ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** `ClusterVirtualImage/name`, `VirtualImage/ns/name`: for logs and answers. */
export function imageLabel(image: Image): string {
  const { namespace, name } = image.metadata;
  return `${image.kind}/${namespace ? `${namespace}/` : ''}${name}`;
}

function stripSlash(url: string): string {
  return url.replace(/\/+$/, '');
}

/** The API's URL as seen from next to it: an unspecified listen address becomes this host's name. */
export function reachableUrl(url: string): string {
  const u = new URL(url);
  if (u.hostname === '0.0.0.0' || u.hostname === '[::]' || u.hostname === '::') u.hostname = hostname();
  return stripSlash(u.href);
}

export class UploadService implements UploadLifecycle {
  private readonly store: ImageStore;
  private readonly tokens: UploadTokens;
  private readonly timeouts: UploadTimeoutScheduler;
  private readonly runner: UploadRunner | undefined;
  private readonly logger: Logger | undefined;
  readonly timeoutMs: number;
  private readonly idleTimeoutMs: number | undefined;
  private readonly lockTtlMs: number;
  private readonly publicUrl: string | undefined;
  private apiUrl: string | undefined;
  /** Uploads running in this process, aborted on close. */
  private readonly active = new Set<AbortController>();

  constructor(opts: UploadServiceOptions) {
    this.store = opts.store;
    this.tokens = opts.tokens;
    this.timeouts = opts.timeouts;
    this.runner = opts.runner;
    this.logger = opts.logger;
    this.timeoutMs = opts.timeoutMs;
    this.idleTimeoutMs = opts.idleTimeoutMs;
    this.lockTtlMs = opts.lockTtlMs ?? DEFAULT_LOCK_TTL_MS;
    this.publicUrl = opts.publicUrl ? stripSlash(opts.publicUrl) : undefined;
  }

  /** The API's own URL, known once it listens; until then no upload URL can be issued. */
  setApiUrl(url: string): void {
    this.apiUrl = reachableUrl(url);
  }

  /** The two upload URLs of a token. */
  urlsFor(token: string): Required<ImageUploadURLs> {
    if (!this.apiUrl) throw new Error('UploadService: the API URL is not known yet (setApiUrl after listen)');
    return { external: `${this.publicUrl ?? this.apiUrl}/upload/${token}`, inCluster: `${this.apiUrl}/upload/${token}` };
  }

  // -- lifecycle (ImageService)

  async start(image: Image): Promise<Image | undefined> {
    return this.issue(image, (s) => s.phase === 'Pending');
  }

  async revoke(uid: string): Promise<void> {
    await this.tokens.revoke(uid);
  }

  /**
   * Issues a token and writes WaitForUserUpload with its URLs when `when(status)` still holds at write time. A
   * token whose write did not happen (another process was first, the image moved on) is discarded.
   */
  private async issue(image: Image, when: (s: Image['status']) => boolean): Promise<Image | undefined> {
    if (image.spec.dataSource.type !== 'Upload' || image.metadata.deletionTimestamp !== undefined || !this.apiUrl) return undefined;
    const ref = refOf(image);
    const { uid, generation } = image.metadata;
    const token = await this.tokens.issue({ ref, uid, generation });
    let written: Image | undefined;
    try {
      const urls = this.urlsFor(token);
      await this.beginWait(image);
      written = await this.store.updateStatus(ref, uid, generation, (s) => (when(s) ? onWaitForUpload(s, urls) : s));
      if (written.status.imageUploadURLs?.external === urls.external) {
        this.logger?.info({ image: imageLabel(image), generation, timeout: formatDuration(this.timeoutMs) }, 'waiting for the user upload');
        return written;
      }
    } catch (e) {
      if (!(e instanceof StaleWriteError)) {
        await this.tokens.discard(uid, token).catch(() => undefined);
        throw e;
      }
    }
    await this.tokens.discard(uid, token);
    return undefined;
  }

  /** Starts the clock of one wait: its time in Redis, and the delayed job that checks it. */
  private async beginWait(image: Image): Promise<void> {
    const { uid, generation, namespace, name } = image.metadata;
    await this.tokens.markWaiting(uid);
    await this.timeouts.schedule({ kind: image.kind, ...(namespace ? { namespace } : {}), name, uid, generation }, this.timeoutMs);
  }

  async reconcile(image: Image): Promise<string | undefined> {
    if (image.spec.dataSource.type !== 'Upload' || image.metadata.deletionTimestamp !== undefined || !this.apiUrl) return undefined;
    const { uid } = image.metadata;
    const phase = image.status.phase;
    if (phase === 'Pending') {
      return (await this.issue(image, (s) => s.phase === 'Pending')) ? 'waiting for upload' : undefined;
    }
    if (phase === 'WaitForUserUpload') {
      if (!(await this.tokens.hasToken(uid))) {
        // The URL shown has no live token (records lost): show a new one.
        const shown = image.status.imageUploadURLs?.external;
        const ok = await this.issue(image, (s) => s.phase === 'WaitForUserUpload' && s.imageUploadURLs?.external === shown);
        return ok ? 'new upload URL' : undefined;
      }
      const since = await this.tokens.waitingSince(uid);
      if (since === undefined) {
        await this.beginWait(image);
        return undefined;
      }
      if (Date.now() >= since + this.timeoutMs) return (await this.expire(image)) ? 'upload timed out' : undefined;
      return undefined;
    }
    if (phase === 'Provisioning' && !(await this.tokens.isLocked(uid))) {
      // The process running this upload went away (its lock expired): the image waits for a new upload.
      const urls = image.status.imageUploadURLs;
      if (!urls) return undefined;
      try {
        await this.beginWait(image);
        const written = await this.store.updateStatus(refOf(image), uid, image.metadata.generation, (s) =>
          s.phase === 'Provisioning' ? withFailure(onWaitForUpload(s, urls), s, interruptedFailure('the API process receiving it stopped')) : s,
        );
        return written.status.phase === 'WaitForUserUpload' ? 'interrupted upload: waiting again' : undefined;
      } catch (e) {
        if (e instanceof StaleWriteError) return undefined;
        throw e;
      }
    }
    return undefined;
  }

  /** The delayed job of one wait is due (queues/uploads.ts). */
  async onTimeout(data: UploadTimeoutData): Promise<void> {
    const image = await this.store.get(data.kind, data.namespace, data.name);
    if (!image || image.metadata.uid !== data.uid || image.metadata.generation !== data.generation) return;
    if (image.status.phase !== 'WaitForUserUpload' || image.metadata.deletionTimestamp !== undefined) return;
    const since = (await this.tokens.waitingSince(data.uid)) ?? 0;
    // A later wait began (an interrupted upload): its own job checks it. (A little slack for clock steps.)
    if (Date.now() + 100 < since + this.timeoutMs) return;
    await this.expire(image);
  }

  /** Fails a waiting image with WaitForUserUploadTimeout, unless an upload is just starting. */
  private async expire(image: Image): Promise<boolean> {
    const { uid, generation } = image.metadata;
    if (await this.tokens.isLocked(uid)) return false;
    const failure: ImageFailure = {
      reason: UPLOAD_TIMEOUT_REASON,
      message:
        `no upload started within ${formatDuration(this.timeoutMs)} of WaitForUserUpload (UPLOAD_TIMEOUT); ` +
        'delete the image and create it again for a new upload URL',
      retryable: false,
    };
    try {
      const written = await this.store.updateStatus(refOf(image), uid, generation, (s) =>
        s.phase === 'WaitForUserUpload' ? onFailed(s, failure) : s,
      );
      if (written.status.phase !== 'Failed') return false;
    } catch (e) {
      if (e instanceof StaleWriteError) return false;
      throw e;
    }
    await this.tokens.revoke(uid);
    this.logger?.info({ image: imageLabel(image), generation }, 'upload timed out');
    return true;
  }

  // -- the upload endpoint

  /** The image a token belongs to, when the token is live and the image is still that generation. */
  private async imageOf(token: string): Promise<Image | UploadRefusal> {
    const notFound: UploadRefusal = { status: 404, code: 'NotFound', message: 'no upload is expected at this URL (unknown or expired)' };
    const rec = await this.tokens.lookup(token);
    if (!rec) return notFound;
    const image = await this.store.get(rec.ref.kind, rec.ref.namespace, rec.ref.name);
    if (!image || image.metadata.uid !== rec.uid || image.metadata.generation !== rec.generation || image.metadata.deletionTimestamp) {
      return notFound;
    }
    return image;
  }

  /** `GET /upload/<token>`: the image when it waits for its upload, else why not. */
  async check(token: string): Promise<Image | UploadRefusal> {
    const image = await this.imageOf(token);
    if (!('metadata' in image)) return image;
    if (image.status.phase === 'WaitForUserUpload') return image;
    return notWaiting(image);
  }

  /** `PUT|POST /upload/<token>`: takes the image's upload lock, or says why the upload cannot start. */
  async begin(token: string): Promise<UploadSession | UploadRefusal> {
    const found = await this.imageOf(token);
    if (!('metadata' in found)) return found;
    if (!this.runner) return { status: 503, code: 'UploadsUnavailable', message: 'this API process does not receive uploads' };
    const lock = await this.tokens.lock(found.metadata.uid, this.lockTtlMs);
    if (!lock) {
      return { status: 503, code: 'UploadInProgress', message: 'another upload of this image is in progress; try again when it has ended' };
    }
    // Read again under the lock: the image may have moved on meanwhile.
    const image = await this.imageOf(token);
    const waiting = 'metadata' in image && (image.status.phase === 'WaitForUserUpload' || image.status.phase === 'Provisioning');
    if (!waiting) {
      await lock.release();
      return 'metadata' in image ? notWaiting(image) : image;
    }
    return { image, lock };
  }

  /** Receives the body of an upload that `begin` accepted; the lock is released at the end. */
  async receive(session: UploadSession, body: IncomingMessage, size: number | undefined): Promise<UploadOutcome> {
    const { image, lock } = session;
    const { uid } = image.metadata;
    const ac = new AbortController();
    this.active.add(ac);
    const renew = setInterval(() => {
      lock.renew().then(
        (held) => {
          if (!held) ac.abort(new Error('the upload lock was lost'));
        },
        () => undefined,
      );
    }, Math.max(1000, Math.floor(this.lockTtlMs / 3)));
    renew.unref();
    const socket = body.socket;
    const onIdle = (): void => {
      this.logger?.warn({ image: imageLabel(image) }, 'upload stalled: closing the connection');
      socket.destroy();
    };
    // IDLE_TIMEOUT applies while the body arrives; after its end, the client just waits for the answer.
    const onBodyEnd = (): void => void socket.setTimeout(0, onIdle);
    if (this.idleTimeoutMs) {
      socket.setTimeout(this.idleTimeoutMs, onIdle);
      body.once('end', onBodyEnd);
    }
    try {
      const run = await this.runner!.run({ image, body, size, signal: ac.signal });
      const result = await this.settle(image, run);
      if (result.outcome === 'ready' || result.outcome === 'failed') await this.tokens.revoke(uid);
      return result;
    } finally {
      clearInterval(renew);
      if (this.idleTimeoutMs) {
        body.off('end', onBodyEnd);
        socket.setTimeout(0, onIdle);
      }
      this.active.delete(ac);
      await lock.release().catch(() => undefined);
    }
  }

  /**
   * What a failed upload means for the image: a permanent failure (checksum mismatch, not a disk image, too
   * large) fails it; anything else (the client went away, DVCR unreachable) lets it wait for a new upload, with
   * `status.failure` saying what happened. The bytes are gone either way: nothing is retried here.
   */
  private async settle(image: Image, run: UploadRunResult): Promise<UploadOutcome> {
    if (run.outcome !== 'failed') return run;
    const { uid, generation } = image.metadata;
    const f = run.failure;
    const log = { image: imageLabel(image), generation, reason: f.reason };
    try {
      if (f.errorClass === 'permanent' && !run.interrupted) {
        const failure: ImageFailure = { reason: f.reason, message: f.message, retryable: false };
        await this.store.updateStatus(refOf(image), uid, generation, (s) => onFailed(s, failure));
        this.logger?.warn(log, `upload failed: ${f.message}`);
        return { outcome: 'failed', failure };
      }
      const failure = run.interrupted ? interruptedFailure(f.message) : { reason: f.reason, message: f.message, retryable: true };
      await this.beginWait(image);
      const written = await this.store.updateStatus(refOf(image), uid, generation, (s) => {
        const urls = s.imageUploadURLs;
        return urls && s.phase === 'Provisioning' ? withFailure(onWaitForUpload(s, urls), s, failure) : s;
      });
      if (written.status.phase !== 'WaitForUserUpload') return { outcome: 'superseded', message: `the image is ${written.status.phase}` };
      this.logger?.info(log, `upload ended early, waiting for a new one: ${failure.message}`);
      return { outcome: 'waiting', failure, interrupted: run.interrupted };
    } catch (e) {
      if (e instanceof StaleWriteError) return { outcome: 'superseded', message: 'a spec change or a delete took over' };
      throw e;
    }
  }

  /** Ends the uploads running in this process (their images wait again). */
  abortAll(): void {
    for (const ac of this.active) ac.abort(new Error('the API is shutting down'));
  }
}

function notWaiting(image: Image): UploadRefusal {
  const phase = image.status.phase;
  // Once the image is Ready, Failed or going away its URL is dead for good, whether or not the token has been
  // revoked yet (the status is written first): that is an expired URL, 404, not a conflict.
  if (phase !== 'Provisioning' && phase !== 'Pending') {
    return { status: 404, code: 'NotFound', message: `this upload URL has expired (the image is ${phase})` };
  }
  const message = phase === 'Provisioning' ? 'the image is being uploaded' : 'the image is not waiting for an upload yet';
  return { status: 409, code: 'NotWaitingForUpload', message };
}

/** The failure recorded when an upload ends early: the image waits for a new one. */
export function interruptedFailure(why: string): ImageFailure {
  return { reason: 'UploadInterrupted', message: `the upload was interrupted (${why}): upload the file again`, retryable: true };
}

/** `next` with `failure` set, when the transition applied (`next !== prev`). */
export function withFailure(next: Image['status'], prev: Image['status'], failure: ImageFailure): Image['status'] {
  return next === prev ? prev : { ...next, failure };
}
