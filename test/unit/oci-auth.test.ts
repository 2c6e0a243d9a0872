import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseChallenges, mergeScopes } from '../../src/oci/index.ts';
import { hostAuthFromChallenges, parseTokenReply, TokenCache } from '../../src/oci/auth.ts';

describe('WWW-Authenticate', () => {
  it('parses a Bearer challenge with several scopes', () => {
    const [c] = parseChallenges(
      'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:dst:pull,push repository:src:pull"',
    );
    expect(c).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:dst:pull,push repository:src:pull' },
    });
  });

  it('parses several challenges in one header, case-insensitively, with escapes and token values', () => {
    const cs = parseChallenges('Basic realm="a \\"quoted\\" realm", BEARER Realm=https://t.example/x, Service = svc');
    expect(cs).toEqual([
      { scheme: 'basic', params: { realm: 'a "quoted" realm' } },
      { scheme: 'bearer', params: { realm: 'https://t.example/x', service: 'svc' } },
    ]);
    expect(hostAuthFromChallenges(cs)).toEqual({ kind: 'bearer', realm: 'https://t.example/x', service: 'svc' });
    expect(hostAuthFromChallenges(parseChallenges('Basic realm="dvcr"'))).toEqual({ kind: 'basic' });
    expect(hostAuthFromChallenges([])).toEqual({ kind: 'none' });
  });

  it('never throws on arbitrary headers (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (s) => {
        for (const c of parseChallenges(s)) {
          expect(c.scheme).toBe(c.scheme.toLowerCase());
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('round-trips generated challenges (property)', () => {
    const tok = fc.stringMatching(/^[a-z][a-z0-9]{0,8}$/);
    const val = fc.string({ maxLength: 30 }).filter((s) => !s.includes('\u0000'));
    fc.assert(
      fc.property(tok, fc.dictionary(tok, val, { maxKeys: 4 }), (scheme, params) => {
        const header = `${scheme} ${Object.entries(params)
          .map(([k, v]) => `${k}="${v.replace(/["\\]/g, (m) => `\\${m}`)}"`)
          .join(', ')}`;
        const parsed = parseChallenges(header);
        expect(parsed[0]?.scheme).toBe(scheme);
        expect(parsed[0]?.params).toEqual(params);
      }),
      { numRuns: 500 },
    );
  });
});

describe('scopes and tokens', () => {
  it('merges actions of the same resource', () => {
    expect(mergeScopes(['repository:a:pull'], ['repository:a:push repository:b:pull'])).toEqual([
      'repository:a:pull,push',
      'repository:b:pull',
    ]);
  });

  it('reads token replies: token or access_token, 60 s minimum lifetime', () => {
    const now = 1_000_000;
    expect(parseTokenReply({ token: 't' }, now)).toEqual({ value: 't', expiresAt: now + 50_000 });
    expect(parseTokenReply({ access_token: 'a', expires_in: 3600 }, now)).toEqual({ value: 'a', expiresAt: now + 3_590_000 });
    expect(parseTokenReply({ token: 't', expires_in: 5 }, now).expiresAt).toBe(now + 50_000);
    expect(() => parseTokenReply({ nope: 1 })).toThrow(/no token/);
  });

  it('caches per scope set, order-insensitive, and expires', () => {
    const cache = new TokenCache();
    const k1 = TokenCache.key('h', 'r', 's', ['repository:a:pull', 'repository:b:pull']);
    const k2 = TokenCache.key('h', 'r', 's', ['repository:b:pull', 'repository:a:pull']);
    expect(k1).toBe(k2);
    cache.set(k1, { value: 'x', expiresAt: 100 });
    expect(cache.get(k2, 99)?.value).toBe('x');
    expect(cache.get(k2, 100)).toBeUndefined();
  });
});
