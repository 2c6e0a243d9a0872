/**
 * Secrets audit: a real run with credentials everywhere (a token-auth source registry reached with a pull
 * secret from PULL_SECRETS_DIR, an htpasswd DVCR with DVCR_USERNAME/DVCR_PASSWORD, an API token), including
 * imports that fail on a wrong pull secret and on a wrong DVCR password. Then everything the product wrote is
 * collected and searched: every Redis key and value (type-aware: strings, hashes, lists, sets, sorted sets,
 * streams, so BullMQ job data, logs, return values and failure reasons), the logs of the worker and API
 * processes at trace level, API answers (get, list, watch, /metrics, /readyz, /openapi.json), the CLI's
 * describe and get, and the image pushed to DVCR. No password, token or base64 form of one may appear.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { Agent, request } from 'undici';
import { RegistryClient, credentialsForHost } from '../../src/oci/index.ts';
import { startRedis, startRegistry, type RedisServer, type RegistryServer } from '../../src/stack/index.ts';
import { buildImageLayout } from '../helpers/fixtures.ts';
import { writeHtpasswd } from '../helpers/htpasswd.ts';
import { LOOPBACK_CIDRS } from '../helpers/import-stack.ts';
import { skopeoCopy } from '../helpers/skopeo.ts';
import { startTokenRegistry, type TokenRegistry } from '../helpers/token-server.ts';

const BIN = new URL('../../bin/dvcr-importer.js', import.meta.url).pathname;
const run = promisify(execFile);

const secret = (label: string) => `${label}-${randomBytes(18).toString('hex')}`;
const PULL_USER = 'puller';
const PULL_PASSWORD = secret('pull');
const WRONG_PULL_PASSWORD = secret('wrongpull');
const DVCR_USER = 'dvcr-writer';
const DVCR_PASSWORD = secret('dvcr');
const WRONG_DVCR_PASSWORD = secret('wrongdvcr');
const API_TOKEN = secret('apitoken');

/**
 * What a leaked secret can look like: as is, URL-encoded, and base64 / base64url at any alignment inside a
 * longer encoded string (for each of the three byte offsets, the part of the encoding that depends on the
 * secret alone), including `user:password` as in a Basic header or a dockerconfigjson `auth`.
 */
function needles(value: string, user?: string): string[] {
  const out = new Set([value, encodeURIComponent(value)]);
  const forms = [Buffer.from(value)];
  if (user) forms.push(Buffer.from(`${user}:${value}`));
  for (const bytes of forms) {
    for (let k = 0; k < 3; k++) {
      const padded = Buffer.concat([Buffer.alloc(k), bytes]);
      const full = Math.floor(padded.length / 3) * 4;
      const skip = [0, 2, 3][k]!;
      const b64 = padded.toString('base64').slice(skip, full);
      out.add(b64);
      out.add(b64.replace(/\+/g, '-').replace(/\//g, '_'));
    }
    out.add(bytes.toString('base64'));
  }
  return [...out].filter((n) => n.length >= 16);
}

interface Proc {
  child: ChildProcess;
  out(): string;
  exited: Promise<number | null>;
}

describe('secrets audit', () => {
  let work: string;
  let redis: RedisServer;
  let dvcr: RegistryServer;
  let source: TokenRegistry;
  let sourceHost: string;
  let dvcrHost: string;
  let api: string;
  const procs: Proc[] = [];
  /** The test's own connections to the API, closed before the API is stopped (see the SIGTERM step). */
  const agent = new Agent();

  function product(args: string[], env: Record<string, string>): Proc {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: {
        ...process.env,
        REDIS_URL: redis.url,
        REDIS_PREFIX: '{audit}',
        DVCR_URL: dvcr.url,
        DVCR_USERNAME: DVCR_USER,
        DVCR_PASSWORD,
        PULL_SECRETS_DIR: join(work, 'secrets'),
        INSECURE_REGISTRIES: `${dvcrHost},${sourceHost}`,
        SOURCE_ALLOW_CIDRS: LOOPBACK_CIDRS,
        API_TOKEN,
        LOG_LEVEL: 'trace',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    const p = { child, out: () => out, exited };
    procs.push(p);
    return p;
  }

  async function call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; text: string }> {
    const res = await request(`${api}${path}`, {
      dispatcher: agent,
      method,
      headers: { authorization: `Bearer ${API_TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.statusCode, text: await res.body.text() };
  }

  async function waitPhase(name: string, phases: string[], timeoutMs = 60_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      const { status, text } = await call('GET', `/apis/v1/clustervirtualimages/${name}`);
      last = text;
      if (status === 200) {
        const img = JSON.parse(text) as { status: { phase: string } };
        if (phases.includes(img.status.phase)) return img as unknown as Record<string, unknown>;
      }
      await sleep(200);
    }
    throw new Error(`${name} did not reach ${phases.join('|')}: ${last}`);
  }

  const cvi = (name: string, pullSecret: string) => ({
    apiVersion: 'virtualization.deckhouse.io/v1alpha2',
    kind: 'ClusterVirtualImage',
    metadata: { name },
    spec: {
      dataSource: { type: 'ContainerImage', containerImage: { image: `${sourceHost}/private/disk:v1`, imagePullSecret: { name: pullSecret } } },
    },
  });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'secrets-audit-'));
    const htpasswd = join(work, 'htpasswd');
    await writeHtpasswd(htpasswd, { [DVCR_USER]: DVCR_PASSWORD });
    [redis, dvcr, source] = await Promise.all([
      startRedis({ dataDir: join(work, 'redis') }),
      startRegistry({ dataDir: join(work, 'dvcr'), auth: { kind: 'htpasswd', path: htpasswd } }),
      startTokenRegistry(join(work, 'source'), { users: { [PULL_USER]: PULL_PASSWORD }, anonymousPull: false }),
    ]);
    sourceHost = source.registry.hostPort;
    dvcrHost = dvcr.url.replace(/^https?:\/\//, '');
    const disk = join(work, 'd.img');
    writeFileSync(disk, randomBytes(1024 * 1024));
    const layout = await buildImageLayout(join(work, 'layout'), { layers: [{ files: [{ path: 'disk/d.img', fromFile: disk }], compression: 'gzip' }] });
    await skopeoCopy(layout.ref, `docker://${sourceHost}/private/disk:v1`, { destCreds: { username: PULL_USER, password: PULL_PASSWORD } });
    // Pull secrets as Kubernetes mounts them: one in the `auth` form, one with username/password fields.
    mkdirSync(join(work, 'secrets', 'good-pull'), { recursive: true });
    const auth = Buffer.from(`${PULL_USER}:${PULL_PASSWORD}`).toString('base64');
    writeFileSync(join(work, 'secrets', 'good-pull', '.dockerconfigjson'), JSON.stringify({ auths: { [sourceHost]: { auth } } }));
    writeFileSync(
      join(work, 'secrets', 'bad-pull.json'),
      JSON.stringify({ auths: { [sourceHost]: { username: PULL_USER, password: WRONG_PULL_PASSWORD } } }),
    );
  }, 120_000);

  afterAll(async () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await agent.destroy().catch(() => undefined);
    await Promise.all([redis?.stop(), dvcr?.stop(), source?.stop()]);
    rmSync(work, { recursive: true, force: true });
  });

  it('no password, token or base64 form of one appears in anything the product wrote', async () => {
    const serve = product(['serve', '--listen', '127.0.0.1:0'], {});
    for (let i = 0; i < 200 && !/listening on (http:\/\/\S+)/.test(serve.out()); i++) await sleep(100);
    api = /listening on (http:\/\/\S+)/.exec(serve.out())?.[1] ?? '';
    expect(api, serve.out()).not.toBe('');
    const worker = product(['worker'], { WORKER_CONCURRENCY: '2' });

    expect((await call('POST', '/apis/v1/images', cvi('audit-good', 'good-pull'))).status).toBe(201);
    expect((await call('POST', '/apis/v1/images', cvi('audit-bad-pull', 'bad-pull'))).status).toBe(201);
    const good = await waitPhase('audit-good', ['Ready', 'Failed']);
    const badPull = await waitPhase('audit-bad-pull', ['Ready', 'Failed']);
    expect((good.status as { phase: string }).phase, worker.out()).toBe('Ready');
    expect(badPull.status).toMatchObject({ phase: 'Failed', failure: { retryable: false } });
    expect(JSON.stringify(badPull.status)).toMatch(/refused user \\"puller\\"/);

    // A second worker with a wrong DVCR password: the import fails on DVCR's refusal.
    worker.child.kill('SIGTERM');
    expect(await worker.exited).toBe(0);
    const wrongDvcr = product(['worker'], { DVCR_PASSWORD: WRONG_DVCR_PASSWORD });
    expect((await call('POST', '/apis/v1/images', cvi('audit-bad-dvcr', 'good-pull'))).status).toBe(201);
    const badDvcr = await waitPhase('audit-bad-dvcr', ['Ready', 'Failed'], 90_000);
    expect(badDvcr.status, wrongDvcr.out()).toMatchObject({ phase: 'Failed' });
    expect(JSON.stringify(badDvcr.status)).toMatch(/dvcr-writer/);
    wrongDvcr.child.kill('SIGTERM');
    expect(await wrongDvcr.exited).toBe(0);

    // -- collect everything the product wrote
    const haystack: Array<[where: string, text: string]> = [];
    for (const path of [
      '/apis/v1/clustervirtualimages/audit-good',
      '/apis/v1/clustervirtualimages/audit-bad-pull',
      '/apis/v1/clustervirtualimages/audit-bad-dvcr',
      '/apis/v1/clustervirtualimages',
      '/apis/v1/virtualimages',
      '/metrics',
      '/readyz',
      '/healthz',
      '/openapi.json',
    ]) {
      const r = await call('GET', path);
      expect(r.status, path).toBe(200);
      haystack.push([`API ${path}`, r.text]);
    }
    {
      const ac = new AbortController();
      const res = await request(`${api}/apis/v1/clustervirtualimages?watch=true`, {
        headers: { authorization: `Bearer ${API_TOKEN}`, accept: 'text/event-stream' },
        dispatcher: agent,
        signal: ac.signal,
      });
      let sse = '';
      const reading = (async () => {
        for await (const c of res.body) sse += (c as Buffer).toString();
      })().catch(() => undefined);
      await sleep(1500);
      ac.abort();
      await reading;
      expect(sse).toMatch(/event: ADDED/);
      haystack.push(['API watch', sse]);
    }
    for (const args of [['describe', 'cvi', 'audit-bad-pull'], ['describe', 'cvi', 'audit-bad-dvcr'], ['get', 'cvi', '-o', 'json']]) {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--server', api], {
        env: { ...process.env, API_TOKEN },
      }).catch((e: { stdout?: string; stderr?: string }) => ({ stdout: e.stdout ?? '', stderr: e.stderr ?? '' }));
      haystack.push([`CLI ${args.join(' ')}`, stdout + stderr]);
    }

    const r = new Redis(redis.url);
    let redisKeys = 0;
    try {
      let cursor = '0';
      do {
        const [next, keys] = await r.scan(cursor, 'COUNT', 1000);
        cursor = next;
        for (const key of keys) {
          redisKeys++;
          const type = await r.type(key);
          let value: unknown;
          if (type === 'string') value = await r.get(key);
          else if (type === 'hash') value = await r.hgetall(key);
          else if (type === 'list') value = await r.lrange(key, 0, -1);
          else if (type === 'set') value = await r.smembers(key);
          else if (type === 'zset') value = await r.call('ZRANGE', key, '0', '-1', 'WITHSCORES');
          else if (type === 'stream') value = await r.xrange(key, '-', '+');
          else value = `(type ${type})`;
          haystack.push([`redis ${type} ${key}`, `${key}\n${JSON.stringify(value)}`]);
        }
      } while (cursor !== '0');
    } finally {
      r.disconnect();
    }

    const dvcrClient = new RegistryClient({
      credentials: credentialsForHost(dvcrHost, { username: DVCR_USER, password: DVCR_PASSWORD }),
      insecureRegistries: [dvcrHost],
    });
    try {
      const uid = (good.metadata as { uid: string }).uid;
      const ref = { registry: dvcrHost, repository: 'cvi/audit-good', tag: uid, digest: undefined };
      const m = await dvcrClient.getManifest(ref);
      expect(m.kind).toBe('manifest');
      if (m.kind !== 'manifest') return;
      const config = await dvcrClient.getBlobBytes(dvcrHost, 'cvi/audit-good', m.manifest.config);
      haystack.push(['DVCR manifest', JSON.stringify(m.manifest)], ['DVCR config', config.toString('utf8')]);
    } finally {
      await dvcrClient.close();
    }

    // Stop the API so its last log lines are flushed, then add the process logs. Our idle keep-alive
    // connections are closed first: `serve` waits for them (up to fastify's 72 s keepAliveTimeout).
    await agent.close();
    serve.child.kill('SIGTERM');
    expect(await serve.exited).toBe(0);
    for (const [i, p] of procs.entries()) haystack.push([`process ${i} (${p.child.spawnargs.slice(2).join(' ')}) output`, p.out()]);

    // -- the audit is only worth something if it saw the run
    const all = haystack.map(([, t]) => t).join('\n');
    expect(redisKeys).toBeGreaterThan(10);
    expect(all).toMatch(/"name":"audit-good"/); // job data
    expect(all).toMatch(/import ready/); // worker logs (LOG_LEVEL=trace: everything the product logs)
    expect(all).toMatch(/good-pull/); // secret names are fine and present
    expect(all).toMatch(/dvcr_importer_|dvcr_import/); // metrics

    // -- the audit
    const secrets: Array<[string, string, string | undefined]> = [
      ['pull secret password', PULL_PASSWORD, PULL_USER],
      ['wrong pull secret password', WRONG_PULL_PASSWORD, PULL_USER],
      ['DVCR password', DVCR_PASSWORD, DVCR_USER],
      ['wrong DVCR password', WRONG_DVCR_PASSWORD, DVCR_USER],
      ['API token', API_TOKEN, undefined],
    ];
    const leaks: string[] = [];
    for (const [what, value, user] of secrets) {
      for (const needle of needles(value, user)) {
        for (const [where, text] of haystack) {
          const at = text.indexOf(needle);
          if (at >= 0) leaks.push(`${what} (${needle}) in ${where}: ...${text.slice(Math.max(0, at - 120), at + needle.length + 40)}...`);
        }
      }
    }
    expect(leaks).toEqual([]);
  }, 240_000);

  it('the needle set finds a secret inside any base64 text', () => {
    for (let pad = 0; pad < 6; pad++) {
      const blob = Buffer.concat([randomBytes(pad), Buffer.from(`${PULL_USER}:${PULL_PASSWORD}`), randomBytes(5)]);
      for (const enc of [blob.toString('base64'), blob.toString('base64url')]) {
        expect(needles(PULL_PASSWORD, PULL_USER).some((n) => enc.includes(n))).toBe(true);
      }
    }
  });
});
