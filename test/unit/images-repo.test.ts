import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  MAX_REPOSITORY_NAME_LENGTH,
  dvcrImageReference,
  dvcrRepository,
  repositoryPath,
} from '../../src/images/index.ts';
import { isValidRepository, parseReference } from '../../src/oci/reference.ts';

const UID = '6f1c6c1e-0000-4000-8000-000000000001';

describe('DVCR repository naming', () => {
  it('cvi/<name> and vi/<namespace>/<name>, tag = uid', () => {
    expect(repositoryPath({ kind: 'ClusterVirtualImage', name: 'ubuntu-22-04' })).toBe('cvi/ubuntu-22-04');
    expect(repositoryPath({ kind: 'VirtualImage', namespace: 'team-a', name: 'ubuntu' })).toBe('vi/team-a/ubuntu');
    expect(dvcrImageReference('dvcr.example', { kind: 'ClusterVirtualImage', name: 'ubuntu-22-04' }, UID)).toBe(
      `dvcr.example/cvi/ubuntu-22-04:${UID}`,
    );
    expect(dvcrImageReference('127.0.0.1:5000/', { kind: 'VirtualImage', namespace: 'ns', name: 'x' }, UID)).toBe(
      `127.0.0.1:5000/vi/ns/x:${UID}`,
    );
  });

  it('a VirtualImage needs a namespace', () => {
    expect(() => repositoryPath({ kind: 'VirtualImage', name: 'x' })).toThrow('VirtualImage "x" has no namespace');
  });

  it('exactly 255 characters of host/path is kept whole', () => {
    const host = 'dvcr.example'; // 12
    const name = 'a'.repeat(255 - host.length - 1 - 'cvi/'.length);
    const repo = dvcrRepository(host, { kind: 'ClusterVirtualImage', name });
    expect(repo).toBe(`cvi/${name}`);
    expect(`${host}/${repo}`).toHaveLength(255);
  });

  it('a longer name is cut and suffixed with a short deterministic hash', () => {
    const host = 'dvcr.d8-virtualization.svc.cluster.local:5000';
    const ref = { kind: 'VirtualImage' as const, namespace: 'n'.repeat(63), name: `${'b'.repeat(200)}-tail` };
    const repo = dvcrRepository(host, ref);
    expect(`${host}/${repo}`).toHaveLength(MAX_REPOSITORY_NAME_LENGTH);
    expect(repo).toMatch(new RegExp(`^vi/${'n'.repeat(63)}/b+-[0-9a-f]{8}$`));
    expect(dvcrRepository(host, ref)).toBe(repo);
    expect(isValidRepository(repo)).toBe(true);
    const other = dvcrRepository(host, { ...ref, name: `${'b'.repeat(200)}-tall` });
    expect(other).not.toBe(repo);
    expect(other.slice(0, -8)).toBe(repo.slice(0, -8));
  });

  it('a cut never leaves a separator before the hash', () => {
    const host = 'h';
    const budget = 255 - 2 - 'cvi/'.length - 9; // room for the name part
    const name = `${'a'.repeat(budget - 1)}--${'c'.repeat(20)}`;
    const repo = dvcrRepository(host, { kind: 'ClusterVirtualImage', name });
    expect(repo).toMatch(/^cvi\/a+-[0-9a-f]{8}$/);
  });

  it('a registry that leaves no room is an error, not a silent collision', () => {
    expect(() => dvcrRepository('r'.repeat(250), { kind: 'VirtualImage', namespace: 'ns', name: 'abc'.repeat(10) })).toThrow(
      /too long for DVCR repository/,
    );
  });

  it('property: any valid names give a parseable reference within 255 characters', () => {
    const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
    const name = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$/);
    fc.assert(
      fc.property(
        fc.constantFrom('dvcr.example', '127.0.0.1:5000', 'dvcr.d8-virtualization.svc.cluster.local'),
        label,
        name,
        fc.boolean(),
        (host, ns, n, cluster) => {
          const ref = cluster ? { kind: 'ClusterVirtualImage' as const, name: n } : { kind: 'VirtualImage' as const, namespace: ns, name: n };
          const full = dvcrImageReference(host, ref, UID);
          const parsed = parseReference(full);
          return (
            `${host}/${parsed.repository}`.length <= MAX_REPOSITORY_NAME_LENGTH &&
            parsed.tag === UID &&
            parsed.repository.startsWith(cluster ? 'cvi/' : `vi/${ns}/`)
          );
        },
      ),
    );
  });
});
