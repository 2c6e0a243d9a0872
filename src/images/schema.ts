/**
 * The image resource as users write it: ClusterVirtualImage (cluster-scoped) and VirtualImage (namespaced), in
 * the shape of `virtualization.deckhouse.io/v1alpha2` (see reference/dvcr-contract.md), parsed with zod into typed
 * values. Every rejection names the field path and says what to write instead, e.g.
 *
 * ```
 * spec.dataSource.http.checksum.sha256: must be 64 hex characters (got 12)
 * metadata.name "Ubuntu_22": must be a DNS-1123 subdomain: lowercase letters, digits and '-', ...; try "ubuntu-22"
 * spec.dataSource: type is HTTP but containerImage is set; set exactly the sub-object matching type
 * kind "Foo" is not supported; use ClusterVirtualImage or VirtualImage
 * ```
 *
 * Extensions of ours (not in upstream's CRD; upstream would reject them as unknown fields) are listed here and
 * nowhere else:
 *
 * - `spec.dataSource.containerImage.platform` (`os/arch[/variant]`, e.g. `linux/arm64`): which image of a
 *   multi-arch index to import; default `linux/amd64` (contract, "Reading a source container image").
 * - `spec.conversion.format` (`qcow2` or `raw`): convert the imported disk to this format with qemu-img (the
 *   worker's CONVERT_TO is the default; unset = keep the format). Not for `ObjectRef`, which copies an image as
 *   it is; an ISO is never converted.
 *
 * Accepted for compatibility with upstream manifests:
 * - `spec.storage` on a VirtualImage, only as `ContainerRegistry` (DVCR is the only storage we write to).
 * - `metadata` fields a server fills (`uid`, `resourceVersion`, `creationTimestamp`, ...) and a top-level
 *   `status` are ignored, so the output of `get -o yaml` can be applied again.
 * - `null` values count as absent (Kubernetes apply semantics).
 */
import { z } from 'zod';
import { parseReference } from '../oci/reference.ts';
import { ValidationError, type ValidationIssue } from './errors.ts';
import { imageStatusSchema, type ImageStatus } from './status.ts';

export const API_VERSION = 'virtualization.deckhouse.io/v1alpha2';
export const IMAGE_KINDS = ['ClusterVirtualImage', 'VirtualImage'] as const;
export type ImageKind = (typeof IMAGE_KINDS)[number];
export const DATA_SOURCE_TYPES = ['HTTP', 'ContainerImage', 'ObjectRef', 'Upload'] as const;
export type DataSourceType = (typeof DATA_SOURCE_TYPES)[number];

/** Upstream's current limit for both kinds is the DNS-1123 subdomain length (older releases had 36..60). */
export const MAX_IMAGE_NAME_LENGTH = 253;
export const MAX_NAMESPACE_LENGTH = 63;
/** The platform a multi-arch source image resolves to when `containerImage.platform` is not set. */
export const DEFAULT_PLATFORM = 'linux/amd64';
/** Ours: formats `spec.conversion.format` can ask for. */
export const CONVERSION_FORMATS = ['qcow2', 'raw'] as const;
export type ConversionFormat = (typeof CONVERSION_FORMATS)[number];

// ---------------------------------------------------------------------------------------------------------------
// Types

/** Hex digests of the bytes exactly as delivered (before decompression); every one given must match. */
export interface Checksum {
  md5?: string;
  sha1?: string;
  sha256?: string;
  sha512?: string;
}

export interface HttpSource {
  /** `http://` or `https://`, without credentials. */
  url: string;
  /** Base64 of PEM certificates to trust for this URL. */
  caBundle?: string;
  checksum?: Checksum;
}

/** A dockerconfigjson credential, referenced by name (never the secret itself). */
export interface ImagePullSecretRef {
  name: string;
  namespace?: string;
}

export interface ContainerImageSource {
  /** `registry.example.com/ns/img:tag` or `...@sha256:<hex>`. */
  image: string;
  imagePullSecret?: ImagePullSecretRef;
  caBundle?: string;
  /** Ours: `os/arch[/variant]` to pick from a multi-arch index; default {@link DEFAULT_PLATFORM}. */
  platform?: string;
}

export interface ObjectRefSource {
  kind: ImageKind;
  name: string;
  /** Required to refer to a VirtualImage from a ClusterVirtualImage; absent for a ClusterVirtualImage. */
  namespace?: string;
}

export interface UploadSource {
  checksum?: Checksum;
}

export type DataSource =
  | { type: 'HTTP'; http: HttpSource }
  | { type: 'ContainerImage'; containerImage: ContainerImageSource }
  | { type: 'ObjectRef'; objectRef: ObjectRefSource }
  | { type: 'Upload'; upload?: UploadSource };

/** Ours: convert the imported disk (qemu-img convert) before it is stored. */
export interface ConversionSpec {
  format: ConversionFormat;
}

export interface ImageSpec {
  dataSource: DataSource;
  /** Ours: the format to store the disk in; default the worker's CONVERT_TO, else the format as found. */
  conversion?: ConversionSpec;
  /** VirtualImage only, accepted for upstream compatibility; the only value is `ContainerRegistry`. */
  storage?: 'ContainerRegistry';
}

/** Metadata a user writes. */
export interface ImageManifestMetadata {
  name: string;
  /** VirtualImage only. */
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** A parsed, valid manifest: what `apply` takes. */
export interface ImageSpecInput {
  apiVersion: typeof API_VERSION;
  kind: ImageKind;
  metadata: ImageManifestMetadata;
  spec: ImageSpec;
}

/** Metadata of a stored object. */
export interface ImageMetadata {
  name: string;
  namespace?: string;
  uid: string;
  /** Starts at 1; +1 on every spec change. */
  generation: number;
  creationTimestamp: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** A stored image resource. */
export interface Image<K extends ImageKind = ImageKind> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: ImageMetadata;
  spec: ImageSpec;
  status: ImageStatus;
}
export type ClusterVirtualImage = Image<'ClusterVirtualImage'>;
export type VirtualImage = Image<'VirtualImage'>;

// ---------------------------------------------------------------------------------------------------------------
// Field rules (exported for the CLI and API, which validate names in URLs and flags the same way)

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const PLATFORM = /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/;
const CHECKSUM_LENGTHS = { md5: 32, sha1: 40, sha256: 64, sha512: 128 } as const;

/** `"Ubuntu_22.04"` -> `"ubuntu-22-04"`: a name that passes, to suggest in messages. */
export function suggestName(name: string, maxLength = MAX_IMAGE_NAME_LENGTH): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-{2,}/g, '-')
    .replace(/^-+/, '')
    .slice(0, maxLength)
    .replace(/-+$/, '');
  return s || 'image';
}

function quoteValue(s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 60)}...` : s);
}

/**
 * Why `name` is not a valid image name, as the text after `metadata.name "<name>": `; undefined when valid.
 * Rules: DNS-1123 subdomain, at most {@link MAX_IMAGE_NAME_LENGTH} characters, and no '.' (upstream's webhook).
 */
export function imageNameProblem(kind: ImageKind, name: string): string | undefined {
  if (name.length > MAX_IMAGE_NAME_LENGTH) {
    return `is ${name.length} characters; a ${kind} name must be no more than ${MAX_IMAGE_NAME_LENGTH} characters`;
  }
  if (name.includes('.') && DNS1123_SUBDOMAIN.test(name)) {
    return `'.' is forbidden in a ${kind} name (allowed: lowercase letters, digits and '-'); try "${suggestName(name)}"`;
  }
  if (!DNS1123_LABEL.test(name)) {
    return (
      `must be a DNS-1123 subdomain without '.': lowercase letters, digits and '-', starting and ending with a` +
      ` letter or digit; try "${suggestName(name)}"`
    );
  }
  return undefined;
}

/** Why `ns` is not a valid namespace (DNS-1123 label); undefined when valid. */
export function namespaceProblem(ns: string): string | undefined {
  if (ns.length > MAX_NAMESPACE_LENGTH) {
    return `is ${ns.length} characters; a namespace must be no more than ${MAX_NAMESPACE_LENGTH} characters`;
  }
  if (!DNS1123_LABEL.test(ns)) {
    return (
      `must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit;` +
      ` try "${suggestName(ns, MAX_NAMESPACE_LENGTH)}"`
    );
  }
  return undefined;
}

function subdomainProblem(what: string, name: string): string | undefined {
  if (name.length > 253) return `is ${name.length} characters; a ${what} must be no more than 253 characters`;
  if (!DNS1123_SUBDOMAIN.test(name)) {
    return `must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Schemas. Custom problems are raised as `custom` issues whose `params.value` is shown quoted after the path.

type Ctx = z.RefinementCtx;

function problem(ctx: Ctx, path: PropertyKey[], message: string, value?: string): void {
  ctx.addIssue({ code: 'custom', path, message, params: value === undefined ? {} : { value } });
}

const nonEmpty = z.string().min(1);

function hexDigest(algo: keyof typeof CHECKSUM_LENGTHS) {
  const len = CHECKSUM_LENGTHS[algo];
  return z
    .string()
    .superRefine((v, ctx) => {
      if (v.length !== len) problem(ctx, [], `must be ${len} hex characters (got ${v.length})`);
      else if (!/^[0-9a-fA-F]+$/.test(v)) problem(ctx, [], `must be ${len} hex characters (got ${len}, not all hex)`);
    })
    .transform((v) => v.toLowerCase());
}

const checksumSchema = z.strictObject({
  md5: hexDigest('md5').optional(),
  sha1: hexDigest('sha1').optional(),
  sha256: hexDigest('sha256').optional(),
  sha512: hexDigest('sha512').optional(),
});

const caBundleSchema = z.string().superRefine((v, ctx) => {
  const trimmed = v.trim();
  if (trimmed.startsWith('-----BEGIN')) {
    problem(ctx, [], 'must be base64-encoded PEM, but this is plain PEM text; encode it first (base64 -w0 ca.pem)');
    return;
  }
  const compact = trimmed.replace(/\s+/g, '');
  if (compact === '' || !/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 === 1) {
    problem(ctx, [], 'must be base64-encoded PEM certificates (base64 -w0 ca.pem); this is not valid base64');
    return;
  }
  const pem = Buffer.from(compact, 'base64').toString('latin1');
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    problem(ctx, [], 'must be base64-encoded PEM certificates; the decoded text has no "-----BEGIN CERTIFICATE-----"');
  }
});

const urlSchema = z.string().superRefine((v, ctx) => {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    problem(ctx, [], 'must be an absolute http:// or https:// URL', v);
    return;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    problem(ctx, [], `scheme "${u.protocol.slice(0, -1)}" is not supported; use http:// or https://`, v);
    return;
  }
  if (u.username !== '' || u.password !== '') {
    // Do not echo the URL: it holds a password.
    problem(ctx, [], 'must not contain credentials (user:password@host): specs and jobs never carry secrets');
  }
});

const imageRefSchema = z.string().superRefine((v, ctx) => {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) {
    problem(ctx, [], `must not include a scheme; write it as "${v.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')}"`, v);
    return;
  }
  try {
    parseReference(v);
  } catch (e) {
    const why = e instanceof Error ? e.message.replace(/^invalid image reference "[^"]*": /, '') : String(e);
    problem(ctx, [], `is not a valid image reference: ${why}`, v);
  }
});

const httpSchema = z.strictObject({
  url: urlSchema,
  caBundle: caBundleSchema.optional(),
  checksum: checksumSchema.optional(),
});

const pullSecretSchema = z.strictObject({ name: nonEmpty, namespace: nonEmpty.optional() }).superRefine((v, ctx) => {
  const n = subdomainProblem('secret name', v.name);
  if (n) problem(ctx, ['name'], n, v.name);
  const ns = v.namespace === undefined ? undefined : namespaceProblem(v.namespace);
  if (ns && v.namespace !== undefined) problem(ctx, ['namespace'], ns, v.namespace);
});

const containerImageSchema = z.strictObject({
  image: imageRefSchema,
  imagePullSecret: pullSecretSchema.optional(),
  caBundle: caBundleSchema.optional(),
  platform: z
    .string()
    .superRefine((v, ctx) => {
      if (!PLATFORM.test(v)) problem(ctx, [], 'must be os/arch[/variant], e.g. "linux/arm64"', v);
    })
    .optional(),
});

const objectRefSchema = z.strictObject({
  kind: z.enum(IMAGE_KINDS),
  name: nonEmpty,
  namespace: nonEmpty.optional(),
});

const uploadSchema = z.strictObject({ checksum: checksumSchema.optional() });

const conversionSchema = z.strictObject({ format: z.enum(CONVERSION_FORMATS) });

const SUB_OBJECT = {
  HTTP: 'http',
  ContainerImage: 'containerImage',
  ObjectRef: 'objectRef',
  Upload: 'upload',
} as const satisfies Record<DataSourceType, string>;

const dataSourceSchema = z
  .strictObject({
    type: z.enum(DATA_SOURCE_TYPES),
    http: httpSchema.optional(),
    containerImage: containerImageSchema.optional(),
    objectRef: objectRefSchema.optional(),
    upload: uploadSchema.optional(),
  })
  .superRefine((v, ctx) => {
    const want = SUB_OBJECT[v.type];
    for (const key of Object.values(SUB_OBJECT)) {
      if (key !== want && v[key] !== undefined) {
        problem(ctx, [], `type is ${v.type} but ${key} is set; set exactly the sub-object matching type`);
      }
    }
    if (v.type !== 'Upload' && v[want] === undefined) problem(ctx, [want], `is required when type is ${v.type}`);
  })
  .transform((v): DataSource => {
    switch (v.type) {
      case 'HTTP':
        return { type: 'HTTP', http: v.http as HttpSource };
      case 'ContainerImage':
        return { type: 'ContainerImage', containerImage: v.containerImage as ContainerImageSource };
      case 'ObjectRef':
        return { type: 'ObjectRef', objectRef: v.objectRef as ObjectRefSource };
      case 'Upload':
        return v.upload === undefined ? { type: 'Upload' } : { type: 'Upload', upload: v.upload };
    }
  });

const stringMap = z.record(z.string(), z.unknown());

function checkStringMap(ctx: Ctx, what: 'labels' | 'annotations', map: Record<string, unknown>): void {
  const at = (key: string): PropertyKey[] => [what, key];
  for (const [key, value] of Object.entries(map)) {
    const slash = key.lastIndexOf('/');
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if ((prefix !== undefined && subdomainProblem('key prefix', prefix)) || name.length > 63 || !QUALIFIED_NAME.test(name)) {
      problem(
        ctx,
        at(key),
        `is not a valid ${what.slice(0, -1)} key: [prefix/]name, name at most 63 of [A-Za-z0-9-_.] starting and ending alphanumeric, prefix a DNS subdomain`,
      );
      continue;
    }
    if (typeof value !== 'string') {
      problem(ctx, at(key), `must be a string (got ${describe(value)}); quote it in YAML`);
      continue;
    }
    if (what === 'labels' && value !== '' && (value.length > 63 || !QUALIFIED_NAME.test(value))) {
      problem(ctx, at(key), 'must be at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric (or empty)', value);
    }
  }
}

function metadataSchema(kind: ImageKind) {
  // Not strict: fields a server fills (uid, resourceVersion, managedFields, ...) are dropped.
  return z
    .object({
      name: z.string(),
      namespace: z.string().optional(),
      labels: stringMap.optional(),
      annotations: stringMap.optional(),
    })
    .superRefine((m, ctx) => {
      if (m.name === '') problem(ctx, ['name'], 'is required');
      else {
        const p = imageNameProblem(kind, m.name);
        if (p) problem(ctx, ['name'], p, m.name);
      }
      if (kind === 'ClusterVirtualImage' && m.namespace !== undefined && m.namespace !== '') {
        problem(ctx, ['namespace'], 'a ClusterVirtualImage is cluster-scoped; remove metadata.namespace');
      }
      if (kind === 'VirtualImage') {
        if (m.namespace === undefined || m.namespace === '') {
          problem(ctx, ['namespace'], 'is required for a VirtualImage');
        } else {
          const p = namespaceProblem(m.namespace);
          if (p) problem(ctx, ['namespace'], p, m.namespace);
        }
      }
      if (m.labels) checkStringMap(ctx, 'labels', m.labels);
      if (m.annotations) checkStringMap(ctx, 'annotations', m.annotations);
    });
}

function specSchema(kind: ImageKind) {
  const base = { dataSource: dataSourceSchema, conversion: conversionSchema.optional() };
  if (kind === 'ClusterVirtualImage') return z.strictObject(base);
  return z.strictObject({
    ...base,
    storage: z
      .string()
      .superRefine((v, ctx) => {
        if (v !== 'ContainerRegistry') {
          problem(ctx, [], 'is not supported: dvcr-importer only writes to DVCR; use ContainerRegistry or remove storage', v);
        }
      })
      .transform(() => 'ContainerRegistry' as const)
      .optional(),
  });
}

function manifestSchema(kind: ImageKind) {
  return z
    .strictObject({
      apiVersion: z.literal(API_VERSION),
      kind: z.literal(kind),
      metadata: metadataSchema(kind),
      spec: specSchema(kind),
      // Ignored: lets `get -o yaml` output be applied again.
      status: z.unknown().optional(),
    })
    .superRefine((m, ctx) => checkReferences(kind, m.metadata, m.spec, ctx));
}

/**
 * Rules that need the whole manifest: scoping of references. zod runs this even when a sub-object had
 * non-fatal issues (then the sub-objects are raw input), so every field is read defensively.
 */
function checkReferences(kind: ImageKind, meta: { name: string; namespace?: string | undefined }, spec: unknown, ctx: Ctx): void {
  const ds = field(spec, 'dataSource');
  const type = field(ds, 'type');
  if (type === 'ObjectRef') {
    const ref = field(ds, 'objectRef');
    const refKind = field(ref, 'kind');
    const refName = field(ref, 'name');
    const refNs = field(ref, 'namespace');
    if (typeof refKind !== 'string' || typeof refName !== 'string' || (refNs !== undefined && typeof refNs !== 'string')) return;
    const at = ['spec', 'dataSource', 'objectRef'];
    const nameProblem = subdomainProblem('name', refName);
    if (nameProblem) problem(ctx, [...at, 'name'], nameProblem, refName);
    if (refKind === 'ClusterVirtualImage' && refNs !== undefined) {
      problem(ctx, [...at, 'namespace'], 'a ClusterVirtualImage is cluster-scoped; remove namespace');
    }
    if (refKind === 'VirtualImage') {
      if (kind === 'ClusterVirtualImage' && refNs === undefined) {
        problem(ctx, [...at, 'namespace'], 'is required to refer to a VirtualImage from a ClusterVirtualImage');
      } else if (refNs !== undefined) {
        const p = namespaceProblem(refNs);
        if (p) problem(ctx, [...at, 'namespace'], p, refNs);
        else if (kind === 'VirtualImage' && meta.namespace !== undefined && refNs !== meta.namespace) {
          problem(
            ctx,
            [...at, 'namespace'],
            `a VirtualImage can only refer to a VirtualImage in its own namespace "${meta.namespace}"; remove namespace`,
            refNs,
          );
        }
      }
    }
    const sameNamespace = kind === 'ClusterVirtualImage' || (refNs ?? meta.namespace) === meta.namespace;
    if (refKind === kind && refName === meta.name && sameNamespace) {
      problem(ctx, at, 'refers to this image itself; name another image');
    }
  }
  if (type === 'ObjectRef' && field(spec, 'conversion') !== undefined) {
    problem(
      ctx,
      ['spec', 'conversion'],
      'does not apply to an ObjectRef source: the referenced image is copied as it is (its layer is mounted in DVCR); remove conversion',
    );
  }
  if (type === 'ContainerImage' && kind === 'VirtualImage') {
    const secretNs = field(field(field(ds, 'containerImage'), 'imagePullSecret'), 'namespace');
    if (typeof secretNs === 'string' && meta.namespace !== undefined && secretNs !== meta.namespace) {
      problem(
        ctx,
        ['spec', 'dataSource', 'containerImage', 'imagePullSecret', 'namespace'],
        `a VirtualImage can only use a secret in its own namespace "${meta.namespace}"; remove namespace`,
        secretNs,
      );
    }
  }
}

function field(obj: unknown, key: string): unknown {
  return isPlainObject(obj) ? obj[key] : undefined;
}

const schemas = new Map<ImageKind, ReturnType<typeof manifestSchema>>();
function schemaFor(kind: ImageKind): ReturnType<typeof manifestSchema> {
  let s = schemas.get(kind);
  if (!s) {
    s = manifestSchema(kind);
    schemas.set(kind, s);
  }
  return s;
}

/** Schema of a stored object (for reading back and checking API responses). */
export const imageSchema = z.strictObject({
  apiVersion: z.literal(API_VERSION),
  kind: z.enum(IMAGE_KINDS),
  metadata: z.strictObject({
    name: nonEmpty,
    namespace: nonEmpty.optional(),
    uid: z.uuid(),
    generation: z.number().int().min(1),
    creationTimestamp: z.string(),
    deletionTimestamp: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  }),
  spec: z.strictObject({
    dataSource: dataSourceSchema,
    conversion: conversionSchema.optional(),
    storage: z.literal('ContainerRegistry').optional(),
  }),
  status: imageStatusSchema,
});

// ---------------------------------------------------------------------------------------------------------------
// Issue formatting

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `null` means absent (Kubernetes apply semantics). Keys are defined, not assigned: a `"__proto__"` key of
 * parsed JSON stays a plain (unknown) field instead of becoming the copy's prototype, whose fields would be read
 * as the manifest's own.
 */
function dropNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(dropNulls);
  if (!isPlainObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (x !== null) Object.defineProperty(out, k, { value: dropNulls(x), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `string ${quoteValue(v)}`;
  return `${typeof v} ${String(v)}`;
}

const EXPECTED: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
};

export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const s = String(seg);
      out += /^[A-Za-z_][A-Za-z0-9_-]*$/.test(s) ? (out ? `.${s}` : s) : `[${JSON.stringify(s)}]`;
    }
  }
  return out;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0] ?? 0;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j] ?? 0;
      dp[j] = Math.min((dp[j] ?? 0) + 1, (dp[j - 1] ?? 0) + 1, prev + (a[i - 1]?.toLowerCase() === b[j - 1]?.toLowerCase() ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length] ?? 0;
}

/** The field names an object schema accepts at `path` (walking optional/pipe wrappers), for "unknown field" hints. */
function knownFieldsAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let cur: unknown = schema;
  const unwrap = (s: unknown): unknown => {
    for (;;) {
      const def = (s as { _zod?: { def?: { type?: string; innerType?: unknown; in?: unknown } } })._zod?.def;
      if (!def) return s;
      if (def.type === 'optional' || def.type === 'nullable' || def.type === 'default') s = def.innerType;
      else if (def.type === 'pipe') s = def.in;
      else return s;
    }
  };
  const shapeOf = (s: unknown): Record<string, unknown> | undefined => {
    const def = (unwrap(s) as { _zod?: { def?: { type?: string; shape?: Record<string, unknown> } } })._zod?.def;
    return def?.type === 'object' ? def.shape : undefined;
  };
  for (const seg of path) {
    const shape = shapeOf(cur);
    if (!shape) return [];
    cur = shape[String(seg)];
  }
  return Object.keys(shapeOf(cur) ?? {}).filter((k) => k !== 'status');
}

function formatIssue(schema: z.ZodType, iss: z.core.$ZodIssue): ValidationIssue[] {
  const path = formatPath(iss.path);
  const at = path || '(manifest)';
  const input = (iss as { input?: unknown }).input;
  switch (iss.code) {
    case 'custom': {
      const value = (iss.params as { value?: unknown } | undefined)?.value;
      return [{ path, message: typeof value === 'string' ? `${at} ${quoteValue(value)}: ${iss.message}` : `${at}: ${iss.message}` }];
    }
    case 'invalid_type':
      if (input === undefined) return [{ path, message: `${at}: is required` }];
      return [{ path, message: `${at}: must be ${EXPECTED[iss.expected] ?? iss.expected} (got ${describe(input)})` }];
    case 'invalid_value': {
      const values = iss.values.map((v) => String(v));
      const shown = typeof input === 'string' ? ` ${quoteValue(input)}` : input === undefined ? '' : ` (${describe(input)})`;
      if (input === undefined) return [{ path, message: `${at}: is required; use ${values.map((v) => JSON.stringify(v)).join(' or ')}` }];
      const close = typeof input === 'string' ? values.find((v) => v.toLowerCase() === input.toLowerCase()) : undefined;
      const hint = close ? `; did you mean "${close}"?` : '';
      const want = values.length === 1 ? `must be ${JSON.stringify(values[0])}` : `must be one of ${values.join(', ')}`;
      return [{ path, message: `${at}${shown}: ${want}${hint}` }];
    }
    case 'unrecognized_keys': {
      const known = knownFieldsAt(schema, iss.path);
      return iss.keys.map((key) => {
        const keyPath = formatPath([...iss.path, key]);
        const close = known.filter((k) => editDistance(k, key) <= 2).sort((a, b) => editDistance(a, key) - editDistance(b, key))[0];
        const hint = close ? `did you mean "${close}"? ` : '';
        const list = known.length ? `known fields here: ${known.join(', ')}` : 'remove it';
        return { path: keyPath, message: `${keyPath}: unknown field; ${hint}${list}` };
      });
    }
    case 'too_small':
      if (iss.origin === 'string' && Number(iss.minimum) === 1) return [{ path, message: `${at}: must not be empty` }];
      return [{ path, message: `${at}: ${iss.message}` }];
    default:
      return [{ path, message: `${at}: ${iss.message}` }];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Entry point

export interface ParseOptions {
  /** Namespace for a VirtualImage manifest that names none (like kubectl's current namespace). */
  defaultNamespace?: string;
}

/**
 * Parses a ClusterVirtualImage or VirtualImage manifest (an object from YAML or JSON). Returns the typed, normalised
 * manifest (checksums lower-cased, nulls dropped, server-filled metadata and status removed) or throws a
 * {@link ValidationError} listing every problem found.
 */
export function parseImageManifest(input: unknown, opts: ParseOptions = {}): ImageSpecInput {
  if (!isPlainObject(input)) {
    throw new ValidationError([
      {
        path: '',
        message: `the manifest must be a mapping with apiVersion, kind, metadata and spec (got ${describe(input)})`,
      },
    ]);
  }
  const obj = dropNulls(input) as Record<string, unknown>;
  const kind = obj.kind;
  if (kind === undefined) {
    throw new ValidationError([{ path: 'kind', message: 'kind: is required; use ClusterVirtualImage or VirtualImage' }]);
  }
  if (typeof kind !== 'string' || !(IMAGE_KINDS as readonly string[]).includes(kind)) {
    const shown = typeof kind === 'string' ? quoteValue(kind) : `(${describe(kind)})`;
    throw new ValidationError([
      { path: 'kind', message: `kind ${shown} is not supported; use ClusterVirtualImage or VirtualImage` },
    ]);
  }
  const k = kind as ImageKind;
  if (k === 'VirtualImage' && opts.defaultNamespace !== undefined && isPlainObject(obj.metadata)) {
    const meta = obj.metadata;
    if (meta.namespace === undefined || meta.namespace === '') obj.metadata = { ...meta, namespace: opts.defaultNamespace };
  }
  const schema = schemaFor(k);
  const result = schema.safeParse(obj, { reportInput: true });
  if (!result.success) {
    const name = isPlainObject(obj.metadata) && typeof obj.metadata.name === 'string' ? obj.metadata.name : undefined;
    const issues = result.error.issues.flatMap((i) => formatIssue(schema, i));
    throw new ValidationError(issues, name ? `${k} ${quoteValue(name)}` : k);
  }
  const d = result.data;
  const metadata: ImageManifestMetadata = { name: d.metadata.name };
  if (k === 'VirtualImage' && d.metadata.namespace !== undefined) metadata.namespace = d.metadata.namespace;
  if (d.metadata.labels) metadata.labels = d.metadata.labels as Record<string, string>;
  if (d.metadata.annotations) metadata.annotations = d.metadata.annotations as Record<string, string>;
  const spec: ImageSpec = { dataSource: d.spec.dataSource };
  if (d.spec.conversion !== undefined) spec.conversion = d.spec.conversion;
  const storage = (d.spec as { storage?: 'ContainerRegistry' }).storage;
  if (storage !== undefined) spec.storage = storage;
  return { apiVersion: API_VERSION, kind: k, metadata, spec };
}

/** The reference `{kind, namespace?, name}` of a manifest or object. */
export function refOf(obj: { kind: ImageKind; metadata: { name: string; namespace?: string } }): ImageRef {
  return obj.metadata.namespace === undefined
    ? { kind: obj.kind, name: obj.metadata.name }
    : { kind: obj.kind, namespace: obj.metadata.namespace, name: obj.metadata.name };
}

/** Identifies one image: ClusterVirtualImage by name, VirtualImage by namespace and name. */
export interface ImageRef {
  kind: ImageKind;
  namespace?: string;
  name: string;
}

/** `ClusterVirtualImage "ubuntu"` / `VirtualImage "team-a/ubuntu"`: a reference as messages show it. */
export function formatRef(ref: ImageRef): string {
  return ref.kind === 'ClusterVirtualImage' ? `ClusterVirtualImage "${ref.name}"` : `VirtualImage "${ref.namespace ?? ''}/${ref.name}"`;
}
