import { describe, expect, it, inject, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { RegistryClient, MediaType, digestOf, parseReference, OciError } from '../../src/oci/index.ts';

const run = promisify(execFile);

describe('OCI client against distribution 2.8 (no auth)', () => {
  const host = inject('registryHostPort');
  const client = new RegistryClient({ insecureRegistries: [host] });
  const work = mkdtempSync(join(tmpdir(), 'oci-client-'));
  afterAll(async () => {
    await client.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('pushes blobs and a schema2 manifest that skopeo reads back byte-exact', async () => {
    const repo = 'test/push-interop';
    const layer = randomBytes(3 * 1024 * 1024 + 17);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(layer)] } }));
    // Layer streamed in small chunks with unknown digest: computed while uploading.
    const up = await client.uploadBlob(host, repo, Readable.from(chunks(layer, 65536)));
    expect(up).toEqual({ digest: digestOf(layer), size: layer.length, via: 'upload' });
    // Same digest again: HEAD finds it.
    expect((await client.uploadBlob(host, repo, Readable.from([layer]), { digest: up.digest })).via).toBe('existing');
    const cfg = await client.uploadBlob(host, repo, () => Readable.from([config]), { digest: digestOf(config), size: config.length });
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.DockerManifest,
        config: { mediaType: MediaType.DockerConfig, digest: cfg.digest, size: cfg.size },
        layers: [{ mediaType: MediaType.DockerLayerTar, digest: up.digest, size: up.size }],
      }),
    );
    const digest = await client.putManifest(host, repo, 'v1', manifest, MediaType.DockerManifest);
    expect(digest).toBe(digestOf(manifest));

    const raw = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${host}/${repo}:v1`]);
    expect(raw.stdout).toBe(manifest.toString());
    const dir = join(work, 'copy');
    await run('skopeo', ['copy', '--insecure-policy', '--src-tls-verify=false', `docker://${host}/${repo}:v1`, `dir:${dir}`]);
    expect(readFileSync(join(dir, up.digest.slice(7))).equals(layer)).toBe(true);
    expect(readFileSync(join(dir, 'manifest.json')).equals(manifest)).toBe(true);

    // And we pull it back, verified.
    const resolved = await client.resolveImage(parseReference(`${host}/${repo}:v1`));
    expect(resolved.digest).toBe(digest);
    const pulled = await collect(client.openBlob(host, repo, resolved.manifest.layers[0]!));
    expect(pulled.equals(layer)).toBe(true);
    // Cross-repo mount moves no bytes.
    const mounted = await client.uploadBlob(host, 'test/mounted', Readable.from([]), { digest: up.digest, mountFrom: repo });
    expect(mounted.via).toBe('mount');
    expect(mounted.size).toBe(layer.length);
  });

  it('fails a blob whose bytes do not match the digest asked for', async () => {
    const repo = 'test/mismatch';
    const data = randomBytes(1000);
    const up = await client.uploadBlob(host, repo, Readable.from([data]));
    const lie = { digest: digestOf(randomBytes(10)), size: data.length };
    // The registry answers 404 for an unknown digest: permanent BLOB_UNKNOWN
    await expect(collect(client.openBlob(host, repo, lie))).rejects.toMatchObject({ reason: 'BLOB_UNKNOWN', errorClass: 'permanent' });
    await expect(collect(client.openBlob(host, repo, { digest: up.digest, size: data.length + 1 }))).rejects.toMatchObject({
      reason: 'SIZE_MISMATCH',
    });
  });

  it('passes an error of the source stream on unchanged, without retrying the upload', async () => {
    class SourceBroke extends Error {}
    let opened = 0;
    async function* broken(): AsyncGenerator<Buffer> {
      opened++;
      yield randomBytes(1000);
      throw new SourceBroke('checksum mismatch upstream');
    }
    const err = await client.uploadBlob(host, 'test/source-error', () => broken()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SourceBroke);
    expect(opened).toBe(1);
  });

  it('answers a missing tag with a permanent, readable error', async () => {
    const err = await client.getManifest(parseReference(`${host}/test/nothing:here`)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OciError);
    expect((err as OciError).errorClass).toBe('permanent');
    expect((err as OciError).message).toMatch(/HTTP 404/);
  });
});

function* chunks(b: Buffer, n: number): Generator<Buffer> {
  for (let i = 0; i < b.length; i += n) yield b.subarray(i, i + n);
}

async function collect(r: Readable): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of r) out.push(c as Buffer);
  return Buffer.concat(out);
}
