/**
 * Disk format detection from header bytes (see reference/disk-formats.md). Pure functions of a head (and,
 * for fixed VHD, the tail) of the unwrapped bytes: they never throw on any input; what is dangerous about an
 * image is reported as `hazards`, and `assertSafeDisk` turns those into errors.
 */
import { DiskError, type DiskErrorReason } from './errors.ts';
import { startsWith } from './sniff.ts';

/** Disk formats as the image status names them (`vhd` is qemu's `vpc`, `iso` is raw to qemu). */
export type DiskFormat = 'qcow2' | 'raw' | 'vmdk' | 'vdi' | 'vhd' | 'vhdx' | 'iso';

export const DISK_FORMATS: readonly DiskFormat[] = ['qcow2', 'raw', 'vmdk', 'vdi', 'vhd', 'vhdx', 'iso'];

/** The name qemu-img uses for a format (`-f`). */
export function qemuFormatName(format: DiskFormat): 'qcow2' | 'raw' | 'vmdk' | 'vdi' | 'vpc' | 'vhdx' {
  switch (format) {
    case 'vhd':
      return 'vpc';
    case 'iso':
      return 'raw';
    default:
      return format;
  }
}

/**
 * Head bytes `detectFormat` needs to see everything it knows about: the ISO 9660 volume descriptor sits at
 * 32769, a VMDK's embedded descriptor and a qcow2's header extensions and backing file name within the
 * first clusters.
 */
export const FORMAT_HEAD_BYTES = 64 * 1024;

/** Bytes at the end of a file that hold a VHD footer. */
export const VHD_FOOTER_BYTES = 512;

/** Something in the header that makes an image unsafe or useless to import as one self-contained disk. */
export type DiskHazard =
  /** The image refers to a parent image (qcow2 backing file, differencing VHD/VDI, VMDK parent). */
  | { kind: 'backing-file'; name?: string }
  /** qcow2 incompatible feature bit 2: guest data lives in another file. */
  | { kind: 'external-data-file'; name?: string }
  /** A VMDK descriptor (text) whose extents are other files. */
  | { kind: 'external-extent'; name?: string }
  | { kind: 'encrypted' }
  /** qcow2 incompatible feature bit 1: qemu marked the image corrupt. */
  | { kind: 'corrupt' }
  /** A version of the format qemu-img does not read under this name (e.g. qcow v1). */
  | { kind: 'unsupported-version'; version: number }
  /** HTML or XML text where a disk was expected: an error page delivered as the image. */
  | { kind: 'markup' };

export interface DiskInfo {
  format: DiskFormat;
  /** Guest-visible size in bytes as the header states it; undefined when the header does not (raw, iso, vhdx). */
  virtualSize: number | undefined;
  hazards: DiskHazard[];
  /** qcow2 header version: 2 (compat=0.10) or 3 (compat=1.1); 1 is the old qcow format. */
  version?: number;
  /**
   * qemu's subformat name where it matters: vmdk `monolithicSparse` / `streamOptimized` (or the descriptor's
   * createType); vhd `fixed` / `dynamic` / `differencing`; vdi `dynamic` / `fixed`.
   */
  subformat?: string;
  /** Metadata qemu-img needs lives at the end of the file (VMDK footer, fixed VHD footer). */
  footerAtEnd?: boolean;
}

export interface DetectFormatOptions {
  /** The last bytes of the file (at least 512), to recognise a fixed VHD whose only footer is at the end. */
  tail?: Uint8Array;
}

/** What the header bytes say the disk is. `head` should be the first `FORMAT_HEAD_BYTES` (fewer is fine at EOF). */
export function detectFormat(head: Uint8Array, opts: DetectFormatOptions = {}): DiskInfo {
  if (startsWith(head, QCOW_MAGIC, 0)) return detectQcow(head);
  if (startsWith(head, VMDK4_MAGIC, 0)) return detectVmdk4(head);
  if (startsWith(head, VMDK3_MAGIC, 0)) {
    // The old ESX "COWD" sparse format: capacity in sectors at 12 (LE u32).
    return { format: 'vmdk', virtualSize: u32le(head, 12) * 512, hazards: [] };
  }
  if (startsWith(head, VHDX_MAGIC, 0)) return { format: 'vhdx', virtualSize: undefined, hazards: [] };
  if (startsWith(head, VHD_COOKIE, 0)) {
    const footer = readVhdFooter(head, 0);
    if (footer) return vhdInfo(footer, false);
  }
  if (startsWith(head, VDI_SIGNATURE, 64)) return detectVdi(head);
  const descriptor = detectVmdkDescriptor(head);
  if (descriptor) return descriptor;
  if (startsWith(head, ISO_MAGIC, 32769)) return { format: 'iso', virtualSize: undefined, hazards: [] };
  if (opts.tail) {
    const footer = detectVhdFooter(opts.tail);
    if (footer) return vhdInfo(footer, true);
  }
  return { format: 'raw', virtualSize: undefined, hazards: looksLikeMarkup(head) ? [{ kind: 'markup' }] : [] };
}

export type VhdDiskType = 'fixed' | 'dynamic' | 'differencing' | 'unknown';

export interface VhdFooter {
  /** "Current size" at 48 of the footer. */
  virtualSize: number;
  diskType: VhdDiskType;
}

/**
 * Reads the VHD footer in the last 512 bytes of `tail` (a fixed VHD is raw data followed by this footer).
 * Null when there is none.
 */
export function detectVhdFooter(tail: Uint8Array): VhdFooter | null {
  if (tail.length < VHD_FOOTER_BYTES) return null;
  return readVhdFooter(tail, tail.length - VHD_FOOTER_BYTES);
}

export interface DiskLimits {
  /** Largest acceptable virtual size in bytes; unset = no limit. */
  maxVirtualSize?: number;
}

/**
 * Throws a permanent `DiskError` for the first hazard of `info`, or when its virtual size exceeds the limit.
 * Cheap: call it on the header as soon as the head has arrived, before anything expensive.
 */
export function assertSafeDisk(info: DiskInfo, limits: DiskLimits = {}): void {
  const hazard = info.hazards[0];
  if (hazard) throw hazardError(info, hazard);
  if (info.virtualSize !== undefined) assertVirtualSize(info.virtualSize, limits.maxVirtualSize);
}

/** Throws `VirtualSizeTooLarge` when `size` exceeds `max` (no limit when `max` is unset). */
export function assertVirtualSize(size: number, max: number | undefined): void {
  if (max !== undefined && size > max) {
    throw new DiskError(
      `the disk's virtual size ${size} bytes exceeds the allowed maximum of ${max} bytes: ` +
        'shrink the image or raise the configured maximum virtual size',
      { reason: 'VirtualSizeTooLarge', permanent: true },
    );
  }
}

const FLATTEN = 'make it self-contained first, e.g. `qemu-img convert -O qcow2 <image> <flat.qcow2>`';

function hazardError(info: DiskInfo, h: DiskHazard): DiskError {
  const what = info.format === 'vhd' ? 'VHD' : info.format.toUpperCase();
  let reason: DiskErrorReason;
  let message: string;
  switch (h.kind) {
    case 'backing-file':
      reason = 'BackingFile';
      message =
        `the ${what} image refers to a backing (parent) image${h.name ? ` "${h.name}"` : ''}; ` +
        `only self-contained images can be imported: ${FLATTEN}`;
      break;
    case 'external-data-file':
      reason = 'ExternalDataFile';
      message =
        `the qcow2 image keeps its data in an external file${h.name ? ` "${h.name}"` : ''}; ` +
        `only self-contained images can be imported: ${FLATTEN}`;
      break;
    case 'external-extent':
      reason = 'ExternalExtent';
      message =
        `this is a VMDK descriptor whose data lives in other files${h.name ? ` (extent "${h.name}")` : ''}; ` +
        'import a single-file VMDK instead, e.g. ' +
        '`qemu-img convert -O vmdk -o subformat=streamOptimized <disk.vmdk> <single.vmdk>`';
      break;
    case 'encrypted':
      reason = 'Encrypted';
      message = `the ${what} image is encrypted; decrypt it first (qemu-img convert with the key) and import the result`;
      break;
    case 'corrupt':
      reason = 'CorruptImage';
      message = `the ${what} image is marked corrupt; repair it with \`qemu-img check -r all <image>\` and import again`;
      break;
    case 'unsupported-version':
      reason = 'UnsupportedFormat';
      message =
        h.version === 1 && info.format === 'qcow2'
          ? 'this is the old qcow (version 1) format; convert it with `qemu-img convert -f qcow -O qcow2 <in> <out>`'
          : `${what} version ${h.version} is not supported`;
      break;
    case 'markup':
      reason = 'NotADiskImage';
      message =
        'the data is an HTML/XML document, not a disk image: the server probably answered with an error or ' +
        'login page; check the URL and its access rights';
      break;
  }
  return new DiskError(message, { reason, permanent: true });
}

const QCOW_MAGIC = Uint8Array.of(0x51, 0x46, 0x49, 0xfb);
const VMDK4_MAGIC = Uint8Array.of(0x4b, 0x44, 0x4d, 0x56); // "KDMV"
const VMDK3_MAGIC = Uint8Array.of(0x43, 0x4f, 0x57, 0x44); // "COWD"
const VHDX_MAGIC = ascii('vhdxfile');
const VHD_COOKIE = ascii('conectix');
const VDI_SIGNATURE = Uint8Array.of(0x7f, 0x10, 0xda, 0xbe);
const ISO_MAGIC = ascii('CD001');

const QCOW2_INCOMPAT_CORRUPT = 1n << 1n;
const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;
const QCOW2_EXT_END = 0;
const QCOW2_EXT_DATA_FILE = 0x44415441;

function detectQcow(head: Uint8Array): DiskInfo {
  const version = u32be(head, 4);
  const virtualSize = u64be(head, 24);
  const hazards: DiskHazard[] = [];
  const info: DiskInfo = { format: 'qcow2', virtualSize, hazards, version };
  if (version !== 2 && version !== 3) {
    hazards.push({ kind: 'unsupported-version', version });
    return info;
  }
  const backingOffset = u64be(head, 8);
  if (backingOffset !== 0) {
    const size = u32be(head, 16);
    hazards.push(named('backing-file', text(head, backingOffset, Math.min(size, 1023))));
  }
  if (u32be(head, 32) !== 0) hazards.push({ kind: 'encrypted' });
  if (version === 3) {
    const incompatible = big64be(head, 72);
    if ((incompatible & QCOW2_INCOMPAT_DATA_FILE) !== 0n) {
      hazards.push(named('external-data-file', qcow2DataFileName(head)));
    }
    if ((incompatible & QCOW2_INCOMPAT_CORRUPT) !== 0n) hazards.push({ kind: 'corrupt' });
  }
  return info;
}

/** The data file name from the qcow2 header extensions, when they are within the head. */
function qcow2DataFileName(head: Uint8Array): string | undefined {
  let off = u32be(head, 100); // header_length (v3)
  if (off < 104) return undefined;
  for (let i = 0; i < 64 && off + 8 <= head.length; i++) {
    const type = u32be(head, off);
    const len = u32be(head, off + 4);
    if (type === QCOW2_EXT_END) return undefined;
    if (type === QCOW2_EXT_DATA_FILE) return text(head, off + 8, Math.min(len, 1023));
    off += 8 + Math.ceil(len / 8) * 8;
  }
  return undefined;
}

const VMDK_FLAG_COMPRESSED = 1 << 16;
const VMDK_COMPRESSION_DEFLATE = 1;
const VMDK_GD_AT_END = 0xffffffffffffffffn;

function detectVmdk4(head: Uint8Array): DiskInfo {
  const capacitySectors = big64le(head, 12);
  const flags = u32le(head, 8);
  const compressAlgorithm = u16le(head, 77);
  const gdAtEnd = head.length >= 64 && big64le(head, 56) === VMDK_GD_AT_END;
  const hazards: DiskHazard[] = [];
  const info: DiskInfo = { format: 'vmdk', virtualSize: toNumber(capacitySectors * 512n), hazards };
  // The embedded descriptor (normally sector 1, 20 sectors) names the create type and any parent.
  const descOffset = toNumber(big64le(head, 28) * 512n);
  const descSize = toNumber(big64le(head, 36) * 512n);
  const desc = descOffset > 0 && descSize > 0 ? text(head, descOffset, Math.min(descSize, 64 * 1024)) : undefined;
  const createType = desc === undefined ? undefined : /^\s*createType\s*=\s*"([^"]*)"/m.exec(desc)?.[1];
  const streamOptimized =
    createType === 'streamOptimized' ||
    ((flags & VMDK_FLAG_COMPRESSED) !== 0 && compressAlgorithm === VMDK_COMPRESSION_DEFLATE);
  info.subformat = streamOptimized ? 'streamOptimized' : (createType ?? 'monolithicSparse');
  if (gdAtEnd) info.footerAtEnd = true;
  const parent = desc === undefined ? undefined : /^\s*parentFileNameHint\s*=\s*"([^"]*)"/m.exec(desc)?.[1];
  if (parent !== undefined && parent !== '') hazards.push({ kind: 'backing-file', name: parent });
  return info;
}

/** A text VMDK descriptor: its extents are other files, so it is never importable on its own. */
function detectVmdkDescriptor(head: Uint8Array): DiskInfo | null {
  const t = text(head, bomLength(head), 4096);
  if (t === undefined) return null;
  const isDescriptor =
    /^\s*#\s*Disk\s+DescriptorFile/i.test(t) ||
    (/^\s*version\s*=\s*\d/m.test(t) && /^\s*createType\s*=/m.test(t) && /^\s*(RW|RDONLY|NOACCESS)\s+\d+\s/m.test(t));
  if (!isDescriptor) return null;
  const createType = /^\s*createType\s*=\s*"([^"]*)"/m.exec(t)?.[1];
  const extent = /^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+\w+\s+"([^"]*)"/m.exec(t)?.[1];
  const info: DiskInfo = {
    format: 'vmdk',
    virtualSize: undefined,
    hazards: [named('external-extent', extent)],
  };
  if (createType) info.subformat = createType;
  const parent = /^\s*parentFileNameHint\s*=\s*"([^"]*)"/m.exec(t)?.[1];
  if (parent) info.hazards.push({ kind: 'backing-file', name: parent });
  return info;
}

function detectVdi(head: Uint8Array): DiskInfo {
  const imageType = u32le(head, 76);
  const hazards: DiskHazard[] = [];
  const info: DiskInfo = { format: 'vdi', virtualSize: u64le(head, 368), hazards };
  if (imageType === 1) info.subformat = 'dynamic';
  else if (imageType === 2) info.subformat = 'fixed';
  else if (imageType === 4) {
    info.subformat = 'differencing';
    hazards.push({ kind: 'backing-file' });
  }
  return info;
}

/** A VHD's facts from its footer (a differencing disk has a parent: a backing-file hazard). */
function vhdInfo(footer: VhdFooter, footerAtEnd: boolean): DiskInfo {
  return {
    format: 'vhd',
    virtualSize: footer.virtualSize,
    hazards: footer.diskType === 'differencing' ? [{ kind: 'backing-file' }] : [],
    subformat: footer.diskType,
    ...(footerAtEnd ? { footerAtEnd: true } : {}),
  };
}

function readVhdFooter(bytes: Uint8Array, at: number): VhdFooter | null {
  if (!startsWith(bytes, VHD_COOKIE, at) || bytes.length < at + 64) return null;
  const type = u32be(bytes, at + 60);
  const diskType: VhdDiskType = type === 2 ? 'fixed' : type === 3 ? 'dynamic' : type === 4 ? 'differencing' : 'unknown';
  return { virtualSize: u64be(bytes, at + 48), diskType };
}

/** HTML or XML at the start (after an optional BOM and whitespace). */
function looksLikeMarkup(head: Uint8Array): boolean {
  const t = text(head, bomLength(head), 256);
  return t !== undefined && /^\s*<(?:!doctype\s|html[\s>]|\?xml\s|head[\s>]|body[\s>])/i.test(t);
}

const UTF8_BOM = Uint8Array.of(0xef, 0xbb, 0xbf);

function bomLength(b: Uint8Array): number {
  return startsWith(b, UTF8_BOM, 0) ? 3 : 0;
}

// --- byte readers: bounds-checked, never throwing (0 when out of range) ---

function u16le(b: Uint8Array, off: number): number {
  if (off + 2 > b.length) return 0;
  return b[off]! | (b[off + 1]! << 8);
}

function u32le(b: Uint8Array, off: number): number {
  if (off + 4 > b.length) return 0;
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)) + b[off + 3]! * 0x1000000;
}

function u32be(b: Uint8Array, off: number): number {
  if (off + 4 > b.length) return 0;
  return b[off]! * 0x1000000 + ((b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!);
}

function big64le(b: Uint8Array, off: number): bigint {
  if (off + 8 > b.length) return 0n;
  return (BigInt(u32le(b, off + 4)) << 32n) | BigInt(u32le(b, off));
}

function big64be(b: Uint8Array, off: number): bigint {
  if (off + 8 > b.length) return 0n;
  return (BigInt(u32be(b, off)) << 32n) | BigInt(u32be(b, off + 4));
}

/** u64 as a number; above 2^53 it is approximate, which is fine for sizes (they are far over any limit). */
function u64le(b: Uint8Array, off: number): number {
  return toNumber(big64le(b, off));
}

function u64be(b: Uint8Array, off: number): number {
  return toNumber(big64be(b, off));
}

function toNumber(v: bigint): number {
  return Number(v);
}

/**
 * Latin-1 text of `b[off, off+len)`, cut at the first NUL; undefined when out of range or not text-like
 * (control characters other than tab, CR, LF).
 */
function text(b: Uint8Array, off: number, len: number): string | undefined {
  if (!Number.isSafeInteger(off) || off < 0 || off >= b.length || len <= 0) return undefined;
  const end = Math.min(b.length, off + len);
  let s = '';
  for (let i = off; i < end; i++) {
    const c = b[i]!;
    if (c === 0) break;
    if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return undefined;
    s += String.fromCharCode(c);
  }
  return s === '' ? undefined : s;
}

function named(kind: 'backing-file' | 'external-data-file' | 'external-extent', name: string | undefined): DiskHazard {
  return name !== undefined && name !== '' ? { kind, name } : { kind };
}

function ascii(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
