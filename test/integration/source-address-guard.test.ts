/**
 * The SSRF guard on the network: sources (HTTP downloads and source registries, with their token realms and
 * redirect targets) may not reach loopback, private, link-local or metadata addresses unless SOURCE_ALLOW_CIDRS
 * allows them; the address checked is the one resolved for the connection, every redirect is checked, and a
 * refused address is never connected to. DVCR is not subject to it.
 *
 * Only loopback servers are used. Non-loopback addresses (10.1.2.3, 169.254.169.254, ...) appear only as
 * targets that must be refused before any socket connects, which a spy on `net.Socket#connect` asserts.
 */
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AddressPolicy, OciError, RegistryClient, parseReference } from '../../src/oci/index.ts';
import { openHttpSource } from '../../src/sources/http.ts';
import { startRegistry, type RegistryServer } from '../../src/stack/index.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { buildImageLayout } from '../helpers/fixtures.ts';
import { startHttpServer, type TestHttpServer } from '../helpers/http-server.ts';
import { startImportStack, type ImportStack } from '../helpers/import-stack.ts';
import { skopeoCopy } from '../helpers/skopeo.ts';

const registryHostPort = inject('registryHostPort');

const LOOPBACK_HOST = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/**
 * Hosts that sockets of this process tried to connect to while `fn` ran. A connect to anything but loopback
 * is recorded and failed without touching the network, so a regression of the guard cannot reach out.
 */
async function connectsDuring<T>(fn: () => Promise<T>): Promise<{ result: T | undefined; error: unknown; hosts: string[] }> {
  const hosts: string[] = [];
  const original = net.Socket.prototype.connect;
  const spy = vi.spyOn(net.Socket.prototype, 'connect').mockImplementation(function (this: net.Socket, ...args: unknown[]) {
    const first = args[0];
    const opts = (Array.isArray(first) ? first[0] : first) as { host?: string; path?: string } | number | undefined;
    let host: string | undefined;
    if (typeof opts === 'object' && opts !== null && opts.path === undefined) host = opts.host ?? 'localhost';
    else if (typeof opts === 'number') host = typeof args[1] === 'string' ? args[1] : 'localhost';
    if (host !== undefined) {
      hosts.push(host);
      if (!LOOPBACK_HOST.test(host)) {
        process.nextTick(() => this.destroy(Object.assign(new Error(`test: blocked a connect to ${host}`), { code: 'ECONNREFUSED' })));
        return this;
      }
    }
    return (original as (...a: unknown[]) => net.Socket).apply(this, args);
  });
  try {
    const result = await fn();
    return { result, error: undefined, hosts };
  } catch (error) {
    return { result: undefined, error, hosts };
  } finally {
    spy.mockRestore();
  }
}

function refused(error: unknown, message: string | RegExp): void {
  expect(error).toBeInstanceOf(OciError);
  expect(error).toMatchObject({ errorClass: 'permanent', reason: 'SOURCE_ADDRESS_REFUSED' });
  if (typeof message === 'string') expect((error as Error).message).toBe(message);
  else expect((error as Error).message).toMatch(message);
}

const disk = randomBytes(64 * 1024);

describe('HTTP source', () => {
  let srv: TestHttpServer;
  let other: TestHttpServer;
  beforeAll(async () => {
    srv = await startHttpServer();
    other = await startHttpServer({ host: '127.0.0.2' });
    srv.file('/d.img', { body: disk });
    other.file('/d.img', { body: disk });
  });
  afterAll(async () => {
    await srv?.close();
    await other?.close();
  });

  const download = async (url: string, policy: AddressPolicy): Promise<Buffer> => {
    const d = await openHttpSource({ url, addressPolicy: policy });
    const chunks: Buffer[] = [];
    for await (const c of d.stream) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  };

  it('a loopback IP in the URL is refused before connecting', async () => {
    const before = srv.connectionsAccepted();
    const { error, hosts } = await connectsDuring(() => download(`${srv.url}/d.img`, new AddressPolicy()));
    refused(error, 'source address 127.0.0.1 is loopback; allow it with SOURCE_ALLOW_CIDRS');
    expect(hosts).toEqual([]);
    expect(srv.connectionsAccepted()).toBe(before);
  });

  it('a name is judged by the address it resolves to, in the connection itself', async () => {
    const before = srv.connectionsAccepted();
    const { error } = await connectsDuring(() => download(`http://localhost:${srv.port}/d.img`, new AddressPolicy()));
    refused(error, 'source address 127.0.0.1 (from host localhost) is loopback; allow it with SOURCE_ALLOW_CIDRS');
    expect(srv.connectionsAccepted()).toBe(before);
  });

  it('private, shared, link-local, metadata, unspecified and mapped addresses are refused with no connection attempted', async () => {
    const cases: Array<[string, RegExp]> = [
      ['http://10.1.2.3/d.img', /^source address 10\.1\.2\.3 is private;/],
      ['http://172.16.5.4:8080/d.img', /is private;/],
      ['http://192.168.1.1/d.img', /is private;/],
      ['http://100.64.0.1/d.img', /is shared \(CGNAT\);/],
      ['http://169.254.1.1/d.img', /is link-local;/],
      ['http://169.254.169.254/latest/meta-data/', /^source address 169\.254\.169\.254 is a cloud metadata endpoint;/],
      ['http://[fd00:ec2::254]/latest/meta-data/', /^source address fd00:ec2::254 is a cloud metadata endpoint;/],
      ['http://[fd12:3456::1]/d.img', /is private;/],
      ['http://[fe80::1]/d.img', /is link-local;/],
      ['http://[::ffff:10.0.0.1]/d.img', /is private;/],
      ['http://0.0.0.0/d.img', /is unspecified;/],
      ['http://224.0.0.1/d.img', /is multicast;/],
      ['http://[::1]/d.img', /is loopback;/],
    ];
    for (const [url, message] of cases) {
      // Even a broad allow-list does not expose a metadata endpoint; for the others the default refuses.
      const policy = /meta-data/.test(url) ? new AddressPolicy('0.0.0.0/0,::/0') : new AddressPolicy();
      const { error, hosts } = await connectsDuring(() => download(url, policy));
      refused(error, message);
      expect(hosts, url).toEqual([]);
    }
  });

  it('SOURCE_ALLOW_CIDRS lets listed ranges through', async () => {
    expect(await download(`${srv.url}/d.img`, new AddressPolicy('127.0.0.0/8,::1/128'))).toEqual(disk);
    expect(await download(`http://localhost:${srv.port}/d.img`, new AddressPolicy('127.0.0.1/32'))).toEqual(disk);
  });

  it('every redirect target is checked before it is connected to', async () => {
    srv.redirect('/to-other', `${other.url}/d.img`);
    srv.redirect('/to-metadata', 'http://169.254.169.254/latest/meta-data/iam/');
    srv.redirect('/to-private', 'http://10.1.2.3:8080/d.img');
    const policy = new AddressPolicy('127.0.0.1/32');
    const before = other.connectionsAccepted();
    const { error } = await connectsDuring(() => download(`${srv.url}/to-other`, policy));
    refused(error, 'source address 127.0.0.2 is loopback; allow it with SOURCE_ALLOW_CIDRS');
    expect(srv.requestsFor('/to-other')).toHaveLength(1);
    expect(other.connectionsAccepted()).toBe(before);

    for (const [path, ip, what] of [['/to-metadata', '169.254.169.254', 'a cloud metadata endpoint'], ['/to-private', '10.1.2.3', 'private']] as const) {
      const r = await connectsDuring(() => download(`${srv.url}${path}`, policy));
      refused(r.error, `source address ${ip} is ${what}; ${what === 'private' ? 'allow it with SOURCE_ALLOW_CIDRS' : `allow it with SOURCE_ALLOW_CIDRS (only an exact entry, ${ip}/32, does)`}`);
      expect(r.hosts).not.toContain(ip);
    }
    // Allowed, the same redirect is followed.
    expect(await download(`${srv.url}/to-other`, new AddressPolicy('127.0.0.0/8'))).toEqual(disk);
    expect(other.connectionsAccepted()).toBe(before + 1);
  });
});

describe('registry source', () => {
  let root: string;
  let srv: TestHttpServer;
  let silly: RegistryServer;
  let proxy: FaultProxy;
  let configDigest: string;
  let configSize: number;
  const clients: RegistryClient[] = [];
  const client = (policy: AddressPolicy, insecure: string[]) => {
    const c = new RegistryClient({ addressPolicy: policy, insecureRegistries: insecure, retry: { baseDelayMs: 10, maxDelayMs: 20 } });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'guard-'));
    srv = await startHttpServer();
    // A registry whose token realm points at the metadata service: the client must not follow it there.
    silly = await startRegistry({
      dataDir: join(root, 'silly'),
      auth: { kind: 'silly', realm: 'http://169.254.169.254/latest/meta-data/token', service: 'guard' },
    });
    const layout = await buildImageLayout(join(root, 'layout'), {
      layers: [{ compression: 'none', files: [{ path: 'disk/d.img', content: 'x'.repeat(4096) }] }],
    });
    await skopeoCopy(layout.ref, `docker://${registryHostPort}/guard/img:v1`);
    const config = layout.images[0]!.config;
    configDigest = config.digest;
    configSize = readFileSync(join(layout.dir, 'blobs', 'sha256', config.digest.slice(7))).length;
    proxy = await startFaultProxy(`http://${registryHostPort}`);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await srv?.close();
    await silly?.stop();
    await proxy?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('a registry on loopback is refused by default, by IP or by name, without a connection', async () => {
    const before = srv.connectionsAccepted();
    for (const host of [`127.0.0.1:${srv.port}`, `localhost:${srv.port}`]) {
      const c = client(new AddressPolicy(), [host]);
      const { error, hosts } = await connectsDuring(() => c.getManifest(parseReference(`${host}/guard/img:v1`)));
      refused(error, host.startsWith('localhost') ? /^source address 127\.0\.0\.1 \(from host localhost\) is loopback;/ : /^source address 127\.0\.0\.1 is loopback;/);
      if (host.startsWith('127.')) expect(hosts).toEqual([]);
    }
    expect(srv.connectionsAccepted()).toBe(before);
    // Allowed, the same client code reaches the real registry.
    const ok = client(new AddressPolicy('127.0.0.0/8'), [registryHostPort]);
    expect((await ok.getManifest(parseReference(`${registryHostPort}/guard/img:v1`))).kind).toBe('manifest');
  });

  it('the token realm a registry names is checked too', async () => {
    const host = new URL(silly.url).host;
    const c = client(new AddressPolicy('127.0.0.0/8'), [host]);
    const { error, hosts } = await connectsDuring(() => c.getManifest(parseReference(`${host}/guard/img:v1`)));
    refused(error, /^source address 169\.254\.169\.254 is a cloud metadata endpoint;/);
    expect(hosts).not.toContain('169.254.169.254');
  });

  it('a blob redirect to a private address is refused before connecting', async () => {
    proxy.addFault({ method: 'GET', path: /\/blobs\/sha256:/, redirectTo: 'http://10.1.2.3:9000', times: 1 });
    const c = client(new AddressPolicy('127.0.0.0/8'), [proxy.hostPort]);
    const { error, hosts } = await connectsDuring(() =>
      c.getBlobBytes(proxy.hostPort, 'guard/img', { digest: configDigest, size: configSize }),
    );
    refused(error, /^source address 10\.1\.2\.3 is private;/);
    expect(hosts).not.toContain('10.1.2.3');
    expect(proxy.requests.filter((r) => r.fault === 'redirect')).toHaveLength(1);
  });
});

describe('through the worker', () => {
  let strict: ImportStack;
  let narrow: ImportStack;
  let srv: TestHttpServer;
  let other: TestHttpServer;
  let work: string;

  const cvi = (name: string, dataSource: unknown) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: { dataSource },
  });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'guard-e2e-'));
    // The product's default: no allow-list.
    strict = await startImportStack({ sourceAllowCidrs: '' });
    // Only 127.0.0.2 allowed: sources there work, DVCR on 127.0.0.1 is not a source and is not checked.
    narrow = await startImportStack({ sourceAllowCidrs: '127.0.0.2/32' });
    strict.startWorker({ threads: 1 });
    narrow.startWorker({ threads: 1 });
    srv = await startHttpServer();
    other = await startHttpServer({ host: '127.0.0.2' });
    const raw = Buffer.alloc(2 * 1024 * 1024);
    randomBytes(256 * 1024).copy(raw, 0);
    srv.file('/d.img', { body: raw });
    other.file('/d.img', { body: raw });
    const layout = await buildImageLayout(join(work, 'layout'), {
      layers: [{ compression: 'none', files: [{ path: 'disk/d.img', content: raw }] }],
    });
    await skopeoCopy(layout.ref, `docker://${registryHostPort}/guard/e2e:v1`);
  });
  afterAll(async () => {
    await strict?.close();
    await narrow?.close();
    await srv?.close();
    await other?.close();
    rmSync(work, { recursive: true, force: true });
  });

  it('by default an HTTP source and a source registry on loopback fail at once with the reason', async () => {
    const before = srv.connectionsAccepted();
    await strict.service.apply(cvi('guard-http', { type: 'HTTP', http: { url: `${srv.url}/d.img` } }));
    await strict.service.apply(cvi('guard-registry', { type: 'ContainerImage', containerImage: { image: `${registryHostPort}/guard/e2e:v1` } }));
    for (const name of ['guard-http', 'guard-registry']) {
      const img = await strict.waitFor('ClusterVirtualImage', name, ['Ready', 'Failed']);
      expect(img.status.phase).toBe('Failed');
      expect(img.status.failure).toMatchObject({ reason: 'SOURCE_ADDRESS_REFUSED', retryable: false });
      expect(img.status.failure?.message).toMatch(/^source address 127\.0\.0\.1 is loopback; allow it with SOURCE_ALLOW_CIDRS$/);
      expect(img.status.attempts).toBe(1);
    }
    expect(srv.connectionsAccepted()).toBe(before);
  });

  it('an allowed source imports into DVCR, which is not subject to the allow-list', async () => {
    const { object } = await narrow.service.apply(cvi('guard-allowed', { type: 'HTTP', http: { url: `${other.url}/d.img` } }));
    const img = await narrow.waitFor('ClusterVirtualImage', 'guard-allowed', ['Ready', 'Failed']);
    expect(img.status.phase, JSON.stringify(img.status.failure)).toBe('Ready');
    expect(await narrow.dvcr.listTags(registryHostPort, 'cvi/guard-allowed')).toContain(object.metadata.uid);
    // And 127.0.0.1 stays refused for sources of the same worker.
    await narrow.service.apply(cvi('guard-not-listed', { type: 'HTTP', http: { url: `${srv.url}/d.img` } }));
    const refusedImg = await narrow.waitFor('ClusterVirtualImage', 'guard-not-listed', ['Ready', 'Failed']);
    expect(refusedImg.status.failure?.reason).toBe('SOURCE_ADDRESS_REFUSED');
  });
});
