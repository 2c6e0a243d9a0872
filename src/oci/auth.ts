/**
 * Registry authentication: anonymous, Basic, and Bearer tokens with multi-scope challenges.
 * Tokens are cached per host + realm + service + scope set; a 401 merges scopes and refreshes once.
 * Credentials are only ever sent to the host they belong to and to that host's token realm.
 */
import { z } from 'zod';
import type { Challenge } from './challenge.ts';
import { OciError } from './errors.ts';

export interface Credentials {
  username: string;
  password: string;
}

/** Looks up credentials for a registry host (`host[:port]`), by name, at request time. */
export type CredentialProvider = (host: string) => Credentials | undefined | Promise<Credentials | undefined>;

export const anonymous: CredentialProvider = () => undefined;

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}

/** Scope strings: `repository:<name>:pull` / `repository:<name>:pull,push`. */
export function repositoryScope(repository: string, actions: Array<'pull' | 'push' | 'delete' | '*'>): string {
  return `repository:${repository}:${actions.join(',')}`;
}

/** Merges scopes, joining actions of the same resource: `repository:a:pull` + `repository:a:push`. */
export function mergeScopes(...lists: Array<Iterable<string>>): string[] {
  const byResource = new Map<string, Set<string>>();
  const order: string[] = [];
  for (const list of lists) {
    for (const raw of list) {
      for (const scope of raw.split(' ')) {
        if (!scope) continue;
        const idx = scope.lastIndexOf(':');
        const resource = idx > 0 ? scope.slice(0, idx) : scope;
        const actions = idx > 0 ? scope.slice(idx + 1).split(',') : [];
        let set = byResource.get(resource);
        if (!set) {
          set = new Set();
          byResource.set(resource, set);
          order.push(resource);
        }
        for (const a of actions) if (a) set.add(a);
      }
    }
  }
  return order.map((r) => {
    const acts = [...byResource.get(r)!];
    return acts.length ? `${r}:${acts.join(',')}` : r;
  });
}

const TokenReply = z.object({
  token: z.string().min(1).optional(),
  access_token: z.string().min(1).optional(),
  expires_in: z.number().optional(),
  issued_at: z.string().optional(),
});

export interface Token {
  value: string;
  expiresAt: number;
}

/** Parses a token server reply; missing or short `expires_in` means 60 s (distribution's rule). */
export function parseTokenReply(body: unknown, now = Date.now()): Token {
  const r = TokenReply.safeParse(body);
  if (!r.success || !(r.data.token ?? r.data.access_token)) {
    throw new OciError('token server reply has no token', { errorClass: 'permanent', reason: 'TOKEN_INVALID' });
  }
  const ttl = Math.max(r.data.expires_in ?? 60, 60);
  // Refresh a little early so a token does not expire in flight.
  return { value: (r.data.token ?? r.data.access_token)!, expiresAt: now + (ttl - 10) * 1000 };
}

/** What we learned about a host's auth: its challenge (from /v2/ or a 401). */
export type HostAuth =
  | { kind: 'none' }
  | { kind: 'basic' }
  | { kind: 'bearer'; realm: string; service: string | undefined };

export function hostAuthFromChallenges(challenges: Challenge[]): HostAuth {
  const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
  if (bearer) return { kind: 'bearer', realm: bearer.params.realm!, service: bearer.params.service };
  if (challenges.some((c) => c.scheme === 'basic')) return { kind: 'basic' };
  return { kind: 'none' };
}

export class TokenCache {
  private readonly tokens = new Map<string, Token>();
  static key(host: string, realm: string, service: string | undefined, scopes: string[]): string {
    return [host, realm, service ?? '', [...scopes].sort().join(' ')].join('|');
  }
  get(key: string, now = Date.now()): Token | undefined {
    const t = this.tokens.get(key);
    if (t && t.expiresAt > now) return t;
    if (t) this.tokens.delete(key);
    return undefined;
  }
  set(key: string, t: Token): void {
    this.tokens.set(key, t);
  }
  delete(key: string): void {
    this.tokens.delete(key);
  }
}
