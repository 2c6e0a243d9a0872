/**
 * The real CLI (`node bin/dvcr-importer.js`, a child process) against the API running in this process
 * (buildServer over a real ImageStore / ImportQueue, listening on 127.0.0.1:0). No worker runs: images stay
 * Pending unless the test writes their status through the store, as a worker would.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ImportQueue } from '../../queues/imports.ts';
import { buildServer } from '../../src/api/server.ts';
import { ImageService } from '../../src/api/service.ts';
import { ImageStore, onProgress, onProvisioningStarted, onReady, refOf, type Image } from '../../src/images/index.ts';
import { RegistryClient } from '../../src/oci/index.ts';

const BIN = fileURLToPath(new URL('../../bin/dvcr-importer.js', import.meta.url));
const tag = randomUUID().slice(0, 8);
const PREFIX = `{t-cli-${tag}}`;

let redis: Redis;
let store: ImageStore;
let queue: ImportQueue;
let app: FastifyInstance;
let server: string;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Child {
  /** Resolves when stdout contains `text`. */
  waitFor(text: string, ms?: number): Promise<void>;
  stdout(): string;
  kill(signal: NodeJS.Signals): void;
  done: Promise<Run>;
}

/** Starts the CLI; it talks to our server unless `env` says otherwise. */
function start(args: string[], opts: { stdin?: string; env?: Record<string, string> } = {}): Child {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, DVCR_IMPORTER_SERVER: server, API_TOKEN: '', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters: Array<{ text: string; resolve: () => void }> = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    for (const w of waiters.splice(0)) {
      if (stdout.includes(w.text)) w.resolve();
      else waiters.push(w);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.end(opts.stdin ?? '');
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return {
    waitFor: (text, ms = 20_000) =>
      new Promise<void>((resolve, reject) => {
        if (stdout.includes(text)) return resolve();
        const timer = setTimeout(() => reject(new Error(`no "${text}" in stdout after ${ms} ms: ${JSON.stringify(stdout)} / ${JSON.stringify(stderr)}`)), ms);
        waiters.push({ text, resolve: () => (clearTimeout(timer), resolve()) });
      }),
    stdout: () => stdout,
    kill: (signal) => child.kill(signal),
    done,
  };
}

function cli(args: string[], opts: { stdin?: string; env?: Record<string, string> } = {}): Promise<Run> {
  return start(args, opts).done;
}

async function image(name: string): Promise<Image> {
  const img = await store.get('ClusterVirtualImage', undefined, name);
  if (!img) throw new Error(`${name} not found`);
  return img;
}

/** Writes a status change the way a worker does. */
async function update(name: string, mutate: Parameters<ImageStore['updateStatus']>[3]): Promise<void> {
  const img = await image(name);
  await store.updateStatus(refOf(img), img.metadata.uid, img.metadata.generation, mutate);
}

const n = (s: string) => `${s}-${tag}`;

const MANIFESTS = `apiVersion: virtualization.deckhouse.io/v1alpha2
kind: ClusterVirtualImage
metadata:
  name: ${n('ubuntu')}
spec:
  dataSource:
    type: HTTP
    http:
      url: https://cloud-images.ubuntu.com/minimal/releases/jammy/release/ubuntu-22.04-minimal-cloudimg-amd64.img
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: ClusterVirtualImage
metadata:
  name: ${n('some-image')}
spec:
  dataSource:
    type: Upload
`;

beforeAll(async () => {
  redis = new Redis(inject('redisUrl'));
  store = new ImageStore({ redis, prefix: `${PREFIX}:images` });
  queue = new ImportQueue({ redisUrl: inject('redisUrl'), prefix: PREFIX });
  const dvcr = new RegistryClient({ insecureRegistries: [inject('registryHostPort')] });
  const service = new ImageService({ store, queue, dvcr, dvcrHost: inject('registryHostPort') });
  app = buildServer({
    service,
    queue,
    redis,
    config: { dvcrUrl: inject('registryUrl'), insecureRegistries: [inject('registryHostPort')] },
    heartbeatMs: 500,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  server = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await app?.close();
  await queue?.close();
  await redis?.quit();
});

describe('dvcr-importer CLI against the API', () => {
  it('applies two documents from stdin, then reports them unchanged', async () => {
    const first = await cli(['apply', '-f', '-'], { stdin: MANIFESTS });
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(
      `clustervirtualimage.virtualization.deckhouse.io/${n('ubuntu')} created\n` +
        `clustervirtualimage.virtualization.deckhouse.io/${n('some-image')} created\n`,
    );
    const again = await cli(['apply', '-f', '-'], { stdin: MANIFESTS });
    expect(again.stdout).toBe(
      `clustervirtualimage.virtualization.deckhouse.io/${n('ubuntu')} unchanged\n` +
        `clustervirtualimage.virtualization.deckhouse.io/${n('some-image')} unchanged\n`,
    );
  });

  it('prints every issue of an invalid document and still applies the valid one', async () => {
    const bad = `kind: ClusterVirtualImage\nmetadata:\n  name: ${n('bad')}\nspec:\n  dataSource:\n    type: HTTP\n---\n${MANIFESTS}`;
    const r = await cli(['apply', '-f', '-'], { stdin: bad });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: .*is invalid/);
    expect(r.stderr).toContain('apiVersion');
    expect(r.stderr).toContain('spec.dataSource.http');
    expect(r.stdout).toContain(`${n('ubuntu')} unchanged`);
  });

  it('gets the table, JSON, and one field with jsonpath', async () => {
    const table = await cli(['get', 'cvi', n('ubuntu')]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`NAME${' '.repeat(n('ubuntu').length - 1)}PHASE     CDROM   PROGRESS   AGE`);
    expect(lines[1]).toMatch(new RegExp(`^${n('ubuntu')} {3}Pending {3}false {14}\\d+s$`));

    const json = await cli(['get', 'clustervirtualimage', n('ubuntu'), '-o', 'json']);
    const obj = JSON.parse(json.stdout) as Image;
    expect(obj).toMatchObject({ kind: 'ClusterVirtualImage', metadata: { name: n('ubuntu') }, status: { phase: 'Pending' } });

    const list = await cli(['get', 'clustervirtualimages', '-o', 'json']);
    const parsed = JSON.parse(list.stdout) as { kind: string; items: Image[] };
    expect(parsed.kind).toBe('List');
    expect(parsed.items.map((i) => i.metadata.name)).toEqual(expect.arrayContaining([n('ubuntu'), n('some-image')]));

    const field = await cli(['get', 'cvi', n('ubuntu'), '-o', 'jsonpath={.spec.dataSource.http}']);
    expect(JSON.parse(field.stdout)).toEqual({
      url: 'https://cloud-images.ubuntu.com/minimal/releases/jammy/release/ubuntu-22.04-minimal-cloudimg-amd64.img',
    });
    const missing = await cli(['get', 'cvi', n('ubuntu'), '-o', 'jsonpath={.status.imageUploadURLs}']);
    expect(missing.code).toBe(0);
    expect(missing.stdout).toBe('');
  });

  it('says NotFound for a missing image', async () => {
    const r = await cli(['get', 'cvi', n('ghost')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`Error from server (NotFound): clustervirtualimages "${n('ghost')}" not found\n`);
  });

  it('wait times out on a Pending image (no worker) with its phase', async () => {
    const t0 = Date.now();
    const r = await cli(['wait', 'cvi', n('ubuntu'), '--for=phase=Ready', '--timeout=2s']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`error: timed out waiting for the condition on clustervirtualimages/${n('ubuntu')} (phase Pending)\n`);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
  });

  it('get -w prints a row per change and stops on Ctrl-C; wait returns once Ready', async () => {
    const name = n('ubuntu');
    const watch = start(['get', 'cvi', name, '-w']);
    await watch.waitFor(' Pending ');
    const wait = start(['wait', 'cvi', name, '--for=phase=Ready', '--timeout=60s']);
    // Let `wait` open its watch; the first row arrives through it either way (it re-reads the current state).
    await new Promise((r) => setTimeout(r, 1500));

    await update(name, (s) => onProvisioningStarted(s, { registryURL: `dvcr.example/cvi/${name}:x` }));
    await watch.waitFor(' 0% ');
    await update(name, (s) => onProgress(s, { bytesDone: 282, bytesTotal: 1000, avgBps: 1, currentBps: 1 }));
    await watch.waitFor(' 28.2% ');
    const img = await image(name);
    await update(name, (s) => onReady(s, { registryURL: `dvcr.example/cvi/${name}:${img.metadata.uid}`, format: 'qcow2', storedBytes: 10, unpackedBytes: 20 }));
    await watch.waitFor(' Ready ');

    const waited = await wait.done;
    expect(waited.stderr).toBe('');
    expect(waited.code).toBe(0);
    expect(waited.stdout).toBe(`clustervirtualimage.virtualization.deckhouse.io/${name} condition met\nphase Ready, reason Ready\n`);

    watch.kill('SIGINT');
    const watched = await watch.done;
    expect(watched.code).toBe(0);
    const rows = watched.stdout.trimEnd().split('\n');
    expect(rows[0]).toMatch(/^NAME +PHASE +CDROM +PROGRESS +AGE$/);
    expect(rows.slice(1).map((r) => r.split(/\s{3,}/).slice(1, -1).join('|'))).toEqual([
      'Pending|false',
      'Provisioning|false|0%',
      'Provisioning|false|28.2%',
      'Ready|false|100%',
    ]);
  });

  it('describes an image', async () => {
    const r = await cli(['describe', 'cvi', n('ubuntu')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Name:\\s+${n('ubuntu')}\\n`));
    expect(r.stdout).toContain('  Phase:     Ready\n');
    expect(r.stdout).toMatch(/\n {2}Ready +True +Ready +\d{4}-/);
  });

  it('deletes, then the image is gone', async () => {
    for (const name of [n('ubuntu'), n('some-image')]) {
      const r = await cli(['delete', 'cvi', name]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`clustervirtualimage.virtualization.deckhouse.io "${name}" deleted\n`);
    }
    const gone = await cli(['delete', 'cvi', n('ubuntu')]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toBe(`Error from server (NotFound): clustervirtualimages "${n('ubuntu')}" not found\n`);
  });

  it('explains an unreachable API in one line', async () => {
    const r = await cli(['get', 'cvi'], { env: { DVCR_IMPORTER_SERVER: 'http://127.0.0.1:9' } });
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^error: cannot reach the dvcr-importer API at http:\/\/127\.0\.0\.1:9/);
  });
});
