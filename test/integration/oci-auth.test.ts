/**
 * The OCI client's authentication against the real registry (distribution 2.8): anonymous, htpasswd (Basic),
 * and `token` mode (Bearer JWTs from our token server), including the token cache, multi-scope tokens for
 * cross-repository mounts, one refresh on 401, and credentials never following a redirect to another host.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  digestOf,
  MediaType,
  OciError,
  parseReference,
  RegistryClient,
  type Credentials,
  type RegistryClientOptions,
} from '../../src/oci/index.ts';
import { startRegistry, type RegistryServer } from '../../src/stack/index.ts';
import { startBlobMirror, startFaultProxy, type BlobMirror, type FaultProxy } from '../helpers/fault-proxy.ts';
import { buildImageLayout, type BuiltLayout } from '../helpers/fixtures.ts';
import { writeHtpasswd } from '../helpers/htpasswd.ts';
import { skopeoCopy, skopeoInspectRaw } from '../helpers/skopeo.ts';
import { startTokenRegistry, type AccessPolicy, type TokenRegistry } from '../helpers/token-server.ts';

const RETRY = { baseDelayMs: 10, maxDelayMs: 50 };

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'dvcr-oci-auth-'));
});
afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

async function collect(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}

function blobFile(layout: BuiltLayout, digest: string): Buffer {
  return readFileSync(join(layout.dir, 'blobs', 'sha256', digest.slice(7)));
}

let layoutCounter = 0;
/** A one-layer image (gzip) holding `disk/x.img` with `content`. */
function smallLayout(content: string | Buffer): Promise<BuiltLayout> {
  return buildImageLayout(join(root, `layout-${++layoutCounter}`), {
    layers: [{ files: [{ path: 'disk/x.img', content, uid: 107 }] }],
  });
}

function clientFor(hostPort: string, creds?: Credentials, extra: RegistryClientOptions = {}): RegistryClient {
  return new RegistryClient({
    insecureRegistries: [hostPort],
    credentials: (h) => (creds && h === hostPort ? creds : undefined),
    retry: RETRY,
    ...extra,
  });
}

/** Pulls the image at `ref` with `client` and checks every blob byte-exact against the layout. */
async function pullAndVerify(client: RegistryClient, hostPort: string, repoTag: string, layout: BuiltLayout): Promise<void> {
  const ref = parseReference(`${hostPort}/${repoTag}`);
  const resolved = await client.resolveImage(ref);
  const image = layout.images[0]!;
  expect(resolved.digest).toBe(image.manifest.digest);
  const config = await client.getBlobBytes(ref.registry, ref.repository, resolved.manifest.config);
  expect(config.equals(blobFile(layout, image.config.digest))).toBe(true);
  for (const l of resolved.manifest.layers) {
    expect((await collect(client.openBlob(ref.registry, ref.repository, l))).equals(blobFile(layout, l.digest))).toBe(true);
  }
}

/** Pushes a small image of our own (config + one layer + OCI manifest) and returns its parts. */
async function pushSmallImage(
  client: RegistryClient,
  hostPort: string,
  repository: string,
  tag: string,
  layer: Buffer,
): Promise<{ manifest: Buffer; digest: string; layerDigest: string }> {
  const up = await client.uploadBlob(hostPort, repository, () => Readable.from([layer]), { digest: digestOf(layer), size: layer.length });
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [up.digest] } }));
  const cfg = await client.uploadBlob(hostPort, repository, () => Readable.from([config]), { digest: digestOf(config), size: config.length });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
      layers: [{ mediaType: MediaType.OciLayerTar, digest: up.digest, size: up.size }],
    }),
  );
  const digest = await client.putManifest(hostPort, repository, tag, manifest, MediaType.OciManifest);
  return { manifest, digest, layerDigest: up.digest };
}

describe('anonymous registry (no auth)', () => {
  const registryUrl = inject('registryUrl');
  const registryHostPort = inject('registryHostPort');
  let proxy: FaultProxy;
  let layout: BuiltLayout;
  beforeAll(async () => {
    layout = await smallLayout('anonymous\n');
    await skopeoCopy(layout.ref, `docker://${registryHostPort}/auth/anon:v1`);
    proxy = await startFaultProxy(registryUrl);
  });
  afterAll(() => proxy?.stop());

  it('pulls and pushes without sending any Authorization, even with credentials configured', async () => {
    const client = clientFor(proxy.hostPort, { username: 'alice', password: 'unused-secret' });
    try {
      await client.ping(proxy.hostPort);
      await pullAndVerify(client, proxy.hostPort, 'auth/anon:v1', layout);
      const pushed = await pushSmallImage(client, proxy.hostPort, 'auth/anon-push', 'v1', Buffer.from('anon layer'));
      expect(await skopeoInspectRaw(`docker://${registryHostPort}/auth/anon-push:v1`)).toBe(pushed.manifest.toString());
      expect(proxy.requests.length).toBeGreaterThan(5);
      expect(proxy.requests.filter((r) => r.authorization)).toEqual([]);
    } finally {
      await client.close();
    }
  });
});

describe('htpasswd registry (Basic)', () => {
  const alice = { username: 'alice', password: 'S3cret-Pa55' };
  let registry: RegistryServer;
  let proxy: FaultProxy;
  let layout: BuiltLayout;
  beforeAll(async () => {
    const file = join(root, 'htpasswd');
    await writeHtpasswd(file, { alice: alice.password });
    registry = await startRegistry({ dataDir: join(root, 'htpasswd-registry'), auth: { kind: 'htpasswd', path: file } });
    proxy = await startFaultProxy(registry.url);
    layout = await smallLayout('basic\n');
    await skopeoCopy(layout.ref, `docker://${registry.hostPort}/auth/basic:v1`, { destCreds: alice });
  });
  afterAll(async () => {
    await proxy?.stop();
    await registry?.stop();
  });

  it('pulls and pushes with credentials from the provider, sending Basic on every request', async () => {
    const asked: string[] = [];
    const client = new RegistryClient({
      insecureRegistries: [proxy.hostPort],
      credentials: (h) => {
        asked.push(h);
        return h === proxy.hostPort ? alice : undefined;
      },
      retry: RETRY,
    });
    try {
      proxy.requests.length = 0;
      await pullAndVerify(client, proxy.hostPort, 'auth/basic:v1', layout);
      const pushed = await pushSmallImage(client, proxy.hostPort, 'auth/basic-push', 'v1', Buffer.from('basic layer'));
      expect(await skopeoInspectRaw(`docker://${registry.hostPort}/auth/basic-push:v1`, { creds: alice })).toBe(
        pushed.manifest.toString(),
      );
      expect(new Set(asked)).toEqual(new Set([proxy.hostPort]));
      // Discovery (`GET /v2/`) learns the Basic challenge; every request after it carries the credentials.
      const [discovery, ...rest] = proxy.requests;
      expect(discovery).toMatchObject({ path: '/v2/', authorization: false, status: 401 });
      expect(rest.length).toBeGreaterThan(5);
      const expected = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;
      expect(rest.filter((r) => r.headers.authorization !== expected)).toEqual([]);
      expect(rest.filter((r) => r.status === 401)).toEqual([]);
      expect(new Set(rest.map((r) => r.method))).toEqual(new Set(['GET', 'HEAD', 'POST', 'PATCH', 'PUT']));
    } finally {
      await client.close();
    }
  });

  it('a wrong password is a permanent error with a clear message that does not hold the password', async () => {
    const password = 'Wr0ng-Pa55word';
    const client = clientFor(proxy.hostPort, { username: 'alice', password });
    try {
      proxy.requests.length = 0;
      const err = await client.getManifest(parseReference(`${proxy.hostPort}/auth/basic:v1`)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OciError);
      const e = err as OciError;
      expect(e).toMatchObject({ errorClass: 'permanent', status: 401 });
      expect(e.message).toMatch(/HTTP 401/);
      expect(e.message).toMatch(/credentials/);
      expect(e.message).toContain('auth/basic');
      const basic = Buffer.from(`alice:${password}`).toString('base64');
      for (const text of [e.message, JSON.stringify(e.toJSON()), String(e.stack)]) {
        expect(text).not.toContain(password);
        expect(text).not.toContain(basic);
      }
      // Not retried: at most one resend after the 401.
      expect(proxy.requests.filter((r) => r.path.includes('/manifests/')).length).toBeLessThanOrEqual(2);
    } finally {
      await client.close();
    }
  });

  it('no credentials at all: a permanent error saying so', async () => {
    const client = clientFor(proxy.hostPort);
    try {
      const err = await client.getManifest(parseReference(`${proxy.hostPort}/auth/basic:v1`)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OciError);
      expect(err).toMatchObject({ errorClass: 'permanent', status: 401 });
      expect((err as OciError).message).toMatch(/no credentials/);
    } finally {
      await client.close();
    }
  });
});

describe('token registry (Bearer)', () => {
  const alice = { username: 'alice', password: 'T0ken-Pa55' };
  let tr: TokenRegistry;
  let proxy: FaultProxy;
  let layout: BuiltLayout;
  /** Replaces the token server's default policy while set. */
  let policy: AccessPolicy | undefined;
  const defaultPolicy: AccessPolicy = (user, scope) => (user !== undefined ? scope.actions : scope.actions.filter((a) => a === 'pull'));
  beforeAll(async () => {
    tr = await startTokenRegistry(join(root, 'token-registry'), {
      users: { alice: alice.password },
      allow: (user, scope) => (policy ?? defaultPolicy)(user, scope),
    });
    proxy = await startFaultProxy(tr.registry.url);
    layout = await smallLayout('bearer\n');
    await skopeoCopy(layout.ref, `docker://${tr.registry.hostPort}/auth/bearer:v1`, { destCreds: alice });
  });
  afterAll(async () => {
    await proxy?.stop();
    await tr?.stop();
  });
  const tokens = () => tr.tokenServer.requests;

  it('pulls and pushes with a user, reusing each token across requests', async () => {
    const client = clientFor(proxy.hostPort, alice);
    try {
      tokens().length = 0;
      proxy.requests.length = 0;
      await pullAndVerify(client, proxy.hostPort, 'auth/bearer:v1', layout);
      await client.getManifest(parseReference(`${proxy.hostPort}/auth/bearer:v1`));
      // One token for every pull request of the repository (manifest, config, layers).
      expect(tokens().map((t) => [t.user, t.scopes, t.status])).toEqual([['alice', ['repository:auth/bearer:pull'], 200]]);
      expect(tokens()[0]!.service).toBe(tr.tokenServer.service);
      const pulls = proxy.requests.filter((r) => r.path !== '/v2/');
      expect(pulls.length).toBeGreaterThanOrEqual(4);
      expect(new Set(pulls.map((r) => r.headers.authorization)).size).toBe(1);
      expect(pulls.filter((r) => r.status === 401)).toEqual([]);

      tokens().length = 0;
      const pushed = await pushSmallImage(client, proxy.hostPort, 'auth/bearer-push', 'v1', Buffer.from('bearer layer'));
      // One pull,push token for the whole push (HEADs, POSTs, PATCHes, PUTs, the manifest).
      expect(tokens().map((t) => t.scopes)).toEqual([['repository:auth/bearer-push:pull,push']]);
      expect(await skopeoInspectRaw(`docker://${tr.registry.hostPort}/auth/bearer-push:v1`, { creds: alice })).toBe(
        pushed.manifest.toString(),
      );
      // The registry never had to challenge a request once the host's auth was known.
      expect(proxy.requests.filter((r) => r.status === 401 && r.path !== '/v2/')).toEqual([]);
    } finally {
      await client.close();
    }
  });

  it('asks one token holding both scopes for a cross-repository mount', async () => {
    const client = clientFor(proxy.hostPort, alice);
    try {
      const layer = Buffer.from('to be mounted');
      const up = await client.uploadBlob(proxy.hostPort, 'auth/mount-src', Readable.from([layer]));
      tokens().length = 0;
      proxy.requests.length = 0;
      const mounted = await client.uploadBlob(proxy.hostPort, 'auth/mount-dst', () => Readable.from([layer]), {
        digest: up.digest,
        mountFrom: 'auth/mount-src',
      });
      expect(mounted).toEqual({ digest: up.digest, size: layer.length, via: 'mount' });
      const scopeSets = tokens().map((t) => t.scopes);
      expect(scopeSets).toContainEqual(['repository:auth/mount-dst:pull,push', 'repository:auth/mount-src:pull']);
      const mountToken = tokens().find((t) => t.scopes.length === 2)!;
      expect(mountToken.granted).toEqual([
        { type: 'repository', name: 'auth/mount-dst', actions: ['pull', 'push'] },
        { type: 'repository', name: 'auth/mount-src', actions: ['pull'] },
      ]);
      const mountPost = proxy.requests.find((r) => r.method === 'POST')!;
      expect(mountPost.url).toContain('mount=');
      expect(mountPost.status).toBe(201);
      expect(proxy.requests.filter((r) => r.method === 'PATCH' || r.method === 'PUT')).toEqual([]);
      expect(await client.blobExists(proxy.hostPort, 'auth/mount-dst', up.digest)).toBe(layer.length);
    } finally {
      await client.close();
    }
  });

  it('a 401 for an insufficient scope gets exactly one refresh and one retry', async () => {
    const client = clientFor(proxy.hostPort, alice);
    try {
      // The first token for the repository grants nothing; the next one grants what is asked.
      let first = true;
      policy = (user, scope) => {
        if (scope.name !== 'auth/bearer') return defaultPolicy(user, scope);
        if (first) {
          first = false;
          return [];
        }
        return scope.actions;
      };
      tokens().length = 0;
      proxy.requests.length = 0;
      const m = await client.getManifest(parseReference(`${proxy.hostPort}/auth/bearer:v1`));
      expect(m.digest).toBe(layout.top.digest);
      expect(tokens().map((t) => t.granted.length)).toEqual([0, 1]);
      const gets = proxy.requests.filter((r) => r.path.includes('/manifests/'));
      expect(gets.map((r) => r.status)).toEqual([401, 200]);
      expect(gets[0]!.headers.authorization).not.toBe(gets[1]!.headers.authorization);
      // The fresh token is cached: no further token request.
      await client.getManifest(parseReference(`${proxy.hostPort}/auth/bearer:v1`));
      expect(tokens()).toHaveLength(2);

    } finally {
      policy = undefined;
      await client.close();
    }
  });

  it('a 401 that a fresh token does not cure is permanent after exactly one refresh', async () => {
    const client = clientFor(proxy.hostPort, alice);
    try {
      policy = (user, scope) => (scope.name === 'auth/bearer' ? [] : defaultPolicy(user, scope));
      tokens().length = 0;
      proxy.requests.length = 0;
      const err = await client.getManifest(parseReference(`${proxy.hostPort}/auth/bearer:v1`)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OciError);
      const e = err as OciError;
      expect(e).toMatchObject({ errorClass: 'permanent', status: 401 });
      expect(e.message).toContain('user "alice" was not granted repository:auth/bearer:pull');
      expect(e.message).not.toContain(alice.password);
      expect(tokens().map((t) => [t.scopes, t.granted])).toEqual([
        [['repository:auth/bearer:pull'], []],
        [['repository:auth/bearer:pull'], []],
      ]);
      expect(proxy.requests.filter((r) => r.path.includes('/manifests/')).map((r) => r.status)).toEqual([401, 401]);
    } finally {
      policy = undefined;
      await client.close();
    }
  });

  it('a 401 for an expired token gets exactly one refresh and one retry', async () => {
    const client = clientFor(proxy.hostPort, alice);
    try {
      const ref = parseReference(`${proxy.hostPort}/auth/bearer:v1`);
      await client.getManifest(ref);
      tokens().length = 0;
      proxy.requests.length = 0;
      // What distribution 2.8 answers for a token past its `exp` (real expiry needs the 60 s leeway to pass).
      proxy.addFault({
        method: 'GET',
        path: /\/manifests\//,
        status: 401,
        headers: {
          'www-authenticate': `Bearer realm="${tr.tokenServer.realm}",service="${tr.tokenServer.service}",scope="repository:auth/bearer:pull",error="invalid_token"`,
        },
        body: JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }),
      });
      const m = await client.getManifest(ref);
      expect(m.digest).toBe(layout.top.digest);
      expect(tokens().map((t) => [t.user, t.scopes])).toEqual([['alice', ['repository:auth/bearer:pull']]]);
      const gets = proxy.requests.filter((r) => r.path.includes('/manifests/'));
      expect(gets.map((r) => [r.fault, r.status])).toEqual([
        ['status', 401],
        [undefined, 200],
      ]);
      expect(gets[0]!.headers.authorization).not.toBe(gets[1]!.headers.authorization);
    } finally {
      await client.close();
    }
  });

  it('anonymous: pull allowed, push refused with a clear message', async () => {
    const client = clientFor(proxy.hostPort);
    try {
      tokens().length = 0;
      await pullAndVerify(client, proxy.hostPort, 'auth/bearer:v1', layout);
      expect(tokens().map((t) => [t.basicAuth, t.status])).toEqual([[false, 200]]);
      const layer = Buffer.from('anonymous push');
      const err = await client
        .uploadBlob(proxy.hostPort, 'auth/anon-push', () => Readable.from([layer]), { digest: digestOf(layer) })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OciError);
      const e = err as OciError;
      expect(e).toMatchObject({ errorClass: 'permanent', status: 401 });
      expect(e.message).toContain('anonymous access was not granted repository:auth/anon-push:pull,push');
      expect(e.message).toContain(`configure credentials for ${proxy.hostPort}`);
      // The blob was checked (pull is allowed), the upload refused after one refresh.
      expect(tokens().filter((t) => t.scopes.includes('repository:auth/anon-push:pull,push'))).toHaveLength(2);
    } finally {
      await client.close();
    }
  });

  it('a wrong password at the token server is a permanent error without the password', async () => {
    const password = 'N0t-The-Pa55';
    const client = clientFor(proxy.hostPort, { username: 'alice', password });
    try {
      tokens().length = 0;
      const err = await client.getManifest(parseReference(`${proxy.hostPort}/auth/bearer:v1`)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OciError);
      const e = err as OciError;
      expect(e).toMatchObject({ errorClass: 'permanent', status: 401 });
      expect(e.message).toContain('alice');
      expect(e.message).not.toContain(password);
      expect(tokens().map((t) => [t.user, t.status])).toEqual([['alice', 401]]);
    } finally {
      await client.close();
    }
  });
});

describe('redirects: credentials never leave their host', () => {
  const alice = { username: 'alice', password: 'Redirect-Pa55' };
  const basic = `Basic ${Buffer.from(`${alice.username}:${alice.password}`).toString('base64')}`;
  let registry: RegistryServer;
  let proxy: FaultProxy;
  let mirror: BlobMirror;
  /** A second proxy in front of the mirror, to break the redirected download. */
  let mirrorProxy: FaultProxy;
  let layout: BuiltLayout;
  let big: Buffer;
  beforeAll(async () => {
    const file = join(root, 'htpasswd-redirect');
    await writeHtpasswd(file, { alice: alice.password });
    registry = await startRegistry({ dataDir: join(root, 'redirect-registry'), auth: { kind: 'htpasswd', path: file } });
    proxy = await startFaultProxy(registry.url);
    // Like S3: the mirror holds its own access to the storage and refuses requests carrying Authorization.
    mirror = await startBlobMirror(registry.url, { upstreamAuthorization: basic });
    mirrorProxy = await startFaultProxy(mirror.url);
    big = Buffer.alloc(2 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
    layout = await buildImageLayout(join(root, 'redirect-layout'), {
      layers: [{ compression: 'none', files: [{ path: 'disk/big.raw', content: big }] }],
    });
    await skopeoCopy(layout.ref, `docker://${registry.hostPort}/auth/redirect:v1`, { destCreds: alice });
  });
  afterAll(async () => {
    await proxy?.stop();
    await mirrorProxy?.stop();
    await mirror?.stop();
    await registry?.stop();
  });

  it('follows a 307 to the blob mirror without Authorization and verifies the blob', async () => {
    const client = clientFor(proxy.hostPort, alice);
    try {
      const layer = layout.images[0]!.layers[0]!;
      proxy.requests.length = 0;
      mirror.requests.length = 0;
      proxy.addFault({ method: 'GET', path: /\/blobs\/sha256:/, redirectTo: mirror.url });
      const got = await collect(client.openBlob(proxy.hostPort, 'auth/redirect', layer));
      expect(got.equals(blobFile(layout, layer.digest))).toBe(true);
      const blobGets = proxy.requests.filter((r) => r.path.includes('/blobs/'));
      expect(blobGets.map((r) => [r.fault, r.authorization])).toEqual([['redirect', true]]);
      expect(mirror.requests.map((r) => [r.method, r.authorization, r.status])).toEqual([['GET', false, 200]]);
      expect(mirror.requests[0]!.headers.authorization).toBeUndefined();
    } finally {
      await client.close();
    }
  });

  it('a redirected download that breaks resumes by asking the registry again, still without leaking', async () => {
    const client = clientFor(proxy.hostPort, alice);
    try {
      const layer = layout.images[0]!.layers[0]!;
      proxy.requests.length = 0;
      mirror.requests.length = 0;
      mirrorProxy.requests.length = 0;
      proxy.addFault({ method: 'GET', path: /\/blobs\/sha256:/, redirectTo: mirrorProxy.url, times: 2 });
      mirrorProxy.addFault({ method: 'GET', path: /\/blobs\/sha256:/, resetAfterBytes: 300_000 });
      const resumes: number[] = [];
      const got = await collect(client.openBlob(proxy.hostPort, 'auth/redirect', layer, { onResume: (at) => resumes.push(at) }));
      expect(got.equals(blobFile(layout, layer.digest))).toBe(true);
      expect(resumes).toHaveLength(1);
      expect(resumes[0]).toBeGreaterThan(0);
      // Both attempts went to the registry first (the presigned URL may have expired), with credentials ...
      const blobGets = proxy.requests.filter((r) => r.path.includes('/blobs/'));
      expect(blobGets.map((r) => [r.fault, r.authorization, r.range])).toEqual([
        ['redirect', true, undefined],
        ['redirect', true, `bytes=${resumes[0]}-`],
      ]);
      // ... and the redirect targets never saw them.
      expect(mirrorProxy.requests.map((r) => [r.authorization, r.range, r.fault])).toEqual([
        [false, undefined, 'reset'],
        [false, `bytes=${resumes[0]}-`, undefined],
      ]);
      expect(mirror.requests.map((r) => [r.authorization, r.status])).toEqual([
        [false, 200],
        [false, 206],
      ]);
    } finally {
      await client.close();
    }
  });
});
