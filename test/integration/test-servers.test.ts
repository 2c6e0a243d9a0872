/**
 * Proves the test servers and fixture builders against the real registry (distribution 2.8) and skopeo,
 * so that OCI client tests can trust them.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { extract } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startRegistry, type RegistryServer } from '../../src/stack/index.ts';
import { startBlobMirror, startFaultProxy, type BlobMirror, type FaultProxy } from '../helpers/fault-proxy.ts';
import { buildImageLayout, makeDisk, makeIso, MediaType, whiteout, type BuiltLayout, type DiskFormat } from '../helpers/fixtures.ts';
import { writeHtpasswd } from '../helpers/htpasswd.ts';
import { SkopeoError, skopeoCopy, skopeoInspectRaw } from '../helpers/skopeo.ts';
import { startTokenRegistry, startTokenServer, type TokenRegistry } from '../helpers/token-server.ts';

const run = promisify(execFile);
const registryUrl = inject('registryUrl');
const registryHostPort = inject('registryHostPort');

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'dvcr-test-servers-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function basic(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** File names inside an uncompressed layer tar. */
async function tarNames(tar: Buffer): Promise<string[]> {
  const names: string[] = [];
  const ex = extract();
  const done = (async () => {
    for await (const entry of ex) {
      names.push(entry.header.name);
      entry.resume();
    }
  })();
  Readable.from([tar]).pipe(ex);
  await done;
  return names;
}

let layoutCounter = 0;
/** A one-layer gzip image holding `disk/<name>`. */
function smallLayout(content = 'hello disk\n', name = 'x.qcow2'): Promise<BuiltLayout> {
  return buildImageLayout(join(root, `layout-${++layoutCounter}`), {
    layers: [{ files: [{ path: `disk/${name}`, content, uid: 107 }] }],
  });
}

describe('htpasswd registry', () => {
  let registry: RegistryServer;
  beforeAll(async () => {
    const file = join(root, 'htpasswd');
    await writeHtpasswd(file, { alice: 's3cret', bob: 'other:pw' });
    registry = await startRegistry({ dataDir: join(root, 'htpasswd-registry'), auth: { kind: 'htpasswd', path: file } });
  });
  afterAll(() => registry?.stop());

  it('rejects anonymous and wrong passwords, accepts bcrypt users', async () => {
    const anon = await fetch(`${registry.url}/v2/`);
    expect(anon.status).toBe(401);
    expect(anon.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
    expect((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic('alice', 'nope') } })).status).toBe(401);
    expect((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic('alice', 's3cret') } })).status).toBe(200);
    expect((await fetch(`${registry.url}/v2/`, { headers: { authorization: basic('bob', 'other:pw') } })).status).toBe(200);
  });

  it('skopeo pushes and pulls with creds, and fails without', async () => {
    const layout = await smallLayout();
    const ref = `docker://${registry.hostPort}/auth/basic:v1`;
    await expect(skopeoCopy(layout.ref, ref)).rejects.toBeInstanceOf(SkopeoError);
    await skopeoCopy(layout.ref, ref, { destCreds: { username: 'alice', password: 's3cret' } });
    const raw = await skopeoInspectRaw(ref, { creds: { username: 'alice', password: 's3cret' } });
    expect(raw).toBe(layout.topJson);
    const err = await skopeoInspectRaw(ref).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SkopeoError);
    expect(String(err)).not.toContain('s3cret');
  });
});

describe('token registry', () => {
  let tr: TokenRegistry;
  beforeAll(async () => {
    tr = await startTokenRegistry(join(root, 'token-registry'), { users: { alice: 'pw' } });
  });
  afterAll(() => tr?.stop());

  it('challenges with realm, service and scope, and accepts its tokens', async () => {
    const first = await fetch(`${tr.registry.url}/v2/foo/tags/list`);
    expect(first.status).toBe(401);
    const challenge = first.headers.get('www-authenticate') ?? '';
    expect(challenge).toContain(`realm="${tr.tokenServer.realm}"`);
    expect(challenge).toContain(`service="${tr.tokenServer.service}"`);
    expect(challenge).toContain('scope="repository:foo:pull"');

    const reply = await fetch(
      `${tr.tokenServer.realm}?service=${tr.tokenServer.service}&scope=repository:foo:pull&scope=repository:bar:pull,push`,
      { headers: { authorization: basic('alice', 'pw') } },
    );
    expect(reply.status).toBe(200);
    const body = (await reply.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ expires_in: 300 });
    expect(body.token).toBe(body.access_token);
    expect(typeof body.issued_at).toBe('string');
    const ok = await fetch(`${tr.registry.url}/v2/foo/tags/list`, { headers: { authorization: `Bearer ${String(body.token)}` } });
    expect(ok.status).toBe(404); // authorized; the repository just does not exist
    const rec = tr.tokenServer.requests.at(-1);
    expect(rec).toMatchObject({ basicAuth: true, user: 'alice', status: 200 });
    expect(rec?.scopes).toEqual(['repository:foo:pull', 'repository:bar:pull,push']);

    expect((await fetch(tr.tokenServer.realm, { headers: { authorization: basic('alice', 'bad') } })).status).toBe(401);
    // A token without the needed access: 401 insufficient_scope.
    const empty = tr.tokenServer.issue('alice', []);
    const denied = await fetch(`${tr.registry.url}/v2/foo/tags/list`, { headers: { authorization: `Bearer ${empty}` } });
    expect(denied.status).toBe(401);
    expect(denied.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
  });

  it('skopeo with creds pushes and pulls; anonymous may pull but not push', async () => {
    const layout = await smallLayout('token disk\n');
    const ref = `docker://${tr.registry.hostPort}/auth/token:v1`;
    tr.tokenServer.requests.length = 0;
    await skopeoCopy(layout.ref, ref, { destCreds: { username: 'alice', password: 'pw' } });
    expect(tr.tokenServer.requests.some((r) => r.user === 'alice' && r.scopes.some((s) => s.includes('push')))).toBe(true);
    expect(await skopeoInspectRaw(ref, { creds: { username: 'alice', password: 'pw' } })).toBe(layout.topJson);
    expect(await skopeoInspectRaw(ref)).toBe(layout.topJson);
    expect(tr.tokenServer.requests.at(-1)).toMatchObject({ basicAuth: false, status: 200 });
    await expect(skopeoCopy(layout.ref, `docker://${tr.registry.hostPort}/auth/anon:v1`)).rejects.toBeInstanceOf(
      SkopeoError,
    );
  });

  it('works with ES256 and a libtrust kid, and can refuse anonymous pulls', async () => {
    const dir = join(root, 'token-es256');
    const es = await startTokenRegistry(dir, {
      users: { alice: 'pw' },
      algorithm: 'ES256',
      keyHeader: 'kid',
      anonymousPull: false,
    });
    try {
      const layout = await smallLayout('es256\n');
      const ref = `docker://${es.registry.hostPort}/auth/es:v1`;
      await skopeoCopy(layout.ref, ref, { destCreds: { username: 'alice', password: 'pw' } });
      expect(await skopeoInspectRaw(ref, { creds: { username: 'alice', password: 'pw' } })).toBe(layout.topJson);
      await expect(skopeoInspectRaw(ref)).rejects.toBeInstanceOf(SkopeoError);
    } finally {
      await es.stop();
    }
  });

  it('a standalone token server stops cleanly and removes its temp folder', async () => {
    const ts = await startTokenServer({ omitExpiresIn: true });
    const body = (await (await fetch(`${ts.realm}?scope=repository:x:pull`)).json()) as Record<string, unknown>;
    expect(body.expires_in).toBeUndefined();
    await ts.stop();
    expect(() => readFileSync(ts.rootCertBundle)).toThrow();
  });
});

describe('fault proxy and blob mirror', () => {
  let proxy: FaultProxy;
  let mirror: BlobMirror;
  let layout: BuiltLayout;
  let blob: Buffer;
  let blobPath: string;
  beforeAll(async () => {
    // A layer big enough to arrive in several chunks.
    const big = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    layout = await buildImageLayout(join(root, 'proxy-layout'), {
      layers: [{ compression: 'none', files: [{ path: 'disk/big.raw', content: big }] }],
    });
    await skopeoCopy(layout.ref, `docker://${registryHostPort}/proxy/src:v1`);
    const layer = layout.images[0]!.layers[0]!;
    blob = readFileSync(join(layout.dir, 'blobs', 'sha256', layer.digest.slice(7)));
    blobPath = `/v2/proxy/src/blobs/${layer.digest}`;
    proxy = await startFaultProxy(registryUrl);
    mirror = await startBlobMirror(registryUrl);
  });
  afterAll(async () => {
    await proxy?.stop();
    await mirror?.stop();
  });

  it('passes normal requests through unchanged, recording them', async () => {
    proxy.requests.length = 0;
    const direct = await fetch(`${registryUrl}${blobPath}`);
    const res = await fetch(`${proxy.url}${blobPath}`, { headers: { authorization: 'Bearer abc' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('docker-content-digest')).toBe(direct.headers.get('docker-content-digest'));
    expect(res.headers.get('content-length')).toBe(String(blob.length));
    await direct.arrayBuffer();
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(blob));
    expect(proxy.requests).toHaveLength(1);
    expect(proxy.requests[0]).toMatchObject({ method: 'GET', path: blobPath, authorization: true, range: undefined, status: 200 });
    expect(proxy.requests[0]?.fault).toBeUndefined();
  });

  it('forwards Range', async () => {
    proxy.requests.length = 0;
    const res = await fetch(`${proxy.url}${blobPath}`, { headers: { range: 'bytes=1000-' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe(`bytes 1000-${blob.length - 1}/${blob.length}`);
    expect(Buffer.from(await res.arrayBuffer()).equals(blob.subarray(1000))).toBe(true);
    expect(proxy.requests[0]).toMatchObject({ range: 'bytes=1000-', authorization: false });
  });

  it('injects 429 with Retry-After for the next N matching requests only', async () => {
    const fault = proxy.addFault({ method: 'GET', path: /\/manifests\//, times: 2, status: 429, retryAfter: '1' });
    const url = `${proxy.url}/v2/proxy/src/manifests/v1`;
    const headers = { accept: MediaType.ociManifest };
    for (let i = 0; i < 2; i++) {
      const r = await fetch(url, { headers });
      expect(r.status).toBe(429);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(((await r.json()) as { errors: Array<{ code: string }> }).errors[0]?.code).toBe('TOOMANYREQUESTS');
    }
    const ok = await fetch(url, { headers });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe(layout.topJson);
    expect(fault.hits).toBe(2);
    expect(fault.remaining).toBe(0);
    // HEAD does not match a GET fault.
    proxy.addFault({ method: 'GET', path: /\/manifests\//, status: 503 });
    expect((await fetch(url, { method: 'HEAD', headers })).status).toBe(200);
    expect((await fetch(url, { headers })).status).toBe(503);
    proxy.clearFaults();
  });

  it('resetAfterBytes sends the head and N bytes, then resets; a Range request resumes', async () => {
    proxy.addFault({ path: /\/blobs\/sha256:/, resetAfterBytes: 100_000 });
    const res = await fetch(`${proxy.url}${blobPath}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(blob.length));
    const got: Buffer[] = [];
    const reader = res.body!.getReader();
    let error: unknown;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        got.push(Buffer.from(value));
      }
    } catch (e) {
      error = e;
    }
    expect(error).toBeDefined();
    const head = Buffer.concat(got);
    expect(head.length).toBe(100_000);
    expect(head.equals(blob.subarray(0, 100_000))).toBe(true);
    const rest = await fetch(`${proxy.url}${blobPath}`, { headers: { range: `bytes=${head.length}-` } });
    expect(rest.status).toBe(206);
    expect(sha256(Buffer.concat([head, Buffer.from(await rest.arrayBuffer())]))).toBe(sha256(blob));
    expect(proxy.requests.at(-2)?.fault).toBe('reset');
  });

  it('stalls before answering, or mid-body', async () => {
    proxy.addFault({ path: /\/manifests\//, stallMs: 300 });
    let t0 = Date.now();
    const r = await fetch(`${proxy.url}/v2/proxy/src/manifests/v1`, { headers: { accept: MediaType.ociManifest } });
    expect(r.status).toBe(200);
    await r.text();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);

    proxy.addFault({ path: /\/blobs\//, stallMs: 300, afterBytes: 1000 });
    t0 = Date.now();
    const b = await fetch(`${proxy.url}${blobPath}`);
    const headAt = Date.now() - t0;
    expect(sha256(Buffer.from(await b.arrayBuffer()))).toBe(sha256(blob));
    expect(headAt).toBeLessThan(280);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(280);
  });

  it('redirects to the blob mirror, which rejects Authorization', async () => {
    proxy.addFault({ method: 'GET', path: /\/blobs\//, redirectTo: mirror.url });
    const r = await fetch(`${proxy.url}${blobPath}`, { redirect: 'manual', headers: { authorization: 'Bearer abc' } });
    expect(r.status).toBe(307);
    const location = r.headers.get('location');
    expect(location).toBe(`${mirror.url}${blobPath}`);
    const leaked = await fetch(location!, { headers: { authorization: 'Bearer abc' } });
    expect(leaked.status).toBe(400);
    expect(await leaked.text()).toContain('Only one auth mechanism allowed');
    const clean = await fetch(location!);
    expect(clean.status).toBe(200);
    expect(sha256(Buffer.from(await clean.arrayBuffer()))).toBe(sha256(blob));
    const ranged = await fetch(location!, { headers: { range: 'bytes=10-19' } });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(blob.subarray(10, 20))).toBe(true);
    expect(mirror.requests.map((q) => [q.authorization, q.status])).toEqual([
      [true, 400],
      [false, 200],
      [false, 206],
    ]);
  });

  it('carries a whole skopeo push and pull (streamed uploads, Location through the proxy)', async () => {
    proxy.requests.length = 0;
    const small = await smallLayout('via proxy\n');
    const ref = `docker://${proxy.hostPort}/proxy/pushed:v1`;
    await skopeoCopy(small.ref, ref);
    expect(await skopeoInspectRaw(ref)).toBe(small.topJson);
    expect(await skopeoInspectRaw(`docker://${registryHostPort}/proxy/pushed:v1`)).toBe(small.topJson);
    const methods = new Set(proxy.requests.map((q) => q.method));
    expect(methods).toContain('PATCH');
    expect(methods).toContain('PUT');
  });
});

describe('fixtures', () => {
  async function pushAndCheck(layout: BuiltLayout, repo: string, all = false): Promise<string> {
    const ref = `docker://${registryHostPort}/${repo}:${layout.tag}`;
    await skopeoCopy(layout.ref, ref, { all });
    const raw = await skopeoInspectRaw(ref);
    expect(raw).toBe(layout.topJson);
    expect(sha256(raw)).toBe(layout.top.digest);
    return raw;
  }

  it('single gzip layer with owner, mode and a whiteout', async () => {
    const layout = await buildImageLayout(join(root, 'fx-gzip'), {
      tag: 'v1',
      layers: [
        {
          compression: 'gzip',
          files: [
            { path: 'disk/x.qcow2', content: 'QFI\xfb', mode: 0o440, uid: 107 },
            whiteout('disk/old.img'),
          ],
        },
      ],
    });
    const manifest = JSON.parse(await pushAndCheck(layout, 'fixtures/gzip')) as {
      layers: Array<{ mediaType: string; digest: string }>;
    };
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([MediaType.layerGzip]);
    const layer = readFileSync(join(layout.dir, 'blobs', 'sha256', manifest.layers[0]!.digest.slice(7)));
    const tar = gunzipSync(layer);
    expect(sha256(tar)).toBe(layout.images[0]!.layers[0]!.diffId);
    expect(await tarNames(tar)).toEqual(['disk/', 'disk/x.qcow2', 'disk/.wh.old.img']);
  });

  it('zstd and uncompressed layers, one from a file on disk', async () => {
    const disk = join(root, 'fx-disk.qcow2');
    await makeDisk(disk, 'qcow2', 16);
    const layout = await buildImageLayout(join(root, 'fx-zstd'), {
      layers: [
        { compression: 'zstd', files: [{ path: 'disk/disk.qcow2', fromFile: disk, uid: 107 }] },
        { compression: 'none', files: [{ path: 'disk/README', content: 'second layer\n' }] },
      ],
    });
    const manifest = JSON.parse(await pushAndCheck(layout, 'fixtures/zstd')) as { layers: Array<{ mediaType: string }> };
    expect(manifest.layers.map((l) => l.mediaType)).toEqual([MediaType.layerZstd, MediaType.layerTar]);
    const zst = join(layout.dir, 'blobs', 'sha256', layout.images[0]!.layers[0]!.digest.slice(7));
    const { stdout } = await run('zstd', ['-dc', zst], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
    expect(sha256(stdout)).toBe(layout.images[0]!.layers[0]!.diffId);
    expect(await tarNames(stdout)).toEqual(['disk/', 'disk/disk.qcow2']);
  });

  it('multi-platform index', async () => {
    const layout = await buildImageLayout(join(root, 'fx-index'), {
      layers: [],
      platforms: [
        { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ files: [{ path: 'disk/a.img', content: 'amd64' }] }] },
        {
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
          layers: [{ files: [{ path: 'disk/a.img', content: 'arm64' }] }],
        },
      ],
    });
    const index = JSON.parse(await pushAndCheck(layout, 'fixtures/multi', true)) as {
      mediaType: string;
      manifests: Array<{ digest: string; platform: { architecture: string } }>;
    };
    expect(index.mediaType).toBe(MediaType.ociIndex);
    expect(index.manifests.map((m) => m.platform.architecture)).toEqual(['amd64', 'arm64']);
    const arm = await skopeoInspectRaw(`docker://${registryHostPort}/fixtures/multi@${index.manifests[1]!.digest}`);
    expect(arm).toBe(layout.images[1]!.manifestJson);
  });

  it('makeDisk makes each format qemu-img knows, makeIso an ISO 9660 image', async () => {
    const formats: DiskFormat[] = ['qcow2', 'raw', 'vmdk', 'vdi', 'vpc', 'vhdx'];
    for (const format of formats) {
      const path = join(root, 'disks', `d.${format}`);
      await makeDisk(path, format, 4);
      const { stdout } = await run('qemu-img', ['info', '--output=json', path]);
      expect((JSON.parse(stdout) as { format: string }).format).toBe(format);
    }
    const iso = join(root, 'disks', 'x.iso');
    await makeIso(iso, { volumeId: 'SEED', files: { 'a/b.txt': 'b\n' } });
    const data = readFileSync(iso);
    expect(data.subarray(0x8001, 0x8006).toString('latin1')).toBe('CD001');
    expect(data.subarray(0x8028, 0x8028 + 4).toString('latin1')).toBe('SEED');
  });
});
