import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { apiHost, formatReference, parseReference, OciError } from '../../src/oci/index.ts';

const D = `sha256:${'a'.repeat(64)}`;

describe('parseReference', () => {
  it.each([
    ['alpine', { registry: 'docker.io', repository: 'library/alpine', tag: 'latest', digest: undefined }],
    ['docker.io/alpine:3.20', { registry: 'docker.io', repository: 'library/alpine', tag: '3.20', digest: undefined }],
    ['index.docker.io/user/img', { registry: 'docker.io', repository: 'user/img', tag: 'latest', digest: undefined }],
    ['user/img:v1', { registry: 'docker.io', repository: 'user/img', tag: 'v1', digest: undefined }],
    ['quay.io/ns/img', { registry: 'quay.io', repository: 'ns/img', tag: 'latest', digest: undefined }],
    ['127.0.0.1:5000/cvi/ubuntu:uid-1', { registry: '127.0.0.1:5000', repository: 'cvi/ubuntu', tag: 'uid-1', digest: undefined }],
    ['localhost/a/b', { registry: 'localhost', repository: 'a/b', tag: 'latest', digest: undefined }],
    [`r.example/a@${D}`, { registry: 'r.example', repository: 'a', tag: undefined, digest: D }],
    [`r.example:443/a:t@${D}`, { registry: 'r.example:443', repository: 'a', tag: 't', digest: D }],
    ['[::1]:5000/x/y:z', { registry: '[::1]:5000', repository: 'x/y', tag: 'z', digest: undefined }],
    ['docker://r.example/a/b:c', { registry: 'r.example', repository: 'a/b', tag: 'c', digest: undefined }],
  ])('%s', (input, want) => {
    expect(parseReference(input)).toEqual(want);
  });

  it.each([
    ['', /empty/],
    ['Ubuntu', /repository "library\/Ubuntu" must be lowercase/],
    ['r.example/a:b:c', /repository/],
    ['r.example/a@sha256:abc', /digest "sha256:abc"/],
    ['r.example/a:-bad', /tag "-bad"/],
    ['r.example/a b', /whitespace/],
    ['r.example/a//b', /repository/],
  ])('rejects %j naming the problem', (input, msg) => {
    const e = (() => {
      try {
        parseReference(input);
      } catch (err) {
        return err;
      }
      return undefined;
    })();
    expect(e).toBeInstanceOf(OciError);
    expect((e as OciError).errorClass).toBe('permanent');
    expect((e as OciError).message).toMatch(msg);
  });

  it('maps Docker Hub to its API host', () => {
    expect(apiHost('docker.io')).toBe('registry-1.docker.io');
    expect(apiHost('quay.io')).toBe('quay.io');
  });

  it('round-trips any valid reference (property)', () => {
    const comp = fc.stringMatching(/^[a-z0-9]{1,5}([._-][a-z0-9]{1,5})?$/);
    const tag = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,20}$/);
    fc.assert(
      fc.property(
        fc.constantFrom('r.example', '127.0.0.1:5000', 'localhost:1'),
        fc.array(comp, { minLength: 1, maxLength: 4 }),
        fc.option(tag),
        (reg, parts, t) => {
          const input = `${reg}/${parts.join('/')}${t === null ? '' : `:${t}`}`;
          const ref = parseReference(input);
          expect(parseReference(formatReference(ref))).toEqual(ref);
          expect(ref.repository).toBe(parts.join('/'));
        },
      ),
      { numRuns: 300 },
    );
  });

  it('never throws anything but OciError on arbitrary input (property)', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        try {
          parseReference(s);
        } catch (e) {
          expect(e).toBeInstanceOf(OciError);
        }
      }),
      { numRuns: 500 },
    );
  });
});
