/**
 * The consistency check (src/images/consistency.ts, `dvcr-importer check`) against a DVCR of this test's own:
 * it finds nothing in a consistent store, and finds each kind of disagreement made by hand (a tag without an
 * image, a Ready image whose tag was deleted, a digest other than the one committed, labels or a disk file
 * that disagree with the status, a tag of an image that is not Ready, a malformed image, a stuck image).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { startRegistry, type RegistryServer } from '../../src/stack/index.ts';
import { checkStore } from '../../src/cli/check.ts';
import { checkConsistency, type Inconsistency } from '../../src/images/consistency.ts';
import { buildManifest, commitImage, removeImage } from '../../src/dvcr/image.ts';
import { diskLayer, layerSize } from '../../src/dvcr/layer.ts';
import { dvcrImageReference, onFailed, onReady, refOf, type Image } from '../../src/images/index.ts';
import { digestOf, MediaType } from '../../src/oci/index.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';

const BIN = new URL('../../bin/dvcr-importer.js', import.meta.url).pathname;

describe('consistency check', () => {
  let dvcr: RegistryServer;
  let stack: ImportStack;
  let work: string;
  let host: string;

  const manifestOf = (name: string) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2' as const,
    kind: 'ClusterVirtualImage' as const,
    metadata: { name },
    spec: { dataSource: { type: 'HTTP' as const, http: { url: `http://127.0.0.1:9/${name}.img` } } },
  });

  /** Pushes a one-layer DVCR image of `disk` at `repository:tag`; returns the manifest digest. */
  async function pushImage(repository: string, tag: string, disk: Buffer): Promise<string> {
    const layer = await stack.dvcr.uploadBlob(host, repository, () => diskLayer('d.img', disk.length, Readable.from([disk])), {
      size: layerSize('d.img', disk.length),
    });
    return commitImage(stack.dvcr, { registry: host, repository, tag }, layer, { storedBytes: disk.length, virtualSize: disk.length, format: 'raw' });
  }

  /** An image in the store, Ready, with its image in DVCR, made by hand as an import would. */
  async function readyImage(name: string): Promise<{ image: Image; digest: string }> {
    const { object } = await stack.store.apply(manifestOf(name));
    const disk = randomBytes(64 * 1024);
    const digest = await pushImage(`cvi/${name}`, object.metadata.uid, disk);
    const image = await stack.store.updateStatus(refOf(object), object.metadata.uid, 1, (s) =>
      onReady(s, {
        registryURL: dvcrImageReference(host, refOf(object), object.metadata.uid),
        format: 'raw',
        storedBytes: disk.length,
        unpackedBytes: disk.length,
        sha256: createHash('sha256').update(disk).digest('hex'),
      }),
    );
    return { image, digest };
  }

  function runCheckCli(args: string[] = []): Promise<{ code: number | null; out: string }> {
    const child = spawn(process.execPath, [BIN, 'check', ...args], { env: stack.workerEnv({ LOG_LEVEL: 'warn' }), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    return new Promise((r) => child.once('exit', (code) => r({ code, out })));
  }

  const summary = (found: Inconsistency[]) => found.map((i) => `${i.kind} ${i.image ?? `${i.repository}:${i.tag}`}`).sort();

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'consistency-'));
    dvcr = await startRegistry({ dataDir: join(work, 'dvcr') });
    stack = await startImportStack({ dvcrUrl: dvcr.url });
    host = stack.registryHostPort;
  });
  afterAll(async () => {
    await stack?.close();
    await dvcr?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('a consistent store and DVCR: nothing found, and `check` exits 0', async () => {
    const a = await readyImage('ok-a');
    await readyImage('ok-b');
    const { object: failed } = await stack.store.apply(manifestOf('ok-failed'));
    await stack.store.updateStatus(refOf(failed), failed.metadata.uid, 1, (s) => onFailed(s, { reason: 'HTTPNotFound', message: 'gone', retryable: false }));
    // Another tag in an image repository that belongs to nobody would be found: none here; other repositories
    // (not cvi/ or vi/) are not DVCR images and are left alone.
    await pushImage('src/not-an-image-repo', 'v1', randomBytes(1024));
    const found = await checkStore({ store: stack.store, queue: stack.queue, dvcr: stack.dvcr, registry: host, verifyDisk: true });
    expect(found).toEqual([]);
    // The digest the import committed is compared when known.
    expect(await checkConsistency({ store: stack.store, dvcr: stack.dvcr, registry: host, committedDigest: async (i) => (i.metadata.name === 'ok-a' ? a.digest : undefined) })).toEqual([]);
    const cli = await runCheckCli(['--verify-disk']);
    expect(cli.out).toContain('consistent');
    expect(cli.code).toBe(0);
  }, 60_000);

  it('finds each kind of inconsistency made by hand, and `check` exits 1 listing them', async () => {
    // A tag that belongs to no image.
    const ghostUid = randomUUID();
    await pushImage('cvi/ghost', ghostUid, randomBytes(4096));
    // A Ready image whose tag was deleted.
    const lost = await readyImage('tag-deleted');
    expect(await removeImage(stack.dvcr, { registry: host, repository: 'cvi/tag-deleted', tag: lost.image.metadata.uid })).toBe(true);
    // A Ready image whose status disagrees with its config labels (size).
    const sized = await readyImage('wrong-size');
    await stack.store.updateStatus(refOf(sized.image), sized.image.metadata.uid, 1, (s) => ({ ...s, size: { ...s.size, storedBytes: '1' } }));
    // A Ready image whose status names another disk file (sha256).
    const other = await readyImage('wrong-disk');
    await stack.store.updateStatus(refOf(other.image), other.image.metadata.uid, 1, (s) => ({ ...s, checksums: { sha256: 'ab'.repeat(32) } }));
    // A Ready image whose tag holds something else than the commit (another manifest digest).
    await readyImage('swapped');
    // An image that failed, yet has a tag in DVCR.
    const { object: failed } = await stack.store.apply(manifestOf('failed-with-tag'));
    await stack.store.updateStatus(refOf(failed), failed.metadata.uid, 1, (s) => onFailed(s, { reason: 'X', message: 'x', retryable: false }));
    await pushImage('cvi/failed-with-tag', failed.metadata.uid, randomBytes(4096));
    // A Ready image whose tag is not the contract's image (two layers).
    const twoLayers = await readyImage('two-layers');
    const layer = await stack.dvcr.uploadBlob(host, 'cvi/two-layers', () => Readable.from([Buffer.from('x')]), { digest: digestOf(Buffer.from('x')), size: 1 });
    const cfgBytes = Buffer.from('{}');
    const cfg = await stack.dvcr.uploadBlob(host, 'cvi/two-layers', () => Readable.from([cfgBytes]), { digest: digestOf(cfgBytes), size: cfgBytes.length });
    const two = JSON.parse(buildManifest({ digest: cfg.digest, size: cfg.size }, layer).toString()) as { layers: unknown[] };
    two.layers.push(two.layers[0]);
    await stack.dvcr.putManifest(host, 'cvi/two-layers', twoLayers.image.metadata.uid, Buffer.from(JSON.stringify(two)), MediaType.DockerManifest);
    // An image left Pending with no import job (the queue never got it, or lost it).
    await stack.store.apply(manifestOf('no-job'));

    const expected = [
      `OrphanTag cvi/ghost:${ghostUid}`,
      'MissingManifest ClusterVirtualImage/tag-deleted',
      'StatusMismatch ClusterVirtualImage/wrong-size',
      'DiskMismatch ClusterVirtualImage/wrong-disk',
      'DigestMismatch ClusterVirtualImage/swapped',
      'TagWithoutReadyImage ClusterVirtualImage/failed-with-tag',
      'MalformedImage ClusterVirtualImage/two-layers',
      'Stuck ClusterVirtualImage/no-job',
    ].sort();
    const found = await checkConsistency({
      store: stack.store,
      dvcr: stack.dvcr,
      registry: host,
      verifyDisk: true,
      jobState: (i) => stack.queue.state(`${i.metadata.uid}-g${i.metadata.generation}`),
      committedDigest: async (i) => (i.metadata.name === 'swapped' ? `sha256:${'0'.repeat(64)}` : i.metadata.name === 'wrong-disk' ? other.digest : undefined),
    });
    expect(summary(found)).toEqual(expected);
    expect(found.find((i) => i.kind === 'StatusMismatch')?.message).toContain('source-image-size');
    expect(found.find((i) => i.kind === 'MissingManifest')).toMatchObject({ repository: 'cvi/tag-deleted', tag: lost.image.metadata.uid });

    // Through the queue (checkStore) and the command: the same, except the digest (no job committed one here).
    const viaQueue = await checkStore({ store: stack.store, queue: stack.queue, dvcr: stack.dvcr, registry: host, verifyDisk: true });
    expect(summary(viaQueue)).toEqual(expected.filter((e) => !e.startsWith('DigestMismatch')));
    const cli = await runCheckCli(['--verify-disk']);
    expect(cli.code).toBe(1);
    expect(cli.out).toContain(`OrphanTag\tcvi/ghost:${ghostUid}`);
    expect(cli.out).toContain('MissingManifest\tClusterVirtualImage/tag-deleted');
    expect(cli.out).toContain('7 inconsistencies');
  }, 60_000);
});
