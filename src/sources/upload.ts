/**
 * The `Upload` data source: the bytes a user sends to the upload URL (`curl -T disk.img <url>`), as they arrive.
 *
 * The HTTP request is read on the API's main thread; the bytes cross to the worker thread that stores them over a
 * MessagePort, with this protocol (`sendUploadBody` is the sending half, `openUploadSource` the receiving one):
 *
 * - main -> thread: `chunk` messages whose bytes are *transferred*, not copied (the request's body chunks own their
 *   memory; a chunk that shares a buffer is copied first), then one `end` or `error`;
 * - thread -> main: `ack` as chunks are consumed, and `cancel` when the thread stops reading. The main thread keeps
 *   at most {@link UPLOAD_WINDOW_BYTES} unacknowledged and pauses the socket beyond that: backpressure reaches the
 *   client, and no more than the window is ever buffered between the threads.
 *
 * (A transferred web ReadableStream would carry backpressure too, but structured-clones every chunk: twice the
 * allocations, and twice the garbage waiting for two isolates' collectors.)
 *
 * In the thread, every chunk is counted (progress against Content-Length when the client sent one) and hashed with
 * the algorithms of `spec.dataSource.upload.checksum` (over the bytes exactly as sent, before any decompression).
 * At the end of the body, before `end` is emitted, the length must match Content-Length and every checksum must
 * match: a mismatch is the stream's error, so the layer upload fails and nothing is committed.
 */
import type { IncomingMessage } from 'node:http';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { MessagePort } from 'node:worker_threads';
import { algorithmsFor, MultiHash, verifyChecksums, type Checksums } from '../disk/checksum.ts';

/** File name of an uploaded disk inside the DVCR layer (`disk/disk.img`); the format comes from the bytes. */
export const UPLOAD_FILE_NAME = 'disk.img';

/** Bytes the API thread may send ahead of what the storing thread has consumed. */
export const UPLOAD_WINDOW_BYTES = 1024 * 1024;

/** API thread -> storing thread. */
export type UploadBodyMessage =
  | { type: 'chunk'; data: Uint8Array }
  | { type: 'end' }
  /** The body broke off (`interrupted`: the client went away) or was stopped. */
  | { type: 'error'; message: string; interrupted: boolean };

/** Storing thread -> API thread. */
export type UploadBodyReply = { type: 'ack'; bytes: number } | { type: 'cancel' };

export type UploadErrorReason = 'UploadInterrupted' | 'UploadLengthMismatch';

/** An upload that did not deliver what it announced. Transient: a fresh upload may succeed. */
export class UploadError extends Error {
  override readonly name = 'UploadError';
  readonly permanent = false;
  constructor(
    message: string,
    readonly reason: UploadErrorReason,
  ) {
    super(message);
  }
}

// -- sending (API thread)

export interface UploadBodySender {
  /** Body bytes read from the request so far. */
  bytes(): number;
  /** Stops reading the request (leaves the connection open for an answer) and closes the port. */
  stop(): void;
}

/**
 * Sends the request body over `port` (see the module comment). The request is read only as fast as the other side
 * acknowledges; a connection that closes before the end of the body is reported as `interrupted`.
 */
export function sendUploadBody(req: IncomingMessage, port: MessagePort): UploadBodySender {
  let bytes = 0;
  let inflight = 0;
  let done = false;
  let paused = false;
  const post = (m: UploadBodyMessage, transfer?: ArrayBuffer[]): void => {
    if (!done) port.postMessage(m, transfer);
  };
  const onData = (chunk: Buffer): void => {
    bytes += chunk.length;
    // A Buffer covering its whole ArrayBuffer owns it (pooled Buffers are small slices of a larger slab): move it.
    // Anything else is copied first, so no memory shared with other Buffers is ever detached.
    const own = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength && chunk.buffer instanceof ArrayBuffer;
    const data = own ? new Uint8Array(chunk.buffer as ArrayBuffer) : new Uint8Array(chunk);
    inflight += data.byteLength;
    post({ type: 'chunk', data }, [data.buffer as ArrayBuffer]);
    if (inflight >= UPLOAD_WINDOW_BYTES && !paused) {
      paused = true;
      req.pause();
    }
  };
  const onReply = (m: UploadBodyReply): void => {
    if (m.type === 'cancel') {
      stop();
      return;
    }
    inflight -= m.bytes;
    if (paused && inflight <= UPLOAD_WINDOW_BYTES / 2 && !done) {
      paused = false;
      req.resume();
    }
  };
  const onEnd = (): void => {
    post({ type: 'end' });
    detach();
  };
  const onError = (e: Error): void => {
    post({ type: 'error', message: e.message, interrupted: true });
    detach();
  };
  const onClose = (): void => {
    if (done) return;
    if (!req.complete) post({ type: 'error', message: 'the connection closed before the end of the upload', interrupted: true });
    detach();
  };
  function detach(): void {
    done = true;
    req.off('data', onData);
    req.off('end', onEnd);
    req.off('error', onError);
    req.off('close', onClose);
  }
  function stop(): void {
    if (!done) {
      post({ type: 'error', message: 'the upload was stopped', interrupted: false });
      detach();
      req.pause();
    }
    port.off('message', onReply);
    port.close();
  }
  port.on('message', onReply);
  req.on('data', onData);
  req.on('end', onEnd);
  req.on('error', onError);
  req.on('close', onClose);
  return { bytes: () => bytes, stop };
}

// -- receiving (storing thread)

/** The body as a Readable, fed by the port. Buffers at most the sender's window. */
class PortBody extends Readable {
  readonly #port: MessagePort;
  #ended = false;

  constructor(port: MessagePort) {
    super({ highWaterMark: UPLOAD_WINDOW_BYTES });
    this.#port = port;
    port.on('message', (m: UploadBodyMessage) => {
      if (this.destroyed) return;
      if (m.type === 'chunk') {
        this.push(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength));
      } else if (m.type === 'end') {
        this.#ended = true;
        this.push(null);
      } else {
        this.#ended = true;
        this.destroy(new UploadError(m.interrupted ? `the upload was interrupted: ${m.message}` : m.message, 'UploadInterrupted'));
      }
    });
  }

  override _read(): void {
    // Flow control is the sender's window: it sends once chunks are acknowledged (see `ack`).
  }

  /** `bytes` were consumed: the sender may send that much more. */
  ack(bytes: number): void {
    if (!this.#ended) this.#port.postMessage({ type: 'ack', bytes } satisfies UploadBodyReply);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.#ended) this.#port.postMessage({ type: 'cancel' } satisfies UploadBodyReply);
    this.#port.close();
    callback(error);
  }
}

export interface UploadSourceOptions {
  /** The port the body arrives on (the thread's end of `sendUploadBody`). */
  body: MessagePort;
  /** Content-Length, when the client sent one. */
  size?: number | undefined;
  /** Hex digests the bytes must match; every one given is checked. */
  checksums?: Checksums | undefined;
  /** Called with the bytes received so far (every chunk; the caller throttles). */
  onBytes?: ((bytesDone: number, total: number | undefined) => void) | undefined;
}

export interface UploadSource {
  name: string;
  size: number | undefined;
  /** The bytes as sent; errors instead of ending on a short body or a checksum mismatch. */
  stream: Readable;
  /** Bytes received so far. */
  bytes(): number;
}

/** Counts, hashes and verifies the bytes of one upload as they pass, acknowledging each chunk to the sender. */
class UploadBytes extends Transform {
  readonly #hash: MultiHash;
  readonly #expected: Checksums;
  readonly #size: number | undefined;
  readonly #onBytes: UploadSourceOptions['onBytes'];
  readonly #body: PortBody;
  bytes = 0;

  constructor(body: PortBody, opts: UploadSourceOptions) {
    super({ highWaterMark: 256 * 1024 });
    this.#body = body;
    this.#expected = { ...opts.checksums };
    this.#hash = new MultiHash(algorithmsFor(this.#expected));
    this.#size = opts.size;
    this.#onBytes = opts.onBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.#size !== undefined && this.bytes > this.#size) {
      callback(new UploadError(`the upload sent more than its Content-Length of ${this.#size} bytes`, 'UploadLengthMismatch'));
      return;
    }
    if (this.#hash.algorithms.length > 0) this.#hash.update(chunk);
    this.#body.ack(chunk.length);
    this.#onBytes?.(this.bytes, this.#size);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.#size !== undefined && this.bytes !== this.#size) {
      callback(new UploadError(`the upload ended after ${this.bytes} of ${this.#size} bytes: upload the file again`, 'UploadInterrupted'));
      return;
    }
    try {
      verifyChecksums(this.#expected, this.#hash.digest());
    } catch (e) {
      callback(e as Error);
      return;
    }
    callback();
  }
}

/** The upload as a disk stream (see the module comment). Nothing is read until the stream is consumed. */
export function openUploadSource(opts: UploadSourceOptions): UploadSource {
  const body = new PortBody(opts.body);
  const bytes = new UploadBytes(body, opts);
  // Errors travel both ways: a broken body fails the disk stream, and a consumer giving up (destroy) cancels the
  // body, which tells the API thread to stop reading the request.
  body.on('error', (e) => bytes.destroy(e));
  bytes.on('close', () => {
    if (!body.destroyed) body.destroy();
  });
  body.pipe(bytes);
  return { name: UPLOAD_FILE_NAME, size: opts.size, stream: bytes, bytes: () => bytes.bytes };
}
