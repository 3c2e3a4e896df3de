// The client address of the per-address limits, read as an attacker would try
// to choose it: X-Forwarded-For padded, malformed, or spoofed on the left.
import { describe, expect, it } from "vitest";
import { addressKey, clientAddress, parseAddress, parseTrustedProxies } from "../src/lib/address.ts";
import { ConfigError } from "../src/config/env.ts";
import { loadConfig } from "../src/config/config.ts";

const trusted = parseTrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]).proxies;

describe("the client address", () => {
  it("is the peer when the peer is not a trusted proxy, whatever the header says", () => {
    expect(clientAddress("203.0.113.9", "1.2.3.4", trusted)).toBe("203.0.113.9");
    expect(clientAddress("::ffff:203.0.113.9", "1.2.3.4", trusted)).toBe("203.0.113.9");
  });

  it("walks from the right through trusted proxies only, to the first address that is not one", () => {
    expect(clientAddress("127.0.0.1", "198.51.100.7", trusted)).toBe("198.51.100.7");
    expect(clientAddress("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3", trusted)).toBe("198.51.100.7");
    expect(clientAddress("127.0.0.1", "[2001:db8::1]:443, 10.0.0.9:8080", trusted)).toBe("2001:db8::1");
  });

  it("is never an address the client wrote, however the header is padded", () => {
    // Before: the header was cut to its first 512 characters and the rightmost hop of what was left was taken.
    for (const pad of [600, 5_000, 60_000]) {
      const spoofed = `${"6.6.6.6, ".repeat(pad / 9)}7.7.7.7`;
      expect(clientAddress("127.0.0.1", `${spoofed}, 198.51.100.7`, trusted), `${pad}`).toBe("198.51.100.7");
    }
    // Trusted hops all the way, more of them than any real chain: the nearest proxy stands for the client.
    expect(clientAddress("127.0.0.1", `6.6.6.6, ${"10.0.0.1, ".repeat(50)}10.0.0.2`, trusted)).toMatch(/^10\./);
  });

  it("stops at a hop that is not an IP address, at the nearest trusted proxy", () => {
    expect(clientAddress("127.0.0.1", "6.6.6.6, not-an-ip", trusted)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "6.6.6.6, 10.0.0.4, 999.1.1.1", trusted)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "6.6.6.6, unknown, 10.0.0.4", trusted)).toBe("10.0.0.4");
    expect(clientAddress("127.0.0.1", ",,,", trusted)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "", trusted)).toBe("127.0.0.1");
  });

  it("reads addresses in their usual spellings, and nothing else", () => {
    expect(parseAddress(" 1.2.3.4 ")).toBe("1.2.3.4");
    expect(parseAddress("1.2.3.4:5678")).toBe("1.2.3.4");
    expect(parseAddress("[2001:DB8::1]:80")).toBe("2001:db8::1");
    expect(parseAddress("::FFFF:1.2.3.4")).toBe("1.2.3.4");
    for (const bad of ["", "1.2.3", "1.2.3.4.5", "example.com", "1.2.3.4, 5.6.7.8", "[1.2.3.4]x", "256.1.1.1"]) expect(parseAddress(bad), bad).toBe("");
  });
});

describe("the key of an address", () => {
  it("is an IPv4 address as it is, and an IPv6 address's /64", () => {
    expect(addressKey("198.51.100.7")).toBe("198.51.100.7");
    expect(addressKey("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:db8:1:2::ffff")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:0db8:0001:0002:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
    expect(addressKey("64:ff9b::192.0.2.33")).toBe("64:ff9b:0:0::/64");
  });
});

describe("TRUSTED_PROXIES", () => {
  it("takes addresses and CIDR ranges, and refuses anything else naming the entry", () => {
    expect(loadConfig({ TRUSTED_PROXIES: "10.0.0.0/8, ::1, 192.168.1.7" }).trustedProxies).toHaveLength(3);
    try {
      loadConfig({ TRUSTED_PROXIES: "10.0.0.0/33,proxy.internal" });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems.join("\n")).toMatch(/TRUSTED_PROXIES: "10.0.0.0\/33", "proxy.internal"/);
    }
  });
});
