import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { digestOf, MediaType, OciError, parseManifest, parsePlatform, selectPlatform, type ImageIndex } from '../../src/oci/index.ts';

const d = (c: string) => `sha256:${c.repeat(64)}`;
const image = (extra: object = {}) =>
  Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, digest: d('1'), size: 10 },
      layers: [{ mediaType: MediaType.DockerLayerGzip, digest: d('2'), size: 20 }],
      ...extra,
    }),
  );

describe('parseManifest', () => {
  it('parses and digests a schema2 manifest', () => {
    const b = image();
    const m = parseManifest(b, { contentType: MediaType.DockerManifest, what: 'GET m' });
    expect(m.kind).toBe('manifest');
    expect(m.digest).toBe(digestOf(b));
  });

  it('verifies the requested digest and Docker-Content-Digest', () => {
    const b = image();
    expect(() => parseManifest(b, { expectedDigest: d('f'), what: 'GET m' })).toThrow(/digest mismatch: asked for/);
    expect(() => parseManifest(b, { headerDigest: d('e'), what: 'GET m' })).toThrow(/Docker-Content-Digest says/);
  });

  it('rejects schema1, unknown media types, disagreeing Content-Type and bad JSON', () => {
    expect(() => parseManifest(Buffer.from('{"schemaVersion":1,"name":"x"}'), { what: 'GET m' })).toThrow(/schema1/);
    expect(() => parseManifest(image(), { contentType: MediaType.DockerSchema1Signed, what: 'GET m' })).toThrow(/schema1/);
    expect(() => parseManifest(image({ mediaType: 'application/x-foo' }), { what: 'GET m' })).toThrow(/unsupported manifest media type application\/x-foo/);
    expect(() => parseManifest(image(), { contentType: MediaType.OciManifest, what: 'GET m' })).toThrow(/disagrees with Content-Type/);
    expect(() => parseManifest(Buffer.from('{'), { what: 'GET m' })).toThrow(/not valid JSON/);
    expect(() => parseManifest(image({ layers: [{ digest: 'nope' }] }), { what: 'GET m' })).toThrow(/invalid manifest: layers/);
  });

  it('never throws anything but OciError on arbitrary JSON (property)', () => {
    fc.assert(
      fc.property(fc.json(), (j) => {
        try {
          parseManifest(Buffer.from(j), { what: 'm' });
        } catch (e) {
          expect(e).toBeInstanceOf(OciError);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('platform selection', () => {
  const idx: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [
      { mediaType: MediaType.OciManifest, digest: d('a'), size: 1, platform: { os: 'unknown', architecture: 'unknown' } },
      { mediaType: MediaType.OciManifest, digest: d('b'), size: 1, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { mediaType: MediaType.OciManifest, digest: d('c'), size: 1, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: MediaType.OciManifest, digest: d('e'), size: 1, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
    ],
  };
  it('chooses exact os/arch, normalising variants, skipping attestations', () => {
    expect(selectPlatform(idx, parsePlatform('linux/amd64'))?.digest).toBe(d('c'));
    expect(selectPlatform(idx, parsePlatform('linux/arm64'))?.digest).toBe(d('b'));
    expect(selectPlatform(idx, { os: 'linux', architecture: 'aarch64' })?.digest).toBe(d('b'));
    expect(selectPlatform(idx, parsePlatform('linux/arm'))?.digest).toBe(d('e'));
    expect(selectPlatform(idx, parsePlatform('linux/s390x'))).toBeUndefined();
    expect(selectPlatform(idx, parsePlatform('unknown/unknown'))).toBeUndefined();
  });
  it('descends into a nested index without platform', () => {
    const nested: ImageIndex = { ...idx, manifests: [{ mediaType: MediaType.OciIndex, digest: d('9'), size: 1 }] };
    expect(selectPlatform(nested, parsePlatform('linux/amd64'))?.digest).toBe(d('9'));
  });
  it('rejects malformed platform strings', () => {
    expect(() => parsePlatform('amd64')).toThrow(/os\/architecture/);
  });
});
