/**
 * What the HTTP source reads from a server's answer (Content-Length, Content-Range, Content-Disposition, the
 * first bytes) and from the source URL: properties with a bounded number of runs. The examples live in
 * http-source.test.ts.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { OciError } from '../../src/oci/errors.ts';
import { parseSourceUrl, redactUrl } from '../../src/sources/http-errors.ts';
import {
  contentDispositionFileName,
  DEFAULT_FILE_NAME,
  downloadFileName,
  looksLikeHtml,
  parseContentLength,
  parseContentRange,
  sanitiseFileName,
} from '../../src/sources/http-headers.ts';

const RUNS = { numRuns: 500 };

/** Byte counts: small ones, large ones, and the edge of exact doubles. */
const byteCount = fc.oneof(
  fc.nat({ max: 1 << 20 }),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  fc.integer({ min: Number.MAX_SAFE_INTEGER - 3, max: Number.MAX_SAFE_INTEGER }),
);
const pad = fc.constantFrom('', ' ', '  ', '\t');
/** Header text close to the grammar more often than fc.string() alone. */
const headerish = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc
    .array(fc.oneof(fc.constantFrom('bytes', ' ', '-', '/', '*', '+', '.', 'e', '0', '9007199254740993', '9999999999999999', 'BYTES'), fc.nat().map(String)), {
      maxLength: 8,
    })
    .map((p) => p.join('')),
);
/** What sanitiseFileName promises: one plain path component of safe characters, no leading dot, at most 200. */
const SAFE_NAME = /^[A-Za-z0-9+-][A-Za-z0-9._+-]{0,199}$/;

describe('Content-Length', () => {
  it('every safe byte count round-trips, white space around it or not (property)', () => {
    fc.assert(
      fc.property(byteCount, pad, pad, (n, a, b) => {
        expect(parseContentLength(`${a}${n}${b}`)).toBe(n);
      }),
      RUNS,
    );
  });

  it('anything else is undefined; a result is always a safe integer written as plain digits (property)', () => {
    fc.assert(
      fc.property(headerish, (v) => {
        const n = parseContentLength(v);
        if (n === undefined) return;
        expect(Number.isSafeInteger(n) && n >= 0).toBe(true);
        expect(v.trim()).toMatch(/^\d+$/);
        expect(BigInt(v.trim())).toBe(BigInt(n));
      }),
      RUNS,
    );
  });
});

describe('Content-Range', () => {
  it('every consistent range round-trips, with a known or unknown total (property)', () => {
    fc.assert(
      fc.property(byteCount, byteCount, fc.option(byteCount), fc.boolean(), (x, y, extra, upper) => {
        const start = Math.min(x, y);
        const end = Math.max(x, y);
        const total = extra === null || end === Number.MAX_SAFE_INTEGER ? undefined : Math.min(Number.MAX_SAFE_INTEGER, end + 1 + extra);
        const text = `${upper ? 'BYTES' : 'bytes'} ${start}-${end}/${total ?? '*'}`;
        expect(parseContentRange(text)).toEqual({ start, end, total });
      }),
      RUNS,
    );
  });

  it('refuses ranges that end before they start or reach past the total (property)', () => {
    fc.assert(
      fc.property(byteCount, byteCount, byteCount, (a, b, t) => {
        if (a > b) expect(parseContentRange(`bytes ${a}-${b}/*`)).toBeUndefined();
        if (b >= t) expect(parseContentRange(`bytes 0-${b}/${t}`)).toBeUndefined();
      }),
      RUNS,
    );
  });

  it('refuses numbers past 2^53, which a double cannot hold exactly', () => {
    expect(parseContentRange('bytes 0-9007199254740992/*')).toBeUndefined();
    expect(parseContentRange('bytes 0-10/9999999999999999')).toBeUndefined();
    expect(parseContentRange('bytes 9007199254740990-9007199254740991/*')).toEqual({
      start: 9007199254740990,
      end: Number.MAX_SAFE_INTEGER,
      total: undefined,
    });
  });

  it('never throws; a result is always an exact, consistent range (property)', () => {
    fc.assert(
      fc.property(headerish.map((s) => `bytes ${s}`), (v) => {
        const r = parseContentRange(v);
        if (r === undefined) return;
        const m = /(\d+)-(\d+)\/(\d+|\*)/.exec(v);
        expect(m).not.toBeNull();
        expect(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end)).toBe(true);
        expect(r.start).toBeLessThanOrEqual(r.end);
        expect(BigInt(m![1]!)).toBe(BigInt(r.start));
        expect(BigInt(m![2]!)).toBe(BigInt(r.end));
        if (r.total !== undefined) {
          expect(Number.isSafeInteger(r.total)).toBe(true);
          expect(r.total).toBeGreaterThan(r.end);
          expect(BigInt(m![3]!)).toBe(BigInt(r.total));
        }
      }),
      RUNS,
    );
  });
});

describe('file names', () => {
  it('sanitiseFileName always gives one safe path component or nothing (property)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 40 }), fc.constantFrom('..', '.', '/', '\\', '../..', 'a/../..')), (raw) => {
        const name = sanitiseFileName(raw);
        if (name !== undefined) {
          expect(name).toMatch(SAFE_NAME);
          expect(name).not.toMatch(/_$/);
        }
        // A name made of safe characters only, not starting with a dot, is kept as it is.
        if (/^[A-Za-z0-9+-][A-Za-z0-9._+-]{0,199}$/.test(raw) && !raw.endsWith('_')) expect(name).toBe(raw);
      }),
      RUNS,
    );
  });

  it('filename and filename* round-trip any name (property)', () => {
    // A ';' inside a quoted filename could be taken for the start of a filename* parameter; names here have none.
    const name = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 30 }).filter((s) => !s.includes(';') && s.trim() === s && s !== '');
    fc.assert(
      fc.property(name, fc.constantFrom('attachment', 'inline', ''), (n, type) => {
        const quoted = `"${n.replace(/["\\]/g, '\\$&')}"`;
        expect(contentDispositionFileName(`${type}; filename=${quoted}`)).toBe(n);
        expect(contentDispositionFileName(`${type}; filename*=UTF-8''${encodeURIComponent(n)}`)).toBe(n);
        expect(contentDispositionFileName(`${type}; filename="other.img"; filename*=utf-8'en'${encodeURIComponent(n)}`)).toBe(n);
      }),
      RUNS,
    );
  });

  it('downloadFileName never throws and always names a safe file (property)', () => {
    const disposition = fc.oneof(
      fc.constant(undefined),
      fc.string({ maxLength: 60 }),
      fc.string({ unit: 'grapheme', maxLength: 30 }).map((s) => `attachment; filename*=UTF-8''${s}`),
      fc.string({ maxLength: 30 }).map((s) => `attachment; filename="${s}"`),
    );
    const path = fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('%2e%2e', '..%2F..%2Fetc%2Fpasswd', '%E0%A4%A', '%00', '', '/'));
    fc.assert(
      fc.property(disposition, path, (cd, p) => {
        let url: URL;
        try {
          url = new URL(`http://example.test/d/${p}`);
        } catch {
          return;
        }
        const name = downloadFileName(cd, url);
        expect(name === DEFAULT_FILE_NAME || SAFE_NAME.test(name), name).toBe(true);
      }),
      RUNS,
    );
  });
});

describe('first bytes and URLs', () => {
  it('looksLikeHtml never throws, and is false whenever the first non-blank byte is not "<" (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.option(fc.constantFrom('text/html', 'application/octet-stream', 'TEXT/HTML; charset=utf-8', '')), (head, type) => {
        const html = looksLikeHtml(head, type ?? undefined);
        let i = head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf ? 3 : 0;
        while (i < head.length && [0x20, 0x09, 0x0a, 0x0d].includes(head[i]!)) i++;
        if (head[i] !== 0x3c) expect(html).toBe(false);
      }),
      RUNS,
    );
  });

  it('parseSourceUrl gives an http(s) URL without credentials or an OciError that does not echo them (property)', () => {
    const url = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.webUrl({ withQueryParameters: true, withFragments: true }),
      fc
        .tuple(fc.constantFrom('http', 'https', 'ftp', 'file', 'HTTP'), fc.stringMatching(/^[a-z0-9]{1,8}$/), fc.string({ maxLength: 20 }))
        .map(([s, user, rest]) => `${s}://${user}:s3cret-pw@host.example/${rest}`),
    );
    fc.assert(
      fc.property(url, (raw) => {
        try {
          const u = parseSourceUrl(raw);
          expect(['http:', 'https:']).toContain(u.protocol);
          expect(u.username + u.password).toBe('');
        } catch (e) {
          expect(e).toBeInstanceOf(OciError);
          expect((e as OciError).errorClass).toBe('permanent');
          expect((e as OciError).message).not.toContain('s3cret-pw');
        }
      }),
      RUNS,
    );
  });

  it('redactUrl never shows credentials, query or fragment (property)', () => {
    fc.assert(
      fc.property(fc.webUrl({ withQueryParameters: true, withFragments: true }), fc.stringMatching(/^[a-z]{1,8}$/), (raw, user) => {
        const u = new URL(raw);
        u.username = user;
        u.password = 's3cret-pw';
        const shown = redactUrl(u);
        expect(shown).not.toContain('s3cret-pw');
        expect(shown).not.toContain('?');
        expect(shown).not.toContain('#');
      }),
      RUNS,
    );
  });
});
