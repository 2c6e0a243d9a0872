/**
 * The one disk file of a containerDisk image (`FROM scratch` + `ADD disk.qcow2 /disk/`), streamed once from
 * the image's layers: nothing is written to disk and nothing is buffered beyond stream high-water marks.
 *
 * Layers are read top-down (last manifest layer first, one at a time, each opened only when its turn comes),
 * so whether a `disk/<name>` is hidden by whiteouts or shadowed by an upper layer is known the moment it is
 * met: the first visible regular file is handed to `consume` right away, while the rest of its layer and all
 * lower layers are still read (headers only, bodies skipped) to prove there is no second visible disk file.
 * Our rules are stricter than upstream's "first file wins": exactly one regular file directly under `disk/`
 * must remain after whiteouts; none or several is a permanent `ContainerDiskError` that names what was found.
 *
 * Each layer's compression is sniffed from its first bytes (gzip, zstd, xz, bzip2, else a tar archive), never
 * from the media type. A layer whose bytes do not decode is only called corrupt after its remaining raw bytes
 * have been read to their end: the layer source verifies its digest there, so a transfer error surfaces as
 * itself (and may be retried) instead of being mistaken for a broken image.
 */
import { PassThrough, Readable, type Writable } from 'node:stream';
import tar from 'tar-stream';
import { isTar, sniffCompression, type Compression } from '../disk/sniff.ts';
import { unwrap } from '../disk/unwrap.ts';
import {
  LayerMask,
  Overlay,
  describeKind,
  diskFileName,
  isRegular,
  normaliseEntryPath,
  pathRole,
  type EntryKind,
} from './container-disk-overlay.ts';

/** One layer of the source image, as listed in its manifest. */
export interface LayerSource {
  /** For messages. */
  readonly digest: string;
  /** Bytes as stored (compressed), from the manifest. */
  readonly size: number;
  /**
   * The stored (compressed) bytes, verified against `digest` as they are read: a mismatch or a transfer
   * failure must surface as the stream's error. Called at most once, only when the layer's turn comes; the
   * signal aborts when the extraction stops early.
   */
  open(signal: AbortSignal): Readable;
}

/** The disk file found, without its bytes. */
export interface DiskFile {
  /** Normalised path, e.g. `disk/ubuntu.qcow2`. */
  readonly path: string;
  /** The file name, e.g. `ubuntu.qcow2`. */
  readonly name: string;
  /** Byte length from the tar header. */
  readonly size: number;
  /** Permission bits from the tar header. */
  readonly mode: number;
}

export interface DiskEntry extends DiskFile {
  /**
   * The file's bytes, with backpressure: the extraction moves on only as this stream is read. Read it to
   * the end (or throw); if `consume` resolves without doing so, the rest is skipped for it.
   */
  readonly stream: Readable;
}

/** Decodes one compressed layer into tar bytes. The default uses `unwrap` (zlib for gzip, tools for the rest). */
export type Decompress = (
  compressed: Readable,
  compression: Compression,
  signal: AbortSignal,
) => Readable | Promise<Readable>;

export interface ExtractContainerDiskOptions {
  /** Aborting stops every stream promptly; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  decompress?: Decompress;
  /** Compressed layer bytes read so far, summed over all layers; called as the bytes arrive. */
  onLayerBytes?: (compressedBytesRead: number) => void;
}

export interface ContainerDisk<T> {
  /** What `consume` resolved with. */
  readonly result: T;
  readonly entry: DiskFile;
  /** Index in the manifest's layer list (0 = base layer). */
  readonly layerIndex: number;
}

/**
 * Finds the one visible disk file under `disk/` in `layers` (base first, as in the manifest) and calls
 * `consume` with its bytes as soon as it is met; resolves once `consume` has resolved and every layer has
 * been read to its end without finding a second one.
 *
 * Rejects with a `ContainerDiskError` for no disk file, several, or a corrupt layer; with the layer stream's
 * own error when reading a layer fails; with `consume`'s error if it throws; with the signal's reason on
 * abort. On any failure all streams are destroyed, the `signal` given to `consume` aborts, and the promise
 * settles only after `consume` has (so no work of this call outlives it).
 */
export async function extractContainerDisk<T>(
  layers: readonly LayerSource[],
  consume: (entry: DiskEntry, signal: AbortSignal) => Promise<T>,
  opts: ExtractContainerDiskOptions = {},
): Promise<ContainerDisk<T>> {
  const { signal } = opts;
  signal?.throwIfAborted();
  const run = new Run(opts.onLayerBytes);
  const onAbort = (): void => run.fail(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const decompress = opts.decompress ?? unwrapLayer;
  const overlay = new Overlay();
  const findings = new Findings();
  let chosen: Chosen<T> | null = null;

  try {
    for (let index = layers.length - 1; index >= 0 && run.failure === null; index--) {
      const layer = layers[index]!;
      const mask = new LayerMask(index);
      const visit = (header: TarHeader, body: TarEntry): void => {
        const path = normaliseEntryPath(header.name);
        const kind = (header.type ?? null) as EntryKind;
        if (path === null) {
          findings.unsafe(header.name);
        } else if (path !== '') {
          const role = pathRole(path);
          if (role.role === 'whiteout') mask.addWhiteout(path, role.target);
          else if (role.role === 'opaque') mask.addOpaque(path, role.dir);
          else if (role.role === 'entry') {
            if (chosen !== null && chosen.layer === index && chosen.file.path === path) {
              throw new ContainerDiskError(
                `${path} appears twice in layer ${index + 1}; a containerDisk image must hold exactly one disk file`,
                'MultipleDiskFiles',
              );
            }
            mask.addEntry(path, kind);
            findings.saw(path, kind);
            if (diskFileName(path) !== null) {
              const hidden = overlay.hiddenBy(path);
              if (isRegular(kind)) {
                if (hidden !== null) {
                  if (!hidden.byRegularFile) findings.note(`${path} ${hidden.text} (it was in layer ${index + 1})`);
                } else if (chosen !== null) {
                  throw multipleDiskFiles(chosen.file.path, chosen.layer, path, index);
                } else {
                  chosen = startConsume(run, consume, header, body, path, index);
                  return;
                }
              } else if (hidden === null) {
                findings.notRegular(path, kind, header.linkname ?? null);
              }
            }
          }
        }
        body.resume();
      };
      try {
        await readLayer(run, layer, index, layers.length, decompress, visit);
      } catch (e) {
        run.fail(e);
      }
      overlay.push(mask);
    }
    // TS cannot see the assignment inside `visit`.
    const started = chosen as Chosen<T> | null;
    if (started !== null) await started.settled;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }

  if (run.failure !== null) throw run.failure.error;
  const done = chosen as Chosen<T> | null;
  if (done === null) throw findings.noDiskFile(layers.length);
  if (done.outcome === null || 'error' in done.outcome) {
    throw done.outcome?.error ?? new Error('consume did not settle');
  }
  return { result: done.outcome.value, entry: done.file, layerIndex: done.layer };
}

export type ContainerDiskErrorReason =
  /** No regular file directly under `disk/` is visible after whiteouts. */
  | 'NoDiskFile'
  /** More than one is visible (or one path appears twice in a layer). */
  | 'MultipleDiskFiles'
  /** A layer's bytes (verified against its digest) are not a tar archive or do not decompress. */
  | 'CorruptLayer';

/** A problem with the image itself: the same image fails the same way, so it is never retried. */
export class ContainerDiskError extends Error {
  override readonly name = 'ContainerDiskError';
  readonly permanent = true;

  constructor(
    message: string,
    readonly reason: ContainerDiskErrorReason,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** A plain object that survives structured clone (worker threads) and JSON. */
  toJSON(): SerializedContainerDiskError {
    return { name: 'ContainerDiskError', message: this.message, reason: this.reason, permanent: true };
  }

  static fromJSON(s: SerializedContainerDiskError): ContainerDiskError {
    return new ContainerDiskError(s.message, s.reason);
  }
}

export interface SerializedContainerDiskError {
  name: 'ContainerDiskError';
  message: string;
  reason: ContainerDiskErrorReason;
  permanent: true;
}

export function isContainerDiskError(e: unknown): e is ContainerDiskError {
  return e instanceof ContainerDiskError;
}

// ---------------------------------------------------------------------------------------------------------

/** Stream buffering per stage: big enough not to pause and resume per 64 KiB chunk. */
const HIGH_WATER_MARK = 1 << 20;
const TAR_BLOCK = 512;

const unwrapLayer: Decompress = async (compressed, _compression, signal) =>
  // One level only: a layer decompresses to a tar, which must not be sniffed as compressed again.
  (await unwrap(compressed, { signal, maxLayers: 1 })).stream;

interface Destroyable {
  destroy(error?: Error): unknown;
}

/** Failure and cleanup shared by everything one extraction runs: the first error wins and stops the rest. */
class Run {
  readonly #controller = new AbortController();
  readonly signal = this.#controller.signal;
  failure: { error: unknown } | null = null;
  /** Streams to destroy on failure; `true` for the consumer's stream, which gets the error itself. */
  readonly #streams = new Map<Destroyable, boolean>();
  #bytes = 0;

  constructor(private readonly onLayerBytes: ((compressedBytesRead: number) => void) | undefined) {}

  addBytes(n: number): void {
    this.#bytes += n;
    this.onLayerBytes?.(this.#bytes);
  }

  fail(error: unknown): void {
    if (this.failure !== null) return;
    this.failure = { error };
    this.#controller.abort(error);
    const streams = [...this.#streams];
    this.#streams.clear();
    for (const [stream, withError] of streams) stream.destroy(withError ? asError(error) : undefined);
  }

  track(stream: Destroyable, withError = false): void {
    if (this.failure !== null) stream.destroy(withError ? asError(this.failure.error) : undefined);
    else this.#streams.set(stream, withError);
  }

  untrack(stream: Destroyable): void {
    this.#streams.delete(stream);
  }
}

/** The disk file handed to `consume`, and how that ended. */
interface Chosen<T> {
  readonly file: DiskFile;
  readonly layer: number;
  readonly settled: Promise<void>;
  outcome: { value: T } | { error: unknown } | null;
}

function startConsume<T>(
  run: Run,
  consume: (entry: DiskEntry, signal: AbortSignal) => Promise<T>,
  header: TarHeader,
  body: TarEntry,
  path: string,
  layer: number,
): Chosen<T> {
  const file: DiskFile = {
    path,
    name: path.slice(path.lastIndexOf('/') + 1),
    size: header.size ?? 0,
    mode: (header.mode ?? 0o644) & 0o7777,
  };
  const source = new EntryStream(body, run);
  const chosen: Chosen<T> = {
    file,
    layer,
    outcome: null,
    settled: Promise.resolve()
      .then(() => consume({ ...file, stream: source.stream }, run.signal))
      .then(
        (value) => {
          chosen.outcome = { value };
          // Whatever consume left unread is skipped, so the tar can move on.
          if (!source.stream.readableEnded && !source.stream.destroyed) source.stream.resume();
        },
        (error: unknown) => {
          chosen.outcome = { error };
          // When the bytes stopped because the layer failed, consume's error is a consequence: the layer's
          // own (classified) error is what the extraction reports.
          if (!source.sourceFailed) run.fail(error);
        },
      ),
  };
  return chosen;
}

/** A tar-stream header as it is at run time (its type is null for unknown entry types). */
interface TarHeader {
  readonly name: string;
  readonly size?: number;
  readonly mode?: number;
  readonly type?: string | null;
  readonly linkname?: string | null;
}

/** The parts of a tar-stream (streamx) entry body used here. */
interface TarEntry {
  readonly header: TarHeader;
  on(event: 'data', fn: (chunk: Buffer) => void): unknown;
  on(event: 'end' | 'close', fn: () => void): unknown;
  on(event: 'error', fn: (e: Error) => void): unknown;
  off(event: 'data', fn: (chunk: Buffer) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** The parts of a tar-stream (streamx) extractor used here. */
interface TarExtract extends AsyncIterable<TarEntry> {
  readonly destroyed: boolean;
  readonly destroying: boolean;
  write(chunk: Buffer): boolean;
  end(): unknown;
  destroy(error?: Error): unknown;
  once(event: 'drain' | 'close', fn: () => void): unknown;
  off(event: 'drain' | 'close', fn: () => void): unknown;
}

/** A tar entry body as a Node Readable with backpressure; destroying it only skips the rest of the body. */
class EntryStream {
  readonly stream: Readable;
  /** The body stopped before its end (the layer or the run failed). */
  sourceFailed = false;

  constructor(body: TarEntry, run: Run) {
    let ended = false;
    let bodyError: Error | null = null;
    const onData = (chunk: Buffer): void => {
      if (!this.stream.push(chunk)) body.pause();
    };
    this.stream = new Readable({
      highWaterMark: HIGH_WATER_MARK,
      read: () => void body.resume(),
      destroy: (err, cb) => {
        run.untrack(this.stream);
        if (!ended) {
          body.off('data', onData);
          body.resume();
        }
        cb(err);
      },
    });
    // A consumer that has not attached its listeners yet must not crash the process.
    this.stream.on('error', noop);
    body.on('data', onData);
    body.on('end', () => {
      ended = true;
      this.stream.push(null);
    });
    body.on('error', (e) => (bodyError = e));
    body.on('close', () => {
      if (ended) return;
      this.sourceFailed = true;
      this.stream.destroy(asError(run.failure?.error ?? bodyError ?? prematureClose()));
    });
    run.track(this.stream, true);
  }
}

/**
 * Reads one layer to its end: sniff, decompress, parse the tar, hand every entry to `visit` (which resumes
 * the bodies it does not keep). Throws the layer stream's error, a `ContainerDiskError('CorruptLayer')`, a
 * transient decoder error, or whatever `visit` throws.
 */
async function readLayer(
  run: Run,
  layer: LayerSource,
  index: number,
  count: number,
  decompress: Decompress,
  visit: (header: TarHeader, body: TarEntry) => void,
): Promise<void> {
  const where = `layer ${index + 1} of ${count} (${layer.digest})`;
  const owned: Destroyable[] = [];
  const own = <S extends Destroyable>(s: S): S => {
    owned.push(s);
    run.track(s);
    return s;
  };
  const raw = own(layer.open(run.signal));
  try {
    const chunks = raw[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const { head, ended } = await readHead(run, chunks);
    const kind = layerKind(head, ended);
    if (kind === 'empty') return;

    const input = own(new PassThrough({ highWaterMark: HIGH_WATER_MARK }));
    input.on('error', noop);
    const pump = new RawPump(run, chunks, head, ended, input);
    if (kind === 'unknown') {
      input.destroy();
      await pump.done;
      throw new ContainerDiskError(
        `${where} is neither a tar archive nor gzip, zstd or xz compressed (it starts with ${showHead(head)})`,
        'CorruptLayer',
      );
    }

    let failure: { error: unknown; stage: 'decompress' | 'tar' } | null = null;
    const noteFailure = (error: unknown, stage: 'decompress' | 'tar'): void => {
      failure ??= { error, stage };
    };
    let tarBytes: Readable | null = input;
    if (kind !== 'tar') {
      try {
        tarBytes = own(await decompress(input, kind, run.signal));
        tarBytes.on('error', noop);
      } catch (e) {
        noteFailure(e, 'decompress');
        tarBytes = null;
      }
    }
    if (tarBytes !== null) {
      const extract = own(
        tar.extract({ allowUnknownFormat: true, highWaterMark: HIGH_WATER_MARK } as object) as unknown as TarExtract,
      );
      const pumped = pumpTar(tarBytes, extract).then((e) => {
        if (e !== null) noteFailure(e, 'decompress');
      });
      let visitError: { error: unknown } | null = null;
      try {
        for await (const entry of extract) {
          if (run.failure !== null) break;
          try {
            visit(entry.header, entry);
          } catch (e) {
            visitError = { error: e };
            break;
          }
        }
      } catch (e) {
        noteFailure(e, 'tar');
      }
      if (visitError !== null) throw visitError.error;
      if (failure !== null) {
        // Stop decoding; the raw bytes go on to their end so the layer source verifies them.
        tarBytes.destroy();
        input.destroy();
      }
      await pumped;
    }
    if (run.failure !== null) throw run.failure.error;
    const broken = failure as { error: unknown; stage: 'decompress' | 'tar' } | null;
    if (broken !== null) {
      // A failed transfer shows through the decoders too: the layer stream's own error comes first.
      if (pump.failed) throw pump.error;
      if (isTransient(broken.error)) throw broken.error;
      await pump.done;
      throw corruptLayer(where, kind, broken.stage, broken.error);
    }
    await pump.done;
  } finally {
    for (const s of owned) {
      run.untrack(s);
      s.destroy();
    }
  }
}

/** Reads at least one tar block (or the whole layer if shorter) for sniffing. */
async function readHead(run: Run, chunks: AsyncIterator<Buffer>): Promise<{ head: Buffer; ended: boolean }> {
  const parts: Buffer[] = [];
  let length = 0;
  while (length < TAR_BLOCK) {
    const r = await chunks.next();
    if (r.done === true) return { head: Buffer.concat(parts, length), ended: true };
    run.addBytes(r.value.length);
    parts.push(r.value);
    length += r.value.length;
  }
  return { head: Buffer.concat(parts, length), ended: false };
}

/** Moves the raw layer bytes into the decoder; once the decoder is gone, reads the rest to the end anyway. */
class RawPump {
  readonly done: Promise<void>;
  failed = false;
  error: unknown = undefined;
  #sink: Writable | null;

  constructor(run: Run, chunks: AsyncIterator<Buffer>, head: Buffer, ended: boolean, sink: Writable) {
    this.#sink = sink;
    this.done = this.#pump(run, chunks, head, ended);
    this.done.catch(noop);
  }

  async #pump(run: Run, chunks: AsyncIterator<Buffer>, head: Buffer, ended: boolean): Promise<void> {
    try {
      await this.#write(head);
      while (!ended) {
        const r = await chunks.next();
        if (r.done === true) break;
        run.addBytes(r.value.length);
        await this.#write(r.value);
      }
    } catch (e) {
      this.failed = true;
      this.error = e;
      this.#sink?.destroy(asError(e));
      throw e;
    }
    if (this.#sink !== null && !this.#sink.destroyed) this.#sink.end();
  }

  async #write(chunk: Buffer): Promise<void> {
    const sink = this.#sink;
    if (sink === null) return;
    if (sink.destroyed || sink.writableEnded) {
      this.#sink = null;
      return;
    }
    if (!sink.write(chunk)) await writable(sink);
  }
}

/** Feeds tar bytes to the extractor with backpressure; resolves with the error of the tar bytes, if any. */
async function pumpTar(tarBytes: Readable, extract: TarExtract): Promise<unknown> {
  try {
    for await (const chunk of tarBytes) {
      if (extract.destroying) return null;
      if (!extract.write(chunk as Buffer)) await writable(extract);
    }
    if (!extract.destroying) extract.end();
    return null;
  } catch (e) {
    extract.destroy(asError(e));
    return e;
  }
}

/** Resolves once `stream` drains or goes away. */
function writable(stream: {
  readonly destroyed: boolean;
  once(event: 'drain' | 'close', fn: () => void): unknown;
  off(event: 'drain' | 'close', fn: () => void): unknown;
}): Promise<void> {
  if (stream.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}

type LayerKind = Compression | 'tar' | 'empty' | 'unknown';

/** By bytes, never by media type. An empty or all-zero short layer is an empty tar. */
function layerKind(head: Buffer, ended: boolean): LayerKind {
  if (head.length === 0) return 'empty';
  const compression = sniffCompression(head);
  if (compression !== null) return compression;
  if (isTar(head) || hasTarChecksum(head)) return 'tar';
  if (head.every((b) => b === 0)) return ended && head.length < TAR_BLOCK ? 'empty' : 'tar';
  return 'unknown';
}

/** A pre-POSIX (v7) tar header: no magic, but a valid header checksum. */
function hasTarChecksum(head: Buffer): boolean {
  if (head.length < TAR_BLOCK) return false;
  const field = head.subarray(148, 156).toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]{1,7}$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : head[i]!;
  return sum === parseInt(field, 8);
}

function showHead(head: Buffer): string {
  const bytes = head.subarray(0, 8);
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  const text = bytes.toString('latin1').replace(/[^\x20-\x7e]/g, '.');
  return `${hex} "${text}"`;
}

/** Decoder failures that say nothing about the bytes (a tool missing or killed on this node). */
function isTransient(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const { permanent, reason } = e as { permanent?: unknown; reason?: unknown };
  return permanent === false && reason !== 'TruncatedCompression';
}

function corruptLayer(where: string, kind: LayerKind, stage: 'decompress' | 'tar', cause: unknown): ContainerDiskError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  const message =
    stage === 'decompress'
      ? `${where}: ${detail.startsWith(`${kind} `) ? detail : `${kind} decompression failed: ${detail}`}`
      : `${where} is not a valid tar archive${kind === 'tar' ? '' : ` (after ${kind} decompression)`}: ${detail}`;
  return new ContainerDiskError(message, 'CorruptLayer', { cause });
}

function multipleDiskFiles(upper: string, upperLayer: number, lower: string, lowerLayer: number): ContainerDiskError {
  const where =
    upperLayer === lowerLayer
      ? `${upper} and ${lower} (both in layer ${upperLayer + 1})`
      : `${upper} (layer ${upperLayer + 1}) and ${lower} (layer ${lowerLayer + 1})`;
  return new ContainerDiskError(
    `more than one disk file under /disk/: ${where}; a containerDisk image must hold exactly one`,
    'MultipleDiskFiles',
  );
}

const MAX_LISTED = 5;

/** What the layers held, for the message when no disk file is found. */
class Findings {
  readonly #notes: string[] = [];
  #notRegular = false;
  readonly #files: string[] = [];
  #fileCount = 0;
  readonly #unsafe: string[] = [];
  #unsafeCount = 0;

  note(text: string): void {
    if (this.#notes.length < MAX_LISTED) this.#notes.push(text);
  }

  notRegular(path: string, kind: EntryKind, linkname: string | null): void {
    if (kind === 'directory') {
      this.note(`found a directory ${path}/, but only files directly under /disk/ count`);
      return;
    }
    this.#notRegular = true;
    const link = kind === 'symlink' || kind === 'link';
    this.note(
      link
        ? `found ${describeKind(kind)} ${path} -> ${linkname ?? ''}, which is not followed`
        : `found ${describeKind(kind)} ${path}, which is not a regular file`,
    );
  }

  /** Every non-directory entry (whiteouts excluded). */
  saw(path: string, kind: EntryKind): void {
    if (kind === 'directory') return;
    this.#fileCount++;
    if (this.#files.length < MAX_LISTED) this.#files.push(path);
  }

  unsafe(name: string): void {
    this.#unsafeCount++;
    if (this.#unsafe.length < 2) this.#unsafe.push(name);
  }

  noDiskFile(layers: number): ContainerDiskError {
    let message = `no ${this.#notRegular ? 'regular ' : ''}disk file under /disk/ in ${layers} layer${layers === 1 ? '' : 's'}`;
    if (this.#notes.length > 0) message += `: ${this.#notes.join('; ')}`;
    message +=
      this.#fileCount === 0
        ? '; the layers hold no files'
        : `; the layers hold: ${listed(this.#files, this.#fileCount)}`;
    if (this.#unsafeCount > 0) {
      message += `; ignored ${this.#unsafeCount} entr${this.#unsafeCount === 1 ? 'y' : 'ies'} with '..' in the path (${listed(this.#unsafe, this.#unsafeCount)})`;
    }
    return new ContainerDiskError(message, 'NoDiskFile');
  }
}

function listed(items: readonly string[], total: number): string {
  return items.join(', ') + (total > items.length ? ` and ${total - items.length} more` : '');
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function prematureClose(): Error {
  return Object.assign(new Error('the layer stream closed before the disk file was read'), {
    code: 'ERR_STREAM_PREMATURE_CLOSE',
  });
}

function noop(): void {}
