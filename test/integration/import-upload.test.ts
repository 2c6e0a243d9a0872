/**
 * The Upload data source end to end: the real API (`startApi`, in this process on 127.0.0.1:0, with its upload
 * thread pool), the shared Redis and registry (as DVCR), the real CLI for the README's steps, and the real `curl`
 * the way the README tells users to upload (`curl --fail -T disk.img <url>`).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApi, type RunningApi } from '../../src/cli/daemons.ts';
import { getCondition, type Image } from '../../src/images/index.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';

const BIN = fileURLToPath(new URL('../../bin/dvcr-importer.js', import.meta.url));
const hash = (alg: string, b: Buffer) => createHash(alg).update(b).digest('hex');

interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], opts: { stdin?: string; env?: Record<string, string> } = {}): { child: ChildProcess; done: Promise<Exit> } {
  const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin!.end(opts.stdin ?? '');
  const done = new Promise<Exit>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  return { child, done };
}

/** `curl` with the README's options plus `extra`; stdout is the answer body. */
function curl(args: string[]) {
  return run('curl', ['--silent', '--show-error', ...args]);
}

/** HTTP status of one curl upload (no --fail), and its body. */
async function curlStatus(file: string, url: string): Promise<{ status: number; body: string }> {
  const r = await curl(['-o', '-', '-w', '\n%{http_code}', '-T', file, url]).done;
  const lines = r.stdout.trimEnd().split('\n');
  return { status: Number(lines.pop()), body: lines.join('\n') };
}

function cvi(name: string, upload?: Record<string, unknown>) {
  return {
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource: { type: 'Upload', ...(upload ? { upload } : {}) } },
  };
}

/** Collects every log line the API writes. */
function memoryLogger(level: string) {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { logger: pino({ level }, sink), lines };
}

function readyReason(img: Image): string | undefined {
  return getCondition(img.status, 'Ready')?.reason;
}

/** Polls until `pred` holds for the image (watch-free, for conditions on progress). */
async function until(stack: ImportStack, name: string, pred: (i: Image) => boolean, ms = 30_000): Promise<Image> {
  const deadline = Date.now() + ms;
  let last: Image | null = null;
  while (Date.now() < deadline) {
    last = await stack.store.get('ClusterVirtualImage', undefined, name);
    if (last && pred(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name}: condition not met in ${ms} ms; last status ${JSON.stringify(last?.status)}`);
}

describe('Upload data source, end to end', () => {
  let stack: ImportStack;
  let api: RunningApi;
  let work: string;
  let qcow2: string;
  let slow: string;
  const logs = memoryLogger('debug');

  beforeAll(async () => {
    stack = await startImportStack();
    api = await startApi({ ...stack.config, listen: '127.0.0.1:0', logLevel: 'debug' }, logs.logger);
    work = mkdtempSync(join(tmpdir(), 'upload-e2e-'));
    const raw = Buffer.alloc(8 * 1024 * 1024);
    for (let off = 0; off < raw.length; off += 128 * 1024) randomBytes(32 * 1024).copy(raw, off);
    writeFileSync(join(work, 'd.raw'), raw);
    qcow2 = join(work, 'cirros.img');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(work, 'd.raw'), qcow2]);
    slow = join(work, 'slow.raw');
    writeFileSync(slow, randomBytes(6 * 1024 * 1024));
  });
  afterAll(async () => {
    await api?.close();
    await stack?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const get = (name: string) => stack.store.get('ClusterVirtualImage', undefined, name) as Promise<Image>;

  it("follows the README: apply, read the URLs with get -o jsonpath, curl --fail -T, Ready", async () => {
    const env = { DVCR_IMPORTER_SERVER: api.url, API_TOKEN: '' };
    const manifest = `apiVersion: virtualization.deckhouse.io/v1alpha2
kind: ClusterVirtualImage
metadata:
  name: some-image
spec:
  dataSource:
    type: Upload
`;
    const applied = await run(process.execPath, [BIN, 'apply', '-f', '-'], { stdin: manifest, env }).done;
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toContain('some-image created');

    const waiting = await get('some-image');
    expect(waiting.status.phase).toBe('WaitForUserUpload');
    expect(readyReason(waiting)).toBe('WaitForUserUpload');

    const got = await run(process.execPath, [BIN, 'get', 'cvi', 'some-image', '-o', 'jsonpath={.status.imageUploadURLs}'], { env }).done;
    expect(got.code).toBe(0);
    const urls = JSON.parse(got.stdout) as { external: string; inCluster: string };
    expect(urls.external).toMatch(new RegExp(`^${api.url}/upload/[A-Za-z0-9]{32}$`));
    expect(urls.inCluster).toBe(urls.external); // no PUBLIC_URL: both are the API's own URL
    const token = urls.external.split('/').pop()!;

    const check = await request(urls.external);
    expect(check.statusCode).toBe(200);
    expect(await check.body.json()).toMatchObject({ image: 'ClusterVirtualImage/some-image', phase: 'WaitForUserUpload' });

    const up = await curl(['--fail', '-T', qcow2, urls.external]).done;
    expect(up.stderr).toBe('');
    expect(up.code).toBe(0);
    const body = JSON.parse(up.stdout) as { phase: string; format: string };
    expect(body).toMatchObject({ phase: 'Ready', format: 'qcow2' });

    const img = await get('some-image');
    const file = readFileSync(qcow2);
    expect(img.status).toMatchObject({
      phase: 'Ready',
      progress: '100%',
      format: 'qcow2',
      cdrom: false,
      size: { storedBytes: String(file.length), unpackedBytes: String(8 * 1024 * 1024) },
      checksums: { sha256: hash('sha256', file) },
      target: { registryURL: `${stack.registryHostPort}/cvi/some-image:${img.metadata.uid}` },
    });
    expect(img.status.imageUploadURLs).toBeUndefined();
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/some-image')).toContain(img.metadata.uid);

    const table = await run(process.execPath, [BIN, 'get', 'cvi', 'some-image'], { env }).done;
    expect(table.stdout).toMatch(/some-image\s+Ready\s+false\s+100%/);

    // The token is over once Ready; it never appeared in a log line or a job.
    const after = await request(urls.external);
    expect(after.statusCode).toBe(404);
    await after.body.dump();
    expect(logs.lines.length).toBeGreaterThan(0);
    expect(logs.lines.join('')).toContain('/upload/<redacted>');
    expect(logs.lines.filter((l) => l.includes(token))).toEqual([]);
    const jobKeys = await stack.redis.keys(`${stack.config.redisPrefix}:upload-timeouts:*`);
    expect(jobKeys.length).toBeGreaterThan(0);
    for (const k of jobKeys) {
      const type = await stack.redis.type(k);
      if (type !== 'hash') continue;
      expect(JSON.stringify(await stack.redis.hgetall(k))).not.toContain(token);
    }
  });

  it('refuses unknown tokens with 404, also one differing in the last character', async () => {
    const { object } = await api.service.apply(cvi('wrong-token'));
    const img = await get(object.metadata.name);
    const url = img.status.imageUploadURLs!.external!;
    const last = url.at(-1)!;
    const near = url.slice(0, -1) + (last === 'a' ? 'b' : 'a');
    for (const u of [near, url.slice(0, -1), `${api.url}/upload/${'x'.repeat(32)}`, `${api.url}/upload/short`]) {
      const res = await request(u);
      expect(res.statusCode, u).toBe(404);
      expect(((await res.body.json()) as { error: { code: string } }).error.code).toBe('NotFound');
    }
    const put = await curlStatus(qcow2, near);
    expect(put.status).toBe(404);
    expect((await get('wrong-token')).status.phase).toBe('WaitForUserUpload');
  });

  it('checksums match: Ready; a mismatch fails terminally with nothing in DVCR', async () => {
    const file = readFileSync(qcow2);
    await api.service.apply(cvi('sum-ok', { checksum: { md5: hash('md5', file), sha256: hash('sha256', file) } }));
    const ok = await get('sum-ok');
    const res = await curl(['--fail', '-T', qcow2, ok.status.imageUploadURLs!.external!]).done;
    expect(res.code).toBe(0);
    expect((await get('sum-ok')).status.phase).toBe('Ready');

    const { object } = await api.service.apply(cvi('sum-bad', { checksum: { sha256: 'a'.repeat(64) } }));
    const bad = await get('sum-bad');
    const url = bad.status.imageUploadURLs!.external!;
    const up = await curlStatus(qcow2, url);
    expect(up.status).toBe(422);
    expect(JSON.parse(up.body)).toMatchObject({ error: { code: 'ChecksumMismatch' } });
    const failed = await get('sum-bad');
    expect(failed.status.phase).toBe('Failed');
    expect(readyReason(failed)).toBe('ProvisioningFailedTerminally');
    expect(failed.status.failure).toMatchObject({ reason: 'ChecksumMismatch', retryable: false });
    expect(failed.status.imageUploadURLs).toBeUndefined();
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/sum-bad').catch(() => [])).not.toContain(object.metadata.uid);
    const again = await request(url);
    expect(again.statusCode).toBe(404);
    await again.body.dump();
  });

  it('spec.conversion applies to uploads: a raw upload is stored as qcow2, the original format kept', async () => {
    const manifest = cvi('convert-up');
    (manifest.spec as Record<string, unknown>).conversion = { format: 'qcow2' };
    await api.service.apply(manifest);
    const url = (await get('convert-up')).status.imageUploadURLs!.external!;
    const up = await curl(['--fail', '-T', join(work, 'd.raw'), url]).done;
    expect(up.code).toBe(0);
    const img = await get('convert-up');
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'qcow2', originalFormat: 'raw' });
    expect(Number(img.status.size?.storedBytes)).toBeLessThan(8 * 1024 * 1024);
  });

  it('one upload at a time (503); an interrupted upload waits again; a fresh upload then succeeds', async () => {
    await api.service.apply(cvi('interrupted'));
    const url = (await get('interrupted')).status.imageUploadURLs!.external!;

    // A slow upload (512 KiB/s of a 6 MiB file): Provisioning with live progress against Content-Length.
    const first = curl(['--fail', '--limit-rate', '512k', '-T', slow, url]);
    const moving = await until(stack, 'interrupted', (i) => i.status.phase === 'Provisioning' && parseFloat(i.status.progress ?? '0') > 0);
    expect(moving.status.progress).toMatch(/^\d+\.\d%$/);
    expect(moving.status.downloadSpeed?.currentBytes).toBeDefined();

    const second = await curlStatus(qcow2, url);
    expect(second.status).toBe(503);
    expect(JSON.parse(second.body)).toMatchObject({ error: { code: 'UploadInProgress' } });
    const during = await request(url);
    expect(during.statusCode).toBe(409);
    await during.body.dump();

    first.child.kill('SIGKILL');
    await first.done;
    const waiting = await until(stack, 'interrupted', (i) => i.status.phase === 'WaitForUserUpload');
    expect(readyReason(waiting)).toBe('WaitForUserUpload');
    expect(waiting.status.failure).toMatchObject({ reason: 'UploadInterrupted', retryable: true });
    expect(waiting.status.imageUploadURLs?.external).toBe(url); // the same URL works again

    const check = await request(url);
    expect(check.statusCode).toBe(200);
    await check.body.dump();
    const fresh = await curl(['--fail', '-T', slow, url]).done;
    expect(fresh.stderr).toBe('');
    expect(fresh.code).toBe(0);
    const img = await get('interrupted');
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'raw', progress: '100%', size: { storedBytes: String(6 * 1024 * 1024) } });
    expect(img.status.failure).toBeUndefined();
  });

  it('POST works too, chunked without Content-Length (curl -T - from stdin), compressed files are unwrapped', async () => {
    const gz = join(work, 'cirros.img.gz');
    execFileSync('sh', ['-c', `gzip -c ${qcow2} > ${gz}`]);
    await api.service.apply(cvi('chunked', { checksum: { sha256: hash('sha256', readFileSync(gz)) } }));
    const url = (await get('chunked')).status.imageUploadURLs!.external!;
    const up = run('sh', ['-c', `curl --silent --show-error --fail -X POST -T - '${url}' < '${gz}'`]);
    const res = await up.done;
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const img = await get('chunked');
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'qcow2', checksums: { sha256: hash('sha256', readFileSync(qcow2)) } });
  });

  it('housekeeping: a Pending Upload image gets its URL, an upload left by a dead API process waits again', async () => {
    // Applied through a service without the upload side (another process, or a crash before the URL was issued).
    const { object } = await stack.service.apply(cvi('orphan'));
    expect((await get('orphan')).status.phase).toBe('Pending');
    await api.service.reconcile();
    const waiting = await get('orphan');
    expect(waiting.status.phase).toBe('WaitForUserUpload');
    const url = waiting.status.imageUploadURLs!.external!;
    const ok = await request(url);
    expect(ok.statusCode).toBe(200);
    await ok.body.dump();

    // Provisioning with nobody holding the upload lock: the process receiving it went away.
    await stack.store.updateStatus({ kind: 'ClusterVirtualImage', name: 'orphan' }, object.metadata.uid, 1, (s) => ({ ...s, phase: 'Provisioning' }));
    await api.service.reconcile();
    const again = await get('orphan');
    expect(again.status.phase).toBe('WaitForUserUpload');
    expect(again.status.failure).toMatchObject({ reason: 'UploadInterrupted' });
    expect(again.status.imageUploadURLs?.external).toBe(url);
    const up = await curl(['--fail', '-T', qcow2, url]).done;
    expect(up.code).toBe(0);
    expect((await get('orphan')).status.phase).toBe('Ready');
  });

  it('a job for an Upload image is no failure for the worker (the API serves it)', async () => {
    const { object } = await api.service.apply(cvi('queued'));
    const worker = stack.startWorker({ threads: 1 });
    try {
      await stack.queue.enqueue({ kind: 'ClusterVirtualImage', name: 'queued', uid: object.metadata.uid, generation: 1 });
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && (await stack.queue.state(`${object.metadata.uid}-g1`)) !== 'completed') {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await stack.queue.state(`${object.metadata.uid}-g1`)).toBe('completed');
      expect((await get('queued')).status.phase).toBe('WaitForUserUpload');
    } finally {
      await worker.close(5000);
    }
  });

  it('an upload does not grow the API process RSS with its size (nothing buffered): 64 and 256 MiB', async () => {
    // Warm up first (when run alone): the upload thread, its loaded modules and heaps are not what is measured.
    await api.service.apply(cvi('warm-up'));
    const warm = await curl(['--fail', '-T', qcow2, (await get('warm-up')).status.imageUploadURLs!.external!]).done;
    expect(warm.code).toBe(0);
    const growth: number[] = [];
    for (const mib of [64, 256]) {
      const big = join(work, `big-${mib}.raw`);
      // Written by another process: a buffer of our own would blur what is measured here.
      execFileSync('head', ['-c', String(mib * 1024 * 1024), '/dev/urandom'], { stdio: ['ignore', openSync(big, 'w'), 'inherit'] });
      await api.service.apply(cvi(`big-${mib}`));
      const url = (await get(`big-${mib}`)).status.imageUploadURLs!.external!;
      const base = process.memoryUsage().rss;
      let peak = base;
      const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
      const up = await curl(['--fail', '-T', big, url]).done;
      clearInterval(timer);
      rmSync(big);
      expect(up.stderr).toBe('');
      expect((await get(`big-${mib}`)).status).toMatchObject({ phase: 'Ready', format: 'raw', size: { storedBytes: String(mib * 1024 * 1024) } });
      growth.push((peak - base) / 1024 / 1024);
    }
    // What does grow is garbage: transferred chunks waiting for the storing thread's collector, which V8 lets
    // reach tens of MiB whatever the size. Buffering would grow with the upload: a quarter of 256 MiB, and more
    // than 24 MiB from 64 to 256 MiB.
    const [at64, at256] = growth as [number, number];
    expect(at256, `RSS grew ${at256.toFixed(1)} MiB for 256 MiB (${at64.toFixed(1)} for 64)`).toBeLessThan(64);
    expect(at256 - at64, `RSS grew ${at256.toFixed(1)} MiB for 256 MiB, ${at64.toFixed(1)} for 64`).toBeLessThan(24);
  });
});

describe('Upload timeout and PUBLIC_URL', () => {
  let stack: ImportStack;
  let api: RunningApi;

  beforeAll(async () => {
    stack = await startImportStack({ uploadTimeout: '2s', publicUrl: 'https://virtualization.example.com/' });
    api = await startApi({ ...stack.config, listen: '127.0.0.1:0' }, pino({ level: 'silent' }));
  });
  afterAll(async () => {
    await api?.close();
    await stack?.close();
  });

  it('shows the public and the in-cluster URL, and fails with WaitForUserUploadTimeout when no upload comes', async () => {
    await api.service.apply(cvi('late'));
    const waiting = (await stack.store.get('ClusterVirtualImage', undefined, 'late'))!;
    const urls = waiting.status.imageUploadURLs!;
    const token = urls.inCluster!.split('/').pop()!;
    expect(urls.external).toBe(`https://virtualization.example.com/upload/${token}`);
    expect(urls.inCluster).toBe(`${api.url}/upload/${token}`);

    const failed = await stack.waitFor('ClusterVirtualImage', 'late', ['Failed', 'Ready'], 15_000);
    expect(failed.status.phase).toBe('Failed');
    expect(readyReason(failed)).toBe('WaitForUserUploadTimeout');
    expect(failed.status.failure).toMatchObject({ reason: 'WaitForUserUploadTimeout', retryable: false });
    expect(failed.status.failure?.message).toContain('2s');
    expect(failed.status.imageUploadURLs).toBeUndefined();
    const res = await request(urls.inCluster!);
    expect(res.statusCode).toBe(404);
    await res.body.dump();
  });
});
