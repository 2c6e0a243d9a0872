/**
 * Streaming decompression by magic bytes, layer after layer (`disk.qcow2.xz.gz` -> gzip, then xz), until the
 * bytes no longer start with a compression magic.
 *
 * gzip is decoded in process with node:zlib (multi-member files included): measured at 470 MB/s out here,
 * and it needs no process. xz, zstd and bzip2 are decoded by their reference command-line tools in child
 * processes rather than by npm packages: the tools are the maintained upstream implementations (the JS and
 * WASM ports lag in speed and features, e.g. xz multi-stream or zstd long windows), the decoding runs on a core
 * of its own instead of the thread that also hashes and frames the tar (decompression is the one serial stage
 * of an import), a child process has no shared state so any number of imports may run at once, and Node 20 has
 * no zstd in zlib at all. Errors become `DiskError`s that name the compression; decoders are killed when the
 * stream is destroyed or the signal aborts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { addAbortSignal, Readable, type Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DiskError } from './errors.ts';
import { COMPRESSION_SNIFF_BYTES, sniffCompression, type Compression } from './sniff.ts';

export interface UnwrapOptions {
  /** Aborting destroys the returned stream (and the source) with an AbortError and kills the decoders. */
  signal?: AbortSignal;
  /** Most nested compression layers accepted; more is refused as `TooManyCompressionLayers`. Default 3. */
  maxLayers?: number;
  /**
   * Decoder command per compression, reading stdin and writing stdout, e.g. `{gzip: ['igzip', '-dc']}` to
   * move gzip into its own process. Defaults: gzip in process (zlib), `xz -dc`, `zstd -dcq --no-progress`,
   * `bzip2 -dc`.
   */
  commands?: Partial<Record<Compression, readonly string[]>>;
}

export interface Unwrapped {
  /** The decompressed bytes (the source itself when it was not compressed). */
  stream: Readable;
  /** Layers found, in file-name order (innermost first): `disk.qcow2.xz.gz` gives `['xz', 'gzip']`. */
  compression: Compression[];
}

const DEFAULT_COMMANDS: Readonly<Record<Exclude<Compression, 'gzip'>, readonly string[]>> = {
  xz: ['xz', '-dc'],
  zstd: ['zstd', '-dcq', '--no-progress'],
  bzip2: ['bzip2', '-dc'],
};

/** Output buffering per layer: large enough that a pipe is not paused and resumed for every 64 KiB read. */
const LAYER_HIGH_WATER_MARK = 1 << 20;
/** zlib output chunk size (measured: 1 MiB chunks decode fastest). */
const GUNZIP_CHUNK = 1 << 20;
/** Most stderr kept from a decoder for its error message. */
const STDERR_LIMIT = 4096;

/**
 * Sniffs `source` and stacks a decoder for every compression layer found. Resolves once the first bytes of the
 * innermost layer have been seen, so a corrupt outer layer rejects here; later failures arrive as the
 * returned stream's `error`. On rejection the source and all decoders are destroyed.
 */
export async function unwrap(source: Readable, opts: UnwrapOptions = {}): Promise<Unwrapped> {
  const maxLayers = opts.maxLayers ?? 3;
  const found: Compression[] = [];
  let top = source;
  // An error can be emitted between two peeks, when nothing else listens yet; it is not lost: peek and the
  // layer above read it from `errored`.
  const guard = (): void => {};
  source.on('error', guard);
  if (opts.signal) addAbortSignal(opts.signal, source);
  try {
    for (;;) {
      const head = await peek(top, COMPRESSION_SNIFF_BYTES);
      const compression = sniffCompression(head);
      if (compression === null) break;
      if (found.length >= maxLayers) {
        throw new DiskError(
          `more than ${maxLayers} nested compression layers (${[...found, compression].join(' inside ')}); ` +
            'decompress the file before importing it',
          { reason: 'TooManyCompressionLayers', permanent: true },
        );
      }
      found.push(compression);
      top = new DecodedStream(top, compression, opts.commands?.[compression]);
      top.on('error', guard);
      if (opts.signal) addAbortSignal(opts.signal, top);
    }
    if (top.errored) throw top.errored;
  } catch (e) {
    top.destroy();
    source.destroy();
    throw e;
  }
  // From here on the caller listens for errors of the stream it gets.
  top.off('error', guard);
  return { stream: top, compression: found.reverse() };
}

/**
 * Reads until at least `n` bytes (or the end) are buffered, puts them back with `unshift`, and returns them.
 * The stream is left paused and unconsumed.
 */
export function peek(stream: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let len = 0;
    const cleanup = (): void => {
      stream.off('readable', onReadable);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    const done = (): void => {
      cleanup();
      const head = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, len);
      if (len > 0) stream.unshift(head);
      resolve(head.subarray(0, n));
    };
    const onReadable = (): void => {
      let readAny = false;
      let chunk: Buffer | null;
      while (len < n && (chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        len += chunk.length;
        readAny = true;
      }
      // 'readable' with nothing to read means the end of the stream.
      if (len >= n || !readAny) done();
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    const onClose = (): void => {
      cleanup();
      reject(stream.errored ?? prematureClose());
    };
    if (stream.errored) {
      reject(stream.errored);
      return;
    }
    if (stream.destroyed) {
      reject(prematureClose());
      return;
    }
    if (stream.readableEnded) {
      resolve(Buffer.alloc(0));
      return;
    }
    stream.on('readable', onReadable);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}

function prematureClose(): Error {
  return Object.assign(new Error('the stream closed before its data was read'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/** How one decoding layer is driven: bytes go into `input`, come out of `output`, `onDone` reports the end. */
interface Decoder {
  readonly input: Writable;
  readonly output: Readable;
  /** Called once: null when all output was produced, else the error to surface. */
  onDone(cb: (err: Error | null) => void): void;
  /** Stops decoding now; `cb` runs once nothing is left running. */
  kill(cb: () => void): void;
}

/** One decoding layer as a Readable: pulls from the decoder with backpressure and owns its input. */
class DecodedStream extends Readable {
  readonly #input: Readable;
  readonly #decoder: Decoder;

  constructor(input: Readable, compression: Compression, command: readonly string[] | undefined) {
    super({ highWaterMark: LAYER_HIGH_WATER_MARK });
    this.#input = input;
    const argv = command ?? (compression === 'gzip' ? undefined : DEFAULT_COMMANDS[compression]);
    this.#decoder = argv ? childDecoder(compression, argv) : zlibGunzip();
    const output = this.#decoder.output;
    output.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) output.pause();
    });
    output.pause();
    this.#decoder.onDone((err) => {
      if (err) this.destroy(err);
      else this.push(null);
    });
    // Errors of the input (the source, or the layer outside this one) pass through unchanged; an input that
    // closes before its end would leave the decoder waiting forever.
    input.on('error', (e) => this.destroy(e));
    input.on('close', () => {
      if (!input.readableEnded && !this.destroyed) this.destroy(input.errored ?? prematureClose());
    });
    if (input.errored || input.destroyed) {
      this.destroy(input.errored ?? prematureClose());
      return;
    }
    input.pipe(this.#decoder.input);
  }

  override _read(): void {
    this.#decoder.output.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#input.unpipe(this.#decoder.input);
    this.#input.destroy();
    this.#decoder.kill(() => callback(err));
  }
}

/** `cb`, called at most once (a decoder can report its end and an error, or several errors). */
function callOnce(cb: (err: Error | null) => void): (err: Error | null) => void {
  let called = false;
  return (err) => {
    if (called) return;
    called = true;
    cb(err);
  };
}

function zlibGunzip(): Decoder {
  const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK });
  return {
    input: gunzip,
    output: gunzip,
    onDone(cb) {
      const once = callOnce(cb);
      gunzip.once('end', () => once(null));
      gunzip.on('error', (e: NodeJS.ErrnoException) => once(gzipError(e)));
    },
    kill(cb) {
      gunzip.destroy();
      cb();
    },
  };
}

function gzipError(e: NodeJS.ErrnoException): DiskError {
  const truncated = e.code === 'Z_BUF_ERROR' || /unexpected end/i.test(e.message);
  return new DiskError(
    `gzip decompression failed: ${truncated ? TRUNCATED : CORRUPT} (zlib: ${e.message})`,
    truncated
      ? { reason: 'TruncatedCompression', permanent: false, cause: e }
      : { reason: 'CorruptCompression', permanent: true, cause: e },
  );
}

const TRUNCATED = 'the compressed data ends early (the file is truncated or the download was cut short)';
const CORRUPT = 'the compressed data is corrupt';

function childDecoder(compression: Compression, argv: readonly string[]): Decoder {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error(`empty decoder command for ${compression}`);
  const child: ChildProcess = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const stdin = child.stdin!;
  const stdout = child.stdout!;
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    if (stderr.length < STDERR_LIMIT) stderr += s.slice(0, STDERR_LIMIT - stderr.length);
  });
  // The decoder may exit before reading all its input (corrupt data): EPIPE here is reported by the exit code.
  stdin.on('error', () => {});
  let killed = false;
  let exited = false;
  child.once('exit', () => (exited = true));
  return {
    input: stdin,
    output: stdout,
    onDone(cb) {
      const once = callOnce(cb);
      child.on('error', (e: NodeJS.ErrnoException) => {
        exited = true;
        once(
          new DiskError(
            `${compression} decompression failed: could not run \`${argv.join(' ')}\` (${e.code ?? e.message}); ` +
              `install ${cmd} on the worker`,
            { reason: 'DecompressorUnavailable', permanent: false, cause: e },
          ),
        );
      });
      // 'close' comes after the exit and after stdout has been read to its end.
      child.once('close', (code, signal) => {
        if (killed) return;
        once(code === 0 ? null : childError(compression, cmd, code, signal, stderr));
      });
    },
    kill(cb) {
      killed = true;
      stdout.destroy();
      stdin.destroy();
      if (exited || child.exitCode !== null || child.signalCode !== null) {
        cb();
        return;
      }
      child.once('exit', () => cb());
      child.kill('SIGKILL');
    },
  };
}

function childError(
  compression: Compression,
  cmd: string,
  code: number | null,
  signal: NodeJS.Signals | null,
  stderr: string,
): DiskError {
  const said = stderr
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .slice(-3)
    .join('; ');
  if (signal !== null) {
    return new DiskError(`${compression} decompression failed: ${cmd} was killed by ${signal}${said ? ` (${said})` : ''}`, {
      reason: 'DecompressorFailed',
      permanent: false,
    });
  }
  const detail = said || `exit code ${code}`;
  if (/too much memory|memory limit|window.*(too large|exceeds)/i.test(said)) {
    return new DiskError(
      `${compression} decompression failed: the data needs more decoder memory than allowed ` +
        `(compressed with a very long window?); recompress it with default settings (${cmd}: ${detail})`,
      { reason: 'UnsupportedFormat', permanent: true },
    );
  }
  const truncated = /unexpected end|premature end|truncated|end of (input|file)/i.test(said);
  return new DiskError(
    `${compression} decompression failed: ${truncated ? TRUNCATED : CORRUPT} (${cmd}: ${detail})`,
    truncated ? { reason: 'TruncatedCompression', permanent: false } : { reason: 'CorruptCompression', permanent: true },
  );
}
