/**
 * Format conversion as a step of `storeDisk` (ours, optional): `spec.conversion.format` of the image, else the
 * worker's CONVERT_TO. qemu-img needs random access, so a disk to convert is spooled to a scratch file first
 * (store-disk's spool), checked like any import (hazards, virtual size, `qemu-img info` refusing backing files
 * and external data before `qemu-img convert` could follow them), then converted into one more scratch file
 * (src/disk/convert.ts: bounded, under limits and a timeout, always removed).
 *
 * Skipped, with a log line: when the disk already has the target format, and for an ISO (an ISO stays an ISO:
 * it is a CD-ROM image, not a disk to reformat).
 */
import type { Readable } from 'node:stream';
import { convertImage, convertedName, detectFileFormat, type ConvertTarget, type ConvertedDisk } from '../disk/convert.ts';
import { assertSafeDisk, detectFormat, FORMAT_HEAD_BYTES, type DiskFormat } from '../disk/format.ts';
import { probeImage } from '../disk/probe.ts';
import { peek } from '../disk/unwrap.ts';
import type { PipelineLimits } from './context.ts';

export interface ConvertStepOptions {
  limits: PipelineLimits;
  tmpDir: string;
  signal?: AbortSignal;
  log?: (line: string) => void;
}

/**
 * Looks at the first bytes of the (unwrapped) disk, leaving the stream unconsumed, and says whether it must be
 * spooled for a conversion to `target`: undefined when the head already settles it (an ISO; a qcow2 asked to be
 * qcow2). A raw-looking head is never settled here: a fixed VHD shows its footer only at the end.
 */
export async function conversionNeeded(
  disk: Readable,
  target: ConvertTarget,
  fileName: string,
  log?: (line: string) => void,
): Promise<ConvertTarget | undefined> {
  const info = detectFormat(await peek(disk, FORMAT_HEAD_BYTES));
  if (info.format === 'iso') {
    log?.(`${fileName} is an ISO image: stored as it is, no conversion to ${target}`);
    return undefined;
  }
  if (info.format === target && target !== 'raw') {
    log?.(`${fileName} is already ${target}: no conversion`);
    return undefined;
  }
  return target;
}

export interface ConvertedStep extends ConvertedDisk {
  /** The stored file's new name (`disk.raw` -> `disk.qcow2`). */
  fileName: string;
  /** The format the disk had before. */
  originalFormat: DiskFormat;
}

/**
 * Converts a spooled disk file to `target`. Undefined when there is nothing to do (already that format, or an
 * ISO); the caller then stores the spooled file as it is. Throws the same refusals an import without conversion
 * would (hazards, limits, qemu-img info), plus the conversion's own (`ConvertTimeout`, `ConvertLimit`, ...).
 */
export async function convertSpooled(
  path: string,
  size: number,
  target: ConvertTarget,
  fileName: string,
  opts: ConvertStepOptions,
): Promise<ConvertedStep | undefined> {
  const { limits, signal } = opts;
  const info = await detectFileFormat(path);
  assertSafeDisk(info, { maxVirtualSize: limits.maxVirtualSize });
  if (info.format === 'iso') {
    opts.log?.(`${fileName} is an ISO image: stored as it is, no conversion to ${target}`);
    return undefined;
  }
  if (info.format === target) {
    opts.log?.(`${fileName} is already ${target}: no conversion`);
    return undefined;
  }
  const probed = await probeImage(path, {
    format: info.format,
    maxVirtualSize: limits.maxVirtualSize,
    ...(signal ? { signal } : {}),
    displayName: fileName,
  });
  const virtualSize = info.format === 'raw' ? size : probed.virtualSize;
  opts.log?.(`converting ${fileName} from ${info.format} to ${target} (${virtualSize} virtual bytes)`);
  const out = await convertImage(path, {
    from: info.format,
    to: target,
    virtualSize,
    dir: opts.tmpDir,
    ...(limits.convertTimeoutMs !== undefined ? { limits: { timeoutMs: limits.convertTimeoutMs } } : {}),
    ...(signal ? { signal } : {}),
    displayName: fileName,
  });
  const name = convertedName(fileName, target);
  opts.log?.(`converted ${fileName} (${size} bytes, ${info.format}) to ${name} (${out.size} bytes, ${target}) in ${out.durationMs} ms`);
  return { ...out, fileName: name, originalFormat: info.format };
}
