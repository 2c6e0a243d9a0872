import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHttpServer, type TestHttpServer } from '../helpers/http-server.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';

const hash = (alg: string, b: Buffer) => createHash(alg).update(b).digest('hex');

describe('import over HTTP, end to end', () => {
  let stack: ImportStack;
  let srv: TestHttpServer;
  let work: string;
  let qcow2: Buffer;

  const cvi = (name: string, url: string, checksum?: Record<string, string>) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource: { type: 'HTTP', http: { url, ...(checksum ? { checksum } : {}) } } },
  });

  beforeAll(async () => {
    stack = await startImportStack();
    srv = await startHttpServer();
    work = mkdtempSync(join(tmpdir(), 'http-e2e-'));
    const raw = Buffer.alloc(8 * 1024 * 1024);
    for (let off = 0; off < raw.length; off += 128 * 1024) randomBytes(32 * 1024).copy(raw, off);
    writeFileSync(join(work, 'd.raw'), raw);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(work, 'd.raw'), join(work, 'd.qcow2')]);
    qcow2 = readFileSync(join(work, 'd.qcow2'));
    execFileSync('xz', ['-k', '-0', '-T1', join(work, 'd.qcow2')]);
    stack.startWorker({ threads: 2 });
  });
  afterAll(async () => {
    await stack?.close();
    await srv?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('a qcow2 with every checksum, through a dropped connection: Ready, stored byte-exact', async () => {
    srv.file('/cloud.qcow2', { body: qcow2, drop: { afterBytes: 1024 * 1024, times: 1 } });
    const checksum = { md5: hash('md5', qcow2), sha1: hash('sha1', qcow2), sha256: hash('sha256', qcow2), sha512: hash('sha512', qcow2) };
    await stack.service.apply(cvi('http-qcow2', `${srv.url}/cloud.qcow2`, checksum));
    const img = await stack.waitFor('ClusterVirtualImage', 'http-qcow2', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({
      phase: 'Ready',
      format: 'qcow2',
      progress: '100%',
      size: { storedBytes: String(qcow2.length), unpackedBytes: String(8 * 1024 * 1024) },
      checksums: { sha256: checksum.sha256 },
    });
    expect(srv.requests.filter((r) => r.path === '/cloud.qcow2' && r.range)).toHaveLength(1);
  });

  it('an xz-compressed qcow2 without Content-Length is unwrapped and stored', async () => {
    const xz = readFileSync(join(work, 'd.qcow2.xz'));
    srv.file('/cloud.qcow2.xz', { body: xz, contentLength: false });
    await stack.service.apply(cvi('http-xz', `${srv.url}/cloud.qcow2.xz`, { sha256: hash('sha256', xz) }));
    const img = await stack.waitFor('ClusterVirtualImage', 'http-xz', ['Ready', 'Failed']);
    expect(img.status).toMatchObject({ phase: 'Ready', format: 'qcow2', checksums: { sha256: hash('sha256', qcow2) } });
  });

  it('a checksum mismatch fails terminally and leaves no manifest in DVCR', async () => {
    srv.file('/bad.qcow2', { body: qcow2 });
    const { object } = await stack.service.apply(cvi('http-bad-sum', `${srv.url}/bad.qcow2`, { sha256: 'a'.repeat(64) }));
    const img = await stack.waitFor('ClusterVirtualImage', 'http-bad-sum', ['Ready', 'Failed']);
    expect(img.status.phase).toBe('Failed');
    expect(img.status.failure).toMatchObject({ reason: 'ChecksumMismatch', retryable: false });
    expect(img.status.conditions.find((c) => c.type === 'Ready')?.reason).toBe('ProvisioningFailedTerminally');
    expect(await stack.dvcr.listTags(stack.registryHostPort, 'cvi/http-bad-sum')).not.toContain(object.metadata.uid);
  });

  it('an HTML page answered with 200 and a 404 fail terminally with clear reasons', async () => {
    srv.file('/login', { body: Buffer.from('<!DOCTYPE html><html><body>Please log in</body></html>'), contentType: 'text/html' });
    srv.status('/missing.img', 404);
    await stack.service.apply(cvi('http-html', `${srv.url}/login`));
    await stack.service.apply(cvi('http-404', `${srv.url}/missing.img?token=secret123`));
    const html = await stack.waitFor('ClusterVirtualImage', 'http-html', ['Ready', 'Failed']);
    const missing = await stack.waitFor('ClusterVirtualImage', 'http-404', ['Ready', 'Failed']);
    expect(html.status.failure).toMatchObject({ reason: 'NotADiskImage', retryable: false });
    expect(missing.status.failure?.retryable).toBe(false);
    expect(missing.status.failure?.message).toMatch(/404/);
    expect(missing.status.failure?.message).not.toMatch(/secret123/);
    expect(missing.status.attempts).toBe(1);
  });
});
