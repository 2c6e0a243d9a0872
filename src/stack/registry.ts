/**
 * A distribution registry (v2.8, Debian's docker-registry) of our own on a free loopback port, with its own
 * storage folder. Never `apt-get install docker-registry`: `npm run setup` unpacks the binary into .tools/.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { stringify } from 'yaml';
import { freePort, spawnService, waitUntilReady, type ServiceProcess } from './process.ts';
import { PROJECT_ROOT } from '../paths.ts';

export type RegistryAuth =
  | { kind: 'none' }
  /** bcrypt htpasswd file (DVCR's own mode). */
  | { kind: 'htpasswd'; path: string; realm?: string }
  /** JWT tokens from a token server; `rootCertBundle` holds the certificate whose key signs them. */
  | { kind: 'token'; realm: string; service: string; issuer: string; rootCertBundle: string }
  /** Any Bearer token is accepted; challenges point at `realm`. */
  | { kind: 'silly'; realm: string; service: string };

export interface RegistryOptions {
  dataDir: string;
  host?: string;
  port?: number;
  auth?: RegistryAuth;
  tls?: { certificate: string; key: string };
  /** Path of the registry binary; default DVCR_REGISTRY_BIN, .tools/bin/docker-registry, or from PATH. */
  binary?: string;
}

export interface RegistryServer {
  /** `http://127.0.0.1:PORT` (or https with `tls`). */
  readonly url: string;
  /** `127.0.0.1:PORT`, as used in image references. */
  readonly hostPort: string;
  readonly port: number;
  readonly pid: number;
  readonly dataDir: string;
  readonly process: ServiceProcess;
  stop(): Promise<void>;
}


export function findRegistryBinary(): string {
  const fromEnv = process.env.DVCR_REGISTRY_BIN;
  if (fromEnv) return fromEnv;
  const local = join(PROJECT_ROOT, '.tools', 'bin', 'docker-registry');
  if (existsSync(local)) return local;
  for (const dir of (process.env.PATH ?? '').split(':')) {
    for (const name of ['docker-registry', 'registry']) {
      const p = join(dir, name);
      if (dir && existsSync(p)) return p;
    }
  }
  throw new Error(
    'no distribution registry binary found: run `npm run setup` (it unpacks Debian\'s docker-registry into ' +
      '.tools/bin), or set DVCR_REGISTRY_BIN to a registry v2.8 binary',
  );
}

function authConfig(auth: RegistryAuth): Record<string, unknown> | undefined {
  switch (auth.kind) {
    case 'none':
      return undefined;
    case 'htpasswd':
      return { htpasswd: { realm: auth.realm ?? 'dvcr', path: auth.path } };
    case 'token':
      return {
        token: {
          realm: auth.realm,
          service: auth.service,
          issuer: auth.issuer,
          rootcertbundle: auth.rootCertBundle,
        },
      };
    case 'silly':
      return { silly: { realm: auth.realm, service: auth.service } };
  }
}

function probe(url: string): Promise<boolean> {
  return new Promise((resolveProbe) => {
    const request = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = request(`${url}/v2/`, { method: 'GET', timeout: 1000, rejectUnauthorized: false }, (res) => {
      res.resume();
      resolveProbe(res.statusCode === 200 || res.statusCode === 401);
    });
    req.on('error', () => resolveProbe(false));
    req.on('timeout', () => {
      req.destroy();
      resolveProbe(false);
    });
    req.end();
  });
}

export async function startRegistry(opts: RegistryOptions): Promise<RegistryServer> {
  const host = opts.host ?? '127.0.0.1';
  const binary = opts.binary ?? findRegistryBinary();
  const storage = join(opts.dataDir, 'storage');
  mkdirSync(storage, { recursive: true });
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = opts.port ?? (await freePort(host));
    const http: Record<string, unknown> = { addr: `${host}:${port}`, secret: 'dvcr-importer-local-stack' };
    if (opts.tls) http.tls = { certificate: opts.tls.certificate, key: opts.tls.key };
    const config: Record<string, unknown> = {
      version: 0.1,
      log: { level: 'warn', accesslog: { disabled: true } },
      storage: { filesystem: { rootdirectory: storage }, delete: { enabled: true } },
      http,
    };
    const auth = authConfig(opts.auth ?? { kind: 'none' });
    if (auth) config.auth = auth;
    const configFile = join(opts.dataDir, 'config.yml');
    writeFileSync(configFile, stringify(config));
    const scheme = opts.tls ? 'https' : 'http';
    const url = `${scheme}://${host}:${port}`;
    const svc = spawnService({
      name: `registry on ${host}:${port}`,
      command: binary,
      args: ['serve', configFile],
      logFile: join(opts.dataDir, 'registry.log'),
      // The registry reads REGISTRY_* variables as config overrides: give it a clean set.
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_'))),
    });
    try {
      await waitUntilReady(svc, () => probe(url));
    } catch (e) {
      lastError = e;
      await svc.stop();
      if (opts.port !== undefined) break;
      continue;
    }
    return {
      url,
      hostPort: `${host}:${port}`,
      port,
      pid: svc.pid,
      dataDir: opts.dataDir,
      process: svc,
      stop: () => svc.stop(),
    };
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}
