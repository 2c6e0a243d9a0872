/**
 * What the pipeline needs from the outside, built once per worker thread from the configuration:
 * a DVCR client (with DVCR credentials), source clients (pull secrets resolved by name, at run time),
 * limits and a scratch folder.
 */
import { readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dvcrHost, effectiveInsecureRegistries, type Config } from '../config.ts';
import {
  AddressPolicy,
  credentialsForHost,
  credentialsFromMap,
  OciError,
  readDockerConfigFile,
  RegistryClient,
  type CredentialProvider,
} from '../oci/index.ts';

export interface PipelineLimits {
  maxVirtualSize: number;
  probeSampleBytes: number;
  /** Wall-clock limit of one `qemu-img convert` (CONVERT_TIMEOUT); default src/disk/convert.ts's. */
  convertTimeoutMs?: number;
}

export interface PipelineContext {
  dvcr: RegistryClient;
  /** A client for a source registry with the named pull secret and CA. Close it after use. */
  sourceClient(opts: {
    pullSecret?: { name: string; namespace?: string };
    caBundle?: string;
    registry: string;
  }): Promise<{ client: RegistryClient; release(): Promise<void> }>;
  limits: PipelineLimits;
  tmpDir: string;
  /** `host:port` entries reachable without TLS verification (sources and DVCR alike). */
  insecureRegistries: string[];
  /** A download that receives nothing for this long fails. */
  idleTimeoutMs: number;
  /** Which addresses sources may be fetched from (SOURCE_ALLOW_CIDRS): for source clients, never DVCR. */
  sourceAddressPolicy: AddressPolicy;
  close(): Promise<void>;
}

const SAFE_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/**
 * Finds a pull secret by name in PULL_SECRETS_DIR: `<dir>/[<namespace>/]<name>` as a file, a `.json` file,
 * or a folder holding `.dockerconfigjson` (how Kubernetes mounts a secret).
 */
export function pullSecretPath(dir: string | undefined, ref: { name: string; namespace?: string }): string {
  const label = ref.namespace ? `${ref.namespace}/${ref.name}` : ref.name;
  if (!SAFE_NAME.test(ref.name) || (ref.namespace !== undefined && !SAFE_NAME.test(ref.namespace))) {
    throw new OciError(`imagePullSecret "${label}": not a valid secret name`, { errorClass: 'permanent', reason: 'BadCredentials' });
  }
  if (!dir) {
    throw new OciError(`imagePullSecret "${label}" is set but PULL_SECRETS_DIR is not configured`, {
      errorClass: 'permanent',
      reason: 'CredentialsNotFound',
    });
  }
  const base = ref.namespace ? join(dir, ref.namespace, ref.name) : join(dir, ref.name);
  for (const p of [join(base, '.dockerconfigjson'), `${base}.json`, base]) {
    if (statSync(p, { throwIfNoEntry: false })?.isFile()) return p;
  }
  throw new OciError(`imagePullSecret "${label}" not found in PULL_SECRETS_DIR`, {
    errorClass: 'permanent',
    reason: 'CredentialsNotFound',
  });
}

async function dvcrCredentials(config: Config): Promise<CredentialProvider> {
  const host = dvcrHost(config);
  if (config.dvcrAuthFile) {
    return credentialsFromMap(await readDockerConfigFile(config.dvcrAuthFile, 'DVCR_AUTH_FILE'));
  }
  if (config.dvcrUsername !== undefined) {
    return credentialsForHost(host, { username: config.dvcrUsername, password: config.dvcrPassword ?? '' });
  }
  return () => undefined;
}

/** A client for DVCR with its credentials (user/password or an auth file) and CA. */
export async function createDvcrClient(config: Config): Promise<RegistryClient> {
  const host = dvcrHost(config);
  const dvcrCa = config.dvcrCaFile ? readFileSync(config.dvcrCaFile, 'utf8') : undefined;
  return new RegistryClient({
    credentials: await dvcrCredentials(config),
    insecureRegistries: effectiveInsecureRegistries(config),
    hosts: dvcrCa ? { [host]: { ca: dvcrCa } } : {},
    maxConcurrentPerHost: config.registryConcurrency,
    bodyTimeoutMs: config.idleTimeout,
  });
}

export async function createPipelineContext(config: Config): Promise<PipelineContext> {
  const insecureRegistries = effectiveInsecureRegistries(config);
  const dvcr = await createDvcrClient(config);
  const sourceAddressPolicy = new AddressPolicy(config.sourceAllowCidrs);
  const clientOptions = {
    insecureRegistries,
    maxConcurrentPerHost: config.registryConcurrency,
    bodyTimeoutMs: config.idleTimeout,
    addressPolicy: sourceAddressPolicy,
    retry: { maxRateLimitWaitMs: config.rateLimitWait },
  };
  // Sources without a pull secret or CA share one client per thread: its connections, registry discovery and
  // anonymous tokens carry over from one import to the next (measured: about a fifth of the CPU of a 1 MiB
  // import went to setting up a fresh client). Credentials, which may rotate, are read anew for every import.
  let shared: RegistryClient | undefined;
  return {
    dvcr,
    async sourceClient({ pullSecret, caBundle, registry }) {
      if (!pullSecret && !caBundle) {
        shared ??= new RegistryClient(clientOptions);
        return { client: shared, release: async () => undefined };
      }
      let credentials: CredentialProvider = () => undefined;
      if (pullSecret) {
        const label = pullSecret.namespace ? `${pullSecret.namespace}/${pullSecret.name}` : pullSecret.name;
        const path = pullSecretPath(config.pullSecretsDir, pullSecret);
        credentials = credentialsFromMap(await readDockerConfigFile(path, `imagePullSecret "${label}"`));
      }
      const ca = caBundle ? Buffer.from(caBundle, 'base64').toString('utf8') : undefined;
      const client = new RegistryClient({ ...clientOptions, credentials, hosts: ca ? { [registry.toLowerCase()]: { ca } } : {} });
      return { client, release: () => client.close() };
    },
    limits: {
      maxVirtualSize: config.maxVirtualSize,
      probeSampleBytes: config.probeSampleSize,
      convertTimeoutMs: config.convertTimeout,
    },
    insecureRegistries,
    idleTimeoutMs: config.idleTimeout,
    sourceAddressPolicy,
    tmpDir: process.env.DVCR_IMPORTER_TMPDIR ?? tmpdir(),
    close: async () => {
      await dvcr.close();
      await shared?.close();
    },
  };
}
