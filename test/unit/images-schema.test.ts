import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  API_VERSION,
  ValidationError,
  imageNameProblem,
  parseImageManifest,
  suggestName,
  type ImageSpecInput,
} from '../../src/images/index.ts';

const SHA256 = 'a'.repeat(64);
const CA = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n').toString('base64');

function cvi(spec: unknown, metadata: Record<string, unknown> = { name: 'ubuntu-22-04' }): Record<string, unknown> {
  return { apiVersion: API_VERSION, kind: 'ClusterVirtualImage', metadata, spec };
}

function vi(spec: unknown, metadata: Record<string, unknown> = { name: 'ubuntu', namespace: 'team-a' }): Record<string, unknown> {
  return { apiVersion: API_VERSION, kind: 'VirtualImage', metadata, spec };
}

const http = (h: Record<string, unknown>) => ({ dataSource: { type: 'HTTP', http: h } });

/** The issue lines of a rejected manifest. */
function problems(input: unknown, opts?: { defaultNamespace?: string }): string[] {
  try {
    parseImageManifest(input, opts);
  } catch (e) {
    if (e instanceof ValidationError) return e.issues.map((i) => i.message);
    throw e;
  }
  throw new Error('expected a ValidationError');
}

describe('parseImageManifest: accepted manifests', () => {
  it('the seed HTTP example (with a name upstream accepts)', () => {
    const m = parseImageManifest(
      cvi(http({ url: 'https://cloud-images.ubuntu.com/minimal/releases/jammy/release/ubuntu-22.04-minimal-cloudimg-amd64.img' })),
    );
    expect(m).toEqual<ImageSpecInput>({
      apiVersion: API_VERSION,
      kind: 'ClusterVirtualImage',
      metadata: { name: 'ubuntu-22-04' },
      spec: {
        dataSource: {
          type: 'HTTP',
          http: { url: 'https://cloud-images.ubuntu.com/minimal/releases/jammy/release/ubuntu-22.04-minimal-cloudimg-amd64.img' },
        },
      },
    });
  });

  it('HTTP with caBundle and every checksum; hex is lower-cased', () => {
    const m = parseImageManifest(
      cvi(
        http({
          url: 'http://10.0.0.1:8080/disk.qcow2',
          caBundle: CA,
          checksum: { md5: 'A'.repeat(32), sha1: 'b'.repeat(40), sha256: SHA256, sha512: 'C'.repeat(128) },
        }),
      ),
    );
    expect(m.spec.dataSource).toEqual({
      type: 'HTTP',
      http: {
        url: 'http://10.0.0.1:8080/disk.qcow2',
        caBundle: CA,
        checksum: { md5: 'a'.repeat(32), sha1: 'b'.repeat(40), sha256: SHA256, sha512: 'c'.repeat(128) },
      },
    });
  });

  it('ContainerImage with pull secret reference, caBundle and our platform extension', () => {
    const m = parseImageManifest(
      cvi({
        dataSource: {
          type: 'ContainerImage',
          containerImage: {
            image: 'docker.io/user/ubuntu2204:latest',
            imagePullSecret: { name: 'regcred', namespace: 'd8-virtualization' },
            caBundle: CA,
            platform: 'linux/arm64/v8',
          },
        },
      }),
    );
    expect(m.spec.dataSource).toEqual({
      type: 'ContainerImage',
      containerImage: {
        image: 'docker.io/user/ubuntu2204:latest',
        imagePullSecret: { name: 'regcred', namespace: 'd8-virtualization' },
        caBundle: CA,
        platform: 'linux/arm64/v8',
      },
    });
  });

  it('ContainerImage by digest', () => {
    const image = `registry.example.com/ns/img@sha256:${SHA256}`;
    expect(parseImageManifest(cvi({ dataSource: { type: 'ContainerImage', containerImage: { image } } })).spec).toEqual({
      dataSource: { type: 'ContainerImage', containerImage: { image } },
    });
  });

  it('Upload with and without options; null counts as absent', () => {
    expect(parseImageManifest(cvi({ dataSource: { type: 'Upload' } })).spec.dataSource).toEqual({ type: 'Upload' });
    expect(parseImageManifest(cvi({ dataSource: { type: 'Upload', upload: null } })).spec.dataSource).toEqual({
      type: 'Upload',
    });
    expect(
      parseImageManifest(cvi({ dataSource: { type: 'Upload', upload: { checksum: { sha256: SHA256 } } } })).spec.dataSource,
    ).toEqual({ type: 'Upload', upload: { checksum: { sha256: SHA256 } } });
  });

  it('ObjectRef from a CVI to a VI (namespace required) and to a CVI', () => {
    expect(
      parseImageManifest(
        cvi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'VirtualImage', name: 'src', namespace: 'team-a' } } }),
      ).spec.dataSource,
    ).toEqual({ type: 'ObjectRef', objectRef: { kind: 'VirtualImage', name: 'src', namespace: 'team-a' } });
    expect(
      parseImageManifest(cvi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'ClusterVirtualImage', name: 'base' } } }))
        .spec.dataSource,
    ).toEqual({ type: 'ObjectRef', objectRef: { kind: 'ClusterVirtualImage', name: 'base' } });
  });

  it('VirtualImage: namespace kept, storage ContainerRegistry accepted, ObjectRef in its own namespace', () => {
    const m = parseImageManifest(
      vi({ storage: 'ContainerRegistry', dataSource: { type: 'ObjectRef', objectRef: { kind: 'VirtualImage', name: 'other' } } }),
    );
    expect(m.metadata).toEqual({ name: 'ubuntu', namespace: 'team-a' });
    expect(m.spec).toEqual({
      storage: 'ContainerRegistry',
      dataSource: { type: 'ObjectRef', objectRef: { kind: 'VirtualImage', name: 'other' } },
    });
  });

  it('spec.conversion (ours) is kept for both kinds', () => {
    expect(parseImageManifest(cvi({ dataSource: { type: 'Upload' }, conversion: { format: 'qcow2' } })).spec).toEqual({
      dataSource: { type: 'Upload' },
      conversion: { format: 'qcow2' },
    });
    expect(parseImageManifest(vi({ dataSource: { type: 'Upload' }, conversion: { format: 'raw' } })).spec.conversion).toEqual({
      format: 'raw',
    });
  });

  it('VirtualImage without namespace takes defaultNamespace', () => {
    const m = parseImageManifest(vi({ dataSource: { type: 'Upload' } }, { name: 'x' }), { defaultNamespace: 'dev' });
    expect(m.metadata).toEqual({ name: 'x', namespace: 'dev' });
  });

  it('labels and annotations are kept; server-filled metadata and status are dropped (get -o yaml re-applies)', () => {
    const m = parseImageManifest({
      ...cvi(http({ url: 'https://x.example/a.img' }), {
        name: 'img',
        uid: '0b1c',
        generation: 3,
        resourceVersion: '42',
        creationTimestamp: '2024-01-01T00:00:00Z',
        labels: { 'app.kubernetes.io/name': 'img', tier: '' },
        annotations: { note: 'any text: at all' },
      }),
      status: { phase: 'Ready' },
    });
    expect(m.metadata).toEqual({
      name: 'img',
      labels: { 'app.kubernetes.io/name': 'img', tier: '' },
      annotations: { note: 'any text: at all' },
    });
    expect(m).not.toHaveProperty('status');
  });

  it('names: 253 characters is the limit', () => {
    expect(parseImageManifest(cvi({ dataSource: { type: 'Upload' } }, { name: 'a'.repeat(253) })).metadata.name).toHaveLength(
      253,
    );
  });
});

describe('parseImageManifest: rejected manifests name the field and the fix', () => {
  it.each<[string, unknown, string[]]>([
    ['not a mapping', ['x'], ['the manifest must be a mapping with apiVersion, kind, metadata and spec (got a list)']],
    ['no kind', { apiVersion: API_VERSION }, ['kind: is required; use ClusterVirtualImage or VirtualImage']],
    ['unknown kind', { kind: 'Foo' }, ['kind "Foo" is not supported; use ClusterVirtualImage or VirtualImage']],
    ['kind of a wrong type', { kind: 3 }, ['kind (number 3) is not supported; use ClusterVirtualImage or VirtualImage']],
    [
      'wrong apiVersion',
      { ...cvi({ dataSource: { type: 'Upload' } }), apiVersion: 'v1' },
      ['apiVersion "v1": must be "virtualization.deckhouse.io/v1alpha2"'],
    ],
    [
      'missing apiVersion',
      { kind: 'ClusterVirtualImage', metadata: { name: 'a' }, spec: { dataSource: { type: 'Upload' } } },
      ['apiVersion: is required; use "virtualization.deckhouse.io/v1alpha2"'],
    ],
    ['missing spec', { apiVersion: API_VERSION, kind: 'ClusterVirtualImage', metadata: { name: 'a' } }, ['spec: is required']],
    ['missing dataSource', cvi({}), ['spec.dataSource: is required']],
    [
      'missing metadata.name',
      cvi({ dataSource: { type: 'Upload' } }, {}),
      ['metadata.name: is required'],
    ],
    [
      'name with upper case and underscore',
      cvi({ dataSource: { type: 'Upload' } }, { name: 'Ubuntu_22' }),
      [
        `metadata.name "Ubuntu_22": must be a DNS-1123 subdomain without '.': lowercase letters, digits and '-', starting and ending with a letter or digit; try "ubuntu-22"`,
      ],
    ],
    [
      "a '.' in a CVI name (upstream's rule)",
      cvi({ dataSource: { type: 'Upload' } }, { name: 'ubuntu-22.04' }),
      [
        `metadata.name "ubuntu-22.04": '.' is forbidden in a ClusterVirtualImage name (allowed: lowercase letters, digits and '-'); try "ubuntu-22-04"`,
      ],
    ],
    [
      "a '.' in a VI name",
      vi({ dataSource: { type: 'Upload' } }, { name: 'a.b', namespace: 'ns' }),
      [`metadata.name "a.b": '.' is forbidden in a VirtualImage name (allowed: lowercase letters, digits and '-'); try "a-b"`],
    ],
    [
      'a name too long',
      cvi({ dataSource: { type: 'Upload' } }, { name: 'a'.repeat(254) }),
      [`metadata.name "${'a'.repeat(60)}...": is 254 characters; a ClusterVirtualImage name must be no more than 253 characters`],
    ],
    [
      'a namespace on a CVI',
      cvi({ dataSource: { type: 'Upload' } }, { name: 'a', namespace: 'x' }),
      ['metadata.namespace: a ClusterVirtualImage is cluster-scoped; remove metadata.namespace'],
    ],
    [
      'a VI without namespace',
      vi({ dataSource: { type: 'Upload' } }, { name: 'a' }),
      ['metadata.namespace: is required for a VirtualImage'],
    ],
    [
      'a VI namespace that is not a DNS-1123 label',
      vi({ dataSource: { type: 'Upload' } }, { name: 'a', namespace: 'Team.A' }),
      [
        `metadata.namespace "Team.A": must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit; try "team-a"`,
      ],
    ],
    [
      'a label value that is a number',
      cvi({ dataSource: { type: 'Upload' } }, { name: 'a', labels: { replicas: 3 } }),
      ['metadata.labels.replicas: must be a string (got number 3); quote it in YAML'],
    ],
    [
      'a label key with a bad prefix',
      cvi({ dataSource: { type: 'Upload' } }, { name: 'a', labels: { 'Bad_Prefix/x': 'y' } }),
      [
        'metadata.labels["Bad_Prefix/x"]: is not a valid label key: [prefix/]name, name at most 63 of [A-Za-z0-9-_.] starting and ending alphanumeric, prefix a DNS subdomain',
      ],
    ],
    [
      'a label value with spaces',
      cvi({ dataSource: { type: 'Upload' } }, { name: 'a', labels: { tier: 'a b' } }),
      ['metadata.labels.tier "a b": must be at most 63 of [A-Za-z0-9-_.], starting and ending alphanumeric (or empty)'],
    ],
    [
      'an unknown dataSource type, with a hint',
      cvi({ dataSource: { type: 'Http', http: { url: 'https://x/y' } } }),
      ['spec.dataSource.type "Http": must be one of HTTP, ContainerImage, ObjectRef, Upload; did you mean "HTTP"?'],
    ],
    [
      'a missing type',
      cvi({ dataSource: { http: { url: 'https://x/y' } } }),
      ['spec.dataSource.type: is required; use "HTTP" or "ContainerImage" or "ObjectRef" or "Upload"'],
    ],
    [
      'the sub-object of another type',
      cvi({ dataSource: { type: 'HTTP', http: { url: 'https://x/y' }, containerImage: { image: 'a/b' } } }),
      ['spec.dataSource: type is HTTP but containerImage is set; set exactly the sub-object matching type'],
    ],
    [
      'the matching sub-object missing',
      cvi({ dataSource: { type: 'ContainerImage' } }),
      ['spec.dataSource.containerImage: is required when type is ContainerImage'],
    ],
    [
      'only the wrong sub-object',
      cvi({ dataSource: { type: 'Upload', http: { url: 'https://x/y' } } }),
      ['spec.dataSource: type is Upload but http is set; set exactly the sub-object matching type'],
    ],
    [
      'a sub-object that is not a mapping',
      cvi({ dataSource: { type: 'HTTP', http: 'https://x/y' } }),
      ['spec.dataSource.http: must be a mapping (got string "https://x/y")'],
    ],
    ['a missing url', cvi(http({})), ['spec.dataSource.http.url: is required']],
    [
      'a relative url',
      cvi(http({ url: 'images/disk.img' })),
      ['spec.dataSource.http.url "images/disk.img": must be an absolute http:// or https:// URL'],
    ],
    [
      'an ftp url',
      cvi(http({ url: 'ftp://x.example/disk.img' })),
      ['spec.dataSource.http.url "ftp://x.example/disk.img": scheme "ftp" is not supported; use http:// or https://'],
    ],
    [
      'credentials in the url (not echoed)',
      cvi(http({ url: 'https://user:hunter2@x.example/disk.img' })),
      ['spec.dataSource.http.url: must not contain credentials (user:password@host): specs and jobs never carry secrets'],
    ],
    [
      'a sha256 of the wrong length',
      cvi(http({ url: 'https://x/y', checksum: { sha256: 'abcdef012345' } })),
      ['spec.dataSource.http.checksum.sha256: must be 64 hex characters (got 12)'],
    ],
    [
      'an md5 that is not hex',
      cvi(http({ url: 'https://x/y', checksum: { md5: 'z'.repeat(32) } })),
      ['spec.dataSource.http.checksum.md5: must be 32 hex characters (got 32, not all hex)'],
    ],
    [
      'sha1 and sha512 lengths',
      cvi(http({ url: 'https://x/y', checksum: { sha1: 'a'.repeat(64), sha512: 'a'.repeat(127) } })),
      [
        'spec.dataSource.http.checksum.sha1: must be 40 hex characters (got 64)',
        'spec.dataSource.http.checksum.sha512: must be 128 hex characters (got 127)',
      ],
    ],
    [
      'a checksum given as a number',
      cvi({ dataSource: { type: 'Upload', upload: { checksum: { md5: 12345 } } } }),
      ['spec.dataSource.upload.checksum.md5: must be a string (got number 12345)'],
    ],
    [
      'a misspelt checksum field, with a hint',
      cvi(http({ url: 'https://x/y', checksum: { sha265: SHA256 } })),
      ['spec.dataSource.http.checksum.sha265: unknown field; did you mean "sha256"? known fields here: md5, sha1, sha256, sha512'],
    ],
    [
      'a plain PEM caBundle',
      cvi(http({ url: 'https://x/y', caBundle: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----' })),
      ['spec.dataSource.http.caBundle: must be base64-encoded PEM, but this is plain PEM text; encode it first (base64 -w0 ca.pem)'],
    ],
    [
      'a caBundle that is not base64',
      cvi(http({ url: 'https://x/y', caBundle: 'not base64!' })),
      ['spec.dataSource.http.caBundle: must be base64-encoded PEM certificates (base64 -w0 ca.pem); this is not valid base64'],
    ],
    [
      'a caBundle without certificates',
      cvi(http({ url: 'https://x/y', caBundle: Buffer.from('hello').toString('base64') })),
      ['spec.dataSource.http.caBundle: must be base64-encoded PEM certificates; the decoded text has no "-----BEGIN CERTIFICATE-----"'],
    ],
    [
      'an image with a scheme',
      cvi({ dataSource: { type: 'ContainerImage', containerImage: { image: 'https://registry.example.com/ns/img:1' } } }),
      ['spec.dataSource.containerImage.image "https://registry.example.com/ns/img:1": must not include a scheme; write it as "registry.example.com/ns/img:1"'],
    ],
    [
      'an image with upper case',
      cvi({ dataSource: { type: 'ContainerImage', containerImage: { image: 'registry.example.com/NS/img:1' } } }),
      [
        `spec.dataSource.containerImage.image "registry.example.com/NS/img:1": is not a valid image reference: repository "NS/img" must be lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/'`,
      ],
    ],
    [
      'a bad platform',
      cvi({ dataSource: { type: 'ContainerImage', containerImage: { image: 'r.example/a:1', platform: 'arm64' } } }),
      ['spec.dataSource.containerImage.platform "arm64": must be os/arch[/variant], e.g. "linux/arm64"'],
    ],
    [
      'a pull secret with the secret inline',
      cvi({
        dataSource: {
          type: 'ContainerImage',
          containerImage: { image: 'r.example/a:1', imagePullSecret: { name: 'regcred', dockerconfigjson: 'e30=' } },
        },
      }),
      ['spec.dataSource.containerImage.imagePullSecret.dockerconfigjson: unknown field; known fields here: name, namespace'],
    ],
    [
      'a pull secret name that is not a DNS name',
      cvi({ dataSource: { type: 'ContainerImage', containerImage: { image: 'r.example/a:1', imagePullSecret: { name: 'Reg_Cred' } } } }),
      [
        `spec.dataSource.containerImage.imagePullSecret.name "Reg_Cred": must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit`,
      ],
    ],
    [
      'an objectRef kind we do not import from',
      cvi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'VirtualDisk', name: 'd' } } }),
      ['spec.dataSource.objectRef.kind "VirtualDisk": must be one of ClusterVirtualImage, VirtualImage'],
    ],
    [
      'a conversion format we do not write',
      cvi({ dataSource: { type: 'Upload' }, conversion: { format: 'vmdk' } }),
      ['spec.conversion.format "vmdk": must be one of qcow2, raw'],
    ],
    [
      'a conversion on an ObjectRef copy',
      cvi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'ClusterVirtualImage', name: 'base' } }, conversion: { format: 'raw' } }),
      [
        'spec.conversion: does not apply to an ObjectRef source: the referenced image is copied as it is (its layer is mounted in DVCR); remove conversion',
      ],
    ],
    [
      'a CVI referring to a VI without namespace',
      cvi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'VirtualImage', name: 'src' } } }),
      ['spec.dataSource.objectRef.namespace: is required to refer to a VirtualImage from a ClusterVirtualImage'],
    ],
    [
      'a namespace on a CVI reference',
      vi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'ClusterVirtualImage', name: 'base', namespace: 'x' } } }),
      ['spec.dataSource.objectRef.namespace: a ClusterVirtualImage is cluster-scoped; remove namespace'],
    ],
    [
      'a VI referring to another namespace',
      vi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'VirtualImage', name: 'src', namespace: 'team-b' } } }),
      [
        'spec.dataSource.objectRef.namespace "team-b": a VirtualImage can only refer to a VirtualImage in its own namespace "team-a"; remove namespace',
      ],
    ],
    [
      'a VI using a secret of another namespace',
      vi({
        dataSource: {
          type: 'ContainerImage',
          containerImage: { image: 'r.example/a:1', imagePullSecret: { name: 's', namespace: 'team-b' } },
        },
      }),
      [
        'spec.dataSource.containerImage.imagePullSecret.namespace "team-b": a VirtualImage can only use a secret in its own namespace "team-a"; remove namespace',
      ],
    ],
    [
      'an image referring to itself',
      cvi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'ClusterVirtualImage', name: 'ubuntu-22-04' } } }),
      ['spec.dataSource.objectRef: refers to this image itself; name another image'],
    ],
    [
      'storage other than DVCR on a VI',
      vi({ storage: 'PersistentVolumeClaim', dataSource: { type: 'Upload' } }),
      ['spec.storage "PersistentVolumeClaim": is not supported: dvcr-importer only writes to DVCR; use ContainerRegistry or remove storage'],
    ],
    [
      'storage on a CVI',
      cvi({ storage: 'ContainerRegistry', dataSource: { type: 'Upload' } }),
      ['spec.storage: unknown field; known fields here: dataSource, conversion'],
    ],
    [
      'an unknown top-level field',
      { ...cvi({ dataSource: { type: 'Upload' } }), specs: {} },
      ['specs: unknown field; did you mean "spec"? known fields here: apiVersion, kind, metadata, spec'],
    ],
  ])('%s', (_title, input, want) => {
    expect(problems(input)).toEqual(want);
  });

  it('lists every problem at once, in document order, under a header naming the object', () => {
    let err: unknown;
    try {
      parseImageManifest({
        apiVersion: 'v1',
        kind: 'ClusterVirtualImage',
        metadata: { name: 'Bad_Name' },
        spec: { dataSource: { type: 'HTTP', http: { url: 'ftp://x/y', checksum: { sha256: 'abc' } } } },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ValidationError);
    const v = err as ValidationError;
    expect(v.code).toBe('Invalid');
    expect(v.issues.map((i) => i.path)).toEqual([
      'apiVersion',
      'metadata.name',
      'spec.dataSource.http.url',
      'spec.dataSource.http.checksum.sha256',
    ]);
    expect(v.message).toBe(
      [
        'ClusterVirtualImage "Bad_Name" is invalid: 4 problems:',
        '  - apiVersion "v1": must be "virtualization.deckhouse.io/v1alpha2"',
        `  - metadata.name "Bad_Name": must be a DNS-1123 subdomain without '.': lowercase letters, digits and '-', starting and ending with a letter or digit; try "bad-name"`,
        '  - spec.dataSource.http.url "ftp://x/y": scheme "ftp" is not supported; use http:// or https://',
        '  - spec.dataSource.http.checksum.sha256: must be 64 hex characters (got 3)',
      ].join('\n'),
    );
  });

  it('one problem reads as one line', () => {
    expect(() => parseImageManifest(cvi(http({ url: 'https://x/y', checksum: { sha256: 'ab' } })))).toThrow(
      'ClusterVirtualImage "ubuntu-22-04" is invalid: spec.dataSource.http.checksum.sha256: must be 64 hex characters (got 2)',
    );
  });
});

describe('name helpers', () => {
  it.each([
    ['Ubuntu_22.04', 'ubuntu-22-04'],
    ['--a--b--', 'a-b'],
    ['___', 'image'],
    ['UPPER', 'upper'],
  ])('suggestName(%j) = %j', (input, want) => {
    expect(suggestName(input)).toBe(want);
    expect(imageNameProblem('ClusterVirtualImage', suggestName(input))).toBeUndefined();
  });

  it.each(['a', 'a-b', '0', 'ubuntu-22-04', 'x'.repeat(253)])('%s is a valid image name', (name) => {
    expect(imageNameProblem('VirtualImage', name)).toBeUndefined();
  });

  it.each(['-a', 'a-', 'a_b', 'a.b', 'A', '', 'a b', 'x'.repeat(254)])('%j is not', (name) => {
    expect(imageNameProblem('VirtualImage', name)).toBeDefined();
  });
});

describe('parseImageManifest on arbitrary input (properties, bounded runs)', () => {
  const VALID: Record<string, unknown>[] = [
    cvi(http({ url: 'https://x.example/d.img', caBundle: CA, checksum: { sha256: SHA256, md5: 'b'.repeat(32) } })),
    cvi({ dataSource: { type: 'ContainerImage', containerImage: { image: 'r.example/a:b', imagePullSecret: { name: 's', namespace: 'ns' }, platform: 'linux/arm64' } } }),
    vi({ dataSource: { type: 'ObjectRef', objectRef: { kind: 'VirtualImage', name: 'other' } }, storage: 'ContainerRegistry' }, { name: 'u', namespace: 'team-a', labels: { app: 'x' }, annotations: { 'a.example/b': 'c' } }),
    vi({ dataSource: { type: 'Upload', upload: { checksum: { sha512: 'c'.repeat(128) } } }, conversion: { format: 'raw' } }),
  ];

  /** Every path to a value inside `v`. */
  function pathsOf(v: unknown, at: string[] = []): string[][] {
    if (typeof v !== 'object' || v === null) return [at];
    return [at, ...Object.entries(v).flatMap(([k, x]) => pathsOf(x, [...at, k]))];
  }
  /** `v` with the value at `path` replaced (`undefined`: removed). */
  function replaced(v: unknown, path: string[], value: unknown): unknown {
    if (path.length === 0) return value;
    const [head, ...rest] = path as [string, ...string[]];
    const copy = Array.isArray(v) ? [...(v as unknown[])] : { ...(v as Record<string, unknown>) };
    const next = replaced((v as Record<string, unknown>)[head], rest, value);
    if (next === undefined) delete (copy as Record<string, unknown>)[head];
    else (copy as Record<string, unknown>)[head] = next;
    return copy;
  }

  const oddValue = fc.oneof(
    fc.jsonValue({ maxDepth: 2 }),
    fc.constant(undefined),
    fc.constantFrom('', ' ', 'ClusterVirtualImage', 'HTTP', 'VirtualImage', '-----BEGIN CERTIFICATE-----', 'A'.repeat(64), '1e999', 'x://y'),
    fc.anything({ maxDepth: 1 }),
  );
  /** A valid manifest with one value anywhere replaced, removed, or a key added. */
  const nearMiss = fc
    .tuple(fc.constantFrom(...VALID), fc.nat(), oddValue, fc.option(fc.constantFrom('__proto__', 'constructor', 'extra', 'kind', 'status', 'toString')))
    .map(([m, i, value, key]) => {
      const paths = pathsOf(m);
      const path = paths[i % paths.length]!;
      return replaced(m, key === null ? path : [...path, key], value);
    });
  const input = fc.oneof(nearMiss, fc.anything({ maxDepth: 3 }), fc.jsonValue({ maxDepth: 4 }));

  it('never throws anything but a ValidationError whose every issue names its path (property)', () => {
    fc.assert(
      fc.property(input, fc.option(fc.constantFrom('team-a', 'Bad_NS', '')), (m, ns) => {
        try {
          const out = parseImageManifest(m, ns === null ? {} : { defaultNamespace: ns });
          expect(out.apiVersion).toBe(API_VERSION);
          expect(['ClusterVirtualImage', 'VirtualImage']).toContain(out.kind);
        } catch (e) {
          expect(e).toBeInstanceOf(ValidationError);
          const issues = (e as ValidationError).issues;
          expect(issues.length).toBeGreaterThan(0);
          for (const i of issues) {
            expect(typeof i.path).toBe('string');
            expect(i.message.length).toBeGreaterThan(0);
            if (i.path !== '') expect(i.message.startsWith(i.path), `${i.path} / ${i.message}`).toBe(true);
          }
        }
      }),
      { numRuns: 600 },
    );
  });

  it('a "__proto__" key of parsed JSON is an unknown field, never a prototype whose fields count as the manifest\'s', () => {
    const text = JSON.stringify(cvi(http({ url: 'https://x.example/d.img' }))).replace('{', '{"__proto__":{"kind":"VirtualImage"},');
    expect(problems(JSON.parse(text))).toEqual([expect.stringMatching(/^__proto__: unknown field/)]);
    const onlyProto = JSON.parse(`{"__proto__":${JSON.stringify(cvi({ dataSource: { type: 'Upload' } }))}}`) as unknown;
    expect(problems(onlyProto)).toEqual(['kind: is required; use ClusterVirtualImage or VirtualImage']);
    const nested = JSON.stringify(cvi(http({ url: 'https://x.example/d.img' }))).replace('"dataSource":{', '"dataSource":{"__proto__":{"type":"Upload"},');
    expect(problems(JSON.parse(nested))).toEqual([expect.stringMatching(/^spec\.dataSource\.__proto__: unknown field/)]);
    expect(Object.getPrototypeOf({})).toBe(Object.prototype);
  });

  it('checksums: any hex of the right length in any case is kept lower-cased; anything else names the field (property)', () => {
    const LENGTHS = { md5: 32, sha1: 40, sha256: 64, sha512: 128 } as const;
    const algo = fc.constantFrom(...(Object.keys(LENGTHS) as Array<keyof typeof LENGTHS>));
    fc.assert(
      fc.property(algo, fc.oneof(fc.stringMatching(/^[0-9a-fA-F]{0,130}$/), fc.string({ maxLength: 130 })), (a, hex) => {
        const m = cvi(http({ url: 'https://x.example/d.img', checksum: { [a]: hex } }));
        const valid = hex.length === LENGTHS[a] && /^[0-9a-fA-F]*$/.test(hex);
        if (valid) {
          const out = parseImageManifest(m);
          expect(out.spec.dataSource).toEqual({ type: 'HTTP', http: { url: 'https://x.example/d.img', checksum: { [a]: hex.toLowerCase() } } });
        } else {
          expect(problems(m)).toEqual([expect.stringMatching(new RegExp(`^spec\\.dataSource\\.http\\.checksum\\.${a}: must be ${LENGTHS[a]} hex characters`))]);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('labels: only string -> string maps with Kubernetes-valid keys and values pass (property)', () => {
    const key = fc.oneof(fc.stringMatching(/^[a-z0-9]([a-z0-9.-]{0,8}[a-z0-9])?(\/[A-Za-z0-9]([A-Za-z0-9_.-]{0,8}[A-Za-z0-9])?)?$/), fc.string({ maxLength: 12 }));
    const value = fc.oneof(fc.stringMatching(/^([A-Za-z0-9]([A-Za-z0-9_.-]{0,8}[A-Za-z0-9])?)?$/), fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 1 }));
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 5 }), (labels) => {
        const m = cvi(http({ url: 'https://x.example/d.img' }), { name: 'a', labels: JSON.parse(JSON.stringify(labels)) as unknown });
        try {
          const out = parseImageManifest(m);
          for (const [k, v] of Object.entries(out.metadata.labels ?? {})) {
            expect(typeof v).toBe('string');
            expect(v.length).toBeLessThanOrEqual(63);
            expect(k.split('/').pop()!.length).toBeLessThanOrEqual(63);
          }
        } catch (e) {
          expect(e).toBeInstanceOf(ValidationError);
          for (const i of (e as ValidationError).issues) expect(i.path).toMatch(/^metadata\.labels/);
        }
      }),
      { numRuns: 300 },
    );
  });
});
