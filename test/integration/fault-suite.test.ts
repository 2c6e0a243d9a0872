/**
 * The fault suite in one go, on a stack of its own (its own redis-server and DVCR registry, two
 * `dvcr-importer worker` processes): while a dozen imports run, DVCR restarts mid-push, the worker running an
 * import is killed with SIGKILL (a new one takes its place), source registries reset connections, answer 503 and
 * stall, hostile images arrive (corrupt gzip, two disk files, no disk file), an image is deleted mid-import and
 * another's spec changes mid-import. Every image ends where it must; the final test compares Redis and DVCR with
 * the consistency check (src/images/consistency.ts) and finds nothing.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startRedis, startRegistry, type RedisServer, type RegistryServer } from '../../src/stack/index.ts';
import { checkStore } from '../../src/cli/check.ts';
import type { ImageStatus } from '../../src/images/index.ts';
import { buildImageLayout, makeDataDisk, type LayerSpec } from '../helpers/fixtures.ts';
import { skopeoCopy } from '../helpers/skopeo.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { startHttpServer, type TestHttpServer } from '../helpers/http-server.ts';
import { startImportStack, uploadSessions, type ImportStack } from '../helpers/import-stack.ts';

const BIN = new URL('../../bin/dvcr-importer.js', import.meta.url).pathname;
const MiB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface WorkerProcess {
  child: ChildProcess;
  /** Job ids whose latest attempt this process started. */
  started: Set<string>;
}

describe('fault suite: one run of every fault, then Redis and DVCR agree', () => {
  let redis: RedisServer;
  let dvcr: RegistryServer;
  let stack: ImportStack;
  let proxy: FaultProxy;
  let srv: TestHttpServer;
  let work: string;
  const srcHost = inject('registryHostPort');
  const repoPrefix = `src/fs${randomBytes(3).toString('hex')}`;
  const workers: WorkerProcess[] = [];
  /** Every status each image went through, from a watch started before the first apply. */
  const history = new Map<string, ImageStatus[]>();
  const watching = new AbortController();
  let watched: Promise<void> = Promise.resolve();
  /** Expected outcome per image name (checked by the second test). */
  const uids = new Map<string, string>();
  let fastDisk: Buffer;

  function startWorkerProcess(): WorkerProcess {
    const child = spawn(process.execPath, [BIN, 'worker'], {
      env: stack.workerEnv(
        { JOB_LOCK_DURATION: '5s', WORKER_CONCURRENCY: '2', IDLE_TIMEOUT: '4s', LOG_LEVEL: 'info' },
        [proxy.hostPort, srcHost],
      ),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const w: WorkerProcess = { child, started: new Set() };
    let buf = '';
    child.stderr!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as { msg?: string; job?: string };
          if (rec.msg === 'import started' && rec.job) {
            for (const other of workers) other.started.delete(rec.job);
            w.started.add(rec.job);
          }
        } catch {
          /* not a log line */
        }
      }
    });
    workers.push(w);
    return w;
  }

  /** Pushes a container image with `layers` to the source registry; returns its repository and first layer digest. */
  async function pushSource(name: string, layers: LayerSpec[]): Promise<{ repo: string; layerDigest: string }> {
    const layout = await buildImageLayout(join(work, `layout-${name}`), { layers });
    const repo = `${repoPrefix}/${name}`;
    await skopeoCopy(layout.ref, `docker://${srcHost}/${repo}:v1`);
    return { repo, layerDigest: layout.images[0]!.layers[0]!.digest };
  }

  const cvi = (name: string, dataSource: Record<string, unknown>) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource },
  });
  const container = (image: string) => ({ type: 'ContainerImage', containerImage: { image } });
  const http = (url: string) => ({ type: 'HTTP', http: { url } });

  async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(50);
    }
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'fault-suite-'));
    [redis, dvcr] = await Promise.all([startRedis({ dataDir: join(work, 'redis') }), startRegistry({ dataDir: join(work, 'dvcr') })]);
    stack = await startImportStack({ redisUrl: redis.url, dvcrUrl: dvcr.url, insecureRegistries: `${dvcr.hostPort},${srcHost}` });
    proxy = await startFaultProxy(`http://${srcHost}`);
    srv = await startHttpServer();
    watched = (async () => {
      for await (const ev of stack.store.watch('ClusterVirtualImage', { signal: watching.signal, blockMs: 200 })) {
        if (ev.type === 'BOOKMARK') continue;
        const list = history.get(ev.object.metadata.name) ?? [];
        list.push(ev.object.status);
        history.set(ev.object.metadata.name, list);
      }
    })().catch(() => undefined);
  }, 60_000);
  afterAll(async () => {
    watching.abort();
    await watched;
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await stack?.close();
    await proxy?.stop();
    await srv?.close();
    await Promise.all([dvcr?.stop(), redis?.stop()]);
    rmSync(work, { recursive: true, force: true });
  });

  it('every fault at once: each image ends in the right phase', async () => {
    // --- sources -------------------------------------------------------------------------------------------
    const raw = (name: string, mib: number) => readFileSync(makeDataDisk(work, name, mib, 'raw'));
    const slowDisk = raw('slow', 16);
    const killDisk = raw('kill', 16);
    fastDisk = raw('fast', 2);
    // HTTP, throttled to 2 MiB/s: each push is in flight for about 8 s.
    srv.file('/dvcr-restart.img', { body: slowDisk, bytesPerSecond: 2 * MiB });
    srv.file('/sigkill.img', { body: killDisk, bytesPerSecond: 2 * MiB });
    // gzip magic and header, then garbage.
    srv.file('/corrupt.img.gz', { body: Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3]), randomBytes(256 * 1024)]) });
    const diskFile = (name: string, content: Buffer) => ({ path: `disk/${name}`, content });
    const plain = await pushSource('plain', [{ files: [diskFile('d.img', raw('plain', 2))], compression: 'none' }]);
    const fast = await pushSource('fast', [{ files: [diskFile('d.img', fastDisk)], compression: 'gzip' }]);
    const reset = await pushSource('reset', [{ files: [diskFile('d.img', raw('reset', 3))], compression: 'none' }]);
    const unavailable = await pushSource('unavailable', [{ files: [diskFile('d.img', raw('unavailable', 2))], compression: 'none' }]);
    const stall = await pushSource('stall', [{ files: [diskFile('d.img', raw('stall', 3))], compression: 'none' }]);
    const deleted = await pushSource('deleted', [{ files: [diskFile('d.img', raw('deleted', 3))], compression: 'none' }]);
    const respec = await pushSource('respec', [{ files: [diskFile('d.img', raw('respec', 3))], compression: 'none' }]);
    const twoDisks = await pushSource('two-disks', [{ files: [diskFile('a.img', randomBytes(MiB)), diskFile('b.img', randomBytes(MiB))] }]);
    const noDisk = await pushSource('no-disk', [{ files: [{ path: 'etc/motd', content: 'no disk here' }] }]);

    // --- source faults, on the layer blobs through the proxy -------------------------------------------------
    const blob = (s: { repo: string; layerDigest: string }) => new RegExp(`/v2/${s.repo}/blobs/${s.layerDigest}`);
    proxy.addFault({ method: 'GET', path: blob(reset), resetAfterBytes: 512 * 1024, times: 2 });
    proxy.addFault({ method: 'GET', path: blob(unavailable), status: 503, times: 2 });
    proxy.addFault({ method: 'GET', path: blob(stall), stallMs: 30_000, afterBytes: 512 * 1024, times: 1 });
    proxy.addFault({ method: 'GET', path: blob(deleted), stallMs: 30_000, afterBytes: 512 * 1024, times: 1 });
    proxy.addFault({ method: 'GET', path: blob(respec), stallMs: 30_000, afterBytes: 512 * 1024, times: 1 });
    const viaProxy = (s: { repo: string }) => `${proxy.hostPort}/${s.repo}:v1`;

    // --- two workers, then every image at once ---------------------------------------------------------------
    startWorkerProcess();
    startWorkerProcess();
    const apply = async (name: string, ds: Record<string, unknown>) => {
      const { object } = await stack.service.apply(cvi(name, ds));
      uids.set(name, object.metadata.uid);
    };
    await apply('dvcr-restart', http(`${srv.url}/dvcr-restart.img`));
    await apply('sigkill', http(`${srv.url}/sigkill.img`));
    await apply('src-reset', container(viaProxy(reset)));
    await apply('src-503', container(viaProxy(unavailable)));
    await apply('src-stall', container(viaProxy(stall)));
    await apply('delete-mid', container(viaProxy(deleted)));
    await apply('respec', container(viaProxy(respec)));
    await apply('corrupt-gzip', http(`${srv.url}/corrupt.img.gz`));
    await apply('two-disks', container(`${srcHost}/${twoDisks.repo}:v1`));
    await apply('no-disk', container(`${srcHost}/${noDisk.repo}:v1`));
    await apply('plain', container(`${srcHost}/${plain.repo}:v1`));

    // --- the faults of the control plane, each when its moment comes ----------------------------------------
    let dvcrBack!: () => void;
    const dvcrRestarted = new Promise<void>((r) => (dvcrBack = r));
    // The restart and the delete (which removes a tag from DVCR) take turns: a delete while DVCR is down is
    // another case (it stays Terminating until the next housekeeping pass).
    let dvcrTurn: Promise<unknown> = Promise.resolve();
    const withDvcr = <T,>(fn: () => Promise<T>): Promise<T> => {
      const p = dvcrTurn.then(fn);
      dvcrTurn = p.catch(() => undefined);
      return p;
    };
    const restartDvcr = async () => {
      // Mid-push: the upload session exists and a quarter to three quarters of the disk went through.
      await until('the dvcr-restart push to be in flight', () => {
        const r = srv.requestsFor('/dvcr-restart.img').at(-1);
        return uploadSessions(dvcr, 'cvi/dvcr-restart').length > 0 && !!r && r.bytesSent > slowDisk.length / 4 && r.bytesSent < (slowDisk.length * 3) / 4;
      });
      await withDvcr(async () => {
        const { port, dataDir } = dvcr;
        await dvcr.stop();
        await sleep(1000);
        dvcr = await startRegistry({ dataDir, port });
      });
      dvcrBack();
    };
    let killedTransfer: { closedEarly: boolean; bytesSent: number } | undefined;
    const killWorker = async () => {
      await dvcrRestarted;
      const job = `${uids.get('sigkill')}-g1`;
      // Mid-transfer on whichever worker runs the job's latest attempt.
      await until('the sigkill import to be transferring', () => {
        const r = srv.requestsFor('/sigkill.img').at(-1);
        return !!r && !r.closedEarly && r.bytesSent > 2 * MiB && r.bytesSent < killDisk.length - 2 * MiB && workers.some((w) => w.started.has(job) && w.child.exitCode === null);
      });
      const owner = workers.find((w) => w.started.has(job))!;
      killedTransfer = srv.requestsFor('/sigkill.img').at(-1);
      owner.child.kill('SIGKILL');
      await new Promise((r) => owner.child.once('exit', r));
      startWorkerProcess();
    };
    const deleteMid = async () => {
      await until('delete-mid to stall mid-blob', () => proxy.requests.some((r) => r.fault === 'stall' && blob(deleted).test(r.path)));
      const marked = await withDvcr(() => stack.service.delete('ClusterVirtualImage', undefined, 'delete-mid'));
      expect(marked.status.phase).toBe('Terminating');
    };
    const changeSpec = async () => {
      await until('respec to stall mid-blob', () => proxy.requests.some((r) => r.fault === 'stall' && blob(respec).test(r.path)));
      const { specChanged, object } = await stack.service.apply(cvi('respec', container(`${srcHost}/${fast.repo}:v1`)));
      expect(specChanged).toBe(true);
      expect(object.metadata.generation).toBe(2);
    };
    await Promise.all([restartDvcr(), killWorker(), deleteMid(), changeSpec()]);

    // --- where each image must end -------------------------------------------------------------------------
    const settle = (name: string) => stack.waitFor('ClusterVirtualImage', name, ['Ready', 'Failed'], 90_000);
    const ready = ['dvcr-restart', 'sigkill', 'src-reset', 'src-503', 'src-stall', 'respec', 'plain'];
    const failed = { 'corrupt-gzip': /gzip/i, 'two-disks': /MultipleDiskFiles|disk\/a\.img/, 'no-disk': /NoDiskFile|no disk/i };
    const settled = await Promise.all([...ready, ...Object.keys(failed)].map(async (name) => [name, await settle(name)] as const));
    for (const [name, img] of settled) {
      if (ready.includes(name)) {
        expect(img.status.phase, `${name}: ${JSON.stringify(img.status.failure)}`).toBe('Ready');
        // A transient fault never showed as Failed on the way.
        expect(history.get(name)?.map((s) => s.phase), name).not.toContain('Failed');
      } else {
        expect(img.status.phase, name).toBe('Failed');
        expect(img.status.failure, name).toMatchObject({ retryable: false });
        const f = img.status.failure!;
        expect(`${f.reason} ${f.message}`, name).toMatch(failed[name as keyof typeof failed]);
      }
    }
    const status = (name: string) => settled.find(([n]) => n === name)![1].status;
    // The DVCR restart and the SIGKILL each cost an attempt; the DVCR restart was seen as a retryable failure.
    expect(history.get('dvcr-restart')?.some((s) => s.failure?.retryable === true)).toBe(true);
    expect(status('dvcr-restart').attempts).toBeGreaterThanOrEqual(2);
    expect(status('dvcr-restart').checksums?.sha256).toBe(sha256(slowDisk));
    expect(status('sigkill').checksums?.sha256).toBe(sha256(killDisk));
    // The transfer that the SIGKILL cut was not the one that finished: another worker read the disk again.
    expect(killedTransfer?.closedEarly).toBe(true);
    // (Whether the finishing read's connection counts as closed early races with the client closing it right
    // after the last byte; that every byte was sent, and the disk's sha256 above, are what matter.)
    const finishing = srv.requestsFor('/sigkill.img').at(-1);
    expect(finishing).not.toBe(killedTransfer);
    expect(finishing).toMatchObject({ bytesSent: killDisk.length });
    // The source faults were met (and survived within the attempt, or by another).
    for (const s of [reset, unavailable, stall]) expect(proxy.requests.some((r) => r.fault !== undefined && blob(s).test(r.path))).toBe(true);
    expect(status('respec')).toMatchObject({ observedGeneration: 2, checksums: { sha256: sha256(fastDisk) } });

    // The deleted image is gone, with nothing left in DVCR.
    await until('delete-mid to be removed', async () => (await stack.store.get('ClusterVirtualImage', undefined, 'delete-mid')) === null, 30_000);
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/delete-mid')).toEqual([]);
    // Deleted mid-import: it never was Ready.
    expect(history.get('delete-mid')?.map((s) => s.phase)).toContain('Provisioning');
    expect(history.get('delete-mid')?.map((s) => s.phase)).not.toContain('Ready');
    // The killed worker was replaced: two live workers.
    expect(workers.filter((w) => w.child.exitCode === null && w.child.signalCode === null)).toHaveLength(2);
  }, 150_000);

  it('afterwards Redis and DVCR agree: the queue is drained and the consistency check finds nothing', async () => {
    await until('the queue to drain', async () => {
      const c = await stack.queue.counts();
      return c.waiting + c.active + c.delayed + c.prioritized === 0;
    }, 30_000);
    const found = await checkStore({ store: stack.store, queue: stack.queue, dvcr: stack.dvcr, registry: stack.registryHostPort, verifyDisk: true, terminatingGraceMs: 0 });
    expect(found).toEqual([]);
    // The check saw what the suite made: a Ready image per repository with exactly its own tag.
    for (const name of ['dvcr-restart', 'sigkill', 'src-reset', 'src-503', 'src-stall', 'respec', 'plain']) {
      expect(await stack.dvcr.listTags(stack.registryHostPort, `cvi/${name}`), name).toEqual([uids.get(name)]);
    }
    const repos = await stack.dvcr.listRepositories(stack.registryHostPort);
    expect(repos.filter((r) => r.startsWith('cvi/')).sort()).toEqual(
      expect.arrayContaining(['cvi/dvcr-restart', 'cvi/plain', 'cvi/respec', 'cvi/sigkill', 'cvi/src-503', 'cvi/src-reset', 'cvi/src-stall']),
    );
  }, 60_000);
});
