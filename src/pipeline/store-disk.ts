/**
 * Stores one disk file in DVCR as the layer of a new image:
 *
 *   disk bytes -> unwrap (gz/xz/zstd, nested) -> detect format from the head, check limits
 *              -> tee: sha256 of the disk file | probe sample (bounded scratch file) | DVCR layer tar upload
 *              -> qemu-img info -f <format> on the sample (not for raw/ISO: nothing more to learn) -> facts for
 *                 the config labels and the status
 *
 * When the disk file is compressed (or comes without a length, e.g. HTTP without Content-Length) its length is
 * not known before the end, but the layer's tar header needs it first: the unwrapped bytes then go through one
 * scratch file that is always removed (the only case where a whole disk touches local storage). An
 * uncompressed disk of known length streams straight through.
 *
 * With a conversion target (ours: `spec.conversion.format` or CONVERT_TO) the disk is spooled too, unless its
 * head already shows the target format or an ISO, and converted into one more scratch file
 * (./convert-disk.ts); the spool goes as soon as the converted copy exists, and both are removed at the end.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MultiHash } from '../disk/checksum.ts';
import { DiskError } from '../disk/errors.ts';
import { assertSafeDisk, assertVirtualSize } from '../disk/format.ts';
import { probeImage } from '../disk/probe.ts';
import { ProbeSample } from '../disk/sample.ts';
import { unwrap } from '../disk/unwrap.ts';
import type { ConvertTarget } from '../disk/convert.ts';
import { Labels, type LayerDescriptor } from '../dvcr/image.ts';
import { diskLayer, layerSize } from '../dvcr/layer.ts';
import type { RegistryClient } from '../oci/index.ts';
import type { PipelineContext, PipelineLimits } from './context.ts';
import type { ImportTask } from './types.ts';
import { conversionNeeded, convertSpooled, type ConvertedStep } from './convert-disk.ts';

export interface DiskInput {
  /** File name as found (`ubuntu.qcow2.xz`); compression suffixes are dropped when unwrapped. */
  name: string;
  /** Bytes of the file as found, when known. */
  size: number | undefined;
  stream: Readable;
}

export interface StoredDisk {
  layer: LayerDescriptor;
  fileName: string;
  /** The stored file's format (after a conversion: the target format). */
  format: string;
  virtualSize: number;
  storedBytes: number;
  sha256: string;
  /** Compression layers removed, innermost first. */
  compression: string[];
  /** Set when the disk was converted: the format it arrived in. */
  originalFormat?: string;
  /** Config labels of ours beyond the standard ones (e.g. the original format after a conversion). */
  extraLabels?: Record<string, string>;
}

export interface StoreDiskOptions {
  dvcr: RegistryClient;
  registry: string;
  repository: string;
  limits: PipelineLimits;
  tmpDir: string;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Ours: convert the disk to this format (skipped when it already has it, and for an ISO). */
  convertTo?: ConvertTarget;
}

/** A layer up to this size is framed in memory and sent in one PUT (two requests to DVCR instead of three). */
export const SMALL_LAYER_BYTES = 8 * 1024 * 1024;

const COMPRESSION_SUFFIX = /\.(gz|gzip|xz|zst|zstd|bz2)$/i;

/** `disk.qcow2.xz.gz` -> `disk.qcow2`; a name that would end empty keeps a neutral one. */
export function unwrappedName(name: string, layers: number): string {
  let out = name;
  for (let i = 0; i < layers && COMPRESSION_SUFFIX.test(out); i++) out = out.replace(COMPRESSION_SUFFIX, '');
  return out === '' ? 'disk.img' : out;
}

/** Writes a stream into a private scratch file; returns its path, size and a remover. */
async function spool(stream: Readable, dir: string, signal?: AbortSignal): Promise<{ path: string; size: number; remove: () => Promise<void> }> {
  const folder = await mkdtemp(join(dir, 'dvcr-unwrapped-'));
  const remove = () => rm(folder, { recursive: true, force: true });
  try {
    const path = join(folder, 'disk');
    await pipeline(stream, createWriteStream(path, { mode: 0o600, highWaterMark: 1 << 20 }), { signal });
    return { path, size: (await stat(path)).size, remove };
  } catch (e) {
    await remove();
    if ((e as { code?: string }).code === 'ENOSPC') {
      // The worker's own disk, not DVCR: another attempt (maybe on another node) may have room.
      throw new DiskError(`the worker's scratch folder ran out of space spooling the disk: ${(e as Error).message}`, {
        reason: 'NoScratchSpace',
        permanent: false,
        cause: e,
      });
    }
    throw e;
  }
}

/** The options every source passes to `storeDisk`: its DVCR target, the context's limits, the task's conversion. */
export function storeOptionsFor(
  task: Pick<ImportTask, 'target' | 'convertTo'>,
  ctx: Pick<PipelineContext, 'dvcr' | 'limits' | 'tmpDir'>,
  hooks: { signal?: AbortSignal | undefined; log?: ((line: string) => void) | undefined },
): StoreDiskOptions {
  return {
    dvcr: ctx.dvcr,
    registry: task.target.registry,
    repository: task.target.repository,
    limits: ctx.limits,
    tmpDir: ctx.tmpDir,
    ...(hooks.signal ? { signal: hooks.signal } : {}),
    ...(hooks.log ? { log: hooks.log } : {}),
    ...(task.convertTo ? { convertTo: task.convertTo } : {}),
  };
}

export async function storeDisk(input: DiskInput, opts: StoreDiskOptions): Promise<StoredDisk> {
  const { signal } = opts;
  const unwrapped = await unwrap(input.stream, { signal });
  let disk = unwrapped.stream;
  let size = input.size;
  // Scratch folders to remove at the end, whatever happens (the spool, a converted copy).
  const scratch: Array<() => Promise<void>> = [];
  let fileName = unwrappedName(input.name, unwrapped.compression.length);
  let converted: ConvertedStep | undefined;
  try {
    const convertTo = opts.convertTo && (await conversionNeeded(disk, opts.convertTo, fileName, opts.log));
    if (unwrapped.compression.length > 0 || size === undefined || convertTo) {
      // The layer's tar header needs the length first: unknown (no Content-Length, or compressed) means one
      // pass into a scratch file. A conversion needs the whole file too (random access).
      if (unwrapped.compression.length > 0) {
        opts.log?.(`disk file ${input.name} is ${unwrapped.compression.join(' in ')}-compressed: unwrapping`);
      }
      const s = await spool(disk, opts.tmpDir, signal);
      scratch.push(s.remove);
      size = s.size;
      let path = s.path;
      if (convertTo && size > 0) {
        converted = await convertSpooled(s.path, s.size, convertTo, fileName, opts);
        if (converted) {
          scratch.push(converted.remove);
          // The unconverted copy is no longer needed: free its space before the upload.
          await s.remove();
          ({ path, size, fileName } = converted);
        }
      }
      disk = createReadStream(path, { highWaterMark: 1 << 20 });
    }
    if (size === undefined) throw new Error('storeDisk: unreachable: size unknown after spooling');
    if (size === 0) {
      throw new DiskError(`the disk file ${fileName} is empty (0 bytes)`, { reason: 'NotADiskImage', permanent: true });
    }
    const stored = await streamIntoDvcr(disk, fileName, size, unwrapped.compression, opts);
    if (!converted) return stored;
    return {
      ...stored,
      originalFormat: converted.originalFormat,
      extraLabels: { [Labels.originalFormat]: converted.originalFormat },
    };
  } finally {
    disk.destroy();
    for (const remove of scratch) await remove();
  }
}

async function streamIntoDvcr(
  disk: Readable,
  fileName: string,
  size: number,
  compression: string[],
  opts: StoreDiskOptions,
): Promise<StoredDisk> {
  const { signal, limits } = opts;
  // Raw and ISO are sampled in memory (no qemu-img for them); other formats in a scratch file.
  const sample = await ProbeSample.create({ dir: opts.tmpDir, totalSize: size, headBytes: limits.probeSampleBytes, keep: 'probed' });
  try {
    const hash = new MultiHash(['sha256']);
    let checked = false;
    // One pass over the bytes: hash, sample (bounded), and hand on to the layer framing.
    async function* tee(): AsyncGenerator<Uint8Array> {
      for await (const raw of disk) {
        const chunk = raw as Buffer;
        hash.update(chunk);
        if (!sample.write(chunk)) await once(sample, 'drain', { signal });
        if (!checked && sample.info) {
          // Refuse early what the header already rules out (backing files, too large, HTML pages).
          checked = true;
          assertSafeDisk(sample.info, { maxVirtualSize: limits.maxVirtualSize });
        }
        yield chunk;
      }
    }
    const total = layerSize(fileName, size);
    const layer = await opts.dvcr.uploadBlob(opts.registry, opts.repository, diskLayer(fileName, size, tee()), {
      size: total,
      monolithicUpTo: SMALL_LAYER_BYTES,
      signal,
    });
    sample.end();
    await once(sample, 'finish', { signal });
    const sealed = await sample.seal();
    assertSafeDisk(sealed.info, { maxVirtualSize: limits.maxVirtualSize });
    const format = sealed.info.format;
    // Raw and ISO (qemu-img reads an ISO as raw) have no header qemu-img could read more from: nothing to refer
    // to outside the file, and the virtual size is the length. Everything else is probed.
    const virtualSize = format === 'raw' || format === 'iso'
      ? size
      : (await probeImage(sealed.path!, { format, maxVirtualSize: limits.maxVirtualSize, signal, displayName: fileName })).virtualSize;
    assertVirtualSize(virtualSize, limits.maxVirtualSize);
    return {
      layer: { digest: layer.digest, size: layer.size },
      fileName,
      format,
      virtualSize,
      storedBytes: size,
      sha256: hash.digest().sha256!,
      compression,
    };
  } finally {
    await sample.dispose();
  }
}
