import { isIPv4, isIPv6 } from 'node:net';
import { ipv4ToInt, ipv6ToBytes } from '../ip.js';

/**
 * What kind of address an IP is, for the egress proxy: only `public` ones
 * are reached unless an explicit `--allow-host` names the literal address.
 */
export type AddressClass = 'public' | 'loopback' | 'unspecified' | 'link-local' | 'private' | 'multicast' | 'reserved';

/** An IP in canonical text: IPv4 dotted quad, IPv6 as Node prints it; an IPv4-mapped IPv6 address becomes its IPv4. */
interface CanonicalIp {
  address: string;
  family: 4 | 6;
}

interface V4Range {
  base: number;
  bits: number;
  cls: AddressClass;
}

const v4 = (text: string, bits: number, cls: AddressClass): V4Range => ({ base: ipv4ToInt(text)!, bits, cls });

/** Most specific first is not needed: the ranges do not overlap. */
const V4_RANGES: readonly V4Range[] = [
  v4('0.0.0.0', 8, 'unspecified'), // "this network": 0.0.0.0 reaches the host itself on Linux
  v4('10.0.0.0', 8, 'private'),
  v4('100.64.0.0', 10, 'private'), // carrier-grade NAT
  v4('127.0.0.0', 8, 'loopback'),
  v4('169.254.0.0', 16, 'link-local'), // includes the cloud metadata service 169.254.169.254
  v4('172.16.0.0', 12, 'private'),
  v4('192.0.0.0', 24, 'reserved'), // IETF protocol assignments (NAT64 discovery, DS-Lite)
  v4('192.168.0.0', 16, 'private'),
  v4('198.18.0.0', 15, 'reserved'), // benchmarking networks
  v4('224.0.0.0', 4, 'multicast'),
  v4('240.0.0.0', 4, 'reserved'), // includes the broadcast address
];

function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function classifyIpv4(n: number): AddressClass {
  for (const r of V4_RANGES) {
    const mask = r.bits === 0 ? 0 : (0xffffffff << (32 - r.bits)) >>> 0;
    if (((n & mask) >>> 0) === r.base) return r.cls;
  }
  return 'public';
}

/** IPv6 text (Node's grammar, no zone id) to 16 bytes; null when it is not one. */
function bytesToIpv6(b: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // Longest run of zero words (length >= 2) becomes "::".
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return words.join(':');
  return `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`;
}

const prefixIs = (b: Uint8Array, prefix: number[], bits: number): boolean => {
  for (let i = 0; i < bits; i++) {
    const byte = i >> 3;
    const bit = 7 - (i & 7);
    if (((b[byte]! >> bit) & 1) !== (((prefix[byte] ?? 0) >> bit) & 1)) return false;
  }
  return true;
};

const embeddedV4 = (b: Uint8Array, at: number): number => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;

function classifyIpv6(b: Uint8Array): AddressClass {
  const allZero = (from: number, to: number): boolean => b.slice(from, to).every((x) => x === 0);
  if (allZero(0, 16)) return 'unspecified';
  if (allZero(0, 15) && b[15] === 1) return 'loopback';
  // ::ffff:a.b.c.d (IPv4-mapped): the IPv4 address is what a dual-stack socket reaches.
  if (allZero(0, 10) && b[10] === 0xff && b[11] === 0xff) return classifyIpv4(embeddedV4(b, 12));
  // ::ffff:0:a.b.c.d (IPv4-translated, SIIT's ::ffff:0:0:0/96): a translator reaches the IPv4 address, so it is
  // classed as that address (::ffff:0:7f00:1 is loopback, not public).
  if (allZero(0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) return classifyIpv4(embeddedV4(b, 12));
  // ::a.b.c.d (deprecated IPv4-compatible) and the rest of ::/96.
  if (allZero(0, 12)) return 'reserved';
  // NAT64 (64:ff9b::/96) carries an IPv4 address the translator will reach.
  if (prefixIs(b, [0x00, 0x64, 0xff, 0x9b], 96)) return classifyIpv4(embeddedV4(b, 12));
  if (prefixIs(b, [0x00, 0x64, 0xff, 0x9b, 0x00, 0x01], 48)) return 'private'; // local-use NAT64
  if (prefixIs(b, [0x01, 0x00], 64) && allZero(2, 8)) return 'reserved'; // discard-only
  if (prefixIs(b, [0x20, 0x02], 16)) {
    // 6to4: the relay router is the embedded IPv4 address.
    return classifyIpv4(embeddedV4(b, 2));
  }
  if (prefixIs(b, [0x20, 0x01, 0x00, 0x00], 32)) return 'reserved'; // Teredo (tunnels to an embedded IPv4)
  if (prefixIs(b, [0x20, 0x01, 0x0d, 0xb8], 32)) return 'reserved'; // documentation
  if (prefixIs(b, [0xfc], 7)) return 'private'; // unique-local fc00::/7
  if (prefixIs(b, [0xfe, 0x80], 10)) return 'link-local';
  if (prefixIs(b, [0xfe, 0xc0], 10)) return 'private'; // deprecated site-local
  if (b[0] === 0xff) return 'multicast';
  return 'public';
}

/**
 * An IP literal in canonical form: dotted-quad IPv4, or IPv6 (brackets
 * optional); an IPv4-mapped IPv6 address becomes its IPv4 address. null
 * for anything else, including zone ids and the numeric forms of
 * `inet_aton` (see isNumericHostForm).
 */
export function canonicalIp(text: string): CanonicalIp | null {
  const bare = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (bare !== text && !bare.includes(':')) return null;
  const n = ipv4ToInt(bare);
  if (n !== null) return { address: intToIpv4(n), family: 4 };
  const b = ipv6ToBytes(bare);
  if (b === null) return null;
  if (b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return { address: intToIpv4(embeddedV4(b, 12)), family: 4 };
  return { address: bytesToIpv6(b), family: 6 };
}

/** The class of a canonical (or any valid) IP address; `reserved` for text that is not one. */
export function classifyAddress(ip: string): AddressClass {
  const c = canonicalIp(ip);
  if (c === null) return 'reserved';
  if (c.family === 4) return classifyIpv4(ipv4ToInt(c.address)!);
  return classifyIpv6(ipv6ToBytes(c.address)!);
}

/**
 * Host text that the C library's `inet_aton` (and browsers) would read as
 * an IPv4 address although it is not a dotted quad: `2130706433`,
 * `0x7f000001`, `0177.0.0.1`, `127.1`, `127.0.0.1.` or a name whose last
 * label is numeric. Refused outright: it would bypass name matching.
 */
export function isNumericHostForm(host: string): boolean {
  const h = host.endsWith('.') ? host.slice(0, -1) : host;
  const labels = h.split('.');
  const last = labels[labels.length - 1] ?? '';
  return /^(?:0x[0-9a-f]*|[0-9]+)$/i.test(last);
}
