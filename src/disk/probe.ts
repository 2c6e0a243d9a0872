/**
 * Probing with `qemu-img info`, the way OpenStack does it: always with `-f <format>` (probing would let a raw
 * guest's own header pick the format), under an address-space and CPU limit and a wall timeout, and with
 * everything that could make qemu-img read files other than the image refused: backing files, qcow2 external
 * data files, VMDK extents elsewhere.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { DiskError } from './errors.ts';
import { assertVirtualSize, qemuFormatName, type DiskFormat } from './format.ts';

export interface ProbeLimits {
  /** Address-space limit of the qemu-img process in bytes. Default 1 GiB. */
  addressSpaceBytes: number;
  /** CPU time limit in seconds. Default 30. */
  cpuSeconds: number;
  /** Wall-clock limit in milliseconds; qemu-img is killed when it is reached. Default 60 s. */
  timeoutMs: number;
}

export const DEFAULT_PROBE_LIMITS: Readonly<ProbeLimits> = {
  addressSpaceBytes: 1024 * 1024 * 1024,
  cpuSeconds: 30,
  timeoutMs: 60_000,
};

export interface ProbeOptions {
  /** The format detected from the header; qemu-img is told it with `-f`. */
  format: DiskFormat;
  /** Largest acceptable virtual size in bytes; unset = no limit. */
  maxVirtualSize?: number;
  limits?: Partial<ProbeLimits>;
  signal?: AbortSignal;
  /** The qemu-img executable. Default `qemu-img` from PATH. */
  qemuImg?: string;
  /** How the limits are applied: `prlimit` (default when installed) or `ulimit` in `sh`. */
  limiter?: 'prlimit' | 'ulimit';
  /** What to call the image in messages instead of the probed path (e.g. the source URL's file name). */
  displayName?: string;
}

const Extent = z.looseObject({
  filename: z.string(),
  'virtual-size': z.number().optional(),
  format: z.string().optional(),
  compressed: z.boolean().optional(),
});

const QemuImgInfoSchema = z.looseObject({
  // Finite (JSON.parse makes 1e999 Infinity, which zod refuses); whole and exact is checked in readQemuImgInfo.
  'virtual-size': z.number().nonnegative(),
  filename: z.string(),
  format: z.string(),
  'actual-size': z.number().optional(),
  'cluster-size': z.number().optional(),
  'backing-filename': z.string().optional(),
  'full-backing-filename': z.string().optional(),
  'backing-filename-format': z.string().optional(),
  encrypted: z.boolean().optional(),
  'dirty-flag': z.boolean().optional(),
  'format-specific': z
    .looseObject({
      type: z.string(),
      data: z
        .looseObject({
          'data-file': z.string().optional(),
          corrupt: z.boolean().optional(),
          'create-type': z.string().optional(),
          extents: z.array(Extent).optional(),
        })
        .optional(),
    })
    .optional(),
});

/** `qemu-img info --output=json`, as far as we read it. */
export type QemuImgInfo = z.infer<typeof QemuImgInfoSchema>;

export interface ProbeResult {
  format: DiskFormat;
  virtualSize: number;
  /** Bytes the probed file occupies on disk (of the sample, when a sample was probed). */
  actualSize: number | undefined;
  /** The image was not closed cleanly (qcow2 dirty bit, lazy refcounts); still readable. */
  dirty: boolean;
  /** qemu-img's whole answer. */
  qemu: QemuImgInfo;
}

/**
 * Runs `qemu-img info --output=json -f <format> <file>` under limits and checks the answer. Rejects with a
 * `DiskError`: `BackingFile`, `ExternalDataFile`, `ExternalExtent`, `Encrypted`, `CorruptImage`,
 * `VirtualSizeTooLarge`, `ProbeFailed` (qemu-img refused the image), `ProbeLimit`, `ProbeTimeout`,
 * `ProbeUnavailable`; or with the signal's AbortError.
 */
export async function probeImage(file: string, opts: ProbeOptions): Promise<ProbeResult> {
  const path = resolve(file);
  const name = opts.displayName ?? basename(path);
  const qemuFormat = qemuFormatName(opts.format);
  const limits: ProbeLimits = { ...DEFAULT_PROBE_LIMITS, ...opts.limits };
  const run = await runLimited(
    opts.qemuImg ?? 'qemu-img',
    ['info', '--output=json', '-f', qemuFormat, path],
    limits,
    opts.limiter ?? (hasPrlimit() ? 'prlimit' : 'ulimit'),
    opts.signal,
  );
  const said = (s: string): string => firstLines(s.split(path).join(name));

  if (run.timedOut) {
    throw new DiskError(
      `qemu-img info did not finish within ${limits.timeoutMs / 1000} s on ${name} and was killed; ` +
        'the node may be overloaded (will retry) or the image is pathological',
      { reason: 'ProbeTimeout', permanent: false },
    );
  }
  if (run.tooMuchOutput) {
    throw new DiskError(`qemu-img info printed more than ${STDOUT_LIMIT} bytes for ${name}; refusing the image`, {
      reason: 'ProbeFailed',
      permanent: true,
    });
  }
  if (run.signal === 'SIGXCPU' || run.signal === 'SIGKILL') {
    throw new DiskError(
      `qemu-img exceeded its CPU limit of ${limits.cpuSeconds} s probing ${name} (killed by ${run.signal}): ` +
        'the image is pathological or too complex to inspect safely',
      { reason: 'ProbeLimit', permanent: true },
    );
  }
  if (run.signal !== null || /cannot allocate memory|failed to allocate|out of memory|failed to map segment/i.test(run.stderr)) {
    throw new DiskError(
      `qemu-img exceeded its memory limit of ${limits.addressSpaceBytes} bytes probing ${name}` +
        `${run.signal ? ` (killed by ${run.signal})` : ''}: ${said(run.stderr) || 'no message'}`,
      { reason: 'ProbeLimit', permanent: true },
    );
  }
  if (run.spawnError || run.code === 127) {
    throw new DiskError(
      `could not run qemu-img (${run.spawnError?.message ?? said(run.stderr)}): install qemu-utils on the worker`,
      { reason: 'ProbeUnavailable', permanent: false, cause: run.spawnError },
    );
  }
  if (run.code !== 0) {
    throw new DiskError(`qemu-img cannot read ${name} as ${opts.format}: ${said(run.stderr) || `exit code ${run.code}`}`, {
      reason: 'ProbeFailed',
      permanent: true,
    });
  }

  return readQemuImgInfo(run.stdout, path, name, opts.format, opts.maxVirtualSize);
}

/**
 * Reads what `qemu-img info --output=json -f <format> <path>` printed (qemu-img's answer is outside input: it
 * describes a file anyone may have crafted) and checks it: the format asked for, no backing file, external data
 * file or extent elsewhere, not encrypted or corrupt, a virtual size that is a safe integer within
 * `maxVirtualSize`. `name` stands for the file in messages. Throws only DiskError.
 */
export function readQemuImgInfo(stdout: string, path: string, name: string, format: DiskFormat, maxVirtualSize?: number): ProbeResult {
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch (e) {
    throw new DiskError(`qemu-img info printed something that is not JSON for ${name}`, {
      reason: 'ProbeFailed',
      permanent: false,
      cause: e,
    });
  }
  const parsed = QemuImgInfoSchema.safeParse(json);
  if (!parsed.success) {
    throw new DiskError(`qemu-img info answered in an unexpected shape for ${name}: ${parsed.error.message}`, {
      reason: 'ProbeFailed',
      permanent: false,
    });
  }
  const info = parsed.data;
  checkInfo(info, path, name, format);
  const virtualSize = info['virtual-size'];
  if (virtualSize > Number.MAX_SAFE_INTEGER) {
    // Past 2^53 the number is not even exact; no limit (or none set) makes such a disk importable.
    throw new DiskError(`${name} declares a virtual size of about ${virtualSize} bytes, more than 2^53; refusing the image`, {
      reason: 'VirtualSizeTooLarge',
      permanent: true,
    });
  }
  if (!Number.isInteger(virtualSize)) {
    throw new DiskError(`qemu-img info answered a virtual size of ${virtualSize} bytes, not a whole number, for ${name}`, {
      reason: 'ProbeFailed',
      permanent: false,
    });
  }
  assertVirtualSize(virtualSize, maxVirtualSize);
  return {
    format,
    virtualSize: info['virtual-size'],
    actualSize: info['actual-size'],
    dirty: info['dirty-flag'] ?? false,
    qemu: info,
  };
}

const FLATTEN = 'make it self-contained first, e.g. `qemu-img convert -O qcow2 <image> <flat.qcow2>`';

/** Refuses anything in qemu-img's answer that points outside the probed file. */
function checkInfo(info: QemuImgInfo, path: string, name: string, format: DiskFormat): void {
  if (info.format !== qemuFormatName(format)) {
    throw new DiskError(`qemu-img read ${name} as ${info.format}, not ${qemuFormatName(format)}`, {
      reason: 'ProbeFailed',
      permanent: true,
    });
  }
  const backing = info['backing-filename'] ?? info['full-backing-filename'];
  if (backing !== undefined) {
    throw new DiskError(
      `${name} refers to a backing (parent) image "${backing}"; only self-contained images can be imported: ${FLATTEN}`,
      { reason: 'BackingFile', permanent: true },
    );
  }
  const data = info['format-specific']?.data;
  const dataFile = data?.['data-file'];
  if (dataFile !== undefined) {
    throw new DiskError(
      `${name} keeps its data in an external file "${dataFile}"; only self-contained images can be imported: ${FLATTEN}`,
      { reason: 'ExternalDataFile', permanent: true },
    );
  }
  for (const extent of data?.extents ?? []) {
    if (resolve(dirname(path), extent.filename) !== path) {
      throw new DiskError(
        `${name} is a VMDK whose data lives in another file ("${extent.filename}"); import a single-file VMDK ` +
          'instead, e.g. `qemu-img convert -O vmdk -o subformat=streamOptimized <disk.vmdk> <single.vmdk>`',
        { reason: 'ExternalExtent', permanent: true },
      );
    }
  }
  if (info.encrypted) {
    throw new DiskError(`${name} is encrypted; decrypt it first and import the result`, {
      reason: 'Encrypted',
      permanent: true,
    });
  }
  if (data?.corrupt) {
    throw new DiskError(`${name} is marked corrupt; repair it with \`qemu-img check -r all <image>\` and import again`, {
      reason: 'CorruptImage',
      permanent: true,
    });
  }
}

/** What {@link runLimited} saw of a finished process. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  tooMuchOutput: boolean;
  spawnError?: Error;
}

/** Most output kept; qemu-img info JSON is small even for VMDKs with many extents. */
const STDOUT_LIMIT = 4 * 1024 * 1024;
const STDERR_LIMIT = 8 * 1024;

/**
 * Runs a command under an address-space and CPU limit (and, when `limits.fileSizeBytes` is set, a limit on the
 * size of any file it writes: SIGXFSZ beyond it) and a wall timeout (SIGKILL on expiry or abort). Rejects only
 * with the signal's reason on abort; everything else is in the result.
 */
export function runLimited(
  command: string,
  args: readonly string[],
  limits: ProbeLimits & { fileSizeBytes?: number },
  limiter: 'prlimit' | 'ulimit',
  signal: AbortSignal | undefined,
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    signal?.throwIfAborted();
    const as = Math.max(1, Math.floor(limits.addressSpaceBytes));
    const cpu = Math.max(1, Math.ceil(limits.cpuSeconds));
    const fsize = limits.fileSizeBytes === undefined ? undefined : Math.max(1, Math.floor(limits.fileSizeBytes));
    // `ulimit -f` counts 512-byte blocks in dash (Debian's sh) and POSIX mode: round up.
    const [cmd, argv] =
      limiter === 'prlimit'
        ? ['prlimit', [`--as=${as}`, `--cpu=${cpu}`, ...(fsize ? [`--fsize=${fsize}`] : []), '--', command, ...args]]
        : [
            'sh',
            [
              '-c',
              `ulimit -v ${Math.max(1, Math.floor(as / 1024))} && ulimit -t ${cpu}` +
                `${fsize ? ` && ulimit -f ${Math.ceil(fsize / 512)}` : ''} && exec "$@"`,
              'sh',
              command,
              ...args,
            ],
          ];
    // prlimit and `exec` replace themselves with qemu-img, so the child's pid is qemu-img's.
    const child = spawn(cmd, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' },
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let aborted = false;
    let tooMuchOutput = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (s: string) => {
      if (stdout.length < STDOUT_LIMIT) stdout += s;
      else {
        tooMuchOutput = true;
        child.kill('SIGKILL');
      }
    });
    child.stderr.on('data', (s: string) => {
      if (stderr.length < STDERR_LIMIT) stderr += s.slice(0, STDERR_LIMIT - stderr.length);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limits.timeoutMs);
    const onAbort = (): void => {
      aborted = true;
      child.kill('SIGKILL');
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    let spawnError: Error | undefined;
    child.once('error', (e) => {
      spawnError = e;
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (aborted && signal) {
        reject(signal.reason);
        return;
      }
      const result: RunResult = { code, signal: sig, stdout, stderr, timedOut, tooMuchOutput };
      if (spawnError) result.spawnError = spawnError;
      resolvePromise(result);
    });
  });
}

let prlimitPath: boolean | undefined;

/** Whether `prlimit` (util-linux) is on PATH; looked up once. */
export function hasPrlimit(): boolean {
  if (prlimitPath === undefined) {
    prlimitPath = (process.env.PATH ?? '').split(delimiter).some((d) => {
      try {
        accessSync(join(d, 'prlimit'), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  }
  return prlimitPath;
}

/** The first three non-empty lines of a tool's output, joined: enough for a message. */
export function firstLines(s: string): string {
  return s
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .slice(0, 3)
    .join('; ');
}
