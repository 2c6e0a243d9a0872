import { describe, expect, it } from 'vitest';
import { OciError } from '../../src/oci/errors.ts';
import { isDrop, isIdleTimeout, networkError, parseSourceUrl, redactUrl, statusError } from '../../src/sources/http-errors.ts';
import {
  acceptsByteRanges,
  contentDispositionFileName,
  downloadFileName,
  ifRangeValidator,
  looksLikeHtml,
  parseContentLength,
  parseContentRange,
  sameRepresentation,
  sanitiseFileName,
  type Representation,
} from '../../src/sources/http-headers.ts';

function caught(f: () => unknown): OciError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(OciError);
    return e as OciError;
  }
  throw new Error('expected an error');
}

describe('response heads', () => {
  it('parses Content-Length strictly', () => {
    expect(parseContentLength('1234')).toBe(1234);
    expect(parseContentLength(' 0 ')).toBe(0);
    expect(parseContentLength(undefined)).toBeUndefined();
    expect(parseContentLength('12a')).toBeUndefined();
    expect(parseContentLength('-1')).toBeUndefined();
    expect(parseContentLength('99999999999999999')).toBeUndefined();
  });

  it('parses Content-Range and refuses inconsistent ones', () => {
    expect(parseContentRange('bytes 100-199/1000')).toEqual({ start: 100, end: 199, total: 1000 });
    expect(parseContentRange('bytes 5-9/*')).toEqual({ start: 5, end: 9, total: undefined });
    expect(parseContentRange('bytes 10-5/100')).toBeUndefined();
    expect(parseContentRange('bytes 0-100/100')).toBeUndefined();
    expect(parseContentRange('bytes */100')).toBeUndefined();
    expect(parseContentRange(undefined)).toBeUndefined();
  });

  it('reads Accept-Ranges', () => {
    expect(acceptsByteRanges('bytes')).toBe(true);
    expect(acceptsByteRanges('none, Bytes')).toBe(true);
    expect(acceptsByteRanges('none')).toBe(false);
    expect(acceptsByteRanges(undefined)).toBe(false);
  });

  it('guards a resume with a strong ETag, else Last-Modified, never a weak ETag', () => {
    const lm = 'Mon, 01 Jan 2024 12:00:00 GMT';
    expect(ifRangeValidator({ etag: '"a"', lastModified: lm, length: 1 })).toBe('"a"');
    expect(ifRangeValidator({ etag: 'W/"a"', lastModified: lm, length: 1 })).toBe(lm);
    expect(ifRangeValidator({ etag: 'W/"a"', lastModified: undefined, length: 1 })).toBeUndefined();
    expect(ifRangeValidator({ etag: undefined, lastModified: undefined, length: 1 })).toBeUndefined();
  });

  it('skips already-read bytes of a 200 only when neither validator nor length changed', () => {
    const lm = 'Mon, 01 Jan 2024 12:00:00 GMT';
    const first: Representation = { etag: '"a"', lastModified: lm, length: 10 };
    expect(sameRepresentation(first, { ...first })).toBe(true);
    expect(sameRepresentation(first, { ...first, etag: '"b"' })).toBe(false);
    expect(sameRepresentation(first, { ...first, etag: undefined })).toBe(false);
    expect(sameRepresentation(first, { ...first, lastModified: 'Tue, 02 Jan 2024 12:00:00 GMT' })).toBe(false);
    expect(sameRepresentation(first, { ...first, length: 11 })).toBe(false);
    expect(sameRepresentation({ ...first, etag: undefined }, { ...first, etag: undefined })).toBe(true);
    expect(sameRepresentation({ ...first, etag: 'W/"a"' }, { ...first, etag: 'W/"a"' })).toBe(false);
    const none: Representation = { etag: undefined, lastModified: undefined, length: 10 };
    expect(sameRepresentation(none, { ...none })).toBe(false);
  });
});

describe('file names', () => {
  it('keeps plain names and makes anything else one safe path component', () => {
    expect(sanitiseFileName('ubuntu-22.04.img')).toBe('ubuntu-22.04.img');
    expect(sanitiseFileName('../../etc/passwd')).toBe('passwd');
    expect(sanitiseFileName('C:\\images\\win.vhdx')).toBe('win.vhdx');
    expect(sanitiseFileName('my disk (1).qcow2')).toBe('my_disk_1_.qcow2');
    expect(sanitiseFileName('.hidden.img')).toBe('hidden.img');
    expect(sanitiseFileName('..')).toBeUndefined();
    expect(sanitiseFileName('a\u0000b\n.img')).toBe('a_b_.img');
    expect(sanitiseFileName('')).toBeUndefined();
    const long = sanitiseFileName(`${'x'.repeat(300)}.qcow2.xz`)!;
    expect(long.length).toBeLessThanOrEqual(200);
    expect(long.endsWith('.qcow2.xz')).toBe(true);
  });

  it('reads Content-Disposition (filename* first)', () => {
    expect(contentDispositionFileName('attachment; filename="ubuntu.img"')).toBe('ubuntu.img');
    expect(contentDispositionFileName('attachment; filename=ubuntu.img')).toBe('ubuntu.img');
    expect(contentDispositionFileName(`attachment; filename="a.img"; filename*=UTF-8''b%20c.img`)).toBe('b c.img');
    expect(contentDispositionFileName('attachment; filename="q\\"x.img"')).toBe('q"x.img');
    expect(contentDispositionFileName('inline')).toBeUndefined();
    expect(contentDispositionFileName(undefined)).toBeUndefined();
  });

  it('names the download from the header, else the final URL path, else disk.img', () => {
    const url = new URL('https://cdn.example/images/jammy%20server.img?X-Amz-Signature=abc');
    expect(downloadFileName(undefined, url)).toBe('jammy_server.img');
    expect(downloadFileName('attachment; filename="../ubuntu.iso"', url)).toBe('ubuntu.iso');
    expect(downloadFileName('attachment; filename=".."', url)).toBe('jammy_server.img');
    expect(downloadFileName(undefined, new URL('https://cdn.example/'))).toBe('disk.img');
    expect(downloadFileName(undefined, new URL('https://cdn.example/dir/'))).toBe('disk.img');
  });
});

describe('HTML detection', () => {
  const b = (s: string) => Buffer.from(s);
  it('recognises pages by their first bytes', () => {
    expect(looksLikeHtml(b('<!DOCTYPE html><html>'), undefined)).toBe(true);
    expect(looksLikeHtml(b('\ufeff\n  <HTML lang="en">'), 'application/octet-stream')).toBe(true);
    expect(looksLikeHtml(b('<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'), undefined)).toBe(true);
    expect(looksLikeHtml(b('<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>'), undefined)).toBe(false);
    expect(looksLikeHtml(b('<p>error</p>'), 'text/html; charset=utf-8')).toBe(true);
  });

  it('does not take disk images for pages, whatever the Content-Type', () => {
    expect(looksLikeHtml(Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]), 'text/html')).toBe(false);
    expect(looksLikeHtml(Buffer.alloc(512), 'text/html')).toBe(false);
    expect(looksLikeHtml(b('<p>'), 'application/octet-stream')).toBe(false);
  });
});

describe('URLs and errors', () => {
  it('redacts credentials, query and fragment', () => {
    expect(redactUrl(new URL('https://u:p@h.example:8443/a/b.img?token=x#f'))).toBe('https://h.example:8443/a/b.img');
  });

  it('refuses credentials in URLs without echoing them', () => {
    const e = caught(() => parseSourceUrl('https://alice:hunter2@h.example/disk.img?sig=s3cr3t'));
    expect(e.reason).toBe('CREDENTIALS_IN_URL');
    expect(e.errorClass).toBe('permanent');
    expect(e.message).not.toMatch(/alice|hunter2|s3cr3t/);
    expect(e.message).toContain('https://h.example/disk.img');
    expect(caught(() => parseSourceUrl('https://token@h.example/x')).reason).toBe('CREDENTIALS_IN_URL');
  });

  it('refuses other schemes and invalid URLs', () => {
    expect(caught(() => parseSourceUrl('ftp://h.example/x')).reason).toBe('UNSUPPORTED_SCHEME');
    expect(caught(() => parseSourceUrl('file:///etc/passwd')).reason).toBe('UNSUPPORTED_SCHEME');
    const bad = caught(() => parseSourceUrl('not a url :secret'));
    expect(bad.reason).toBe('INVALID_URL');
    expect(bad.message).not.toContain('secret');
    expect(parseSourceUrl('/next?x=1', new URL('https://h.example/a')).href).toBe('https://h.example/next?x=1');
  });

  it('classifies HTTP statuses', () => {
    const url = new URL('https://h.example/images/disk.img?X-Amz-Signature=deadbeef');
    const e404 = statusError(url, 404, {});
    expect(e404.message).toMatch(/^HTTP 404 Not Found for https:\/\/h\.example\/images\/disk\.img\b/);
    expect(e404.message).not.toContain('deadbeef');
    expect([e404.errorClass, e404.reason, e404.status]).toEqual(['permanent', 'HTTP_404', 404]);
    for (const s of [401, 403, 410, 400, 418]) expect(statusError(url, s, {}).errorClass).toBe('permanent');
    const e503 = statusError(url, 503, { 'retry-after': '2' });
    expect([e503.errorClass, e503.retryAfterMs]).toEqual(['transient', 2000]);
    const e429 = statusError(url, 429, { 'retry-after': '7' });
    expect([e429.errorClass, e429.retryAfterMs]).toEqual(['rate-limited', 7000]);
    expect(statusError(url, 429, {}).retryAfterMs).toBeGreaterThan(0);
    for (const s of [500, 502, 504, 408]) expect(statusError(url, s, {}).errorClass).toBe('transient');
    expect(statusError(url, 204, {}).message).toMatch(/^unexpected HTTP 204 No Content/);
  });

  it('classifies network failures', () => {
    const url = new URL('https://h.example/d.img?token=t0k');
    const reset = networkError(url, Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }), 1000);
    expect([reset.errorClass, reset.reason]).toEqual(['transient', 'UND_ERR_SOCKET']);
    expect(reset.message).not.toContain('t0k');
    const idle = networkError(url, Object.assign(new Error('Body Timeout Error'), { code: 'UND_ERR_BODY_TIMEOUT' }), 300);
    expect([idle.errorClass, idle.reason]).toEqual(['transient', 'IDLE_TIMEOUT']);
    expect(idle.message).toContain('300 ms');
    const tls = networkError(url, Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }), 1);
    expect([tls.errorClass, tls.reason]).toEqual(['permanent', 'TLS_ERROR']);
    expect(tls.message).toContain('caBundle');
  });

  it('tells drops from timeouts, TLS failures and our own verdicts', () => {
    expect(isDrop(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isDrop(Object.assign(new Error('x'), { code: 'UND_ERR_BODY_TIMEOUT' }))).toBe(false);
    expect(isIdleTimeout(Object.assign(new Error('x'), { code: 'UND_ERR_HEADERS_TIMEOUT' }))).toBe(true);
    expect(isDrop(Object.assign(new Error('x'), { code: 'CERT_HAS_EXPIRED' }))).toBe(false);
    expect(isDrop(new OciError('x', { errorClass: 'transient', reason: 'LONG_BODY' }))).toBe(false);
  });
});
