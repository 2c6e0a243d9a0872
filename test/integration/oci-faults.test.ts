/**
 * The OCI client against the real registry (distribution 2.8) behind a fault-injecting proxy: manifest
 * verification and limits, verifying blob reads with Range resume, the upload request shape, retry and
 * rate-limit handling, and the per-host limit on requests in flight.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  digestOf,
  MANIFEST_READ_LIMIT,
  MediaType,
  OciError,
  parseReference,
  RegistryClient,
  type Descriptor,
  type RegistryClientOptions,
} from '../../src/oci/index.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { buildImageLayout, type BuiltLayout } from '../helpers/fixtures.ts';
import { skopeoCopy } from '../helpers/skopeo.ts';

const RETRY = { baseDelayMs: 10, maxDelayMs: 50 };
const registryUrl = inject('registryUrl');
const registryHostPort = inject('registryHostPort');

let root: string;
let layout: BuiltLayout;
/** The layer: an uncompressed tar of ASCII text, so a proxy fault can serve it (or a variant) as a string body. */
let layer: Descriptor;
let blob: Buffer;
let configDesc: Descriptor;
const REPO = 'faults/img';

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'dvcr-oci-faults-'));
  const lines: string[] = [];
  let x = 12345;
  for (let i = 0; i < 40_000; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    lines.push(`line ${i} ${x.toString(36)} ${(x ^ 0x5bd1e995).toString(16)}`);
  }
  layout = await buildImageLayout(join(root, 'layout'), {
    layers: [{ compression: 'none', files: [{ path: 'disk/text.img', content: lines.join('\n') }] }],
  });
  const image = layout.images[0]!;
  layer = image.layers[0]!;
  configDesc = image.config;
  blob = readFileSync(join(layout.dir, 'blobs', 'sha256', layer.digest.slice(7)));
  if (blob.some((b) => b >= 0x80)) throw new Error('test fixture: the layer must be ASCII');
  expect(blob.length).toBeGreaterThan(1024 * 1024);
  await skopeoCopy(layout.ref, `docker://${registryHostPort}/${REPO}:v1`);
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

async function collect(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}

function newClient(proxy: FaultProxy, extra: RegistryClientOptions = {}): RegistryClient {
  return new RegistryClient({ insecureRegistries: [proxy.hostPort], retry: RETRY, ...extra });
}

async function caught(p: Promise<unknown>): Promise<OciError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(OciError);
  return e as OciError;
}

/** Each test gets a proxy of its own (fresh log, no faults left over) and a client talking through it. */
function withProxy(): { proxy: () => FaultProxy } {
  let proxy: FaultProxy;
  beforeAll(async () => {
    proxy = await startFaultProxy(registryUrl);
  });
  afterAll(() => proxy?.stop());
  return { proxy: () => proxy };
}

describe('manifests', () => {
  const p = withProxy();
  let client: RegistryClient;
  let host: string;
  beforeAll(() => {
    host = p.proxy().hostPort;
    client = newClient(p.proxy());
    return client.ping(host);
  });
  afterAll(() => client?.close());
  const manifestPath = /\/manifests\//;

  it('sends Accept with the OCI and Docker index and manifest types on GET and HEAD', async () => {
    const proxy = p.proxy();
    proxy.requests.length = 0;
    const ref = parseReference(`${host}/${REPO}:v1`);
    const m = await client.getManifest(ref);
    expect(m).toMatchObject({ kind: 'manifest', digest: layout.top.digest, mediaType: MediaType.OciManifest });
    expect(m.bytes.toString()).toBe(layout.topJson);
    const head = await client.headManifest(ref);
    expect(head).toEqual({ digest: layout.top.digest, mediaType: MediaType.OciManifest, size: layout.top.size });
    expect(await client.headManifest(parseReference(`${host}/${REPO}:absent`))).toBeUndefined();
    const sent = proxy.requests.filter((r) => manifestPath.test(r.path));
    expect(sent.map((r) => r.method)).toEqual(['GET', 'HEAD', 'HEAD']);
    for (const r of sent) {
      const accept = String(r.headers.accept).split(',').map((s) => s.trim());
      expect(accept).toEqual(
        expect.arrayContaining([MediaType.OciIndex, MediaType.DockerManifestList, MediaType.OciManifest, MediaType.DockerManifest]),
      );
    }
  });

  it('a digest reference verifies the body against the digest', async () => {
    const proxy = p.proxy();
    const ref = parseReference(`${host}/${REPO}@${layout.top.digest}`);
    expect((await client.getManifest(ref)).digest).toBe(layout.top.digest);
    // Another valid manifest served for that digest (a lying cache or mirror).
    const other = JSON.stringify({ ...JSON.parse(layout.topJson), annotations: { changed: 'yes' } });
    proxy.requests.length = 0;
    proxy.addFault({ method: 'GET', path: manifestPath, status: 200, body: other, headers: { 'content-type': MediaType.OciManifest } });
    const e = await caught(client.getManifest(ref));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'DIGEST_MISMATCH' });
    expect(e.message).toContain(layout.top.digest);
    expect(proxy.requests).toHaveLength(1); // not retried
  });

  it('a Docker-Content-Digest that disagrees with the body is rejected', async () => {
    const proxy = p.proxy();
    proxy.addFault({
      method: 'GET',
      path: manifestPath,
      status: 200,
      body: layout.topJson,
      headers: { 'content-type': MediaType.OciManifest, 'docker-content-digest': digestOf(Buffer.from('something else')) },
    });
    const e = await caught(client.getManifest(parseReference(`${host}/${REPO}:v1`)));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'DIGEST_MISMATCH' });
    expect(e.message).toMatch(/Docker-Content-Digest/);
  });

  it('a body mediaType that disagrees with Content-Type is rejected', async () => {
    const proxy = p.proxy();
    proxy.addFault({ method: 'GET', path: manifestPath, status: 200, body: layout.topJson, headers: { 'content-type': MediaType.DockerManifest } });
    const e = await caught(client.getManifest(parseReference(`${host}/${REPO}:v1`)));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'MANIFEST_INVALID' });
    expect(e.message).toContain('disagrees with Content-Type');
  });

  it('a manifest over the 8 MiB read limit is rejected', async () => {
    const proxy = p.proxy();
    const huge = JSON.stringify({ ...JSON.parse(layout.topJson), annotations: { pad: 'x'.repeat(MANIFEST_READ_LIMIT) } });
    proxy.requests.length = 0;
    proxy.addFault({ method: 'GET', path: manifestPath, status: 200, body: huge, headers: { 'content-type': MediaType.OciManifest } });
    const e = await caught(client.getManifest(parseReference(`${host}/${REPO}:v1`)));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'SIZE_LIMIT' });
    expect(e.message).toContain(String(MANIFEST_READ_LIMIT));
    expect(proxy.requests).toHaveLength(1);
  });

  it('a manifest over the 4 MiB PUT limit is refused before sending (distribution 2.8 would answer 400)', async () => {
    const proxy = p.proxy();
    const big = Buffer.from(JSON.stringify({ ...JSON.parse(layout.topJson), annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } }));
    // The registry itself refuses it ...
    const direct = await fetch(`${registryUrl}/v2/${REPO}/manifests/too-big`, {
      method: 'PUT',
      headers: { 'content-type': MediaType.OciManifest },
      body: big,
    });
    expect(direct.status).toBe(400);
    expect(await direct.text()).toContain('MANIFEST_INVALID');
    // ... so we do not send it.
    proxy.requests.length = 0;
    const e = await caught(client.putManifest(host, REPO, 'too-big', big, MediaType.OciManifest));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'SIZE_LIMIT' });
    expect(proxy.requests.filter((r) => r.method === 'PUT')).toEqual([]);
  });

  it('schema1 manifests are rejected, by Content-Type or by schemaVersion', async () => {
    const proxy = p.proxy();
    const schema1 = JSON.stringify({
      schemaVersion: 1,
      name: REPO,
      tag: 'v1',
      architecture: 'amd64',
      fsLayers: [{ blobSum: layer.digest }],
      history: [{ v1Compatibility: '{}' }],
      signatures: [],
    });
    for (const contentType of [MediaType.DockerSchema1Signed, MediaType.DockerSchema1, 'application/json']) {
      proxy.requests.length = 0;
      proxy.addFault({ method: 'GET', path: manifestPath, status: 200, body: schema1, headers: { 'content-type': contentType } });
      const e = await caught(client.getManifest(parseReference(`${host}/${REPO}:v1`)));
      expect(e).toMatchObject({ errorClass: 'permanent', reason: 'SCHEMA1' });
      expect(e.message).toMatch(/schema1/);
      expect(proxy.requests).toHaveLength(1);
    }
  });
});

describe('blob reads', () => {
  const p = withProxy();
  let client: RegistryClient;
  let host: string;
  beforeAll(() => {
    host = p.proxy().hostPort;
    client = newClient(p.proxy());
    return client.ping(host);
  });
  afterAll(() => client?.close());
  const blobPath = /\/blobs\/sha256:/;
  const blobRequests = () => p.proxy().requests.filter((r) => blobPath.test(r.path));

  it('a connection reset mid-blob resumes with Range and the digest still verifies', async () => {
    const proxy = p.proxy();
    proxy.requests.length = 0;
    proxy.addFault({ method: 'GET', path: blobPath, resetAfterBytes: 300_000 });
    const resumes: Array<[number, string]> = [];
    const got = await collect(client.openBlob(host, REPO, layer, { onResume: (at, e) => resumes.push([at, e.reason]) }));
    expect(got.equals(blob)).toBe(true);
    expect(resumes).toHaveLength(1);
    const [offset] = resumes[0]!;
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(300_000);
    expect(blobRequests().map((r) => [r.fault, r.range, r.status])).toEqual([
      ['reset', undefined, 200],
      [undefined, `bytes=${offset}-`, 206],
    ]);
  });

  it('a Range request answered with 200 restarts, skipping what was already passed on', async () => {
    const proxy = p.proxy();
    proxy.requests.length = 0;
    proxy.addFault({ method: 'GET', path: blobPath, resetAfterBytes: 500_000 });
    // A server (or cache) that ignores Range: the whole blob again.
    proxy.addFault({ method: 'GET', path: blobPath, status: 200, body: blob.toString('latin1'), headers: { 'content-type': 'application/octet-stream' } });
    const got = await collect(client.openBlob(host, REPO, layer));
    expect(got.equals(blob)).toBe(true);
    const reqs = blobRequests();
    expect(reqs.map((r) => [r.fault, r.status])).toEqual([
      ['reset', 200],
      ['status', 200],
    ]);
    expect(reqs[1]!.range).toMatch(/^bytes=\d+-$/);
  });

  it('corrupted bytes fail with DIGEST_MISMATCH, not retried', async () => {
    const proxy = p.proxy();
    proxy.requests.length = 0;
    const bad = Buffer.from(blob);
    bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 0x01;
    proxy.addFault({ method: 'GET', path: blobPath, status: 200, body: bad.toString('latin1'), headers: { 'content-type': 'application/octet-stream' } });
    const e = await caught(collect(client.openBlob(host, REPO, layer)));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'DIGEST_MISMATCH' });
    expect(e.message).toContain(layer.digest);
    expect(blobRequests()).toHaveLength(1);
  });

  it('extra bytes fail: a longer body, or a resumed part that runs past the size', async () => {
    const proxy = p.proxy();
    proxy.requests.length = 0;
    proxy.addFault({ method: 'GET', path: blobPath, status: 200, body: blob.toString('latin1') + 'EXTRA', headers: { 'content-type': 'application/octet-stream' } });
    const e1 = await caught(collect(client.openBlob(host, REPO, layer)));
    expect(e1).toMatchObject({ errorClass: 'permanent', reason: 'SIZE_MISMATCH' });
    expect(blobRequests()).toHaveLength(1);

    // Reset at a known offset; the Range answer then carries more than the rest of the blob.
    proxy.requests.length = 0;
    const at = 200_000;
    proxy.addFault({ method: 'GET', path: blobPath, resetAfterBytes: at });
    const rest = blob.subarray(at).toString('latin1') + 'EXTRA';
    proxy.addFault({
      method: 'GET',
      path: blobPath,
      status: 206,
      body: rest,
      headers: { 'content-type': 'application/octet-stream', 'content-range': `bytes ${at}-${blob.length + 4}/*` },
    });
    const resumes: number[] = [];
    const e2 = await caught(collect(client.openBlob(host, REPO, layer, { onResume: (o) => resumes.push(o) })));
    expect(resumes).toEqual([at]);
    expect(e2).toMatchObject({ errorClass: 'permanent', reason: 'SIZE_MISMATCH' });
    expect(e2.message).toMatch(/more than/);
    expect(blobRequests().map((r) => r.range)).toEqual([undefined, `bytes=${at}-`]);
  });

  it('a body shorter than the descriptor fails with SIZE_MISMATCH', async () => {
    const proxy = p.proxy();
    proxy.addFault({ method: 'GET', path: blobPath, status: 200, body: blob.subarray(1).toString('latin1'), headers: { 'content-type': 'application/octet-stream' } });
    const e = await caught(collect(client.openBlob(host, REPO, layer)));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'SIZE_MISMATCH' });
  });

  it('a stalled body times out and resumes with Range', async () => {
    const proxy = p.proxy();
    const slow = newClient(proxy, { bodyTimeoutMs: 1000 });
    try {
      proxy.requests.length = 0;
      proxy.addFault({ method: 'GET', path: blobPath, stallMs: 8000, afterBytes: 100_000 });
      const reasons: string[] = [];
      const t0 = Date.now();
      const got = await collect(slow.openBlob(host, REPO, layer, { onResume: (_o, e) => reasons.push(e.reason) }));
      expect(got.equals(blob)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(6000);
      expect(reasons).toEqual(['UND_ERR_BODY_TIMEOUT']);
      expect(blobRequests()[1]!.range).toMatch(/^bytes=\d+-$/);
    } finally {
      await slow.close();
    }
  });
});

describe('blob uploads', () => {
  const p = withProxy();
  let client: RegistryClient;
  let host: string;
  beforeAll(() => {
    host = p.proxy().hostPort;
    client = newClient(p.proxy());
    return client.ping(host);
  });
  afterAll(() => client?.close());
  /** `METHOD path?mount` of each request, with upload UUIDs kept to compare. */
  const shape = () =>
    p.proxy().requests.map((r) => `${r.method} ${r.path.replace(/^\/v2\/[^]*?\/blobs\//, '')}${r.url.includes('mount=') ? ' (mount)' : ''} ${r.status}`);

  it('pushes with HEAD -> mount attempt -> one streamed PATCH -> PUT, through the proxy', async () => {
    const proxy = p.proxy();
    const data = Buffer.from(`upload shape ${Date.now()}\n`.repeat(20_000));
    const digest = digestOf(data);
    proxy.requests.length = 0;
    // Not in the source repository: the registry opens a normal session instead (202).
    const res = await client.uploadBlob(host, 'faults/up-dst', () => Readable.from([data.subarray(0, 100_000), data.subarray(100_000)]), {
      digest,
      size: data.length,
      mountFrom: 'faults/up-src',
    });
    expect(res).toEqual({ digest, size: data.length, via: 'upload' });
    const reqs = proxy.requests;
    expect(reqs.map((r) => [r.method, r.status])).toEqual([
      ['HEAD', 404],
      ['POST', 202],
      ['PATCH', 202],
      ['PUT', 201],
    ]);
    const [head, post, patch, put] = reqs;
    expect(head!.path).toBe(`/v2/faults/up-dst/blobs/${digest}`);
    expect(new URL(post!.url, 'http://x').searchParams.get('mount')).toBe(digest);
    expect(new URL(post!.url, 'http://x').searchParams.get('from')).toBe('faults/up-src');
    // The session's Location (on the proxy, since Host was forwarded) is used as given, state and all.
    const uuid = /\/blobs\/uploads\/([^/?]+)/.exec(patch!.path)?.[1];
    expect(uuid).toBeTruthy();
    expect(put!.path).toBe(patch!.path);
    expect(patch!.url).toContain('_state=');
    expect(patch!.headers['content-length']).toBe(String(data.length));
    expect(patch!.headers.host).toBe(host);
    const putQuery = new URL(put!.url, 'http://x').searchParams;
    expect(putQuery.get('digest')).toBe(digest);
    expect(putQuery.get('_state')).not.toBe(new URL(patch!.url, 'http://x').searchParams.get('_state'));
    expect(put!.headers['content-length']).toBe('0');
    expect(await client.blobExists(host, 'faults/up-dst', digest)).toBe(data.length);

    // The same blob again: HEAD finds it, nothing else is sent.
    proxy.requests.length = 0;
    expect((await client.uploadBlob(host, 'faults/up-dst', Readable.from([data]), { digest })).via).toBe('existing');
    expect(shape()).toEqual([`HEAD ${digest} 200`]);

    // Mount from a repository that has it: 201, then a HEAD for the size; no bytes move.
    proxy.requests.length = 0;
    expect(await client.uploadBlob(host, 'faults/up-mounted', Readable.from([]), { digest, mountFrom: 'faults/up-dst' })).toEqual({
      digest,
      size: data.length,
      via: 'mount',
    });
    expect(shape()).toEqual([`HEAD ${digest} 404`, 'POST uploads/ (mount) 201', `HEAD ${digest} 200`]);
  });

  it('without a digest: POST, one PATCH, PUT with the digest computed while streaming', async () => {
    const proxy = p.proxy();
    const data = Buffer.from(`no digest ${Date.now()}\n`.repeat(50_000));
    proxy.requests.length = 0;
    const res = await client.uploadBlob(host, 'faults/up-nodigest', Readable.from(chunks(data, 64 * 1024)));
    expect(res).toEqual({ digest: digestOf(data), size: data.length, via: 'upload' });
    expect(proxy.requests.map((r) => [r.method, r.status])).toEqual([
      ['POST', 202],
      ['PATCH', 202],
      ['PUT', 201],
    ]);
    expect(proxy.requests[1]!.headers['content-length']).toBeUndefined(); // streamed, size unknown
    expect(new URL(proxy.requests[2]!.url, 'http://x').searchParams.get('digest')).toBe(digestOf(data));
  });

  it('a failed PATCH restarts the blob from byte 0 when the source can be read again', async () => {
    const proxy = p.proxy();
    const data = Buffer.from(`restart ${Date.now()}\n`.repeat(1000));
    proxy.requests.length = 0;
    proxy.addFault({ method: 'PATCH', path: /\/blobs\/uploads\//, status: 503 });
    let opened = 0;
    const res = await client.uploadBlob(host, 'faults/up-restart', () => {
      opened++;
      return Readable.from([data]);
    }, { digest: digestOf(data), size: data.length });
    expect(res.via).toBe('upload');
    expect(opened).toBe(2);
    expect(proxy.requests.map((r) => [r.method, r.status])).toEqual([
      ['HEAD', 404],
      ['POST', 202],
      ['PATCH', 503],
      ['POST', 202],
      ['PATCH', 202],
      ['PUT', 201],
    ]);
    expect(await client.blobExists(host, 'faults/up-restart', res.digest)).toBe(data.length);

    // A one-shot stream cannot be sent again: the push fails and says why.
    proxy.requests.length = 0;
    proxy.addFault({ method: 'PATCH', path: /\/blobs\/uploads\//, status: 503 });
    const once = Buffer.from(`once ${Date.now()}`);
    const e = await caught(client.uploadBlob(host, 'faults/up-once', Readable.from([once])));
    // Transient (the job may start over), but not retried here: no attempts spent on a lost cause.
    expect(e).toMatchObject({ errorClass: 'transient', reason: 'UPLOAD_INTERRUPTED', status: 503 });
    expect(e.message).toMatch(/cannot be read again: .*HTTP 503/);
    expect(proxy.requests.map((r) => [r.method, r.status])).toEqual([
      ['POST', 202],
      ['PATCH', 503],
    ]);
  });

  it('a small blob (monolithicUpTo): POST, one PUT with the whole body; a failed PUT is sent again from memory', async () => {
    const proxy = p.proxy();
    const data = Buffer.from(`monolithic ${Date.now()}\n`.repeat(5000));
    proxy.requests.length = 0;
    proxy.addFault({ method: 'PUT', path: /\/blobs\/uploads\//, status: 503 });
    let opened = 0;
    const sent: number[] = [];
    const res = await client.uploadBlob(host, 'faults/up-mono', () => {
      opened++;
      return Readable.from(chunks(data, 16 * 1024));
    }, { size: data.length, monolithicUpTo: data.length, onBytes: (n) => sent.push(n) });
    expect(res).toEqual({ digest: digestOf(data), size: data.length, via: 'upload' });
    expect(opened).toBe(1);
    expect(sent.at(-1)).toBe(data.length);
    expect(proxy.requests.map((r) => [r.method, r.status])).toEqual([
      ['POST', 202],
      ['PUT', 503],
      ['POST', 202],
      ['PUT', 201],
    ]);
    const put = proxy.requests[3]!;
    expect(put.headers['content-length']).toBe(String(data.length));
    expect(new URL(put.url, 'http://x').searchParams.get('digest')).toBe(digestOf(data));
    expect(await client.blobExists(host, 'faults/up-mono', res.digest)).toBe(data.length);

    // Known digest, no HEAD asked for (checkExisting: false): straight to POST and PUT, even when it exists.
    proxy.requests.length = 0;
    const again = await client.uploadBlob(host, 'faults/up-mono', () => Readable.from([data]), {
      digest: res.digest,
      size: data.length,
      monolithicUpTo: data.length,
      checkExisting: false,
    });
    expect(again).toEqual(res);
    expect(proxy.requests.map((r) => r.method)).toEqual(['POST', 'PUT']);

    // Bytes that do not match the digest the caller gave: a permanent error before anything is sent.
    proxy.requests.length = 0;
    const e = await caught(client.uploadBlob(host, 'faults/up-mono', () => Readable.from([data.subarray(1)]), {
      digest: res.digest,
      size: data.length - 1,
      monolithicUpTo: data.length,
      checkExisting: false,
    }));
    expect(e).toMatchObject({ errorClass: 'permanent', reason: 'DIGEST_MISMATCH' });
    expect(proxy.requests).toEqual([]);

    // More bytes than announced: refused while reading (never buffered past the size), nothing sent.
    let pulled = 0;
    async function* endless(): AsyncGenerator<Buffer> {
      for (;;) {
        pulled++;
        yield data;
      }
    }
    const over = await caught(client.uploadBlob(host, 'faults/up-mono', () => endless(), { size: data.length * 2, monolithicUpTo: data.length * 2 }));
    expect(over).toMatchObject({ errorClass: 'permanent', reason: 'SIZE_MISMATCH' });
    expect(pulled).toBe(3);
    expect(proxy.requests).toEqual([]);
  });

  it('a small blob this client pushed before is mounted from where it went (no bytes), a refused guess uploads', async () => {
    const proxy = p.proxy();
    const data = Buffer.from(`dedupe ${Date.now()}\n`.repeat(3000));
    const opts = { size: data.length, monolithicUpTo: data.length };
    await client.uploadBlob(host, 'faults/dedupe-a', () => Readable.from([data]), opts);
    proxy.requests.length = 0;
    const again = await client.uploadBlob(host, 'faults/dedupe-b', () => Readable.from([data]), opts);
    expect(again).toEqual({ digest: digestOf(data), size: data.length, via: 'mount' });
    expect(shape()).toEqual([`POST uploads/ (mount) 201`]);
    expect(new URL(proxy.requests[0]!.url, 'http://x').searchParams.get('from')).toBe('faults/dedupe-a');
    expect(await client.blobExists(host, 'faults/dedupe-b', again.digest)).toBe(data.length);

    // The registry refuses the mount (403 on the other repository): the same push uploads the bytes instead.
    proxy.requests.length = 0;
    proxy.addFault({ method: 'POST', path: /mount=/, status: 403 });
    const refused = await client.uploadBlob(host, 'faults/dedupe-c', () => Readable.from([data]), opts);
    expect(refused.via).toBe('upload');
    expect(proxy.requests.map((r) => [r.method, r.url.includes('mount='), r.status])).toEqual([
      ['POST', true, 403],
      ['POST', false, 202],
      ['PUT', false, 201],
    ]);
  });

  it('an upload session the registry lost (404 BLOB_UPLOAD_UNKNOWN, e.g. after a restart) starts a new one', async () => {
    const proxy = p.proxy();
    const lost = JSON.stringify({ errors: [{ code: 'BLOB_UPLOAD_UNKNOWN', message: 'blob upload unknown to registry' }] });
    const data = Buffer.from(`session lost ${Date.now()}\n`.repeat(2000));
    proxy.requests.length = 0;
    proxy.addFault({ method: 'PUT', path: /\/blobs\/uploads\//, status: 404, body: lost });
    const res = await client.uploadBlob(host, 'faults/up-lost', () => Readable.from([data]), { size: data.length });
    expect(res).toEqual({ digest: digestOf(data), size: data.length, via: 'upload' });
    expect(proxy.requests.map((r) => [r.method, r.status])).toEqual([
      ['POST', 202],
      ['PATCH', 202],
      ['PUT', 404],
      ['POST', 202],
      ['PATCH', 202],
      ['PUT', 201],
    ]);

    // The same in one monolithic PUT.
    proxy.requests.length = 0;
    proxy.addFault({ method: 'PUT', path: /\/blobs\/uploads\//, status: 404, body: lost });
    const mono = await client.uploadBlob(host, 'faults/up-lost', () => Readable.from([data, data]), { size: 2 * data.length, monolithicUpTo: 1 << 20 });
    expect(mono.via).toBe('upload');
    expect(proxy.requests.map((r) => [r.method, r.status])).toEqual([
      ['POST', 202],
      ['PUT', 404],
      ['POST', 202],
      ['PUT', 201],
    ]);

    // A one-shot stream cannot be sent again: transient, so the job starts over, never a permanent failure.
    proxy.requests.length = 0;
    proxy.addFault({ method: 'PUT', path: /\/blobs\/uploads\//, status: 404, body: lost });
    const e = await caught(client.uploadBlob(host, 'faults/up-lost', Readable.from([Buffer.from(`once ${Date.now()}`)])));
    expect(e).toMatchObject({ errorClass: 'transient', reason: 'UPLOAD_INTERRUPTED' });
  });

  it('a one-shot source survives a failure before its first byte is read', async () => {
    const proxy = p.proxy();
    const data = Buffer.from(`one-shot ${Date.now()}\n`.repeat(1000));
    proxy.requests.length = 0;
    proxy.addFault({ method: 'POST', path: /\/blobs\/uploads\//, status: 503, times: 2 });
    const res = await client.uploadBlob(host, 'faults/up-oneshot', Readable.from([data]));
    expect(res).toEqual({ digest: digestOf(data), size: data.length, via: 'upload' });
    expect(proxy.requests.map((r) => [r.method, r.status])).toEqual([
      ['POST', 503],
      ['POST', 503],
      ['POST', 202],
      ['PATCH', 202],
      ['PUT', 201],
    ]);
  });
});

describe('errors and retry', () => {
  const p = withProxy();
  let host: string;
  beforeAll(() => {
    host = p.proxy().hostPort;
  });
  const manifestPath = /\/manifests\//;
  const manifestRequests = () => p.proxy().requests.filter((r) => manifestPath.test(r.path));

  it('429 with Retry-After waits as told without spending an attempt', async () => {
    const proxy = p.proxy();
    // A single attempt: any error that spent one would fail the call.
    const client = newClient(proxy, { retry: { ...RETRY, attempts: 1 } });
    try {
      await client.ping(host);
      proxy.requests.length = 0;
      proxy.addFault({ method: 'GET', path: manifestPath, status: 429, retryAfter: '1', times: 2 });
      const t0 = Date.now();
      const m = await client.getManifest(parseReference(`${host}/${REPO}:v1`));
      const waited = Date.now() - t0;
      expect(m.digest).toBe(layout.top.digest);
      expect(waited).toBeGreaterThanOrEqual(1950);
      expect(waited).toBeLessThan(5000);
      expect(manifestRequests().map((r) => r.status)).toEqual([429, 429, 200]);
      // A 503 with that same policy is not retried at all.
      proxy.addFault({ method: 'GET', path: manifestPath, status: 503 });
      expect(await caught(client.getManifest(parseReference(`${host}/${REPO}:v1`)))).toMatchObject({ errorClass: 'transient', status: 503 });
    } finally {
      await client.close();
    }
  });

  it('Retry-After as an HTTP date is honoured on a 503; a wait beyond the rate-limit budget gives up at once', async () => {
    const proxy = p.proxy();
    const client = newClient(proxy, { retry: { ...RETRY, attempts: 2, maxRateLimitWaitMs: 1000 } });
    try {
      await client.ping(host);
      proxy.requests.length = 0;
      const at = new Date(Math.ceil((Date.now() + 1500) / 1000) * 1000); // 1.5 to 2.5 s ahead, whole seconds
      proxy.addFault({ method: 'GET', path: manifestPath, status: 503, retryAfter: at.toUTCString() });
      const t0 = Date.now();
      expect((await client.getManifest(parseReference(`${host}/${REPO}:v1`))).digest).toBe(layout.top.digest);
      expect(Date.now()).toBeGreaterThanOrEqual(at.getTime() - 50);
      expect(Date.now() - t0).toBeLessThan(3500);
      expect(manifestRequests().map((r) => r.status)).toEqual([503, 200]);

      // An hour's Retry-After (capped at 5 min) is over the 1 s budget: the rate-limited error comes back now.
      proxy.addFault({ method: 'GET', path: manifestPath, status: 429, retryAfter: '3600' });
      const t1 = Date.now();
      const e = await caught(client.getManifest(parseReference(`${host}/${REPO}:v1`)));
      expect(e).toMatchObject({ errorClass: 'rate-limited', status: 429, reason: 'TOOMANYREQUESTS', retryAfterMs: 300_000 });
      expect(Date.now() - t1).toBeLessThan(1500);
    } finally {
      await client.close();
    }
  });

  it('503 is retried and then succeeds', async () => {
    const proxy = p.proxy();
    const client = newClient(proxy, { retry: { ...RETRY, attempts: 3 } });
    try {
      proxy.requests.length = 0;
      proxy.addFault({ method: 'GET', path: manifestPath, status: 503, times: 2 });
      const m = await client.getManifest(parseReference(`${host}/${REPO}:v1`));
      expect(m.digest).toBe(layout.top.digest);
      expect(manifestRequests().map((r) => r.status)).toEqual([503, 503, 200]);
    } finally {
      await client.close();
    }
  });

  it('a persistent 503 ends as a transient error after the configured attempts', async () => {
    const proxy = p.proxy();
    const client = newClient(proxy, { retry: { ...RETRY, attempts: 3 } });
    try {
      proxy.requests.length = 0;
      const fault = proxy.addFault({ method: 'GET', path: manifestPath, status: 503, times: 100 });
      const e = await caught(client.getManifest(parseReference(`${host}/${REPO}:v1`)));
      expect(e).toMatchObject({ errorClass: 'transient', status: 503, reason: 'UNAVAILABLE' });
      expect(e.message).toMatch(/HTTP 503/);
      expect(fault.hits).toBe(3);
      expect(manifestRequests()).toHaveLength(3);
      proxy.clearFaults();
    } finally {
      await client.close();
    }
  });

  it('connection resets and header timeouts are retried', async () => {
    const proxy = p.proxy();
    const client = newClient(proxy, { retry: { ...RETRY, attempts: 3 }, headersTimeoutMs: 1000 });
    try {
      proxy.requests.length = 0;
      proxy.addFault({ method: 'GET', path: manifestPath, resetAfterBytes: 0 });
      proxy.addFault({ method: 'GET', path: manifestPath, stallMs: 8000 });
      const t0 = Date.now();
      const m = await client.getManifest(parseReference(`${host}/${REPO}:v1`));
      expect(m.digest).toBe(layout.top.digest);
      expect(Date.now() - t0).toBeLessThan(6000); // gave up on the stalled answer
      expect(manifestRequests().map((r) => r.fault)).toEqual(['reset', 'stall', undefined]);
    } finally {
      await client.close();
    }
  });

  it('404 is permanent at once', async () => {
    const proxy = p.proxy();
    const client = newClient(proxy, { retry: { ...RETRY, attempts: 5 } });
    try {
      proxy.requests.length = 0;
      const e = await caught(client.getManifest(parseReference(`${host}/${REPO}:no-such-tag`)));
      expect(e).toMatchObject({ errorClass: 'permanent', status: 404, reason: 'MANIFEST_UNKNOWN' });
      expect(e.message).toMatch(/does not exist/);
      expect(manifestRequests()).toHaveLength(1);
      proxy.requests.length = 0;
      const missing = { digest: digestOf(Buffer.from('never pushed')), size: 12 };
      expect(await caught(collect(client.openBlob(host, REPO, missing)))).toMatchObject({ errorClass: 'permanent', reason: 'BLOB_UNKNOWN' });
      expect(proxy.requests).toHaveLength(1);
    } finally {
      await client.close();
    }
  });

  it('holds the per-host limit on requests in flight', async () => {
    const proxy = p.proxy();
    const client = newClient(proxy, { maxConcurrentPerHost: 2 });
    try {
      await client.ping(host);
      proxy.requests.length = 0;
      proxy.addFault({ method: 'GET', path: /\/blobs\/sha256:/, stallMs: 200, times: 6 });
      let max = 0;
      const sample = setInterval(() => {
        const inFlight = proxy.requests.filter((r) => r.status === 0).length;
        max = Math.max(max, inFlight);
      }, 2);
      const t0 = Date.now();
      const results = await Promise.all(
        Array.from({ length: 6 }, () => client.getBlobBytes(host, REPO, configDesc)),
      ).finally(() => clearInterval(sample));
      const took = Date.now() - t0;
      const config = readFileSync(join(layout.dir, 'blobs', 'sha256', configDesc.digest.slice(7)));
      for (const r of results) expect(r.equals(config)).toBe(true);
      expect(proxy.requests).toHaveLength(6);
      expect(max).toBe(2);
      expect(took).toBeGreaterThanOrEqual(3 * 200 - 20);
    } finally {
      await client.close();
    }
  });
});

function* chunks(b: Buffer, n: number): Generator<Buffer> {
  for (let i = 0; i < b.length; i += n) yield b.subarray(i, i + n);
}
