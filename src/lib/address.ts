// Who is calling, for the per-address limits: the socket's peer, or, when that
// peer is a trusted proxy, the address the proxies recorded in X-Forwarded-For.
// Each proxy appends the address it saw, so the header is read from the right:
// hop by hop through trusted proxies only, to the first address that is not
// one. Everything to the left of it was written by the client and is never
// believed; a hop that is not an IP address, or more hops than any real chain
// has, ends the walk at the nearest trusted proxy.
import { BlockList, isIPv4, isIPv6 } from "node:net";

/** Hops read from the right at most; real proxy chains have a few. */
const MAX_HOPS = 16;

export interface TrustedProxies {
  has(address: string): boolean;
}

/**
 * TRUSTED_PROXIES entries: addresses (`10.0.0.7`, `::1`) or CIDR ranges
 * (`10.0.0.0/8`, `fd00::/8`). Answers the list, or the entries it could not read.
 */
export function parseTrustedProxies(entries: readonly string[]): { proxies: TrustedProxies; invalid: string[] } {
  const list = new BlockList();
  const invalid: string[] = [];
  for (const entry of entries) {
    const [address, prefix, extra] = entry.split("/");
    const family = isIPv4(address) ? "ipv4" : isIPv6(address) ? "ipv6" : undefined;
    const bits = family === "ipv4" ? 32 : 128;
    if (!family || extra !== undefined || (prefix !== undefined && !(/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits))) {
      invalid.push(entry);
      continue;
    }
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return {
    proxies: { has: (address) => (isIPv4(address) ? list.check(address, "ipv4") : isIPv6(address) && list.check(address, "ipv6")) },
    invalid,
  };
}

/**
 * An address as written in a socket or a header hop, in canonical form:
 * IPv4-mapped IPv6 as IPv4, a bracketed IPv6 or an IPv4 with a port without the
 * port. Anything that is not an IP address is "".
 */
export function parseAddress(text: string): string {
  let a = text.trim();
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(a);
  if (bracketed) a = bracketed[1];
  else if (/^[\d.]+:\d{1,5}$/.test(a)) a = a.slice(0, a.indexOf(":"));
  a = a.toLowerCase();
  if (a.startsWith("::ffff:") && isIPv4(a.slice(7))) a = a.slice(7);
  return isIPv4(a) || isIPv6(a) ? a : "";
}

/** The client's address; `peer` is the socket's, `forwardedFor` the X-Forwarded-For header as received. */
export function clientAddress(peer: string, forwardedFor: string, trusted: TrustedProxies): string {
  let address = parseAddress(peer);
  let end = forwardedFor.length;
  for (let hops = 0; address && trusted.has(address) && end > 0 && hops < MAX_HOPS; hops++) {
    const start = forwardedFor.lastIndexOf(",", end - 1);
    const hop = parseAddress(forwardedFor.slice(start + 1, end));
    if (!hop) break;
    address = hop;
    end = start;
  }
  return address;
}

/**
 * What the per-address limits count: an IPv4 address, or the /64 of an IPv6
 * address (one host usually holds a whole /64, and may pick any address in it).
 */
export function addressKey(address: string): string {
  if (!isIPv6(address)) return address;
  return `${expandIPv6(address).slice(0, 4).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, as lower-case hex without leading zeros. */
function expandIPv6(address: string): string[] {
  let text = address.toLowerCase().split("%")[0];
  // An embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) as two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4[1].split(".").map(Number);
    text = text.slice(0, -v4[1].length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split("::");
  const left = head ? head.split(":") : [];
  const right = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const zeros = tail === undefined ? [] : Array(8 - left.length - right.length).fill("0");
  return [...left, ...zeros, ...right].map((g) => Number.parseInt(g, 16).toString(16));
}
