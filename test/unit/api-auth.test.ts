import { describe, expect, it } from 'vitest';
import { authorize, bearerToken, tokenVerifier, TokenVerifier } from '../../src/api/auth.ts';

describe('bearerToken', () => {
  it('reads the token of a Bearer header only', () => {
    expect(bearerToken('Bearer abc.def')).toBe('abc.def');
    expect(bearerToken('bearer   abc  ')).toBe('abc');
    expect(bearerToken('Basic dXNlcjpwYXNz')).toBeUndefined();
    expect(bearerToken('Bearer')).toBeUndefined();
    expect(bearerToken('Bearer a b')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
});

describe('TokenVerifier', () => {
  it('tells the roles apart, whatever the token lengths', () => {
    const v = new TokenVerifier('operator-token', 'r');
    expect(v.roleOf('operator-token')).toBe('operator');
    expect(v.roleOf('r')).toBe('reader');
    expect(v.roleOf('operator-token2')).toBeUndefined();
    expect(v.roleOf('')).toBeUndefined();
    expect(new TokenVerifier('only').roleOf('only')).toBe('operator');
    expect(new TokenVerifier('only').roleOf('x')).toBeUndefined();
  });

  it('checks the configuration', () => {
    expect(tokenVerifier({})).toBeUndefined();
    expect(() => tokenVerifier({ readToken: 'r' })).toThrow(/API_TOKEN/);
    expect(() => tokenVerifier({ token: 't', readToken: 't' })).toThrow(/differ/);
    expect(tokenVerifier({ token: 't', readToken: '' })?.roleOf('')).toBeUndefined();
  });
});

describe('authorize', () => {
  const v = new TokenVerifier('op', 'ro');
  const req = (method: string, authorization?: string, pub = false) => ({ method, path: '/apis/v1/images', authorization, public: pub });

  it('lets everything through without a configured token', () => {
    expect(authorize(undefined, req('POST'))).toEqual({ ok: true, role: 'operator' });
  });

  it('opens public routes', () => {
    expect(authorize(v, req('GET', undefined, true)).ok).toBe(true);
  });

  it('answers 401 without a token or with an unknown one, 403 for a reader writing', () => {
    const none = authorize(v, req('GET'));
    expect(none).toMatchObject({ ok: false, status: 401, code: 'Unauthorized' });
    const wrong = authorize(v, req('GET', 'Bearer nope'));
    expect(wrong).toMatchObject({ ok: false, status: 401 });
    expect(JSON.stringify(wrong)).not.toContain('nope');
    expect(authorize(v, req('GET', 'Bearer ro'))).toEqual({ ok: true, role: 'reader' });
    expect(authorize(v, req('HEAD', 'Bearer ro'))).toEqual({ ok: true, role: 'reader' });
    expect(authorize(v, req('POST', 'Bearer ro'))).toMatchObject({ ok: false, status: 403, code: 'Forbidden' });
    expect(authorize(v, req('DELETE', 'Bearer ro'))).toMatchObject({ ok: false, status: 403 });
    expect(authorize(v, req('DELETE', 'Bearer op'))).toEqual({ ok: true, role: 'operator' });
  });
});
