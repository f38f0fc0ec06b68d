import { isIPv4, isIPv6 } from 'node:net';

/** Dotted-quad IPv4 (four decimal parts, no leading zeros) to a 32-bit number; null for anything else. */
export function ipv4ToInt(text: string): number | null {
  if (!isIPv4(text)) return null;
  const parts = text.split('.');
  if (parts.some((p) => p.length > 1 && p.startsWith('0'))) return null;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

/** An IPv6 address in text (`::` and a trailing dotted quad allowed, no zone) as its 16 bytes; null for anything else. */
export function ipv6ToBytes(text: string): Uint8Array | null {
  if (!isIPv6(text) || text.includes('%')) return null;
  const out = new Uint8Array(16);
  // A trailing dotted quad stands for the last two words.
  let s = text;
  const dotted = /:(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const n = ipv4ToInt(dotted[1]!);
    if (n === null) return null;
    s = `${s.slice(0, dotted.index)}:${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const head = parse(halves[0]!);
  const rest = halves.length === 2 ? parse(halves[1]!) : [];
  const total = head.length + rest.length;
  if (halves.length === 1 && total !== 8) return null;
  if (total > 8) return null;
  const words = [...head, ...new Array<number>(8 - total).fill(0), ...rest];
  if (words.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffff)) return null;
  words.forEach((w, i) => {
    out[i * 2] = w >>> 8;
    out[i * 2 + 1] = w & 255;
  });
  return out;
}
