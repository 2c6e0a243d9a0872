import { describe as suite, expect, it } from 'vitest';
import type { Image, ImageStatus } from '../../src/images/index.ts';
import { age, humanDuration } from '../../src/cli/output/age.ts';
import { describe, smartLabel } from '../../src/cli/output/describe.ts';
import {
  listOf,
  objectName,
  qualifiedName,
  resolveResource,
  sortImages,
  tableHeader,
  tableRow,
  toJson,
  toYaml,
} from '../../src/cli/output/images.ts';
import { jsonpath, JsonPathError, jsonpathValues } from '../../src/cli/output/jsonpath.ts';
import { columnWidths, DESCRIBE_OPTIONS, formatRow, table, tabwrite } from '../../src/cli/output/table.ts';

const CREATED = '2024-05-01T10:00:00Z';
const at = (seconds: number): Date => new Date(Date.parse(CREATED) + seconds * 1000);

function image(name: string, status: Partial<ImageStatus> = {}, extra: Partial<Image> = {}): Image {
  return {
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name, uid: '6f1c6c1e-0000-4000-8000-000000000001', generation: 1, creationTimestamp: CREATED },
    spec: { dataSource: { type: 'HTTP', http: { url: 'https://cloud-images.ubuntu.com/minimal/jammy.img' } } },
    status: { phase: 'Pending', cdrom: false, conditions: [], ...status },
    ...extra,
  };
}

suite('table', () => {
  it('pads columns like kubectl (3 spaces after the widest cell, the last column unpadded)', () => {
    expect(
      table([
        ['NAME', 'PHASE', 'CDROM', 'PROGRESS', 'AGE'],
        ['ubuntu-22.04', 'Ready', 'false', '100%', '23h'],
      ]),
    ).toBe('NAME           PHASE   CDROM   PROGRESS   AGE\nubuntu-22.04   Ready   false   100%       23h\n');
  });

  it('matches the watch sample of the cluster-images guide, empty PROGRESS included', () => {
    const rows = [
      ['NAME', 'PHASE', 'CDROM', 'PROGRESS', 'AGE'],
      ['ubuntu-22.04', 'Provisioning', 'false', '', '4s'],
      ['ubuntu-22.04', 'Provisioning', 'false', '0.0%', '4s'],
      ['ubuntu-22.04', 'Provisioning', 'false', '28.2%', '6s'],
      ['ubuntu-22.04', 'Provisioning', 'false', '100.0%', '10s'],
      ['ubuntu-22.04', 'Ready', 'false', '100%', '18s'],
    ];
    expect(table(rows)).toBe(
      [
        'NAME           PHASE          CDROM   PROGRESS   AGE',
        'ubuntu-22.04   Provisioning   false              4s',
        'ubuntu-22.04   Provisioning   false   0.0%       4s',
        'ubuntu-22.04   Provisioning   false   28.2%      6s',
        'ubuntu-22.04   Provisioning   false   100.0%     10s',
        'ubuntu-22.04   Ready          false   100%       18s',
        '',
      ].join('\n'),
    );
  });

  it('keeps a minimum column width of 6 (kubectl tabwriter minwidth)', () => {
    expect(table([['A', 'B'], ['x', 'y']])).toBe('A     B\nx     y\n');
  });

  it('prints rows added later in the same (growing) columns', () => {
    const header = ['NAME', 'PHASE', 'AGE'];
    let widths = columnWidths([header, ['a', 'Pending', '1s']]);
    expect(formatRow(header, widths) + formatRow(['a', 'Pending', '1s'], widths)).toBe('NAME   PHASE     AGE\na      Pending   1s\n');
    widths = columnWidths([['a', 'Provisioning', '2s']], widths);
    expect(formatRow(['a', 'Provisioning', '2s'], widths)).toBe('a      Provisioning   2s\n');
  });

  it('aligns describe blocks: consecutive key/value lines share a column, a header line ends the block', () => {
    const text = tabwrite([['Name:', 'x'], ['Annotations:', '<none>'], ['Status:'], ['  Phase:', 'Ready'], ['  Observed Generation:', '1']], DESCRIBE_OPTIONS);
    expect(text).toBe('Name:         x\nAnnotations:  <none>\nStatus:\n  Phase:                Ready\n  Observed Generation:  1\n');
  });
});

suite('age (kubectl HumanDuration)', () => {
  it.each([
    [0, '0s'],
    [6, '6s'],
    [119, '119s'],
    [120, '2m'],
    [260, '4m20s'],
    [240, '4m'],
    [10 * 60 + 5, '10m'],
    [3 * 3600 + 120, '3h2m'],
    [23 * 3600 + 59 * 60, '23h'],
    [48 * 3600, '2d'],
    [3 * 86400 + 4 * 3600, '3d4h'],
    [400 * 86400, '400d'],
    [(2 * 365 + 100) * 86400, '2y100d'],
    [9 * 365 * 86400, '9y'],
  ])('%i s -> %s', (seconds, want) => {
    expect(age(CREATED, at(seconds))).toBe(want);
  });

  it('tolerates a little clock skew and reports nonsense plainly', () => {
    expect(humanDuration(-1500)).toBe('0s');
    expect(humanDuration(-5000)).toBe('<invalid>');
    expect(age('not a date', at(0))).toBe('<unknown>');
    expect(age(new Date(CREATED), at(6))).toBe('6s');
  });
});

suite('jsonpath', () => {
  const img = image('some-image', {
    phase: 'WaitForUserUpload',
    imageUploadURLs: { external: 'https://virtualization.example.com/upload/g2Ou', inCluster: 'http://10.222.165.239/upload' },
    conditions: [
      { type: 'DatasourceReady', status: 'True', reason: 'DatasourceReady', message: '', lastTransitionTime: CREATED },
      { type: 'Ready', status: 'False', reason: 'WaitForUserUpload', message: 'Waiting for the user upload.', lastTransitionTime: CREATED },
    ],
  });
  img.metadata.labels = { 'app.kubernetes.io/name': 'demo' };

  it('prints an object as compact JSON (the upload URLs example)', () => {
    expect(jsonpath(img, '{.status.imageUploadURLs}')).toBe(
      '{"external":"https://virtualization.example.com/upload/g2Ou","inCluster":"http://10.222.165.239/upload"}',
    );
  });

  it('prints strings raw, booleans and numbers as text, with literal text around', () => {
    expect(jsonpath(img, 'name={.metadata.name} gen={.metadata.generation} cdrom={.status.cdrom}')).toBe('name=some-image gen=1 cdrom=false');
  });

  it('indexes lists, including from the end, and slices', () => {
    expect(jsonpath(img, '{.status.conditions[0].type}')).toBe('DatasourceReady');
    expect(jsonpath(img, '{.status.conditions[-1].reason}')).toBe('WaitForUserUpload');
    expect(jsonpath(img, '{.status.conditions[0:1].type}')).toBe('DatasourceReady');
  });

  it('joins several values with a space (wildcards)', () => {
    const list = listOf([image('a'), image('b')]);
    expect(jsonpath(list, '{.items[*].metadata.name}')).toBe('a b');
    expect(jsonpath(img, '{.status.imageUploadURLs.*}')).toBe('https://virtualization.example.com/upload/g2Ou http://10.222.165.239/upload');
  });

  it('filters, quoted keys, recursive descent, string literals and range', () => {
    expect(jsonpath(img, '{.status.conditions[?(@.type=="Ready")].reason}')).toBe('WaitForUserUpload');
    expect(jsonpath(img, "{.metadata.labels['app.kubernetes.io/name']}")).toBe('demo');
    expect(jsonpath(img, '{..inCluster}')).toBe('http://10.222.165.239/upload');
    expect(jsonpath(listOf([image('a'), image('b')]), '{range .items[*]}{.metadata.name}{"\\n"}{end}')).toBe('a\nb\n');
  });

  it('prints nothing for a missing field', () => {
    expect(jsonpath(img, '{.status.nope}')).toBe('');
    expect(jsonpath(img, '[{.status.conditions[7].type}]')).toBe('[]');
  });

  it('takes a bare path as one expression and rejects malformed templates', () => {
    expect(jsonpath(img, '.status.phase')).toBe('WaitForUserUpload');
    expect(jsonpathValues(img, '{.status.phase}')).toEqual(['WaitForUserUpload']);
    expect(() => jsonpath(img, '{.status')).toThrow(JsonPathError);
    expect(() => jsonpath(img, '{range .items[*]}x')).toThrow(/range.*end/);
    expect(() => jsonpath(img, '{status}')).toThrow(/starts with "\."/);
  });
});

suite('image rows and names', () => {
  const ready = image('ubuntu-22.04', {
    phase: 'Ready',
    progress: '100%',
    size: { stored: '285.9Mi', storedBytes: '299792384', unpacked: '2.5Gi', unpackedBytes: '2684354560' },
    target: { registryURL: 'dvcr.example/cvi/ubuntu-22.04:6f1c' },
  });

  it('builds the default and wide rows', () => {
    expect(tableHeader()).toEqual(['NAME', 'PHASE', 'CDROM', 'PROGRESS', 'AGE']);
    expect(tableRow(ready, at(23 * 3600))).toEqual(['ubuntu-22.04', 'Ready', 'false', '100%', '23h']);
    expect(table([tableHeader({ wide: true }), tableRow(ready, at(6), { wide: true })])).toBe(
      'NAME           PHASE   CDROM   PROGRESS   STOREDSIZE   UNPACKEDSIZE   REGISTRY URL                         AGE\n' +
        'ubuntu-22.04   Ready   false   100%       285.9Mi      2.5Gi          dvcr.example/cvi/ubuntu-22.04:6f1c   6s\n',
    );
  });

  it('leaves unknown values empty and adds NAMESPACE for -A', () => {
    const vi = image('cirros', { cdrom: undefined }, { kind: 'VirtualImage' });
    vi.metadata.namespace = 'team-a';
    expect(tableRow(vi, at(1), { withNamespace: true })).toEqual(['team-a', 'cirros', 'Pending', '', '', '1s']);
    expect(tableHeader({ withNamespace: true })[0]).toBe('NAMESPACE');
  });

  it('names resources the kubectl way', () => {
    for (const w of ['cvi', 'clustervirtualimage', 'clustervirtualimages', 'ClusterVirtualImage', 'clustervirtualimage.virtualization.deckhouse.io']) {
      expect(resolveResource(w)?.kind).toBe('ClusterVirtualImage');
    }
    for (const w of ['vi', 'virtualimage', 'virtualimages']) expect(resolveResource(w)?.kind).toBe('VirtualImage');
    expect(resolveResource('pods')).toBeUndefined();
    expect(qualifiedName('VirtualImage')).toBe('virtualimage.virtualization.deckhouse.io');
    expect(objectName(ready)).toBe('clustervirtualimage.virtualization.deckhouse.io/ubuntu-22.04');
  });

  it('prints JSON with 4 spaces and YAML kubectl style; lists as kind List; sorts by namespace and name', () => {
    expect(toJson({ a: [1] })).toBe('{\n    "a": [\n        1\n    ]\n}\n');
    expect(toYaml(listOf([image('a')]))).toMatch(/^apiVersion: v1\nkind: List\nitems:\n- apiVersion: virtualization\.deckhouse\.io\/v1alpha2\n {2}kind: ClusterVirtualImage\n/);
    expect(sortImages([image('b'), image('a')]).map((i) => i.metadata.name)).toEqual(['a', 'b']);
  });
});

suite('describe', () => {
  it('renders a Ready image with every status section and a conditions table', () => {
    const img = image(
      'ubuntu-22.04',
      {
        phase: 'Ready',
        progress: '100%',
        downloadSpeed: { avg: '2.1Mi/s', avgBytes: '2202009' },
        size: { stored: '285.9Mi', storedBytes: '299792384', unpacked: '2.5Gi', unpackedBytes: '2684354560' },
        format: 'qcow2',
        target: { registryURL: 'dvcr.example/cvi/ubuntu-22.04:6f1c' },
        checksums: { sha256: 'ab'.repeat(32) },
        attempts: 1,
        observedGeneration: 1,
        conditions: [
          { type: 'DatasourceReady', status: 'True', reason: 'DatasourceReady', message: '', lastTransitionTime: '2024-05-01T10:00:01Z' },
          { type: 'Ready', status: 'True', reason: 'Ready', message: '', lastTransitionTime: '2024-05-01T10:00:18Z' },
        ],
      },
    );
    img.metadata.labels = { os: 'ubuntu', arch: 'amd64' };
    expect(describe(img)).toBe(
      [
        'Name:         ubuntu-22.04',
        'Labels:       arch=amd64',
        '              os=ubuntu',
        'Annotations:  <none>',
        'API Version:  virtualization.deckhouse.io/v1alpha2',
        'Kind:         ClusterVirtualImage',
        'Metadata:',
        '  Creation Timestamp:  2024-05-01T10:00:00Z',
        '  Generation:          1',
        '  UID:                 6f1c6c1e-0000-4000-8000-000000000001',
        'Spec:',
        '  Data Source:',
        '    Type:  HTTP',
        '    HTTP:',
        '      URL:  https://cloud-images.ubuntu.com/minimal/jammy.img',
        'Status:',
        '  Phase:     Ready',
        '  Progress:  100%',
        '  Download Speed:',
        '    Avg:        2.1Mi/s',
        '    Avg Bytes:  2202009',
        '  Size:',
        '    Stored:          285.9Mi',
        '    Stored Bytes:    299792384',
        '    Unpacked:        2.5Gi',
        '    Unpacked Bytes:  2684354560',
        '  Format:            qcow2',
        '  CDROM:             false',
        '  Target:',
        '    Registry URL:  dvcr.example/cvi/ubuntu-22.04:6f1c',
        '  Checksums:',
        `    SHA256:             ${'ab'.repeat(32)}`,
        '  Attempts:             1',
        '  Observed Generation:  1',
        'Conditions:',
        '  Type             Status  Reason           Message  LastTransitionTime',
        '  ----             ------  ------           -------  ------------------',
        '  DatasourceReady  True    DatasourceReady           2024-05-01T10:00:01Z',
        '  Ready            True    Ready                     2024-05-01T10:00:18Z',
        '',
      ].join('\n'),
    );
  });

  it('shows the namespace of a VirtualImage, a failure, and no conditions as <none>', () => {
    const vi = image(
      'cirros',
      { phase: 'Failed', failure: { reason: 'HTTPNotFound', message: 'GET https://x/y.img: 404 Not Found', retryable: false } },
      { kind: 'VirtualImage' },
    );
    vi.metadata.namespace = 'team-a';
    const text = describe(vi);
    expect(text).toContain('Namespace:    team-a\n');
    expect(text).toContain('  Failure:\n    Reason:     HTTPNotFound\n    Message:    GET https://x/y.img: 404 Not Found\n    Retryable:  false\n');
    // Like kubectl's `Events:  <none>`, the line joins the alignment block of the lines before it.
    expect(text.endsWith('    Retryable:  false\nConditions:     <none>\n')).toBe(true);
  });

  it('labels camelCase keys like kubectl', () => {
    expect(smartLabel('imagePullSecret')).toBe('Image Pull Secret');
    expect(smartLabel('caBundle')).toBe('CA Bundle');
    expect(smartLabel('registryURL')).toBe('Registry URL');
    expect(smartLabel('imageUploadURLs')).toBe('Image Upload URLs');
    expect(smartLabel('avgBytes')).toBe('Avg Bytes');
    expect(smartLabel('sha256')).toBe('SHA256');
  });
});
