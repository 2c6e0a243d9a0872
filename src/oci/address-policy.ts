/**
 * Which network addresses a source may be fetched from (SSRF guard). Sources are URLs and registries chosen by
 * whoever applies an image; the importer runs inside the cluster, next to DVCR, the API server and the cloud's
 * metadata service. So by default a source may only be a public address: loopback, link-local, private (RFC 1918,
 * ULA), shared (CGNAT), unspecified, multicast, broadcast, reserved ranges and cloud metadata endpoints are
 * refused, unless an allow-list of CIDRs covers them (a metadata endpoint only by an exact `/32` or `/128` entry,
 * so a broad `0.0.0.0/0` never exposes it).
 *
 * The check runs where the connection is made: `guardedConnector` gives undici a connector whose DNS lookup
 * refuses before connecting, so the address checked is the address connected to (no separate resolution that
 * DNS rebinding could race), and every host reached (redirects, token realms, blob mirrors) goes through it.
 * IPv4-mapped and NAT64/6to4 IPv6 addresses are judged by the IPv4 address they carry.
 */
import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { buildConnector } from 'undici';
import { OciError } from './errors.ts';

/** An IP address as a number: 32 bits for IPv4, 128 for IPv6. */
export interface IpAddress {
  family: 4 | 6;
  value: bigint;
}

/** A parsed CIDR block (`10.0.0.0/8`, `fd00::/8`); host bits are cleared. */
export interface Cidr {
  family: 4 | 6;
  base: bigint;
  prefix: number;
  /** Canonical text, e.g. `10.0.0.0/8`. */
  text: string;
}

export type AddressCategory =
  | 'loopback'
  | 'link-local'
  | 'private'
  | 'shared (CGNAT)'
  | 'unspecified'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'a cloud metadata endpoint';

const BITS = { 4: 32, 6: 128 } as const;

/** Parses an IPv4 or IPv6 address (brackets and an IPv6 zone `%eth0` are accepted and dropped). */
export function parseIp(text: string): IpAddress | undefined {
  let t = text.trim();
  if (t.startsWith('[') && t.endsWith(']')) t = t.slice(1, -1);
  const zone = t.indexOf('%');
  if (zone >= 0) t = t.slice(0, zone);
  const family = isIP(t);
  if (family === 4) return { family: 4, value: parseV4(t) };
  if (family === 6) return { family: 6, value: parseV6(t) };
  return undefined;
}

function parseV4(t: string): bigint {
  let v = 0n;
  for (const part of t.split('.')) v = (v << 8n) | BigInt(Number(part));
  return v;
}

function parseV6(t: string): bigint {
  // isIP has validated the syntax; a dotted quad may end it.
  let groups: number[] = [];
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(t);
  let body = t;
  let tail: number[] = [];
  if (dotted?.[1]) {
    const v4 = Number(parseV4(dotted[1]));
    tail = [v4 >>> 16, v4 & 0xffff];
    body = t.slice(0, -dotted[1].length);
    if (body.endsWith(':') && !body.endsWith('::')) body = body.slice(0, -1);
  }
  const hex = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const gap = body.indexOf('::');
  if (gap >= 0) {
    const head = hex(body.slice(0, gap));
    const rest = [...hex(body.slice(gap + 2)), ...tail];
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  } else {
    groups = [...hex(body), ...tail];
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

/** Formats an address canonically (IPv6 without zero compression: for messages and tests only). */
export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) return [24n, 16n, 8n, 0n].map((s) => String((ip.value >> s) & 0xffn)).join('.');
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((ip.value >> s) & 0xffffn).toString(16));
  return groups.join(':');
}

function mask(family: 4 | 6, prefix: number): bigint {
  const bits = BigInt(BITS[family]);
  return prefix === 0 ? 0n : ((1n << BigInt(prefix)) - 1n) << (bits - BigInt(prefix));
}

/** Parses `addr/prefix` (a bare address means the one address). Throws an Error saying what is wrong. */
export function parseCidr(text: string): Cidr {
  const t = text.trim();
  const slash = t.lastIndexOf('/');
  const addrText = slash >= 0 ? t.slice(0, slash) : t;
  const ip = parseIp(addrText);
  if (!ip) throw new Error(`"${text}" is not a CIDR like 10.0.0.0/8 or fd00::/8`);
  let prefix: number = BITS[ip.family];
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > BITS[ip.family]) {
      throw new Error(`"${text}": the prefix length must be 0..${BITS[ip.family]}`);
    }
    prefix = Number(p);
  }
  const base = ip.value & mask(ip.family, prefix);
  return { family: ip.family, base, prefix, text: `${formatCompact({ family: ip.family, value: base })}/${prefix}` };
}

/** Short text of an address for CIDR labels (IPv6 via the URL parser's compression). */
function formatCompact(ip: IpAddress): string {
  if (ip.family === 4) return formatIp(ip);
  return new URL(`http://[${formatIp(ip)}]/`).hostname.slice(1, -1);
}

/** Parses a comma-separated CIDR list (empty entries ignored). Throws on the first bad entry. */
export function parseCidrList(text: string | readonly string[]): Cidr[] {
  const items = typeof text === 'string' ? text.split(',') : text;
  return items.map((s) => s.trim()).filter((s) => s !== '').map(parseCidr);
}

export function cidrContains(cidr: Cidr, ip: IpAddress): boolean {
  return cidr.family === ip.family && (ip.value & mask(ip.family, cidr.prefix)) === cidr.base;
}

/** The IPv4 address an IPv6 address carries (mapped, compatible, NAT64 well-known prefix, 6to4), if any. */
export function embeddedV4(ip: IpAddress): IpAddress | undefined {
  if (ip.family !== 6) return undefined;
  const v = ip.value;
  const low32 = v & 0xffffffffn;
  if (v >> 32n === 0xffffn) return { family: 4, value: low32 }; // ::ffff:a.b.c.d
  if (v >> 32n === 0n && v > 1n) return { family: 4, value: low32 }; // ::a.b.c.d (deprecated)
  if (v >> 32n === 0x0064ff9b0000000000000000n) return { family: 4, value: low32 }; // 64:ff9b::/96
  if (v >> 112n === 0x2002n) return { family: 4, value: (v >> 80n) & 0xffffffffn }; // 2002:AABB:CCDD::/48
  return undefined;
}

const c = (text: string): Cidr => parseCidr(text);

/** Single addresses of metadata services: AWS/GCP/Azure/OpenStack, AWS ECS, AWS IPv6, Alibaba, Oracle. */
const METADATA: readonly Cidr[] = [
  c('169.254.169.254/32'),
  c('169.254.170.2/32'),
  c('fd00:ec2::254/128'),
  c('100.100.100.200/32'),
  c('192.0.0.192/32'),
];

/** Special ranges, most specific first. */
const SPECIAL: ReadonlyArray<[Cidr, AddressCategory]> = [
  [c('255.255.255.255/32'), 'broadcast'],
  [c('0.0.0.0/8'), 'unspecified'],
  [c('10.0.0.0/8'), 'private'],
  [c('100.64.0.0/10'), 'shared (CGNAT)'],
  [c('127.0.0.0/8'), 'loopback'],
  [c('169.254.0.0/16'), 'link-local'],
  [c('172.16.0.0/12'), 'private'],
  [c('192.0.0.0/24'), 'reserved'],
  [c('192.0.2.0/24'), 'reserved'],
  [c('192.168.0.0/16'), 'private'],
  [c('198.18.0.0/15'), 'reserved'],
  [c('198.51.100.0/24'), 'reserved'],
  [c('203.0.113.0/24'), 'reserved'],
  [c('224.0.0.0/4'), 'multicast'],
  [c('240.0.0.0/4'), 'reserved'],
  [c('::/128'), 'unspecified'],
  [c('::1/128'), 'loopback'],
  [c('64:ff9b:1::/48'), 'private'],
  [c('100::/64'), 'reserved'],
  [c('2001:db8::/32'), 'reserved'],
  [c('fc00::/7'), 'private'],
  [c('fe80::/10'), 'link-local'],
  [c('fec0::/10'), 'private'],
  [c('ff00::/8'), 'multicast'],
];

/** What kind of non-public address this is; undefined for a public (globally routable) one. */
export function classifyAddress(ip: IpAddress): AddressCategory | undefined {
  if (METADATA.some((m) => cidrContains(m, ip))) return 'a cloud metadata endpoint';
  const v4 = embeddedV4(ip);
  if (v4) return classifyAddress(v4);
  return SPECIAL.find(([cidr]) => cidrContains(cidr, ip))?.[1];
}

export type AddressVerdict = { allowed: true } | { allowed: false; category: AddressCategory };

/** The allow-list and the verdict for one address. */
export class AddressPolicy {
  readonly allow: readonly Cidr[];

  /** `allow`: CIDRs (text as in SOURCE_ALLOW_CIDRS, or parsed) that may be reached although not public. */
  constructor(allow: string | ReadonlyArray<string | Cidr> = []) {
    const items = typeof allow === 'string' ? allow.split(',') : allow;
    this.allow = items.flatMap((a) => (typeof a !== 'string' ? [a] : a.trim() === '' ? [] : [parseCidr(a)]));
  }

  verdict(address: string | IpAddress): AddressVerdict {
    const ip = typeof address === 'string' ? parseIp(address) : address;
    if (!ip) return { allowed: false, category: 'reserved' };
    const category = classifyAddress(ip);
    if (category === undefined) return { allowed: true };
    const forms = [ip, embeddedV4(ip)].filter((x): x is IpAddress => x !== undefined);
    const allowed =
      category === 'a cloud metadata endpoint'
        ? this.allow.some((a) => a.prefix === BITS[a.family] && forms.some((f) => cidrContains(a, f)))
        : this.allow.some((a) => forms.some((f) => cidrContains(a, f)));
    return allowed ? { allowed: true } : { allowed: false, category };
  }

  /** Throws the permanent error for a refused address; `host` is the name that resolved to it, if any. */
  check(address: string, host?: string): void {
    const v = this.verdict(address);
    if (v.allowed) return;
    const how =
      v.category === 'a cloud metadata endpoint'
        ? `allow it with SOURCE_ALLOW_CIDRS (only an exact entry, ${address.includes(':') ? `${address}/128` : `${address}/32`}, does)`
        : 'allow it with SOURCE_ALLOW_CIDRS';
    const from = host !== undefined && host !== address ? ` (from host ${host})` : '';
    throw new OciError(`source address ${address}${from} is ${v.category}; ${how}`, {
      errorClass: 'permanent',
      reason: 'SOURCE_ADDRESS_REFUSED',
    });
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for `net.connect` that resolves with the system resolver and refuses (with the policy's error)
 * when any address the name resolves to is refused: the socket then never connects.
 */
export function guardedLookup(policy: AddressPolicy): (hostname: string, options: LookupOptions, callback: LookupCallback) => void {
  return (hostname, options, callback) => {
    const all = options.all === true;
    dnsLookup(hostname, { ...options, all: true } as LookupAllOptions, (err, addresses) => {
      if (err) return callback(err, all ? [] : '');
      try {
        for (const a of addresses) policy.check(a.address, hostname);
      } catch (e) {
        return callback(e as NodeJS.ErrnoException, all ? [] : '');
      }
      if (all) return callback(null, addresses);
      const first = addresses[0];
      if (!first) return callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), '');
      callback(null, first.address, first.family);
    });
  };
}

/**
 * An undici connector (`new Agent({ connect: guardedConnector(policy, tls) })`) that applies `policy` to every
 * connection: IP-literal hosts before connecting, names through `guardedLookup`.
 */
export function guardedConnector(policy: AddressPolicy, options: buildConnector.BuildOptions = {}): buildConnector.connector {
  const base = buildConnector({ ...options, lookup: guardedLookup(policy) } as buildConnector.BuildOptions);
  return (opts, callback) => {
    const literal = opts.hostname.replace(/^\[|\]$/g, '');
    if (parseIp(literal)) {
      try {
        policy.check(literal);
      } catch (e) {
        queueMicrotask(() => callback(e as Error, null));
        return;
      }
    }
    base(opts, callback);
  };
}
