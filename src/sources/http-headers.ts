/**
 * What the HTTP source reads from response heads and first bytes: lengths, byte ranges, validators (for
 * resuming), the file name, and whether the body is an HTML page rather than a disk image. Pure functions of
 * their inputs; none of them throws.
 */

/** Undici's header record: lowercase names, repeated headers as arrays. */
export type HeaderRecord = Record<string, string | string[] | undefined>;

export function headerValue(headers: HeaderRecord, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** `Content-Length` as a safe integer, or undefined when absent or not a plain decimal number. */
export function parseContentLength(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (!/^\d{1,16}$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : undefined;
}

export interface ContentRange {
  /** First byte of the range. */
  start: number;
  /** Last byte of the range (inclusive). */
  end: number;
  /** Complete length, when the server knows it (`*` otherwise). */
  total: number | undefined;
}

/** `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`); undefined when malformed or inconsistent. */
export function parseContentRange(value: string | undefined): ContentRange | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*bytes\s+(\d{1,16})-(\d{1,16})\/(\d{1,16}|\*)\s*$/i.exec(value);
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = m[3] === '*' ? undefined : Number(m[3]);
  // 16 digits can pass 2^53: such a number is no longer exact, so the range cannot be trusted.
  if (!Number.isSafeInteger(end) || (total !== undefined && !Number.isSafeInteger(total))) return undefined;
  if (end < start || (total !== undefined && end >= total)) return undefined;
  return { start, end, total };
}

/** Whether `Accept-Ranges` offers byte ranges. */
export function acceptsByteRanges(value: string | undefined): boolean {
  return value !== undefined && value.split(',').some((t) => t.trim().toLowerCase() === 'bytes');
}

/** What identifies the bytes of one version of the file (RFC 9110 validators) and its length. */
export interface Representation {
  etag: string | undefined;
  lastModified: string | undefined;
  length: number | undefined;
}

export function representationOf(headers: HeaderRecord): Representation {
  return {
    etag: headerValue(headers, 'etag')?.trim() || undefined,
    lastModified: headerValue(headers, 'last-modified')?.trim() || undefined,
    length: parseContentLength(headerValue(headers, 'content-length')),
  };
}

function isWeak(etag: string | undefined): boolean {
  return etag !== undefined && /^w\//i.test(etag);
}

/**
 * The `If-Range` value that guards a resume: a strong ETag, else Last-Modified (a weak ETag must not be sent
 * in If-Range). Undefined when the server gave neither: such a download cannot be resumed safely.
 */
export function ifRangeValidator(rep: Representation): string | undefined {
  if (rep.etag !== undefined && !isWeak(rep.etag)) return rep.etag;
  return rep.lastModified;
}

/**
 * Whether a full (200) answer to a resume is certainly the same bytes as the first answer, so the part already
 * read may be skipped: neither the ETag nor Last-Modified changed (an absent one must stay absent), at least one
 * of them exists, no ETag is weak (weak means "equivalent", not "byte-identical"), and the lengths agree.
 */
export function sameRepresentation(first: Representation, now: Representation): boolean {
  if (first.etag === undefined && first.lastModified === undefined) return false;
  if (isWeak(first.etag) || isWeak(now.etag)) return false;
  return first.etag === now.etag && first.lastModified === now.lastModified && first.length === now.length;
}

/** Characters kept in file names; everything else becomes `_`. */
const UNSAFE_NAME_CHARS = /[^A-Za-z0-9._+-]+/g;
const MAX_NAME_LENGTH = 200;

/**
 * A file name that is one plain path component: the last segment of whatever was given, control and unusual
 * characters replaced by `_`, no leading dots (so never `.`, `..` or hidden), at most 200 characters (the end,
 * with the extensions, is kept). Undefined when nothing usable remains.
 */
export function sanitiseFileName(raw: string): string | undefined {
  const last = raw.replace(/\\/g, '/').split('/').pop() ?? '';
  let name = last.replace(UNSAFE_NAME_CHARS, '_').replace(/^[._]+/, '').replace(/_+$/, '');
  if (name.length > MAX_NAME_LENGTH) name = name.slice(name.length - MAX_NAME_LENGTH).replace(/^[._]+/, '');
  return name === '' ? undefined : name;
}

function decodePercent(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The file name a `Content-Disposition` header suggests: `filename*` (RFC 8187, `UTF-8''ubuntu%20x.img`)
 * before `filename` (quoted or a token). Unsanitised; undefined when there is none.
 */
export function contentDispositionFileName(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const star = /(?:^|;)\s*filename\*\s*=\s*([^;]*)/i.exec(value);
  if (star?.[1] !== undefined) {
    const m = /^\s*[A-Za-z0-9!#$&+^`{}~-]*'[^']*'(.+?)\s*$/.exec(star[1]);
    if (m?.[1] !== undefined) return decodePercent(m[1]);
  }
  const plain = /(?:^|;)\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/i.exec(value);
  const quoted = plain?.[1];
  if (quoted !== undefined) return quoted.replace(/\\(.)/g, '$1');
  return plain?.[2];
}

/** The name used when neither the headers nor the URL give one. */
export const DEFAULT_FILE_NAME = 'disk.img';

/**
 * The downloaded file's name: from `Content-Disposition`, else the last segment of the final URL's path,
 * sanitised (see `sanitiseFileName`), else `disk.img`.
 */
export function downloadFileName(contentDisposition: string | undefined, finalUrl: URL): string {
  const fromHeader = contentDispositionFileName(contentDisposition);
  const fromHeaderSafe = fromHeader === undefined ? undefined : sanitiseFileName(fromHeader);
  if (fromHeaderSafe !== undefined) return fromHeaderSafe;
  const segment = finalUrl.pathname.split('/').pop() ?? '';
  return sanitiseFileName(decodePercent(segment)) ?? DEFAULT_FILE_NAME;
}

/** Bytes below which a body cannot be a disk image (one sector); compressed data excepted. */
export const MIN_DISK_IMAGE_BYTES = 512;

const HTML_STARTS = ['<!doctype html', '<html', '<head', '<body', '<?xml version', '<!--'];

/**
 * Whether the first bytes of a body are an HTML (or XHTML) page: after an optional UTF-8 BOM and white space
 * it starts with `<!DOCTYPE html`, `<html`, `<head` or `<body` (any case). An XML prolog or a comment counts
 * only when `<html` follows within the head. With `Content-Type: text/html` (or XHTML), any body whose first
 * non-blank byte is `<` counts: the server says it is a page and it looks like markup.
 */
export function looksLikeHtml(head: Uint8Array, contentType: string | undefined): boolean {
  let i = 0;
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) i = 3;
  while (i < head.length && (head[i] === 0x20 || head[i] === 0x09 || head[i] === 0x0a || head[i] === 0x0d)) i++;
  if (head[i] !== 0x3c /* < */) return false;
  const type = contentType?.split(';')[0]?.trim().toLowerCase();
  if (type === 'text/html' || type === 'application/xhtml+xml') return true;
  const text = Buffer.from(head.buffer, head.byteOffset + i, Math.min(head.length - i, 1024)).toString('latin1').toLowerCase();
  const start = HTML_STARTS.find((s) => text.startsWith(s));
  if (start === undefined) return false;
  if (start === '<?xml version' || start === '<!--') return text.includes('<html');
  return true;
}
