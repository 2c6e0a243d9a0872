/**
 * The SSRF guard's address matcher: parsing, CIDR containment (checked against Node's own net.BlockList),
 * the default refusals, the allow-list, IPv4-mapped IPv6, and the cloud metadata rule. Property-based with a
 * bounded number of runs.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BlockList } from 'node:net';
import {
  AddressPolicy,
  cidrContains,
  classifyAddress,
  formatIp,
  parseCidr,
  parseIp,
  type IpAddress,
} from '../../src/oci/address-policy.ts';
import { ConfigError, loadConfig } from '../../src/config.ts';

const RUNS = { numRuns: 300 };

const v4 = fc.integer({ min: 0, max: 0xffffffff }).map((n): IpAddress => ({ family: 4, value: BigInt(n) }));
/** Eight groups, many of them zero, so that compressed text (`fe80::1`, `::ffff:a.b.c.d`) is common. */
const v6 = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0xffff), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 })
  .map((groups): IpAddress => ({ family: 6, value: groups.reduce((v, g) => (v << 16n) | BigInt(g), 0n) }));
const v4Text = v4.map(formatIp);

/** An address inside `cidr` text, chosen by `n`. */
function inside(cidr: string, n: bigint): string {
  const c = parseCidr(cidr);
  const hostBits = BigInt((c.family === 4 ? 32 : 128) - c.prefix);
  const host = hostBits === 0n ? 0n : n % (1n << hostBits);
  return formatIp({ family: c.family, value: c.base | host });
}

const anyHost = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });

describe('parsing', () => {
  it('IPv4 and IPv6 text round-trips, compressed or not', () => {
    fc.assert(fc.property(v4, (ip) => void expect(parseIp(formatIp(ip))).toEqual(ip)), RUNS);
    fc.assert(fc.property(v6, (ip) => void expect(parseIp(formatIp(ip))).toEqual(ip)), RUNS);
    fc.assert(
      fc.property(v6, (ip) => void expect(parseIp(new URL(`http://[${formatIp(ip)}]/`).hostname.slice(1, -1))).toEqual(ip)),
      RUNS,
    );
    expect(parseIp('::ffff:10.0.0.1')).toEqual({ family: 6, value: 0xffff0a000001n });
    expect(parseIp('fe80::1%eth0')).toEqual({ family: 6, value: 0xfe80n << 112n | 1n });
    for (const bad of ['', '10.0.0', '10.0.0.256', 'example.com', '1::2::3', ':::']) expect(parseIp(bad)).toBeUndefined();
  });

  it('CIDRs: canonical text, host bits cleared, bad ones refused with a reason', () => {
    expect(parseCidr('10.1.2.3/8').text).toBe('10.0.0.0/8');
    expect(parseCidr('127.0.0.0/8').text).toBe('127.0.0.0/8');
    expect(parseCidr('::1/128').text).toBe('::1/128');
    expect(parseCidr('FD00:EC2::254').text).toBe('fd00:ec2::254/128');
    expect(parseCidr('192.168.1.1').text).toBe('192.168.1.1/32');
    expect(() => parseCidr('10.0.0.0/33')).toThrow(/prefix length must be 0..32/);
    expect(() => parseCidr('::/129')).toThrow(/0..128/);
    expect(() => parseCidr('intranet')).toThrow(/not a CIDR/);
    expect(() => parseCidr('10.0.0.0/-1')).toThrow(/prefix/);
  });
});

describe('CIDR containment', () => {
  it('agrees with net.BlockList for IPv4 and IPv6', () => {
    const check = (family: 4 | 6) =>
      fc.property(family === 4 ? v4 : v6, family === 4 ? v4 : v6, fc.integer({ min: 0, max: family === 4 ? 32 : 128 }), (net, ip, prefix) => {
        const cidr = parseCidr(`${formatIp(net)}/${prefix}`);
        const list = new BlockList();
        const type = family === 4 ? 'ipv4' : 'ipv6';
        list.addSubnet(formatIp({ family, value: cidr.base }), prefix, type);
        expect(cidrContains(cidr, ip)).toBe(list.check(formatIp(ip), type));
      });
    fc.assert(check(4), RUNS);
    fc.assert(check(6), RUNS);
  });

  it('an address always lies in its own /n for every n, and never in the other family', () => {
    fc.assert(
      fc.property(v4, fc.integer({ min: 0, max: 32 }), (ip, n) => {
        expect(cidrContains(parseCidr(`${formatIp(ip)}/${n}`), ip)).toBe(true);
        expect(cidrContains(parseCidr(`::/${Math.min(n, 128)}`), ip)).toBe(false);
      }),
      RUNS,
    );
  });
});

describe('default refusals', () => {
  const ranges: Array<[string, string]> = [
    ['10.0.0.0/8', 'private'],
    ['172.16.0.0/12', 'private'],
    ['192.168.0.0/16', 'private'],
    ['fc00::/7', 'private'],
    ['127.0.0.0/8', 'loopback'],
    ['::1/128', 'loopback'],
    ['169.254.0.0/16', 'link-local'],
    ['fe80::/10', 'link-local'],
    ['100.64.0.0/10', 'shared (CGNAT)'],
    ['0.0.0.0/8', 'unspecified'],
    ['::/128', 'unspecified'],
    ['224.0.0.0/4', 'multicast'],
    ['ff00::/8', 'multicast'],
  ];
  const metadata = ['169.254.169.254', '169.254.170.2', 'fd00:ec2::254', '100.100.100.200'];

  for (const [range, category] of ranges) {
    it(`${range} is ${category}, refused by default, allowed when listed`, () => {
      fc.assert(
        fc.property(anyHost, (n) => {
          const a = inside(range, n);
          const ip = parseIp(a)!;
          if (metadata.some((m) => parseIp(m)!.value === ip.value && parseIp(m)!.family === ip.family)) return;
          expect(classifyAddress(ip)).toBe(category);
          expect(new AddressPolicy().verdict(a)).toEqual({ allowed: false, category });
          expect(new AddressPolicy([range]).verdict(a)).toEqual({ allowed: true });
          // A neighbouring allow entry that does not contain the address changes nothing.
          expect(new AddressPolicy(['8.8.8.0/24', '2001:4860::/32']).verdict(a).allowed).toBe(false);
        }),
        { numRuns: 60 },
      );
    });
  }

  it('IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry', () => {
    fc.assert(
      fc.property(v4Text, fc.subarray(['10.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '8.0.0.0/8', '169.254.169.254/32']), (a, allow) => {
        const mapped = `::ffff:${a}`;
        expect(classifyAddress(parseIp(mapped)!)).toBe(classifyAddress(parseIp(a)!));
        const policy = new AddressPolicy(allow);
        expect(policy.verdict(mapped)).toEqual(policy.verdict(a));
      }),
      RUNS,
    );
    expect(new AddressPolicy().verdict('::ffff:10.0.0.1')).toEqual({ allowed: false, category: 'private' });
    expect(new AddressPolicy().verdict('::ffff:7f00:1')).toEqual({ allowed: false, category: 'loopback' });
    // NAT64 and 6to4 carry an IPv4 address too.
    expect(new AddressPolicy().verdict('64:ff9b::a9fe:a9fe')).toEqual({ allowed: false, category: 'a cloud metadata endpoint' });
    expect(new AddressPolicy().verdict('2002:c0a8:101::1')).toEqual({ allowed: false, category: 'private' });
  });

  it('public addresses pass', () => {
    for (const a of ['8.8.8.8', '1.1.1.1', '151.101.1.69', '2606:4700:4700::1111', '2001:4860:4860::8888', '::ffff:8.8.8.8']) {
      expect(new AddressPolicy().verdict(a)).toEqual({ allowed: true });
    }
  });

  it('cloud metadata endpoints need an exact entry: a broad allow-list never exposes them', () => {
    for (const m of metadata) {
      const host = m.includes(':') ? `${m}/128` : `${m}/32`;
      expect(new AddressPolicy().verdict(m)).toEqual({ allowed: false, category: 'a cloud metadata endpoint' });
      expect(new AddressPolicy(['0.0.0.0/0', '::/0', '169.254.0.0/16', 'fc00::/7', '100.64.0.0/10']).verdict(m).allowed).toBe(false);
      expect(new AddressPolicy([host]).verdict(m)).toEqual({ allowed: true });
    }
    expect(new AddressPolicy(['169.254.169.254/32']).verdict('::ffff:169.254.169.254')).toEqual({ allowed: true });
  });

  it('the error is permanent and says what to set', () => {
    const policy = new AddressPolicy();
    expect(() => policy.check('10.1.2.3', 'x')).toThrow('source address 10.1.2.3 (from host x) is private; allow it with SOURCE_ALLOW_CIDRS');
    try {
      policy.check('169.254.169.254', 'metadata.google.internal');
      expect.unreachable();
    } catch (e) {
      expect(e).toMatchObject({ name: 'OciError', errorClass: 'permanent', reason: 'SOURCE_ADDRESS_REFUSED' });
      expect((e as Error).message).toBe(
        'source address 169.254.169.254 (from host metadata.google.internal) is a cloud metadata endpoint; allow it with ' +
          'SOURCE_ALLOW_CIDRS (only an exact entry, 169.254.169.254/32, does)',
      );
    }
    expect(() => policy.check('127.0.0.1')).toThrow(/^source address 127.0.0.1 is loopback;/);
    expect(() => new AddressPolicy('127.0.0.0/8, ::1/128').check('::1', 'localhost')).not.toThrow();
  });
});

describe('configuration', () => {
  it('SOURCE_ALLOW_CIDRS is a validated comma-separated list; SHUTDOWN_DEADLINE a duration', () => {
    const c = loadConfig({ SOURCE_ALLOW_CIDRS: '127.0.0.1/8, ::1/128,,10.20.0.0/16', SHUTDOWN_DEADLINE: '3s' });
    expect(c.sourceAllowCidrs).toEqual(['127.0.0.0/8', '::1/128', '10.20.0.0/16']);
    expect(c.shutdownDeadline).toBe(3000);
    const d = loadConfig({});
    expect(d.sourceAllowCidrs).toEqual([]);
    expect(d.shutdownDeadline).toBe(25_000);
    expect(() => loadConfig({ SOURCE_ALLOW_CIDRS: '10.0.0.0/8,intranet' })).toThrow(ConfigError);
    expect(() => loadConfig({ SOURCE_ALLOW_CIDRS: '10.0.0.0/40' })).toThrow(/SOURCE_ALLOW_CIDRS: "10.0.0.0\/40": the prefix length/);
  });
});
