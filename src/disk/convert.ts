/**
 * Format conversion (ours; see reference/disk-formats.md, "Conversion"): `qemu-img convert -f <detected> -O
 * <target> -W -m 8` from a local file (conversion needs random access) into ONE scratch file of a private
 * folder, under the same limits machinery as the probe (`runLimited`: address space, CPU, wall timeout) plus a
 * bound on the size of the file qemu-img may write (RLIMIT_FSIZE: the target's largest possible size for the
 * probed virtual size), so a hostile image cannot fill the node. The scratch folder is removed on every failure
 * (timeout, limit, abort, refusal); on success the caller owns it and calls `remove()`.
 *
 * Callers must have probed the input with `probeImage` first: it refuses backing files, external data files
 * and extents, which `qemu-img convert` would otherwise open.
 *
 *   const out = await convertImage(spooled, { from: 'raw', to: 'qcow2', virtualSize, dir });
 *   try { upload(out.path, out.size) } finally { await out.remove() }
 */
import { open, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { DiskError } from './errors.ts';
import { detectFormat, FORMAT_HEAD_BYTES, qemuFormatName, VHD_FOOTER_BYTES, type DiskFormat, type DiskInfo } from './format.ts';
import { firstLines, hasPrlimit, runLimited, type ProbeLimits } from './probe.ts';

/** Formats the importer converts to. */
export const CONVERT_TARGETS = ['qcow2', 'raw'] as const;
export type ConvertTarget = (typeof CONVERT_TARGETS)[number];

/** Conversion limits: more memory than a probe (qemu-img's I/O threads), CPU bounded by the wall timeout. */
export const DEFAULT_CONVERT_LIMITS: Readonly<ProbeLimits> = {
  addressSpaceBytes: 2 * 1024 * 1024 * 1024,
  cpuSeconds: 3600,
  timeoutMs: 3_600_000,
};

export interface ConvertOptions {
  /** The format detected and probed (`-f`); never `iso` (an ISO is stored as it is). */
  from: DiskFormat;
  to: ConvertTarget;
  /** The probed virtual size: bounds the output file. */
  virtualSize: number;
  /** Where the private scratch folder is made. Default: the OS temp folder. */
  dir?: string;
  /**
   * Limits of the qemu-img process. `cpuSeconds` defaults to the wall timeout in seconds (qemu-img convert does
   * its work on one thread; its I/O threads mostly wait).
   */
  limits?: Partial<ProbeLimits>;
  signal?: AbortSignal;
  /** The qemu-img executable. Default `qemu-img` from PATH. */
  qemuImg?: string;
  /** How the limits are applied: `prlimit` (default when installed) or `ulimit` in `sh`. */
  limiter?: 'prlimit' | 'ulimit';
  /** What to call the image in messages instead of the input path. */
  displayName?: string;
}

export interface ConvertedDisk {
  /** The converted file (inside a private scratch folder). */
  path: string;
  /** Its length in bytes. */
  size: number;
  format: ConvertTarget;
  durationMs: number;
  /** Removes the scratch folder. Idempotent. */
  remove(): Promise<void>;
}

/**
 * Largest file `qemu-img convert -O <to>` can write for a disk of `virtualSize` bytes: raw is the virtual size;
 * qcow2 adds its metadata (with 64 KiB clusters: 8 bytes of L2 table and 2 of refcounts per cluster, about
 * 1/6554 of the size) plus header, tables and slack.
 */
export function maxConvertedSize(virtualSize: number, to: ConvertTarget): number {
  const v = Math.max(0, Math.ceil(virtualSize));
  const slack = 32 * 1024 * 1024;
  return to === 'raw' ? v + slack : v + Math.ceil(v / 4096) + slack;
}

/** The `qemu-img convert` arguments used (exported for tests and logs). */
export function convertArgs(input: string, output: string, from: DiskFormat, to: ConvertTarget): string[] {
  // -W: out-of-order writes and -m 8: eight coroutines in flight; both help raw and qcow2 targets alike (the
  // order of a qcow2's clusters in the file does not matter to its readers).
  return ['convert', '-f', qemuFormatName(from), '-O', to, '-W', '-m', '8', input, output];
}

/** `disk.raw` -> `disk.qcow2`, `ubuntu.img` -> `ubuntu.qcow2`; an unknown suffix gets the target's appended. */
export function convertedName(name: string, to: ConvertTarget): string {
  const ext = to === 'qcow2' ? '.qcow2' : '.raw';
  const m = /^(.+?)\.(raw|img|bin|qcow2|qcow|vmdk|vdi|vhd|vhdx|vpc)$/i.exec(name);
  return m ? `${m[1]}${ext}` : `${name}${ext}`;
}

/**
 * What a whole local file says it is: the format head plus the last 512 bytes (a fixed VHD's only footer),
 * which a stream's head alone cannot show.
 */
export async function detectFileFormat(path: string): Promise<DiskInfo> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const head = Buffer.alloc(Math.min(size, FORMAT_HEAD_BYTES));
    await fh.read(head, 0, head.length, 0);
    if (size < VHD_FOOTER_BYTES) return detectFormat(head);
    const tail = Buffer.alloc(VHD_FOOTER_BYTES);
    await fh.read(tail, 0, tail.length, size - VHD_FOOTER_BYTES);
    return detectFormat(head, { tail });
  } finally {
    await fh.close();
  }
}

/**
 * Converts `input` (a probed, self-contained image of format `from`) to `to` in a fresh scratch folder.
 * Rejects with a `DiskError`: `UnsupportedFormat` (iso, or nothing to convert), `ConvertTimeout` (transient),
 * `ConvertLimit`, `ConvertFailed`, `NoScratchSpace` (transient), `ProbeUnavailable` (no qemu-img, transient);
 * or with the signal's reason. The scratch folder is gone whenever it rejects.
 */
export async function convertImage(input: string, opts: ConvertOptions): Promise<ConvertedDisk> {
  const name = opts.displayName ?? basename(input);
  if (opts.from === 'iso') {
    throw new DiskError(`${name} is an ISO image; it is stored as it is and never converted`, {
      reason: 'UnsupportedFormat',
      permanent: true,
    });
  }
  if (opts.from === opts.to) {
    throw new DiskError(`${name} is already ${opts.to}; nothing to convert`, { reason: 'UnsupportedFormat', permanent: true });
  }
  opts.signal?.throwIfAborted();
  const timeoutMs = opts.limits?.timeoutMs ?? DEFAULT_CONVERT_LIMITS.timeoutMs;
  const limits: ProbeLimits & { fileSizeBytes: number } = {
    addressSpaceBytes: opts.limits?.addressSpaceBytes ?? DEFAULT_CONVERT_LIMITS.addressSpaceBytes,
    cpuSeconds: opts.limits?.cpuSeconds ?? Math.max(30, Math.ceil(timeoutMs / 1000)),
    timeoutMs,
    fileSizeBytes: maxConvertedSize(opts.virtualSize, opts.to),
  };
  const folder = await mkdtemp(join(opts.dir ?? tmpdir(), 'dvcr-convert-'));
  const remove = () => rm(folder, { recursive: true, force: true });
  const output = join(folder, opts.to === 'qcow2' ? 'disk.qcow2' : 'disk.raw');
  const source = resolve(input);
  const started = Date.now();
  try {
    const run = await runLimited(
      opts.qemuImg ?? 'qemu-img',
      convertArgs(source, output, opts.from, opts.to),
      limits,
      opts.limiter ?? (hasPrlimit() ? 'prlimit' : 'ulimit'),
      opts.signal,
    );
    const said = (s: string): string => firstLines(s.split(source).join(name).split(output).join(`<${opts.to} output>`));
    const what = `qemu-img convert of ${name} from ${opts.from} to ${opts.to}`;
    if (run.timedOut) {
      throw new DiskError(
        `${what} did not finish within ${formatSeconds(limits.timeoutMs)} and was killed; the node may be ` +
          'overloaded (will retry), or raise CONVERT_TIMEOUT for very large images',
        { reason: 'ConvertTimeout', permanent: false },
      );
    }
    if (run.spawnError || run.code === 127) {
      throw new DiskError(`could not run qemu-img (${run.spawnError?.message ?? said(run.stderr)}): install qemu-utils on the worker`, {
        reason: 'ProbeUnavailable',
        permanent: false,
        cause: run.spawnError,
      });
    }
    if (/no space left on device/i.test(run.stderr)) {
      throw new DiskError(
        `${what}: the scratch folder ran out of space (up to ${limits.fileSizeBytes} bytes needed); free space ` +
          'there or point DVCR_IMPORTER_TMPDIR at a larger volume',
        { reason: 'NoScratchSpace', permanent: false },
      );
    }
    if (run.signal === 'SIGXFSZ' || /file too large/i.test(run.stderr)) {
      throw new DiskError(
        `${what} wrote more than ${limits.fileSizeBytes} bytes, the most a ${opts.to} of ${opts.virtualSize} virtual ` +
          'bytes can take; refusing the image',
        { reason: 'ConvertLimit', permanent: true },
      );
    }
    if (run.signal === 'SIGXCPU' || run.signal === 'SIGKILL') {
      throw new DiskError(`${what} exceeded its CPU limit of ${limits.cpuSeconds} s (killed by ${run.signal})`, {
        reason: 'ConvertLimit',
        permanent: true,
      });
    }
    if (run.signal !== null || /cannot allocate memory|failed to allocate|out of memory|failed to map segment/i.test(run.stderr)) {
      throw new DiskError(
        `${what} exceeded its memory limit of ${limits.addressSpaceBytes} bytes` +
          `${run.signal ? ` (killed by ${run.signal})` : ''}: ${said(run.stderr) || 'no message'}`,
        { reason: 'ConvertLimit', permanent: true },
      );
    }
    if (run.code !== 0) {
      throw new DiskError(`${what} failed: ${said(run.stderr) || `exit code ${run.code}`}`, {
        reason: 'ConvertFailed',
        permanent: true,
      });
    }
    const size = (await stat(output)).size;
    return { path: output, size, format: opts.to, durationMs: Date.now() - started, remove };
  } catch (e) {
    await remove();
    throw e;
  }
}

function formatSeconds(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}
