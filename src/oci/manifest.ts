/**
 * Manifests and indexes: media types, parsing with verification, platform choice.
 */
import { z } from 'zod';
import { digestOf, parseDigest } from './digest.ts';
import { OciError } from './errors.ts';

export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerTar: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** Sent on every manifest request: without it distribution 2.8 down-converts to schema1 or 404s OCI types. */
export const MANIFEST_ACCEPT = [
  MediaType.OciIndex,
  MediaType.DockerManifestList,
  MediaType.OciManifest,
  MediaType.DockerManifest,
].join(', ');

/** Read limit for manifests (8 MiB). */
export const MANIFEST_READ_LIMIT = 8 * 1024 * 1024;
/** distribution 2.8 refuses manifests over 4 MiB on PUT. */
export const MANIFEST_PUT_LIMIT = 4 * 1024 * 1024;

const digestString = z.string().regex(/^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/, 'must be a sha256 or sha512 digest');

const PlatformSchema = z.object({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  'os.version': z.string().optional(),
  'os.features': z.array(z.string()).optional(),
});

export const DescriptorSchema = z.object({
  mediaType: z.string(),
  digest: digestString,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: PlatformSchema.optional(),
});

export type Descriptor = z.infer<typeof DescriptorSchema>;
export type Platform = z.infer<typeof PlatformSchema>;

const ImageManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema),
  annotations: z.record(z.string(), z.string()).optional(),
});

const IndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(DescriptorSchema),
  annotations: z.record(z.string(), z.string()).optional(),
});

export type ImageManifest = z.infer<typeof ImageManifestSchema> & { mediaType: string };
export type ImageIndex = z.infer<typeof IndexSchema> & { mediaType: string };

export type Manifest =
  | { kind: 'manifest'; mediaType: string; digest: string; bytes: Buffer; manifest: ImageManifest }
  | { kind: 'index'; mediaType: string; digest: string; bytes: Buffer; index: ImageIndex };

const MANIFEST_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);
const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerManifestList]);

function permanent(message: string, reason: string): OciError {
  return new OciError(message, { errorClass: 'permanent', reason });
}

/**
 * Parses and verifies a manifest body.
 * - `expectedDigest` (when the reference was a digest) must equal the body's digest;
 * - `headerDigest` (Docker-Content-Digest) must equal it too;
 * - the body's `mediaType`, when present, must agree with `contentType`;
 * - schema1 is rejected with a message saying what to do.
 */
export function parseManifest(
  bytes: Buffer,
  opts: { contentType?: string; expectedDigest?: string; headerDigest?: string; what: string },
): Manifest {
  const { what } = opts;
  const algo = opts.expectedDigest ? parseDigest(opts.expectedDigest).algorithm : 'sha256';
  const digest = digestOf(bytes, algo);
  if (opts.expectedDigest && digest !== opts.expectedDigest) {
    throw permanent(`${what}: manifest digest mismatch: asked for ${opts.expectedDigest}, got ${digest}`, 'DIGEST_MISMATCH');
  }
  if (opts.headerDigest && opts.headerDigest.startsWith(`${algo}:`) && opts.headerDigest !== digest) {
    throw permanent(
      `${what}: manifest digest mismatch: Docker-Content-Digest says ${opts.headerDigest}, body is ${digest}`,
      'DIGEST_MISMATCH',
    );
  }
  const contentType = opts.contentType?.split(';')[0]?.trim();
  if (contentType === MediaType.DockerSchema1 || contentType === MediaType.DockerSchema1Signed) {
    throw schema1(what);
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw permanent(`${what}: manifest is not valid JSON`, 'MANIFEST_INVALID');
  }
  if (!json || typeof json !== 'object') throw permanent(`${what}: manifest is not a JSON object`, 'MANIFEST_INVALID');
  const obj = json as { schemaVersion?: unknown; mediaType?: unknown; manifests?: unknown; layers?: unknown };
  if (obj.schemaVersion === 1) throw schema1(what);
  const bodyType = typeof obj.mediaType === 'string' ? obj.mediaType : undefined;
  if (bodyType && contentType && bodyType !== contentType && contentType !== 'application/json') {
    throw permanent(`${what}: manifest mediaType ${bodyType} disagrees with Content-Type ${contentType}`, 'MANIFEST_INVALID');
  }
  let mediaType = bodyType ?? contentType;
  if (!mediaType || mediaType === 'application/json') {
    // OCI allows omitting mediaType; infer from shape.
    mediaType = Array.isArray(obj.manifests) ? MediaType.OciIndex : MediaType.OciManifest;
  }
  if (INDEX_TYPES.has(mediaType)) {
    const r = IndexSchema.safeParse(json);
    if (!r.success) throw permanent(`${what}: invalid index: ${formatIssues(r.error)}`, 'MANIFEST_INVALID');
    return { kind: 'index', mediaType, digest, bytes, index: { ...r.data, mediaType } };
  }
  if (MANIFEST_TYPES.has(mediaType)) {
    const r = ImageManifestSchema.safeParse(json);
    if (!r.success) throw permanent(`${what}: invalid manifest: ${formatIssues(r.error)}`, 'MANIFEST_INVALID');
    return { kind: 'manifest', mediaType, digest, bytes, manifest: { ...r.data, mediaType } };
  }
  throw permanent(
    `${what}: unsupported manifest media type ${mediaType}; expected an OCI or Docker schema2 image or index`,
    'UNSUPPORTED_MEDIA_TYPE',
  );
}

function schema1(what: string): OciError {
  return permanent(
    `${what}: Docker schema1 manifests are not supported (deprecated and unverifiable); push the image again with a current client`,
    'SCHEMA1',
  );
}

function formatIssues(err: z.ZodError): string {
  return err.issues
    .slice(0, 3)
    .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}

/** `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`. */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw permanent(`invalid platform "${s}": expected os/architecture[/variant], e.g. linux/amd64`, 'InvalidPlatform');
  }
  return { os: parts[0]!, architecture: parts[1]!, ...(parts[2] ? { variant: parts[2] } : {}) };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Normalises architecture aliases and default variants (arm64 -> v8, arm -> v7). */
export function normalisePlatform(p: Platform): Platform {
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase();
  if (architecture === 'aarch64') architecture = 'arm64';
  if (architecture === 'x86_64' || architecture === 'x86-64') architecture = 'amd64';
  if (architecture === 'arm64' && (variant === undefined || variant === '8')) variant = 'v8';
  if (architecture === 'arm' && variant === undefined) variant = 'v7';
  if (architecture === 'arm' && /^\d$/.test(variant ?? '')) variant = `v${variant}`;
  return { os: p.os.toLowerCase(), architecture, ...(variant ? { variant } : {}) };
}

export function platformMatches(want: Platform, have: Platform | undefined): boolean {
  if (!have) return false;
  const w = normalisePlatform(want);
  const h = normalisePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return false;
  // Variants only matter when both sides name one.
  return w.variant === undefined || h.variant === undefined || w.variant === h.variant;
}

/**
 * Chooses the descriptor for `want` from an index; attestation entries (`unknown/unknown`) are skipped.
 * Nested indexes are returned as they are (their descriptor's mediaType is an index type): the caller
 * fetches and chooses again. Returns undefined when nothing matches.
 */
export function selectPlatform(index: ImageIndex, want: Platform): Descriptor | undefined {
  const candidates = index.manifests.filter(
    (d) => !(d.platform?.os === 'unknown' && d.platform?.architecture === 'unknown') &&
      d.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest',
  );
  const exact = candidates.find((d) => {
    if (!d.platform) return false;
    const w = normalisePlatform(want);
    const h = normalisePlatform(d.platform);
    return w.os === h.os && w.architecture === h.architecture && (w.variant ?? '') === (h.variant ?? '');
  });
  if (exact) return exact;
  const loose = candidates.find((d) => platformMatches(want, d.platform));
  if (loose) return loose;
  // A nested index without a platform may hold the wanted one.
  return candidates.find((d) => !d.platform && INDEX_TYPES.has(d.mediaType));
}

export function isIndexMediaType(mt: string): boolean {
  return INDEX_TYPES.has(mt);
}

export function listPlatforms(index: ImageIndex): string[] {
  return index.manifests.filter((d) => d.platform).map((d) => formatPlatform(d.platform!));
}
