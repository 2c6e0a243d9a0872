/**
 * Credentials from dockerconfigjson (`{"auths": {"host": {"auth": base64(user:pass)} | {username, password}}}`),
 * as Kubernetes pull secrets and `docker login` store them. Values stay in memory; errors never show them.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import type { CredentialProvider, Credentials } from './auth.ts';
import { OciError } from './errors.ts';

const Entry = z.object({
  auth: z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
});
const DockerConfig = z.object({ auths: z.record(z.string(), Entry) });

/** Normalises a key of `auths`: `https://index.docker.io/v1/` -> `docker.io`, `https://r.example:5000/x` -> `r.example:5000`. */
export function authKeyHost(key: string): string {
  let host = key.trim().toLowerCase();
  host = host.replace(/^[a-z]+:\/\//, '').split('/')[0] ?? host;
  if (host === 'index.docker.io' || host === 'registry-1.docker.io') return 'docker.io';
  return host;
}

/** Parses dockerconfigjson text into a map host -> credentials. `what` names the source in errors. */
export function parseDockerConfig(text: string, what: string): Map<string, Credentials> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new OciError(`${what}: not valid JSON (expected a dockerconfigjson with "auths")`, {
      errorClass: 'permanent',
      reason: 'BadCredentials',
    });
  }
  const r = DockerConfig.safeParse(json);
  if (!r.success) {
    throw new OciError(`${what}: expected {"auths": {"<registry>": {"auth": "<base64 user:password>"}}}`, {
      errorClass: 'permanent',
      reason: 'BadCredentials',
    });
  }
  const out = new Map<string, Credentials>();
  for (const [key, e] of Object.entries(r.data.auths)) {
    let creds: Credentials | undefined;
    if (e.username !== undefined && e.password !== undefined) creds = { username: e.username, password: e.password };
    else if (e.auth) {
      const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      if (i > 0) creds = { username: decoded.slice(0, i), password: decoded.slice(i + 1) };
    }
    if (!creds) {
      throw new OciError(`${what}: the entry for ${authKeyHost(key)} has neither "auth" nor username/password`, {
        errorClass: 'permanent',
        reason: 'BadCredentials',
      });
    }
    out.set(authKeyHost(key), creds);
  }
  return out;
}

export async function readDockerConfigFile(path: string, what = path): Promise<Map<string, Credentials>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new OciError(`${what}: cannot read (${code ?? 'error'})`, { errorClass: 'permanent', reason: 'CredentialsNotFound' });
  }
  return parseDockerConfig(text, what);
}

/** A provider from a host map, optionally falling back to another provider. */
export function credentialsFromMap(map: Map<string, Credentials>, fallback?: CredentialProvider): CredentialProvider {
  return (host) => map.get(host.toLowerCase()) ?? fallback?.(host);
}

/** Credentials for exactly one host (DVCR user/password). */
export function credentialsForHost(host: string, creds: Credentials | undefined, fallback?: CredentialProvider): CredentialProvider {
  const h = host.toLowerCase();
  return (asked) => (asked.toLowerCase() === h && creds ? creds : fallback?.(asked));
}
