/**
 * The commands in-process against a fake ImageClientApi: exact output, exit codes, and the watch-driven `get -w`
 * and `wait` (events pushed by the test, a fixed clock).
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { ImageClientApi } from '../../src/api/client-types.ts';
import { ApiError } from '../../src/api/client.ts';
import type { ApplyResult, Image, ImageKind, ImageStatus, WatchEvent } from '../../src/images/index.ts';
import type { CliIO, ClientOptions, Daemons } from '../../src/cli/commands/context.ts';
import { parseDuration, serverOf } from '../../src/cli/commands/context.ts';
import { parseOutputFormat } from '../../src/cli/commands/get.ts';
import { runCli } from '../../src/cli/commands/program.ts';
import { parseWaitFor, waitState } from '../../src/cli/commands/wait.ts';

const CREATED = '2024-05-01T10:00:00Z';
const NOW = new Date('2024-05-01T10:00:06Z');

function image(name: string, status: Partial<ImageStatus> = {}, kind: ImageKind = 'ClusterVirtualImage', namespace?: string): Image {
  return {
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind,
    metadata: { name, ...(namespace ? { namespace } : {}), uid: `uid-${name}`, generation: 1, creationTimestamp: CREATED },
    spec: { dataSource: { type: 'HTTP', http: { url: `https://example.com/${name}.img` } } },
    status: { phase: 'Pending', cdrom: false, conditions: [], ...status },
  };
}

const readyCondition = (reason: string, status: 'True' | 'False' = 'False', message = '') => ({
  type: 'Ready' as const,
  status,
  reason,
  message,
  lastTransitionTime: CREATED,
});

/** An in-memory API: apply/get/list/delete on a map; watch yields what the test pushes until the signal aborts. */
class FakeClient implements ImageClientApi {
  readonly images = new Map<string, Image>();
  readonly applied: Array<{ manifest: unknown; namespace: string | undefined }> = [];
  readonly watches: Array<{ kind: ImageKind; name?: string; namespace?: string }> = [];
  private listeners = new Set<(ev: WatchEvent) => void>();
  private watchStarted: Array<() => void> = [];

  private key(kind: ImageKind, name: string, namespace?: string): string {
    return `${kind}/${namespace ?? ''}/${name}`;
  }

  put(img: Image): void {
    this.images.set(this.key(img.kind, img.metadata.name, img.metadata.namespace), img);
  }

  async apply(manifest: unknown, opts: { namespace?: string } = {}): Promise<ApplyResult> {
    this.applied.push({ manifest, namespace: opts.namespace });
    const m = manifest as { kind?: string; metadata?: { name?: string; namespace?: string } };
    if (!m.metadata?.name) {
      throw new ApiError('ClusterVirtualImage is invalid: 2 problems:\n  - metadata.name: is required\n  - spec: is required', 422, 'Invalid', [
        { path: 'metadata.name', message: 'metadata.name: is required' },
        { path: 'spec', message: 'spec: is required' },
      ]);
    }
    const kind = m.kind as ImageKind;
    const ns = kind === 'VirtualImage' ? (m.metadata.namespace ?? opts.namespace) : undefined;
    const existing = await this.get(kind, m.metadata.name, ns);
    const object = existing ?? image(m.metadata.name, {}, kind, ns);
    this.put(object);
    return { object, created: !existing, specChanged: false, result: existing ? 'unchanged' : 'created' };
  }

  async get(kind: ImageKind, name: string, namespace?: string): Promise<Image | null> {
    return this.images.get(this.key(kind, name, namespace)) ?? null;
  }

  async list(kind: ImageKind, namespace?: string): Promise<Image[]> {
    return [...this.images.values()].filter((i) => i.kind === kind && (namespace === undefined || i.metadata.namespace === namespace));
  }

  async delete(kind: ImageKind, name: string, namespace?: string): Promise<Image | null> {
    const img = await this.get(kind, name, namespace);
    if (img) this.images.delete(this.key(kind, name, namespace));
    return img;
  }

  async *watch(kind: ImageKind, opts: { name?: string; namespace?: string; signal?: AbortSignal } = {}): AsyncIterable<WatchEvent> {
    const w: { kind: ImageKind; name?: string; namespace?: string } = { kind };
    if (opts.name) w.name = opts.name;
    if (opts.namespace) w.namespace = opts.namespace;
    this.watches.push(w);
    const queue: WatchEvent[] = [];
    let wake: (() => void) | undefined;
    const listener = (ev: WatchEvent) => {
      queue.push(ev);
      wake?.();
    };
    this.listeners.add(listener);
    const onAbort = () => wake?.();
    opts.signal?.addEventListener('abort', onAbort);
    // Like the store: current objects first, then a bookmark.
    for (const img of await this.list(kind, opts.namespace)) {
      if (!opts.name || img.metadata.name === opts.name) queue.push({ type: 'ADDED', object: img });
    }
    queue.push({ type: 'BOOKMARK', id: '0-1' });
    for (const f of this.watchStarted.splice(0)) f();
    try {
      for (;;) {
        if (opts.signal?.aborted) return;
        const ev = queue.shift();
        if (ev) {
          yield ev;
          continue;
        }
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      this.listeners.delete(listener);
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Resolves once a watch has started. */
  watching(): Promise<void> {
    return new Promise((r) => this.watchStarted.push(r));
  }

  /** Changes an image and tells the watchers. */
  update(img: Image, type: 'MODIFIED' | 'DELETED' = 'MODIFIED'): void {
    if (type === 'DELETED') this.images.delete(this.key(img.kind, img.metadata.name, img.metadata.namespace));
    else this.put(img);
    for (const l of this.listeners) l({ type, object: img, id: '0-2' });
  }
}

interface Harness {
  client: FakeClient;
  run(...argv: string[]): Promise<number>;
  out(): string;
  err(): string;
  interrupt(): void;
  clientOptions: ClientOptions[];
  daemonCalls: string[];
  setNow(d: Date): void;
}

function harness(opts: { stdin?: string; files?: Record<string, string>; env?: Record<string, string> } = {}): Harness {
  const client = new FakeClient();
  let out = '';
  let err = '';
  let now = NOW;
  const interrupts = new Set<() => void>();
  const clientOptions: ClientOptions[] = [];
  const daemonCalls: string[] = [];
  const daemons: Daemons = {
    runUp: async (o) => void daemonCalls.push(`up ${JSON.stringify(o)}`),
    runWorker: async () => void daemonCalls.push('worker'),
    runServe: async (o) => void daemonCalls.push(`serve ${JSON.stringify(o)}`),
  };
  const io: CliIO = {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    stdin: Readable.from([Buffer.from(opts.stdin ?? '')]),
    env: opts.env ?? {},
    now: () => now,
    createClient: (o) => {
      clientOptions.push(o);
      return client;
    },
    onInterrupt: (h) => {
      interrupts.add(h);
      return () => interrupts.delete(h);
    },
    readFile: async (path) => {
      const text = opts.files?.[path];
      if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      return text;
    },
    loadDaemons: async () => daemons,
  };
  return {
    client,
    run: (...argv) => runCli(argv, io),
    out: () => out,
    err: () => err,
    interrupt: () => [...interrupts].forEach((h) => h()),
    clientOptions,
    daemonCalls,
    setNow: (d) => (now = d),
  };
}

const TWO_DOCS = `apiVersion: virtualization.deckhouse.io/v1alpha2
kind: ClusterVirtualImage
metadata:
  name: ubuntu-22.04
spec:
  dataSource:
    type: HTTP
    http:
      url: https://example.com/ubuntu.img
---
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualImage
metadata:
  name: cirros
spec:
  dataSource:
    type: Upload
`;

describe('apply', () => {
  it('applies every document from stdin in order, skipping empty ones, kubectl-style lines', async () => {
    const h = harness({ stdin: TWO_DOCS });
    expect(await h.run('apply', '-f', '-', '-n', 'team-a')).toBe(0);
    expect(h.out()).toBe(
      'clustervirtualimage.virtualization.deckhouse.io/ubuntu-22.04 created\nvirtualimage.virtualization.deckhouse.io/cirros created\n',
    );
    expect(h.client.applied.map((a) => a.namespace)).toEqual([undefined, 'team-a']);
    expect(h.err()).toBe('');
    // Again: unchanged; a VirtualImage without -n goes to "default".
    const h2 = harness({ files: { 'x.yaml': TWO_DOCS } });
    await h2.run('apply', '-f', 'x.yaml');
    expect(h2.client.applied.map((a) => a.namespace)).toEqual([undefined, 'default']);
  });

  it('reports an invalid document with all its issues, applies the others, and exits 1', async () => {
    const h = harness({ stdin: `kind: ClusterVirtualImage\nmetadata: {}\n---\n${TWO_DOCS}` });
    expect(await h.run('apply', '-f', '-')).toBe(1);
    expect(h.err()).toBe('error: ClusterVirtualImage is invalid: 2 problems:\n  - metadata.name: is required\n  - spec: is required\n');
    expect(h.out().split('\n').filter(Boolean)).toHaveLength(2);
  });

  it('applies the items of a kind: List (what get -o yaml prints)', async () => {
    const h = harness({ stdin: 'apiVersion: v1\nkind: List\nitems:\n- kind: ClusterVirtualImage\n  metadata: {name: a}\n- kind: ClusterVirtualImage\n  metadata: {name: b}\n' });
    expect(await h.run('apply', '-f', '-')).toBe(0);
    expect(h.out()).toBe('clustervirtualimage.virtualization.deckhouse.io/a created\nclustervirtualimage.virtualization.deckhouse.io/b created\n');
  });

  it('applies nothing from a file that is not YAML, and says which file', async () => {
    const h = harness({ files: { 'bad.yaml': 'kind: [unclosed\n---\nkind: ClusterVirtualImage\nmetadata: {name: a}\n' } });
    expect(await h.run('apply', '-f', 'bad.yaml')).toBe(1);
    expect(h.err()).toMatch(/^error: error parsing bad\.yaml \(document 1\): /);
    expect(h.client.applied).toHaveLength(0);
  });

  it('explains a missing file, an empty input and a namespace mismatch', async () => {
    const h = harness();
    expect(await h.run('apply', '-f', 'nope.yaml')).toBe(1);
    expect(h.err()).toBe('error: the path "nope.yaml" does not exist\n');
    const h2 = harness({ stdin: '---\n' });
    expect(await h2.run('apply', '-f', '-')).toBe(1);
    expect(h2.err()).toBe('error: no objects passed to apply\n');
    const h3 = harness({ stdin: 'kind: VirtualImage\nmetadata: {name: a, namespace: x}\n' });
    expect(await h3.run('apply', '-f', '-', '-n', 'y')).toBe(1);
    expect(h3.err()).toContain('the namespace from the provided object "x" does not match the namespace "y"');
  });

  it('requires -f', async () => {
    const h = harness();
    expect(await h.run('apply')).toBe(1);
    expect(h.err()).toContain("required option '-f, --filename <file>' not specified");
  });
});

describe('get', () => {
  const provisioning = image('ubuntu-22.04', { phase: 'Provisioning', progress: '28.2%' });

  it('prints the table (name, phase, cdrom, progress, age)', async () => {
    const h = harness();
    h.client.put(provisioning);
    h.client.put(image('alpine', { phase: 'Ready', progress: '100%' }));
    for (const word of ['cvi', 'clustervirtualimage', 'clustervirtualimages']) {
      const h2 = harness();
      h2.client.put(provisioning);
      expect(await h2.run('get', word)).toBe(0);
      expect(h2.out()).toBe('NAME           PHASE          CDROM   PROGRESS   AGE\nubuntu-22.04   Provisioning   false   28.2%      6s\n');
    }
    expect(await h.run('get', 'cvi')).toBe(0);
    expect(h.out()).toBe(
      'NAME           PHASE          CDROM   PROGRESS   AGE\n' +
        'alpine         Ready          false   100%       6s\n' +
        'ubuntu-22.04   Provisioning   false   28.2%      6s\n',
    );
  });

  it('prints one object by name, and TYPE/NAME works too', async () => {
    const h = harness();
    h.client.put(provisioning);
    expect(await h.run('get', 'cvi/ubuntu-22.04', '--no-headers')).toBe(0);
    expect(h.out()).toBe('ubuntu-22.04   Provisioning   false   28.2%   6s\n');
  });

  it('says NotFound like kubectl and exits 1', async () => {
    const h = harness();
    expect(await h.run('get', 'cvi', 'ghost')).toBe(1);
    expect(h.err()).toBe('Error from server (NotFound): clustervirtualimages "ghost" not found\n');
    expect(h.out()).toBe('');
  });

  it('says "No resources found" on stderr for an empty list', async () => {
    const h = harness();
    expect(await h.run('get', 'vi')).toBe(0);
    expect(h.err()).toBe('No resources found in default namespace.\n');
  });

  it('-o json prints the whole object, a list as kind List', async () => {
    const h = harness();
    h.client.put(provisioning);
    await h.run('get', 'cvi', 'ubuntu-22.04', '-o', 'json');
    expect(JSON.parse(h.out())).toEqual(provisioning);
    expect(h.out()).toMatch(/^\{\n {4}"apiVersion"/);
    const h2 = harness();
    h2.client.put(provisioning);
    await h2.run('get', 'cvi', '-o', 'json');
    expect(JSON.parse(h2.out())).toEqual({ apiVersion: 'v1', kind: 'List', items: [provisioning] });
  });

  it('-o yaml, -o name, -o wide', async () => {
    const h = harness();
    h.client.put(provisioning);
    await h.run('get', 'cvi', 'ubuntu-22.04', '-o', 'yaml');
    expect(h.out()).toMatch(/^apiVersion: virtualization\.deckhouse\.io\/v1alpha2\nkind: ClusterVirtualImage\nmetadata:\n {2}name: ubuntu-22\.04\n/);
    const h2 = harness();
    h2.client.put(provisioning);
    await h2.run('get', 'cvi', '-o', 'name');
    expect(h2.out()).toBe('clustervirtualimage.virtualization.deckhouse.io/ubuntu-22.04\n');
    const h3 = harness();
    h3.client.put(provisioning);
    await h3.run('get', 'cvi', '-o', 'wide');
    expect(h3.out().split('\n')[0]).toBe('NAME           PHASE          CDROM   PROGRESS   STOREDSIZE   UNPACKEDSIZE   REGISTRY URL   AGE');
  });

  it('-o jsonpath prints one field (upload URLs), nothing for a missing one', async () => {
    const h = harness();
    h.client.put(image('some-image', { phase: 'WaitForUserUpload', imageUploadURLs: { external: 'https://v.example.com/upload/g2Ou', inCluster: 'http://10.222.165.239/upload' } }));
    expect(await h.run('get', 'cvi', 'some-image', '-o', 'jsonpath={.status.imageUploadURLs}')).toBe(0);
    expect(h.out()).toBe('{"external":"https://v.example.com/upload/g2Ou","inCluster":"http://10.222.165.239/upload"}');
    const h2 = harness();
    h2.client.put(provisioning);
    await h2.run('get', 'cvi', "-o=jsonpath='{.status.nope}'");
    expect(h2.out()).toBe('');
    const h3 = harness();
    h3.client.put(provisioning);
    await h3.run('get', 'cvi', '-o', 'jsonpath={.items[*].metadata.name}');
    expect(h3.out()).toBe('ubuntu-22.04');
  });

  it('VirtualImages: -n picks the namespace, -A adds a NAMESPACE column', async () => {
    const h = harness();
    h.client.put(image('cirros', { phase: 'Ready', progress: '100%' }, 'VirtualImage', 'team-a'));
    h.client.put(image('alpine', {}, 'VirtualImage', 'team-b'));
    await h.run('get', 'vi', '-n', 'team-a');
    expect(h.out()).toBe('NAME     PHASE   CDROM   PROGRESS   AGE\ncirros   Ready   false   100%       6s\n');
    const h2 = harness();
    for (const i of h.client.images.values()) h2.client.put(i);
    await h2.run('get', 'virtualimages', '-A');
    expect(h2.out()).toBe(
      'NAMESPACE   NAME     PHASE     CDROM   PROGRESS   AGE\n' +
        'team-a      cirros   Ready     false   100%       6s\n' +
        'team-b      alpine   Pending   false              6s\n',
    );
  });

  it('rejects an unknown resource or output format', async () => {
    const h = harness();
    expect(await h.run('get', 'pods')).toBe(1);
    expect(h.err()).toBe('error: the server doesn\'t have a resource type "pods"; use cvi (clustervirtualimage) or vi (virtualimage)\n');
    const h2 = harness();
    expect(await h2.run('get', 'cvi', '-o', 'xml')).toBe(1);
    expect(h2.err()).toMatch(/^error: unable to match a printer suitable for the output format "xml"/);
  });

  it('-w prints the current row, then a row per phase/progress change, until Ctrl-C', async () => {
    const h = harness();
    const start = image('ubuntu-22.04', { phase: 'Provisioning' });
    h.client.put(start);
    h.setNow(new Date('2024-05-01T10:00:04Z'));
    const watching = h.client.watching();
    const done = h.run('get', 'cvi', 'ubuntu-22.04', '-w');
    await watching;
    const step = async (status: Partial<ImageStatus>, at: string) => {
      h.setNow(new Date(at));
      h.client.update({ ...start, status: { ...start.status, ...status } });
      await new Promise((r) => setTimeout(r, 5));
    };
    await step({ progress: '0.0%' }, '2024-05-01T10:00:04Z');
    await step({ progress: '28.2%' }, '2024-05-01T10:00:06Z');
    await step({ progress: '28.2%', attempts: 2 }, '2024-05-01T10:00:07Z'); // no visible change: no row
    await step({ progress: '66.5%' }, '2024-05-01T10:00:08Z');
    await step({ progress: '100.0%' }, '2024-05-01T10:00:10Z');
    await step({ phase: 'Ready', progress: '100%' }, '2024-05-01T10:00:18Z');
    h.client.update(image('other', { phase: 'Ready' })); // another image: not shown
    h.interrupt();
    expect(await done).toBe(0);
    expect(h.out()).toBe(
      [
        'NAME           PHASE          CDROM   PROGRESS   AGE',
        'ubuntu-22.04   Provisioning   false              4s',
        'ubuntu-22.04   Provisioning   false   0.0%       4s',
        'ubuntu-22.04   Provisioning   false   28.2%      6s',
        'ubuntu-22.04   Provisioning   false   66.5%      8s',
        'ubuntu-22.04   Provisioning   false   100.0%     10s',
        'ubuntu-22.04   Ready          false   100%       18s',
        '',
      ].join('\n'),
    );
    expect(h.client.watches).toEqual([{ kind: 'ClusterVirtualImage', name: 'ubuntu-22.04' }]);
  });

  it('-w on the whole list prints new images as they come', async () => {
    const h = harness();
    const watching = h.client.watching();
    const done = h.run('get', 'cvi', '-w');
    await watching;
    h.client.update(image('a'));
    await new Promise((r) => setTimeout(r, 5));
    h.client.update(image('a', { phase: 'Provisioning', progress: '0%' }));
    await new Promise((r) => setTimeout(r, 5));
    h.interrupt();
    expect(await done).toBe(0);
    // Like kubectl, columns only grow: rows printed earlier keep their widths.
    expect(h.out()).toBe('NAME   PHASE     CDROM   PROGRESS   AGE\na      Pending   false              6s\na      Provisioning   false   0%         6s\n');
  });

  it('-w on a missing image is NotFound', async () => {
    const h = harness();
    expect(await h.run('get', 'cvi', 'ghost', '-w')).toBe(1);
    expect(h.err()).toBe('Error from server (NotFound): clustervirtualimages "ghost" not found\n');
  });
});

describe('describe and delete', () => {
  it('describes an image', async () => {
    const h = harness();
    h.client.put(image('ubuntu', { phase: 'Provisioning', progress: '42.1%', conditions: [readyCondition('Provisioning')] }));
    expect(await h.run('describe', 'cvi', 'ubuntu')).toBe(0);
    expect(h.out()).toMatch(/^Name: {9}ubuntu\nLabels: {7}<none>\n/);
    expect(h.out()).toContain('  Phase:     Provisioning\n  Progress:  42.1%\n');
    expect(h.out()).toContain(`  Ready  False   Provisioning${' '.repeat(11)}2024-05-01T10:00:00Z\n`);
    const h2 = harness();
    expect(await h2.run('describe', 'cvi', 'ghost')).toBe(1);
    expect(h2.err()).toBe('Error from server (NotFound): clustervirtualimages "ghost" not found\n');
  });

  it('deletes, and says NotFound for a missing image', async () => {
    const h = harness();
    h.client.put(image('ubuntu'));
    expect(await h.run('delete', 'cvi', 'ubuntu')).toBe(0);
    expect(h.out()).toBe('clustervirtualimage.virtualization.deckhouse.io "ubuntu" deleted\n');
    expect(h.client.images.size).toBe(0);
    expect(await h.run('delete', 'cvi', 'ubuntu')).toBe(1);
    expect(h.err()).toBe('Error from server (NotFound): clustervirtualimages "ubuntu" not found\n');
    expect(await h.run('delete', 'cvi', 'ubuntu', '--ignore-not-found')).toBe(0);
  });
});

describe('wait', () => {
  it('exits 0 once the phase is reached, printing "condition met" and the final phase and reason', async () => {
    const h = harness();
    const img = image('ubuntu', { phase: 'Provisioning', progress: '10.0%' });
    h.client.put(img);
    const watching = h.client.watching();
    const done = h.run('wait', 'cvi', 'ubuntu', '--for=phase=Ready', '--timeout=300s');
    await watching;
    h.client.update({ ...img, status: { ...img.status, progress: '50.0%' } });
    h.client.update({ ...img, status: { ...img.status, phase: 'Ready', progress: '100%', conditions: [readyCondition('Ready', 'True')] } });
    expect(await done).toBe(0);
    expect(h.out()).toBe('clustervirtualimage.virtualization.deckhouse.io/ubuntu condition met\nphase Ready, reason Ready\n');
  });

  it('returns at once when the phase is already reached (no watch)', async () => {
    const h = harness();
    h.client.put(image('ubuntu', { phase: 'Ready', progress: '100%', conditions: [readyCondition('Ready', 'True')] }));
    expect(await h.run('wait', 'cvi/ubuntu', '--for=phase=ready')).toBe(0);
    expect(h.client.watches).toHaveLength(0);
  });

  it('times out with the last phase and progress', async () => {
    const h = harness();
    h.client.put(image('ubuntu', { phase: 'Provisioning', progress: '42.1%' }));
    const t0 = Date.now();
    expect(await h.run('wait', 'cvi', 'ubuntu', '--for=phase=Ready', '--timeout=200ms')).toBe(1);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(h.err()).toBe('error: timed out waiting for the condition on clustervirtualimages/ubuntu (phase Provisioning, progress 42.1%)\n');
  });

  it('fails when the image ends Failed, naming the reason and the failure message', async () => {
    const h = harness();
    const img = image('ubuntu', { phase: 'Provisioning', progress: '3.0%' });
    h.client.put(img);
    const watching = h.client.watching();
    const done = h.run('wait', 'cvi', 'ubuntu', '--for=phase=Ready');
    await watching;
    h.client.update({
      ...img,
      status: {
        ...img.status,
        phase: 'Failed',
        failure: { reason: 'ChecksumMismatch', message: 'sha256 of the downloaded bytes is 1f2e..., want 9a8b...', retryable: false },
        conditions: [readyCondition('ProvisioningFailedTerminally')],
      },
    });
    expect(await done).toBe(1);
    expect(h.err()).toBe(
      'error: clustervirtualimages/ubuntu failed while waiting for phase Ready (phase Failed, reason ProvisioningFailedTerminally): sha256 of the downloaded bytes is 1f2e..., want 9a8b...\n',
    );
  });

  it('waiting for Failed succeeds on Failed; --for=delete and condition= work', async () => {
    const h = harness();
    h.client.put(image('ubuntu', { phase: 'Failed', conditions: [readyCondition('ProvisioningFailed')] }));
    expect(await h.run('wait', 'cvi', 'ubuntu', '--for=phase=Failed')).toBe(0);
    expect(h.out()).toBe('clustervirtualimage.virtualization.deckhouse.io/ubuntu condition met\nphase Failed, reason ProvisioningFailed\n');

    const h2 = harness();
    const img = image('ubuntu');
    h2.client.put(img);
    const watching = h2.client.watching();
    const done = h2.run('wait', 'cvi', 'ubuntu', '--for=delete');
    await watching;
    h2.client.update(img, 'DELETED');
    expect(await done).toBe(0);
    expect(h2.out()).toBe('clustervirtualimage.virtualization.deckhouse.io/ubuntu condition met\n');

    const h3 = harness();
    h3.client.put(image('ubuntu', { phase: 'Ready', conditions: [readyCondition('Ready', 'True')] }));
    expect(await h3.run('wait', 'cvi', 'ubuntu', '--for=condition=Ready')).toBe(0);
  });

  it('errors when the image is deleted while waiting, or does not exist', async () => {
    const h = harness();
    const img = image('ubuntu');
    h.client.put(img);
    const watching = h.client.watching();
    const done = h.run('wait', 'cvi', 'ubuntu', '--for=phase=Ready');
    await watching;
    h.client.update(img, 'DELETED');
    expect(await done).toBe(1);
    expect(h.err()).toBe('error: clustervirtualimages/ubuntu was deleted while waiting for phase Ready (last phase Pending)\n');
    const h2 = harness();
    expect(await h2.run('wait', 'cvi', 'ghost', '--for=phase=Ready')).toBe(1);
    expect(h2.err()).toBe('Error from server (NotFound): clustervirtualimages "ghost" not found\n');
  });

  it('rejects a bad --for or --timeout', async () => {
    const h = harness();
    h.client.put(image('ubuntu'));
    expect(await h.run('wait', 'cvi', 'ubuntu', '--for=phase=Done')).toBe(1);
    expect(h.err()).toBe('error: unknown phase "Done" in --for: use one of Pending, WaitForUserUpload, Provisioning, Ready, Failed, Terminating, ImageLost\n');
    const h2 = harness();
    expect(await h2.run('wait', 'cvi', 'ubuntu', '--for=phase=Ready', '--timeout=5')).toBe(1);
    expect(h2.err()).toBe('error: invalid duration "5": use a number with a unit, e.g. 30s, 5m, 1h\n');
  });

  it('parses --for, durations and readiness', () => {
    expect(parseWaitFor('phase=Ready')).toEqual({ type: 'phase', phase: 'Ready' });
    expect(parseWaitFor('condition=Ready=false')).toEqual({ type: 'condition', condition: 'Ready', status: 'False' });
    expect(parseWaitFor("jsonpath='{.status.format}'=qcow2")).toEqual({ type: 'jsonpath', expr: '{.status.format}', value: 'qcow2' });
    expect(parseWaitFor('jsonpath={.status.format}=qcow2')).toEqual({ type: 'jsonpath', expr: '{.status.format}', value: 'qcow2' });
    expect(parseWaitFor('jsonpath={.status.checksums}')).toEqual({ type: 'jsonpath', expr: '{.status.checksums}' });
    expect(waitState(image('x', { format: 'qcow2' }), parseWaitFor('jsonpath={.status.format}=qcow2'))).toBe('met');
    expect(waitState(image('x', { phase: 'Failed' }), parseWaitFor('phase=Ready'))).toBe('failed');
    expect(parseDuration('300s')).toBe(300_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('1.5m')).toBe(90_000);
    expect(() => parseDuration('10x')).toThrow(/invalid duration/);
  });
});

describe('program', () => {
  it('takes the server from --server, else DVCR_IMPORTER_SERVER, else 127.0.0.1:8080; the token from --token or API_TOKEN', async () => {
    expect(serverOf({}, {})).toBe('http://127.0.0.1:8080');
    expect(serverOf({}, { DVCR_IMPORTER_SERVER: 'api.example:9000' })).toBe('http://api.example:9000');
    expect(serverOf({ server: 'https://x/' }, { DVCR_IMPORTER_SERVER: 'y' })).toBe('https://x');
    const h = harness({ env: { API_TOKEN: 'from-env', DVCR_IMPORTER_SERVER: 'http://10.0.0.1:8080' } });
    await h.run('get', 'cvi');
    expect(h.clientOptions).toEqual([{ server: 'http://10.0.0.1:8080', token: 'from-env' }]);
    const h2 = harness({ env: { API_TOKEN: 'from-env' } });
    await h2.run('--server', 'http://a:1', 'get', 'cvi', '--token', 'flag');
    expect(h2.clientOptions).toEqual([{ server: 'http://a:1', token: 'flag' }]);
  });

  it('prints API errors as one error line', async () => {
    const h = harness();
    h.client.list = async () => {
      throw new ApiError('cannot reach the dvcr-importer API at http://127.0.0.1:8080 (connection refused): is "dvcr-importer up" or "serve" running? set --server or DVCR_IMPORTER_SERVER', 0, 'Unreachable');
    };
    expect(await h.run('get', 'cvi')).toBe(1);
    expect(h.err()).toBe('error: cannot reach the dvcr-importer API at http://127.0.0.1:8080 (connection refused): is "dvcr-importer up" or "serve" running? set --server or DVCR_IMPORTER_SERVER\n');
  });

  it('has --help everywhere, version, and errors for unknown commands', async () => {
    const h = harness();
    expect(await h.run('--help')).toBe(0);
    for (const c of ['up', 'worker', 'serve', 'apply', 'get', 'describe', 'delete', 'wait', 'version']) expect(h.out()).toContain(c);
    const h2 = harness();
    expect(await h2.run('get', '--help')).toBe(0);
    expect(h2.out()).toContain('-o, --output <format>');
    expect(h2.out()).toContain("dvcr-importer get cvi some-image -o jsonpath='{.status.imageUploadURLs}'");
    const h3 = harness();
    expect(await h3.run('version')).toBe(0);
    expect(h3.out()).toMatch(/^dvcr-importer version \d+\.\d+\.\d+/);
    const h4 = harness();
    expect(await h4.run('frobnicate')).toBe(1);
    expect(h4.err()).toContain("error: unknown command 'frobnicate'");
  });

  it('runs the daemons with their options', async () => {
    const h = harness();
    expect(await h.run('up', '--listen', '127.0.0.1:9999', '--data-dir', '/tmp/d')).toBe(0);
    expect(await h.run('worker')).toBe(0);
    expect(await h.run('serve', '--listen', '0.0.0.0:8080')).toBe(0);
    expect(h.daemonCalls).toEqual(['up {"listen":"127.0.0.1:9999","dataDir":"/tmp/d"}', 'worker', 'serve {"listen":"0.0.0.0:8080"}']);
  });

  it('parses -o values', () => {
    expect(parseOutputFormat(undefined)).toEqual({ type: 'table', wide: false });
    expect(parseOutputFormat("jsonpath='{.a}'")).toEqual({ type: 'jsonpath', template: '{.a}' });
    expect(() => parseOutputFormat('jsonpath=')).toThrow(/no template given/);
    expect(() => parseOutputFormat('jsonpath={.a')).toThrow(/error parsing jsonpath/);
  });
});
