/**
 * Disk errors as typed values. Each is classified once, here, where the problem is understood:
 * `permanent: true` means the same bytes will fail the same way (fail the import now, with the message);
 * `permanent: false` means a retry may succeed (a slow node, a missing tool on this node, a cut stream).
 */

export type DiskErrorReason =
  /** The image refers to another image (qcow2 backing file, differencing VHD, VMDK parent). */
  | 'BackingFile'
  /** A qcow2 image keeping its data in an external file. */
  | 'ExternalDataFile'
  /** A VMDK whose extents live in other files (descriptor-only VMDK, split or flat VMDK). */
  | 'ExternalExtent'
  | 'Encrypted'
  /** A format or version qemu-img cannot turn into a usable disk (e.g. old qcow v1). */
  | 'UnsupportedFormat'
  /** The image says it is corrupt (qcow2 corrupt bit). */
  | 'CorruptImage'
  | 'VirtualSizeTooLarge'
  /** The bytes are not a disk image at all (e.g. an HTML error page answered with 200). */
  | 'NotADiskImage'
  /** qemu-img refused the image. */
  | 'ProbeFailed'
  /** qemu-img did not finish within the wall timeout and was killed. */
  | 'ProbeTimeout'
  /** qemu-img hit its CPU or address-space limit. */
  | 'ProbeLimit'
  /** qemu-img could not be started (not installed on this node). */
  | 'ProbeUnavailable'
  | 'CorruptCompression'
  | 'TruncatedCompression'
  | 'TooManyCompressionLayers'
  /** A decompressor binary (xz, zstd, bzip2) could not be started. */
  | 'DecompressorUnavailable'
  /** A decompressor process died from a signal (e.g. the OOM killer). */
  | 'DecompressorFailed'
  | 'ChecksumMismatch'
  /** qemu-img convert refused or failed on an image that qemu-img info accepted. */
  | 'ConvertFailed'
  /** qemu-img convert did not finish within its wall timeout and was killed. */
  | 'ConvertTimeout'
  /** qemu-img convert hit its CPU, memory or output-size limit. */
  | 'ConvertLimit'
  /** The worker's scratch folder ran out of space (spooling or converting). */
  | 'NoScratchSpace';

export interface DiskErrorInit {
  reason: DiskErrorReason;
  permanent: boolean;
  cause?: unknown;
}

export class DiskError extends Error {
  override readonly name = 'DiskError';
  readonly reason: DiskErrorReason;
  readonly permanent: boolean;

  constructor(message: string, init: DiskErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.reason = init.reason;
    this.permanent = init.permanent;
  }

  /** A plain object that survives structured clone (worker threads) and JSON. */
  toJSON(): SerializedDiskError {
    return { name: 'DiskError', message: this.message, reason: this.reason, permanent: this.permanent };
  }

  static fromJSON(s: SerializedDiskError): DiskError {
    return new DiskError(s.message, { reason: s.reason, permanent: s.permanent });
  }
}

export interface SerializedDiskError {
  name: 'DiskError';
  message: string;
  reason: DiskErrorReason;
  permanent: boolean;
}

export function isDiskError(e: unknown): e is DiskError {
  return e instanceof DiskError;
}
