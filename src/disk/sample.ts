/**
 * A probe sample: the bounded scratch file qemu-img probes instead of the whole image. It is a Writable that
 * takes the stream's bytes in order and keeps the first `headBytes` (default 64 MiB) and, when the format
 * keeps metadata at the end, the last `tailBytes` (a stream-optimised VMDK's grain directory and footer, a fixed
 * VHD's footer) at their real offsets in a sparse file of the stream's length. Memory stays bounded (the
 * 64 KiB format head and a 1 MiB copy buffer): with the total length known the tail is written straight into
 * place, otherwise into a ring file of `tailBytes` that `seal()` copies into place. `dispose()` always removes
 * everything. With `keep: 'probed'` a raw or ISO stream (never shown to qemu-img) writes no file at all.
 *
 *   const sample = await ProbeSample.create({ totalSize });
 *   try {
 *     await pipeline(bytes, sample);
 *     const { path, info } = await sample.seal();
 *     assertSafeDisk(info, limits);
 *     await probeImage(path, { format: info.format });
 *   } finally {
 *     await sample.dispose();
 *   }
 */
import { close, ftruncate, open, openSync, read, write } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { detectFormat, FORMAT_HEAD_BYTES, VHD_FOOTER_BYTES, type DiskFormat, type DiskInfo } from './format.ts';

/** Head qemu-img gets by default: what upstream importers probe. */
export const PROBE_HEAD_BYTES = 64 * 1024 * 1024;

/** Tail kept for a VMDK (upstream builds its VMDK sample from the first 10 MiB and the last 50 MiB). */
export const VMDK_TAIL_BYTES = 50 * 1024 * 1024;

export interface ProbeSampleOptions {
  /** Where the private scratch folder is made. Default: the OS temp folder. */
  dir?: string;
  /** Bytes kept from the start; at least `FORMAT_HEAD_BYTES`. Default `PROBE_HEAD_BYTES`. */
  headBytes?: number;
  /**
   * Bytes kept from the end. `'auto'` (default) decides from the format head: `VMDK_TAIL_BYTES` for a
   * sparse VMDK, a VHD footer (512) for raw data (it may be a fixed VHD), nothing otherwise.
   */
  tailBytes?: number | 'auto';
  /**
   * The stream's total length when known (Content-Length, a tar header): the sample has that length from the
   * start, so qemu-img sees the right file size even when probed before the stream has ended.
   */
  totalSize?: number;
  /**
   * `'file'` (default): the scratch file is made at `create()` and samples the stream whatever its format.
   * `'probed'`: only a stream qemu-img will be asked about gets a file. Raw and ISO (their virtual size is their
   * length) are sampled in memory: the format head and the last 512 bytes. The file is made when the format head
   * shows another format, or by `seal()` when a raw stream ends in a fixed VHD's footer (the file then holds the
   * format head and the footer at their real offsets: all qemu-img reads of a fixed VHD). `seal()` gives no path
   * when no file was needed.
   */
  keep?: 'file' | 'probed';
}

export interface SealedSample {
  /** The scratch file to probe; undefined when `keep: 'probed'` needed none (raw, ISO). */
  path: string | undefined;
  /** Its length in bytes (the total size, or the bytes received when the total was not known). */
  size: number;
  /** Bytes received so far. */
  received: number;
  /** Whether the whole stream has been received. */
  complete: boolean;
  /** What the head (and, when complete, the tail) say the disk is. */
  info: DiskInfo;
}

const COPY_BUFFER = 1024 * 1024;

/** Formats whose virtual size is the stream's length: qemu-img is never asked about them. */
const UNPROBED: ReadonlySet<DiskFormat> = new Set<DiskFormat>(['raw', 'iso']);

export class ProbeSample extends Writable {
  /** A new sample; with `keep: 'file'` (the default) its scratch folder and file are made at once. */
  static async create(opts: ProbeSampleOptions = {}): Promise<ProbeSample> {
    const sample = new ProbeSample(opts);
    if ((opts.keep ?? 'file') === 'file') {
      try {
        await sample.#makeFile();
      } catch (e) {
        await sample.dispose();
        throw e;
      }
    }
    return sample;
  }

  /** Runs `fn` with a fresh sample and always disposes of it. */
  static async with<T>(opts: ProbeSampleOptions, fn: (sample: ProbeSample) => Promise<T>): Promise<T> {
    const sample = await ProbeSample.create(opts);
    try {
      return await fn(sample);
    } finally {
      await sample.dispose();
    }
  }

  readonly headBytes: number;
  readonly totalSize: number | undefined;
  readonly #parent: string;
  #dir: string | undefined;
  #fd: number | undefined;
  #ringFd: number | undefined;
  /** `keep: 'probed'`, raw or ISO: the last VHD_FOOTER_BYTES received (right-aligned), instead of a file. */
  #lastBytes: Buffer | undefined;
  #tailBytes: number | 'auto';
  /** The first FORMAT_HEAD_BYTES, for format detection. */
  readonly #formatHead: Buffer;
  #info: DiskInfo | undefined;
  #received = 0;
  /** Writes still in flight (a write callback has not run). */
  #idle: Promise<void> = Promise.resolve();
  #disposed = false;

  private constructor(opts: ProbeSampleOptions) {
    // Not auto-destroyed at 'finish': the file stays open until seal() and dispose().
    super({ autoDestroy: false, highWaterMark: 1024 * 1024 });
    this.#parent = opts.dir ?? tmpdir();
    this.headBytes = Math.max(FORMAT_HEAD_BYTES, opts.headBytes ?? PROBE_HEAD_BYTES);
    this.totalSize = opts.totalSize;
    this.#tailBytes = opts.tailBytes ?? 'auto';
    this.#formatHead = Buffer.alloc(FORMAT_HEAD_BYTES);
  }

  /** The scratch file, once there is one. */
  get path(): string | undefined {
    return this.#dir === undefined ? undefined : join(this.#dir, 'sample');
  }

  /** Bytes received so far. */
  get received(): number {
    return this.#received;
  }

  /** The tail length in use (0 until decided for `'auto'`). */
  get tailBytes(): number {
    return this.#tailBytes === 'auto' ? 0 : this.#tailBytes;
  }

  /** What the format head says, once it has arrived (or the stream ended shorter). */
  get info(): DiskInfo | undefined {
    return this.#info;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const pos = this.#received;
    const end = pos + chunk.length;
    this.#received = end;
    if (pos < FORMAT_HEAD_BYTES) {
      chunk.copy(this.#formatHead, pos, 0, Math.min(chunk.length, FORMAT_HEAD_BYTES - pos));
      if (end >= FORMAT_HEAD_BYTES) this.#detect();
    }
    if (this.#fd === undefined) {
      if (!this.#info || UNPROBED.has(this.#info.format)) {
        // In memory (keep: 'probed'): the format head, copied above, and the last bytes for a VHD footer.
        this.#keepLast(chunk);
        callback();
        return;
      }
      // The head shows a format qemu-img will read: from here on the sample is a file, holding what came before.
      this.#idle = this.#makeFile(pos).then(
        () => new Promise<void>((res) => this.#place(chunk, pos, end, (e) => (res(), callback(e)))),
        (e: Error) => callback(e),
      );
      return;
    }
    this.#place(chunk, pos, end, callback);
  }

  /** Writes the parts of a chunk that belong to the sample file (head, tail) at their offsets. */
  #place(chunk: Buffer, pos: number, end: number, callback: (error?: Error | null) => void): void {
    const fd = this.#fd!;
    // Everything before detection lies inside the head (headBytes >= FORMAT_HEAD_BYTES).
    const tail = this.tailBytes;
    const inHead = pos < this.headBytes;
    const inTail =
      tail > 0 && end > this.headBytes && (this.totalSize === undefined || end > this.totalSize - tail);
    if (!inHead && !inTail) {
      // The hot path for most of a large image: nothing to keep.
      callback();
      return;
    }
    const jobs: Array<[fd: number, from: number, to: number, at: number]> = [];
    if (inHead) jobs.push([fd, 0, Math.min(end, this.headBytes) - pos, pos]);
    if (inTail) {
      if (this.totalSize !== undefined) {
        const start = Math.max(pos, this.headBytes, this.totalSize - tail);
        if (start < end) jobs.push([fd, start - pos, end - pos, start]);
      } else {
        // Only the last `tail` bytes of the chunk can matter; place them in the ring at p % tail.
        const start = Math.max(pos, this.headBytes, end - tail);
        const ringAt = start % tail;
        const first = Math.min(end - start, tail - ringAt);
        const ring = this.#ringFd!;
        jobs.push([ring, start - pos, start - pos + first, ringAt]);
        if (start + first < end) jobs.push([ring, start - pos + first, end - pos, 0]);
      }
    }
    if (jobs.length === 0) {
      callback();
      return;
    }
    let release!: () => void;
    this.#idle = new Promise((r) => (release = r));
    const next = (i: number): void => {
      const job = jobs[i];
      if (!job) {
        release();
        callback();
        return;
      }
      const [fd, from, to, at] = job;
      writeAll(fd, chunk, from, to - from, at, (err) => {
        if (err) {
          release();
          callback(err);
        } else next(i + 1);
      });
    };
    next(0);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.#info) this.#detect();
    callback();
  }

  /**
   * Makes the file a consistent sample of what has arrived and says what it is. Call it after the stream has
   * ended (needed when a tail is kept), or earlier to probe a head-only sample (with `totalSize` the file
   * already has the stream's length). May be called again later.
   */
  async seal(): Promise<SealedSample> {
    if (this.#disposed) throw new Error('ProbeSample.seal after dispose');
    await this.#idle;
    const received = this.#received;
    const complete = this.writableFinished;
    if (!this.#info) this.#detect();
    const size = this.totalSize === undefined ? received : Math.max(this.totalSize, received);
    const tail = this.tailBytes;
    const fd = this.#fd;
    if (fd !== undefined && this.totalSize === undefined) {
      await fdTruncate(fd, size);
      if (tail > 0 && received > this.headBytes) await this.#copyRing(received, tail);
    }
    let info = this.#info!;
    if (complete && info.format === 'raw' && size >= VHD_FOOTER_BYTES) {
      let footer = this.#lastBytes;
      if (fd !== undefined) {
        footer = Buffer.alloc(VHD_FOOTER_BYTES);
        await readAll(fd, footer, size - VHD_FOOTER_BYTES);
      }
      info = detectFormat(this.#formatHead.subarray(0, Math.min(received, FORMAT_HEAD_BYTES)), { tail: footer });
      this.#info = info;
      if (fd === undefined && info.format === 'vhd') {
        // A fixed VHD kept in memory: qemu-img reads its footer at the end of a file of the stream's length.
        await this.#makeFile(Math.min(received, FORMAT_HEAD_BYTES), size);
        await writeAllAsync(this.#fd!, footer!, size - VHD_FOOTER_BYTES);
      }
    }
    if (this.#fd === undefined && !UNPROBED.has(info.format)) {
      // A stream shorter than the format head, in a format qemu-img reads: all of it is in the head.
      await this.#makeFile(Math.min(received, FORMAT_HEAD_BYTES), size);
    }
    return { path: this.path, size, received, complete, info };
  }

  /** Closes and removes the scratch files. Idempotent; safe in `finally`. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    if (!this.destroyed) this.destroy();
    await this.#idle;
    if (this.#fd !== undefined) await closeFd(this.#fd);
    if (this.#ringFd !== undefined) await closeFd(this.#ringFd);
    if (this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true });
  }

  /**
   * Makes the scratch folder and file, of the total length when known (or `length`), holding the first
   * `headSoFar` bytes of the format head: what arrived before the sample became a file.
   */
  async #makeFile(headSoFar = 0, length = this.totalSize): Promise<void> {
    this.#dir = await mkdtemp(join(this.#parent, 'dvcr-probe-'));
    this.#fd = await openFd(join(this.#dir, 'sample'), 'w+', 0o600);
    if (length !== undefined) await fdTruncate(this.#fd, length);
    if (headSoFar > 0) await writeAllAsync(this.#fd, this.#formatHead.subarray(0, headSoFar), 0);
    this.#openRing();
  }

  /** Keeps the last VHD_FOOTER_BYTES received, right-aligned in #lastBytes. */
  #keepLast(chunk: Buffer): void {
    const last = (this.#lastBytes ??= Buffer.alloc(VHD_FOOTER_BYTES));
    if (chunk.length >= last.length) {
      chunk.copy(last, 0, chunk.length - last.length);
    } else {
      last.copy(last, 0, chunk.length);
      chunk.copy(last, last.length - chunk.length);
    }
  }

  #detect(): void {
    const head = this.#formatHead.subarray(0, Math.min(this.#received, FORMAT_HEAD_BYTES));
    const info = detectFormat(head);
    this.#info = info;
    if (this.#tailBytes === 'auto') {
      this.#tailBytes = info.format === 'vmdk' ? VMDK_TAIL_BYTES : info.format === 'raw' ? VHD_FOOTER_BYTES : 0;
    }
    this.#openRing();
  }

  /** Opens the tail ring when a tail is kept, the total length is unknown and there is a scratch folder. */
  #openRing(): void {
    if (this.#tailBytes !== 'auto' && this.#tailBytes > 0 && this.totalSize === undefined && this.#ringFd === undefined && this.#dir !== undefined) {
      // Synchronous open is fine here: once per sample, at the end of the format head.
      this.#ringFd = openRingSync(join(this.#dir, 'tail.ring'));
    }
  }

  /** Copies bytes [max(head, size - tail), size) from the ring into place. */
  async #copyRing(size: number, tail: number): Promise<void> {
    const ring = this.#ringFd!;
    const buf = Buffer.allocUnsafe(Math.min(COPY_BUFFER, tail));
    let p = Math.max(this.headBytes, size - tail);
    while (p < size) {
      const ringAt = p % tail;
      const n = Math.min(buf.length, size - p, tail - ringAt);
      await readAll(ring, buf.subarray(0, n), ringAt);
      await writeAllAsync(this.#fd!, buf.subarray(0, n), p);
      p += n;
    }
  }
}

function writeAll(
  fd: number,
  buf: Buffer,
  offset: number,
  length: number,
  position: number,
  cb: (err: Error | null) => void,
): void {
  write(fd, buf, offset, length, position, (err, written) => {
    if (err) cb(err);
    else if (written < length) writeAll(fd, buf, offset + written, length - written, position + written, cb);
    else cb(null);
  });
}

function writeAllAsync(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((res, rej) => writeAll(fd, buf, 0, buf.length, position, (e) => (e ? rej(e) : res())));
}

function readAll(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((res, rej) => {
    const step = (offset: number): void => {
      read(fd, buf, offset, buf.length - offset, position + offset, (err, n) => {
        if (err) rej(err);
        else if (n === 0 || offset + n >= buf.length) {
          if (offset + n < buf.length) buf.fill(0, offset + n);
          res();
        } else step(offset + n);
      });
    };
    step(0);
  });
}

function openFd(path: string, flags: string, mode: number): Promise<number> {
  return new Promise((res, rej) => open(path, flags, mode, (e, fd) => (e ? rej(e) : res(fd))));
}

function fdTruncate(fd: number, len: number): Promise<void> {
  return new Promise((res, rej) => ftruncate(fd, len, (e) => (e ? rej(e) : res())));
}

function closeFd(fd: number): Promise<void> {
  return new Promise((res) => close(fd, () => res()));
}

function openRingSync(path: string): number {
  return openSync(path, 'w+', 0o600);
}
