/**
 * What we know about disk images: compression sniffing and unwrapping, format detection, probing with
 * qemu-img under limits, probe samples, checksums, and the human units of image status.
 * Imports nothing of ours outside src/disk.
 */
export { DiskError, isDiskError, type DiskErrorReason, type DiskErrorInit, type SerializedDiskError } from './errors.ts';
export { sniffCompression, isTar, COMPRESSION_SNIFF_BYTES, TAR_SNIFF_BYTES, type Compression } from './sniff.ts';
export {
  detectFormat,
  detectVhdFooter,
  assertSafeDisk,
  assertVirtualSize,
  qemuFormatName,
  DISK_FORMATS,
  FORMAT_HEAD_BYTES,
  VHD_FOOTER_BYTES,
  type DiskFormat,
  type DiskInfo,
  type DiskHazard,
  type DiskLimits,
  type DetectFormatOptions,
  type VhdFooter,
  type VhdDiskType,
} from './format.ts';
export {
  probeImage,
  runLimited,
  hasPrlimit,
  DEFAULT_PROBE_LIMITS,
  type ProbeLimits,
  type ProbeOptions,
  type ProbeResult,
  type QemuImgInfo,
  type RunResult,
} from './probe.ts';
export {
  ProbeSample,
  PROBE_HEAD_BYTES,
  VMDK_TAIL_BYTES,
  type ProbeSampleOptions,
  type SealedSample,
} from './sample.ts';
export { unwrap, peek, type UnwrapOptions, type Unwrapped } from './unwrap.ts';
export {
  convertImage,
  convertArgs,
  convertedName,
  detectFileFormat,
  maxConvertedSize,
  CONVERT_TARGETS,
  DEFAULT_CONVERT_LIMITS,
  type ConvertTarget,
  type ConvertOptions,
  type ConvertedDisk,
} from './convert.ts';
export {
  MultiHash,
  HashingStream,
  verifyChecksums,
  algorithmsFor,
  HASH_ALGORITHMS,
  HASH_HEX_LENGTH,
  type HashAlgorithm,
  type Checksums,
} from './checksum.ts';
export { formatBytes, formatSpeed, formatPercent, formatProgress, parsePercent, type ProgressOptions } from './units.ts';
