/**
 * Interop of the OCI client with skopeo through the real registry (distribution 2.8), both ways: skopeo
 * pushes fixtures and we pull them, verifying every byte; we push (to a token-auth registry) and skopeo reads
 * the result back byte-exact. oci-client.test.ts covers a Docker schema2 push to the open registry; this file
 * covers OCI images and indexes, several layer compressions, platform choice, and an authenticated push.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  digestOf,
  MediaType,
  OciError,
  parseReference,
  RegistryClient,
  type Descriptor,
  type ImageManifest,
} from '../../src/oci/index.ts';
import { buildImageLayout, type BuiltLayout } from '../helpers/fixtures.ts';
import { skopeoCopy, skopeoInspectRaw } from '../helpers/skopeo.ts';
import { startTokenRegistry, type TokenRegistry } from '../helpers/token-server.ts';

const RETRY = { baseDelayMs: 10, maxDelayMs: 50 };
const host = inject('registryHostPort');

let root: string;
let client: RegistryClient;
/** Three layers: gzip, zstd, uncompressed. */
let multiLayer: BuiltLayout;
/** An OCI index over linux/amd64 and linux/arm64/v8. */
let multiPlatform: BuiltLayout;

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed >>> 0;
  for (let i = 0; i + 4 <= b.length; i += 4) {
    x = (x * 1664525 + 1013904223) >>> 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'dvcr-oci-interop-'));
  client = new RegistryClient({ insecureRegistries: [host], retry: RETRY });
  multiLayer = await buildImageLayout(join(root, 'multi-layer'), {
    tag: 'v1',
    config: { Labels: { 'org.example': 'interop' } },
    layers: [
      { compression: 'gzip', files: [{ path: 'disk/a.img', content: pattern(600_000, 1), uid: 107 }] },
      { compression: 'zstd', files: [{ path: 'disk/b.img', content: pattern(1_500_000, 2), uid: 107 }] },
      { compression: 'none', files: [{ path: 'disk/README', content: 'third layer\n' }] },
    ],
  });
  multiPlatform = await buildImageLayout(join(root, 'multi-platform'), {
    tag: 'v1',
    layers: [],
    platforms: [
      { platform: { os: 'linux', architecture: 'amd64' }, layers: [{ files: [{ path: 'disk/x.img', content: 'amd64 disk\n' }] }] },
      {
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        layers: [{ files: [{ path: 'disk/x.img', content: 'arm64 disk\n' }] }],
      },
    ],
  });
  await skopeoCopy(multiLayer.ref, `docker://${host}/interop/layers:v1`);
  await skopeoCopy(multiPlatform.ref, `docker://${host}/interop/multi:v1`, { all: true });
});
afterAll(async () => {
  await client?.close();
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

describe('skopeo pushes, we pull', () => {
  it('pulls an image with gzip, zstd and uncompressed layers, every blob byte-exact', async () => {
    const ref = parseReference(`${host}/interop/layers:v1`);
    const resolved = await client.resolveImage(ref);
    const image = multiLayer.images[0]!;
    expect(resolved).toMatchObject({ digest: multiLayer.top.digest, indexes: [] });
    expect(resolved.manifest.mediaType).toBe(MediaType.OciManifest);
    expect(resolved.manifest.layers.map((l) => l.mediaType)).toEqual([
      MediaType.OciLayerGzip,
      MediaType.OciLayerZstd,
      MediaType.OciLayerTar,
    ]);
    const config = await client.getBlobBytes(ref.registry, ref.repository, resolved.manifest.config);
    expect(config.equals(blobFile(multiLayer, image.config.digest))).toBe(true);
    expect(JSON.parse(config.toString()).config.Labels).toEqual({ 'org.example': 'interop' });
    for (const l of resolved.manifest.layers) {
      const got = await collect(client.openBlob(ref.registry, ref.repository, l));
      expect(got.equals(blobFile(multiLayer, l.digest))).toBe(true);
    }
    // By digest, too: the body is checked against it.
    const byDigest = await client.getManifest(parseReference(`${host}/interop/layers@${multiLayer.top.digest}`));
    expect(byDigest.bytes.toString()).toBe(multiLayer.topJson);
  });

  it('resolves linux/amd64 and linux/arm64 from an OCI index to the right manifests', async () => {
    const ref = parseReference(`${host}/interop/multi:v1`);
    const index = await client.getManifest(ref);
    expect(index).toMatchObject({ kind: 'index', mediaType: MediaType.OciIndex, digest: multiPlatform.top.digest });
    const [amd64, arm64] = multiPlatform.images;
    const cases: Array<[Parameters<RegistryClient['resolveImage']>[1], NonNullable<typeof amd64>]> = [
      [{}, amd64!], // linux/amd64 by default
      [{ platform: { os: 'linux', architecture: 'amd64' } }, amd64!],
      [{ platform: { os: 'linux', architecture: 'arm64' } }, arm64!],
      [{ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }, arm64!],
      [{ platform: { os: 'linux', architecture: 'aarch64' } }, arm64!],
    ];
    for (const [opts, want] of cases) {
      const r = await client.resolveImage(ref, opts);
      expect(r.digest).toBe(want.manifest.digest);
      expect(r.indexes).toEqual([multiPlatform.top.digest]);
      const layer = r.manifest.layers[0]!;
      expect(layer.digest).toBe(want.layers[0]!.digest);
      const got = await collect(client.openBlob(host, 'interop/multi', layer));
      expect(got.equals(blobFile(multiPlatform, layer.digest))).toBe(true);
    }
    // The child manifests are served byte-exact by digest.
    const armRef = parseReference(`${host}/interop/multi@${arm64!.manifest.digest}`);
    expect((await client.getManifest(armRef)).bytes.toString()).toBe(arm64!.manifestJson);
    // A platform the index lacks: permanent, naming what there is.
    const err = await client.resolveImage(ref, { platform: { os: 'linux', architecture: 's390x' } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OciError);
    expect(err).toMatchObject({ errorClass: 'permanent', reason: 'PLATFORM_NOT_FOUND' });
    expect((err as OciError).message).toContain('linux/amd64, linux/arm64/v8');
  });

  it('resolves platforms from a Docker manifest list (skopeo --format v2s2)', async () => {
    await skopeoCopy(multiPlatform.ref, `docker://${host}/interop/list:v1`, { all: true, format: 'v2s2' });
    const raw = await skopeoInspectRaw(`docker://${host}/interop/list:v1`);
    const list = JSON.parse(raw) as { mediaType: string; manifests: Array<{ digest: string; platform: { architecture: string } }> };
    expect(list.mediaType).toBe(MediaType.DockerManifestList);
    const ref = parseReference(`${host}/interop/list:v1`);
    const top = await client.getManifest(ref);
    expect(top).toMatchObject({ kind: 'index', mediaType: MediaType.DockerManifestList, digest: digestOf(Buffer.from(raw)) });
    for (const [i, architecture] of ['amd64', 'arm64'].entries()) {
      const r = await client.resolveImage(ref, { platform: { os: 'linux', architecture } });
      expect(r.digest).toBe(list.manifests[i]!.digest);
      expect(r.manifest.mediaType).toBe(MediaType.DockerManifest);
      // Same blobs as the OCI fixture, under Docker media types.
      const want = multiPlatform.images[i]!;
      expect(r.manifest.layers.map((l) => [l.mediaType, l.digest])).toEqual([[MediaType.DockerLayerGzip, want.layers[0]!.digest]]);
      const got = await collect(client.openBlob(host, 'interop/list', r.manifest.layers[0]!));
      expect(got.equals(blobFile(multiPlatform, want.layers[0]!.digest))).toBe(true);
    }
  });
});

describe('we push, skopeo reads back', () => {
  const alice = { username: 'alice', password: 'Interop-Pa55' };
  let tr: TokenRegistry;
  let dest: RegistryClient;
  let destHost: string;
  beforeAll(async () => {
    tr = await startTokenRegistry(join(root, 'token-registry'), { users: { alice: alice.password } });
    destHost = tr.registry.hostPort;
    dest = new RegistryClient({
      insecureRegistries: [destHost],
      credentials: (h) => (h === destHost ? alice : undefined),
      retry: RETRY,
    });
  });
  afterAll(async () => {
    await dest?.close();
    await tr?.stop();
  });

  /** Copies one image manifest and its blobs from the open registry to the token registry, streaming. */
  async function copyImage(srcRepo: string, dstRepo: string, manifest: ImageManifest, bytes: Buffer, reference: string): Promise<string> {
    const blobs: Descriptor[] = [manifest.config, ...manifest.layers];
    for (const d of blobs) {
      const res = await dest.uploadBlob(destHost, dstRepo, () => client.openBlob(host, srcRepo, d), { digest: d.digest, size: d.size });
      expect(res.digest).toBe(d.digest);
    }
    return dest.putManifest(destHost, dstRepo, reference, bytes, manifest.mediaType);
  }

  it('an OCI image copied with our client is byte-exact for skopeo inspect --raw and copy dir:', async () => {
    const resolved = await client.resolveImage(parseReference(`${host}/interop/layers:v1`));
    const m = await client.getManifest(parseReference(`${host}/interop/layers@${resolved.digest}`));
    const digest = await copyImage('interop/layers', 'copied/layers', resolved.manifest, m.bytes, 'v1');
    expect(digest).toBe(multiLayer.top.digest);

    const ref = `docker://${destHost}/copied/layers:v1`;
    expect(await skopeoInspectRaw(ref, { creds: alice })).toBe(multiLayer.topJson);
    const dir = join(root, 'copied-dir');
    await skopeoCopy(ref, `dir:${dir}`, { srcCreds: alice });
    expect(readFileSync(join(dir, 'manifest.json')).toString()).toBe(multiLayer.topJson);
    const image = multiLayer.images[0]!;
    for (const d of [image.config, ...image.layers]) {
      expect(readFileSync(join(dir, d.digest.slice(7))).equals(blobFile(multiLayer, d.digest))).toBe(true);
    }
    // skopeo verified every digest while copying; nothing else landed in the folder.
    expect(readdirSync(dir).sort()).toEqual(
      ['manifest.json', 'version', ...[image.config, ...image.layers].map((d) => d.digest.slice(7))].sort(),
    );
  });

  it('an OCI index copied with our client (children by digest, then the index) reads back byte-exact', async () => {
    const index = await client.getManifest(parseReference(`${host}/interop/multi:v1`));
    if (index.kind !== 'index') throw new Error('expected an index');
    for (const d of index.index.manifests) {
      const child = await client.getManifest(parseReference(`${host}/interop/multi@${d.digest}`));
      if (child.kind !== 'manifest') throw new Error('expected an image manifest');
      expect(await copyImage('interop/multi', 'copied/multi', child.manifest, child.bytes, d.digest)).toBe(d.digest);
    }
    expect(await dest.putManifest(destHost, 'copied/multi', 'v1', index.bytes, index.mediaType)).toBe(multiPlatform.top.digest);

    const ref = `docker://${destHost}/copied/multi:v1`;
    expect(await skopeoInspectRaw(ref, { creds: alice })).toBe(multiPlatform.topJson);
    const arm64 = multiPlatform.images[1]!;
    expect(await skopeoInspectRaw(`docker://${destHost}/copied/multi@${arm64.manifest.digest}`, { creds: alice })).toBe(
      arm64.manifestJson,
    );
    const dir = join(root, 'copied-arm64');
    await skopeoCopy(`docker://${destHost}/copied/multi@${arm64.manifest.digest}`, `dir:${dir}`, { srcCreds: alice });
    const layer = arm64.layers[0]!;
    expect(readFileSync(join(dir, layer.digest.slice(7))).equals(blobFile(multiPlatform, layer.digest))).toBe(true);
    expect(digestOf(readFileSync(join(dir, 'manifest.json')))).toBe(arm64.manifest.digest);
  });
});
