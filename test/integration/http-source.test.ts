/**
 * The HTTP source against real loopback servers (test/helpers/http-server.ts): streaming, lengths, resumes,
 * redirects, TLS, timeouts, error classes and checksums.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DiskError } from '../../src/disk/errors.ts';
import { OciError } from '../../src/oci/errors.ts';
import { openHttpSource, type HttpSourceOptions } from '../../src/sources/http.ts';
import { startHttpServer, type TestHttpServer } from '../helpers/http-server.ts';

const MiB = 1024 * 1024;

function digests(data: Buffer): Record<'md5' | 'sha1' | 'sha256' | 'sha512', string> {
  const h = (a: string) => createHash(a).update(data).digest('hex');
  return { md5: h('md5'), sha1: h('sha1'), sha256: h('sha256'), sha512: h('sha512') };
}

/** Reads a stream to its end; records whether `end` was emitted. */
async function collect(stream: Readable): Promise<{ data: Buffer; ended: boolean }> {
  const chunks: Buffer[] = [];
  let ended = false;
  stream.on('end', () => (ended = true));
  for await (const c of stream) chunks.push(c as Buffer);
  return { data: Buffer.concat(chunks), ended };
}

/** The error a promise rejects with. */
async function failure(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a failure');
}

async function download(opts: HttpSourceOptions): Promise<{ data: Buffer; name: string; size: number | undefined; checksums: Record<string, string> }> {
  const d = await openHttpSource(opts);
  const { data } = await collect(d.stream);
  return { data, name: d.name, size: d.size, checksums: d.checksums() as Record<string, string> };
}

/** A stream's error, making sure it never emitted `end`. */
async function streamFailure(stream: Readable): Promise<Error> {
  let ended = false;
  stream.on('end', () => (ended = true));
  const e = await failure(collect(stream));
  expect(ended).toBe(false);
  return e;
}

function expectOci(e: Error, errorClass: string, reason: string): OciError {
  expect(e).toBeInstanceOf(OciError);
  const o = e as OciError;
  expect({ errorClass: o.errorClass, reason: o.reason }).toEqual({ errorClass, reason });
  return o;
}

let srv: TestHttpServer;
let other: TestHttpServer;
const disk = randomBytes(3 * MiB + 123);
const big = randomBytes(20 * MiB);

beforeAll(async () => {
  [srv, other] = await Promise.all([startHttpServer(), startHttpServer()]);
});
afterAll(async () => {
  await Promise.all([srv?.close(), other?.close()]);
});
afterEach(() => {
  srv.requests.length = 0;
  other.requests.length = 0;
});

describe('streaming', () => {
  it('streams a file with Content-Length and reports bytes', async () => {
    srv.file('/images/ubuntu.img', { body: disk });
    const seen: Array<[number, number | undefined]> = [];
    const d = await download({
      url: `${srv.url}/images/ubuntu.img?X-Token=abc`,
      checksums: { sha256: digests(disk).sha256 },
      onBytes: (n, t) => seen.push([n, t]),
    });
    expect(d.name).toBe('ubuntu.img');
    expect(d.size).toBe(disk.length);
    expect(d.data.equals(disk)).toBe(true);
    expect(d.checksums).toEqual({ sha256: digests(disk).sha256 });
    expect(seen.at(-1)).toEqual([disk.length, disk.length]);
    expect(srv.requests.map((r) => [r.method, r.range, r.headers.authorization])).toEqual([['GET', undefined, undefined]]);
  });

  it('works without Content-Length (size unknown)', async () => {
    srv.file('/chunked.qcow2', { body: disk, contentLength: false });
    const totals = new Set<number | undefined>();
    const d = await download({ url: `${srv.url}/chunked.qcow2`, checksums: { md5: digests(disk).md5 }, onBytes: (_n, t) => totals.add(t) });
    expect(d.size).toBeUndefined();
    expect([...totals]).toEqual([undefined]);
    expect(d.data.equals(disk)).toBe(true);
  });

  it('names the file from Content-Disposition, sanitised', async () => {
    srv.file('/download', { body: disk, contentDisposition: 'attachment; filename="../../jammy server.img"' });
    const d = await openHttpSource({ url: `${srv.url}/download?id=7` });
    d.stream.destroy();
    expect(d.name).toBe('jammy_server.img');
  });

  it('does not count time the consumer spends not reading as idle', async () => {
    srv.file('/paused.img', { body: disk });
    const d = await openHttpSource({ url: `${srv.url}/paused.img`, idleTimeoutMs: 300 });
    const chunks: Buffer[] = [];
    let paused = false;
    for await (const c of d.stream) {
      chunks.push(c as Buffer);
      if (!paused) {
        paused = true;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    expect(Buffer.concat(chunks).equals(disk)).toBe(true);
  });
});

describe('checksums', () => {
  it('verifies all four at once', async () => {
    srv.file('/four.img', { body: disk });
    const want = digests(disk);
    const d = await download({ url: `${srv.url}/four.img`, checksums: { ...want, sha256: want.sha256.toUpperCase() } });
    expect(d.checksums).toEqual(want);
  });

  for (const alg of ['md5', 'sha1', 'sha256', 'sha512'] as const) {
    it(`fails the stream before its end on a ${alg} mismatch`, async () => {
      srv.file('/mismatch.img', { body: disk });
      const want = digests(disk);
      const wrong = { ...want, [alg]: want[alg].replace(/^./, (c) => (c === '0' ? '1' : '0')) };
      const d = await openHttpSource({ url: `${srv.url}/mismatch.img`, checksums: wrong });
      const e = await streamFailure(d.stream);
      expect(e).toBeInstanceOf(DiskError);
      expect({ reason: (e as DiskError).reason, permanent: (e as DiskError).permanent }).toEqual({ reason: 'ChecksumMismatch', permanent: true });
      expect(e.message).toContain(`${alg}: expected`);
      expect(() => d.checksums()).toThrow(/before the stream has ended/);
    });
  }

  it('refuses a malformed checksum before downloading', async () => {
    srv.file('/x.img', { body: disk });
    const e = await failure(openHttpSource({ url: `${srv.url}/x.img`, checksums: { sha256: 'abc' } }));
    expectOci(e, 'permanent', 'INVALID_CHECKSUM');
    expect(srv.requests).toHaveLength(0);
  });
});

describe('lengths', () => {
  it('fails a body shorter than its Content-Length (no resume possible)', async () => {
    srv.file('/short.img', { body: disk, declaredLength: disk.length + 1000, ranges: false });
    const d = await openHttpSource({ url: `${srv.url}/short.img` });
    expect(d.size).toBe(disk.length + 1000);
    const e = expectOci(await streamFailure(d.stream), 'transient', 'CONNECTION_DROPPED');
    expect(e.message).toContain(`after ${disk.length} of ${disk.length + 1000} bytes`);
  });

  it('fails a body shorter than its Content-Length when the resume finds nothing more', async () => {
    srv.file('/short-range.img', { body: disk, declaredLength: disk.length + 1000 });
    const d = await openHttpSource({ url: `${srv.url}/short-range.img` });
    expectOci(await streamFailure(d.stream), 'transient', 'RESUME_REFUSED');
    expect(srv.requestsFor('/short-range.img').map((r) => r.status)).toEqual([200, 416]);
  });

  it('fails a body longer than announced', async () => {
    srv.file('/long.img', { body: disk, drop: { afterBytes: MiB }, overrun: 4096 });
    const d = await openHttpSource({ url: `${srv.url}/long.img` });
    const e = expectOci(await streamFailure(d.stream), 'transient', 'LONG_BODY');
    expect(e.message).toContain(`longer than the ${disk.length} bytes announced`);
  });
});

describe('resuming a dropped connection', () => {
  it('resumes a 20 MiB body dropped twice and the checksums still match', async () => {
    srv.file('/big.img', { body: big, drop: { afterBytes: 7 * MiB, times: 2 } });
    const d = await download({ url: `${srv.url}/big.img`, checksums: digests(big) });
    expect(d.data.length).toBe(big.length);
    expect(d.checksums).toEqual(digests(big));
    const reqs = srv.requestsFor('/big.img');
    expect(reqs.map((r) => [r.status, r.range])).toEqual([
      [200, undefined],
      [206, `bytes=${7 * MiB}-`],
      [206, `bytes=${14 * MiB}-`],
    ]);
    expect(reqs[1]!.ifRange).toMatch(/^"[0-9a-f]+"$/);
  });

  it('guards the resume with Last-Modified when there is no ETag', async () => {
    srv.file('/lm.img', { body: disk, etag: false, drop: { afterBytes: MiB } });
    const d = await download({ url: `${srv.url}/lm.img`, checksums: { sha1: digests(disk).sha1 } });
    expect(d.data.equals(disk)).toBe(true);
    expect(srv.requestsFor('/lm.img')[1]?.ifRange).toMatch(/GMT$/);
  });

  it('resumes a body without Content-Length', async () => {
    srv.file('/chunked-drop.img', { body: disk, contentLength: false, drop: { afterBytes: MiB } });
    const d = await download({ url: `${srv.url}/chunked-drop.img`, checksums: { sha256: digests(disk).sha256 } });
    expect(d.data.equals(disk)).toBe(true);
    expect(srv.requestsFor('/chunked-drop.img').map((r) => r.status)).toEqual([200, 206]);
  });

  it('skips what it has when the server ignores Range but the file is unchanged', async () => {
    srv.file('/norange.img', { body: disk, ranges: 'ignore', drop: { afterBytes: MiB } });
    const d = await download({ url: `${srv.url}/norange.img`, checksums: digests(disk) });
    expect(d.data.equals(disk)).toBe(true);
    expect(srv.requestsFor('/norange.img').map((r) => [r.status, r.range])).toEqual([
      [200, undefined],
      [200, `bytes=${MiB}-`],
    ]);
  });

  it('fails as transient when the file changed between requests', async () => {
    const changed = Buffer.from(disk);
    changed[10] = (changed[10]! + 1) & 0xff;
    srv.file('/changing.img', { body: [disk, changed], drop: { afterBytes: MiB } });
    const d = await openHttpSource({ url: `${srv.url}/changing.img` });
    const e = expectOci(await streamFailure(d.stream), 'transient', 'SOURCE_CHANGED');
    expect(e.message).toMatch(/ETag "[0-9a-f]+" -> "[0-9a-f]+"/);
    expect(srv.requestsFor('/changing.img').map((r) => r.status)).toEqual([200, 200]);
  });

  it('does not resume when the server does not offer ranges', async () => {
    srv.file('/plain.img', { body: disk, ranges: false, drop: { afterBytes: MiB } });
    const d = await openHttpSource({ url: `${srv.url}/plain.img` });
    const e = expectOci(await streamFailure(d.stream), 'transient', 'CONNECTION_DROPPED');
    expect(e.message).toContain('does not support resuming');
    expect(srv.requestsFor('/plain.img')).toHaveLength(1);
  });

  it('does not resume without a validator', async () => {
    srv.file('/novalidator.img', { body: disk, etag: false, lastModified: false, drop: { afterBytes: MiB } });
    const d = await openHttpSource({ url: `${srv.url}/novalidator.img` });
    expectOci(await streamFailure(d.stream), 'transient', 'CONNECTION_DROPPED');
  });

  it('a refusal of the resume (an expired link) is transient: the attempt restarts from the original URL', async () => {
    other.file('/signed.img', { body: disk, drop: { afterBytes: MiB } });
    srv.redirect('/signed', `${other.url}/signed.img?Expires=1`);
    const d = await openHttpSource({ url: `${srv.url}/signed` });
    other.status('/signed.img', 403, { times: 1 });
    const e = expectOci(await streamFailure(d.stream), 'transient', 'HTTP_403');
    expect(e.message).toContain(`while resuming at byte ${MiB}`);
    expect(e.message).not.toContain('Expires');
    expect(other.requests.map((r) => [r.status, r.range])).toEqual([
      [200, undefined],
      [403, `bytes=${MiB}-`],
    ]);
  });

  it('gives up after maxResumes', async () => {
    srv.file('/flaky.img', { body: disk, drop: { afterBytes: 256 * 1024, times: Infinity } });
    const d = await openHttpSource({ url: `${srv.url}/flaky.img`, maxResumes: 3 });
    expectOci(await streamFailure(d.stream), 'transient', 'RESUME_LIMIT');
    expect(srv.requestsFor('/flaky.img')).toHaveLength(4);
  });
});

describe('redirects and credentials', () => {
  it('follows a redirect chain to a second server', async () => {
    other.file('/pub/cirros.qcow2', { body: disk });
    srv.redirect('/start', '/hop');
    srv.redirect('/hop', `${other.url}/pub/cirros.qcow2?X-Amz-Signature=zzz`, 307);
    const d = await download({ url: `${srv.url}/start`, checksums: { sha256: digests(disk).sha256 } });
    expect(d.name).toBe('cirros.qcow2');
    expect(d.data.equals(disk)).toBe(true);
    expect(srv.requests.map((r) => r.path)).toEqual(['/start', '/hop']);
    expect(other.requests.map((r) => r.url)).toEqual(['/pub/cirros.qcow2?X-Amz-Signature=zzz']);
  });

  it('stops after maxRedirects', async () => {
    srv.redirect('/loop', '/loop');
    const e = await failure(openHttpSource({ url: `${srv.url}/loop`, maxRedirects: 3 }));
    expectOci(e, 'permanent', 'TOO_MANY_REDIRECTS');
    expect(srv.requests).toHaveLength(4);
  });

  it('refuses credentials in the source URL without sending a request or echoing them', async () => {
    srv.file('/x.img', { body: disk });
    const e = await failure(openHttpSource({ url: `${srv.url.replace('//', '//alice:hunter2@')}/x.img` }));
    expectOci(e, 'permanent', 'CREDENTIALS_IN_URL');
    expect(e.message).not.toMatch(/alice|hunter2/);
    expect(srv.requests).toHaveLength(0);
  });

  it('refuses a redirect to a URL with credentials', async () => {
    other.file('/y.img', { body: disk });
    srv.redirect('/sneaky', `${other.url.replace('//', '//bob:s3cret@')}/y.img`);
    const e = await failure(openHttpSource({ url: `${srv.url}/sneaky` }));
    expectOci(e, 'permanent', 'CREDENTIALS_IN_URL');
    expect(e.message).not.toMatch(/bob|s3cret/);
    expect(other.requests).toHaveLength(0);
  });
});

describe('HTTP errors', () => {
  it('404 is permanent with a clear message and no query string', async () => {
    const e = await failure(openHttpSource({ url: `${srv.url}/missing.img?token=SECRET` }));
    const o = expectOci(e, 'permanent', 'HTTP_404');
    expect(o.message).toMatch(new RegExp(`^HTTP 404 Not Found for ${srv.url}/missing\\.img`));
    expect(o.message).not.toContain('SECRET');
  });

  it('410, 401 and 403 are permanent', async () => {
    for (const s of [410, 401, 403]) {
      srv.status(`/e${s}`, s);
      const e = await failure(openHttpSource({ url: `${srv.url}/e${s}` }));
      expectOci(e, 'permanent', `HTTP_${s}`);
    }
  });

  it('503 with Retry-After is transient and says when to retry', async () => {
    srv.status('/busy.img', 503, { headers: { 'retry-after': '2' } });
    const o = expectOci(await failure(openHttpSource({ url: `${srv.url}/busy.img` })), 'transient', 'HTTP_503');
    expect(o.retryAfterMs).toBe(2000);
  });

  it('429 is rate-limited, 500 transient', async () => {
    srv.status('/slow-down', 429, { headers: { 'retry-after': '3' } });
    const r = expectOci(await failure(openHttpSource({ url: `${srv.url}/slow-down` })), 'rate-limited', 'HTTP_429');
    expect(r.retryAfterMs).toBe(3000);
    srv.status('/broken', 500);
    expectOci(await failure(openHttpSource({ url: `${srv.url}/broken` })), 'transient', 'HTTP_500');
  });

  it('a refused connection is transient', async () => {
    const gone = await startHttpServer();
    const url = `${gone.url}/x.img`;
    await gone.close();
    const e = await failure(openHttpSource({ url }));
    expectOci(e, 'transient', 'ECONNREFUSED');
  });
});

describe('not a disk image', () => {
  const page = `<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>${'<p>please sign in</p>'.repeat(200)}</body></html>`;

  it('refuses an HTML page answered with 200', async () => {
    srv.status('/page', 200, { headers: { 'content-type': 'text/html; charset=utf-8' }, body: page });
    const e = await failure(openHttpSource({ url: `${srv.url}/page` }));
    expect(e).toBeInstanceOf(DiskError);
    expect((e as DiskError).reason).toBe('NotADiskImage');
    expect((e as DiskError).permanent).toBe(true);
    expect(e.message).toMatch(/^the server answered with an HTML page, not a disk image/);
  });

  it('refuses an HTML page even when labelled as binary', async () => {
    srv.file('/disguised.img', { body: Buffer.from(page), contentType: 'application/octet-stream' });
    const e = await failure(openHttpSource({ url: `${srv.url}/disguised.img` }));
    expect((e as DiskError).reason).toBe('NotADiskImage');
  });

  it('refuses a tiny body, but not tiny compressed data', async () => {
    srv.file('/tiny.img', { body: randomBytes(100) });
    const e = await failure(openHttpSource({ url: `${srv.url}/tiny.img` }));
    expect((e as DiskError).reason).toBe('NotADiskImage');
    expect(e.message).toContain('only 100 bytes');
    const gz = gzipSync(Buffer.alloc(64 * 1024));
    expect(gz.length).toBeLessThan(512);
    srv.file('/tiny.img.gz', { body: gz });
    const d = await download({ url: `${srv.url}/tiny.img.gz` });
    expect(d.data.equals(gz)).toBe(true);
  });
});

describe('timeouts and cancellation', () => {
  it('ends a stalled download after the idle timeout', async () => {
    srv.file('/stall.img', { body: disk, stall: { afterBytes: 256 * 1024, ms: 5000 } });
    const d = await openHttpSource({ url: `${srv.url}/stall.img`, idleTimeoutMs: 300 });
    const t0 = Date.now();
    const e = expectOci(await streamFailure(d.stream), 'transient', 'IDLE_TIMEOUT');
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(e.message).toContain('300 ms');
  });

  it('times out a server that does not answer', async () => {
    srv.file('/head-stall.img', { body: disk, headDelayMs: 5000 });
    const e = await failure(openHttpSource({ url: `${srv.url}/head-stall.img`, idleTimeoutMs: 300 }));
    expectOci(e, 'transient', 'IDLE_TIMEOUT');
  });

  it('times out a body that never starts (during the first-bytes check)', async () => {
    srv.file('/body-stall.img', { body: disk, stall: { afterBytes: 0, ms: 5000 } });
    const e = await failure(openHttpSource({ url: `${srv.url}/body-stall.img`, idleTimeoutMs: 300 }));
    expectOci(e, 'transient', 'IDLE_TIMEOUT');
  });

  it('abort mid-stream destroys the stream and closes the connection', async () => {
    srv.file('/slow.img', { body: disk, bytesPerSecond: 256 * 1024 });
    const ac = new AbortController();
    const d = await openHttpSource({ url: `${srv.url}/slow.img`, signal: ac.signal });
    const errored = streamFailure(d.stream);
    await new Promise((r) => setTimeout(r, 200));
    ac.abort();
    const e = await errored;
    expect(e.name).toBe('AbortError');
    const req = srv.requestsFor('/slow.img')[0]!;
    await req.done;
    expect(req.closedEarly).toBe(true);
    expect(req.bytesSent).toBeLessThan(disk.length);
    await expect.poll(() => srv.openConnections()).toBe(0);
  });

  it('destroying the stream closes the connection', async () => {
    srv.file('/slow2.img', { body: disk, bytesPerSecond: 256 * 1024 });
    const d = await openHttpSource({ url: `${srv.url}/slow2.img` });
    d.stream.destroy();
    const req = srv.requestsFor('/slow2.img')[0]!;
    await req.done;
    expect(req.closedEarly).toBe(true);
  });

  it('an already aborted signal sends nothing', async () => {
    srv.file('/x.img', { body: disk });
    const e = await failure(openHttpSource({ url: `${srv.url}/x.img`, signal: AbortSignal.abort() }));
    expect(e.name).toBe('AbortError');
    expect(srv.requests).toHaveLength(0);
  });
});

describe('https', () => {
  let dir: string;
  let tls: TestHttpServer;
  let ca: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'http-source-tls-'));
    const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=dvcr-importer test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    ossl('req', ...ec, '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=127.0.0.1');
    writeFileSync(
      join(dir, 'ext.cnf'),
      'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n',
    );
    ossl('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'srv.crt',
      '-days', '2', '-extfile', 'ext.cnf');
    ca = readFileSync(join(dir, 'ca.crt'), 'utf8');
    tls = await startHttpServer({ tls: { key: readFileSync(join(dir, 'srv.key'), 'utf8'), cert: readFileSync(join(dir, 'srv.crt'), 'utf8') } });
    tls.file('/secure.img', { body: disk, drop: { afterBytes: MiB } });
  });
  afterAll(async () => {
    await tls?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('trusts a self-signed CA given as caBundle (and resumes over TLS)', async () => {
    const d = await download({ url: `${tls.url}/secure.img`, caBundle: ca, checksums: { sha256: digests(disk).sha256 } });
    expect(d.data.equals(disk)).toBe(true);
  });

  it('fails permanently without the CA, naming caBundle', async () => {
    const e = await failure(openHttpSource({ url: `${tls.url}/secure.img` }));
    const o = expectOci(e, 'permanent', 'TLS_ERROR');
    expect(o.message).toContain('caBundle');
  });

  it('skips verification for a host listed insecure', async () => {
    tls.file('/insecure.img', { body: disk });
    const d = await download({ url: `${tls.url}/insecure.img`, insecure: true });
    expect(d.data.equals(disk)).toBe(true);
  });

  it('verifies hosts reached by a redirect even when the source host is insecure', async () => {
    const key = readFileSync(join(dir, 'srv.key'), 'utf8');
    const cert = readFileSync(join(dir, 'srv.crt'), 'utf8');
    const second = await startHttpServer({ tls: { key, cert } });
    try {
      second.file('/elsewhere.img', { body: disk });
      tls.redirect('/to-second', `${second.url}/elsewhere.img`);
      const e = await failure(openHttpSource({ url: `${tls.url}/to-second`, insecure: true }));
      expectOci(e, 'permanent', 'TLS_ERROR');
      const d = await download({ url: `${tls.url}/to-second`, insecure: true, caBundle: ca });
      expect(d.data.equals(disk)).toBe(true);
    } finally {
      await second.close();
    }
  });
});
