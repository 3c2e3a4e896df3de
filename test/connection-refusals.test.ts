// Refused connections (server/admission.ts): each one counted, the log told at most once
// a minute per limit, with how many went unlogged in between. The listener's own tests
// (hostile-connections.test.ts, cluster.test.ts) refuse real connections; this one moves
// the clock past the minute, which they cannot wait for.
import { describe, expect, it } from "vitest";
import net from "node:net";
import { pino } from "pino";
import { parseTrustedProxies } from "../src/lib/address.ts";
import { CountsByKey, CountsInWindow } from "../src/lib/counts.ts";
import { refusalReporter, type RefusalReason } from "../src/server/admission.ts";
import { createListener } from "../src/server/listener.ts";

describe("refused connections", () => {
  it("are each counted, and logged the first time and then once a minute per limit, with the count in between", () => {
    let now = 0;
    const counted: RefusalReason[] = [];
    const lines: { fields: Record<string, unknown>; msg: string }[] = [];
    const refuse = refusalReporter(
      { refused: (reason) => counted.push(reason), maxConnections: 10, maxConnectionsPerAddress: 2, log: { warn: (fields: Record<string, unknown>, msg: string) => lines.push({ fields, msg }) } as never },
      () => now,
    );
    const at = (ms: number, reason: RefusalReason, address: string) => ((now = ms), refuse(reason, address));

    at(0, "max_connections_per_address", "203.0.113.7");
    at(1_000, "max_connections_per_address", "203.0.113.7");
    at(30_000, "max_connections", "198.51.100.1"); // the other limit has a line of its own
    at(59_999, "max_connections_per_address", "203.0.113.8");
    at(60_000, "max_connections_per_address", "203.0.113.9");
    at(60_001, "max_connections_per_address", "203.0.113.9");

    expect(counted).toHaveLength(6);
    expect(lines.map((l) => l.fields)).toEqual([
      { reason: "max_connections_per_address", address: "203.0.113.7", refusedSinceLastLine: 0 },
      { reason: "max_connections", address: "198.51.100.1", refusedSinceLastLine: 0 },
      { reason: "max_connections_per_address", address: "203.0.113.9", refusedSinceLastLine: 2 },
    ]);
    expect(lines[0]!.msg).toMatch(/MAX_CONNECTIONS_PER_ADDRESS \(2\)/);
    expect(lines[1]!.msg).toMatch(/MAX_CONNECTIONS \(10\)/);
  });

  it("count what each key holds, each release once, and forget a key that holds nothing (one per client address seen otherwise)", () => {
    const counts = new CountsByKey();
    const releases = [counts.add("a"), counts.add("a"), counts.add("b")];
    expect([counts.of("a"), counts.of("b"), counts.keys]).toEqual([2, 1, 2]);
    releases[0]!();
    releases[0]!();
    expect([counts.of("a"), counts.keys]).toEqual([1, 2]);
    releases[1]!();
    releases[2]!();
    expect([counts.of("a"), counts.of("b"), counts.keys]).toEqual([0, 0, 0]);
  });

  it("count a rate per key in fixed windows: each key its own count, all forgotten when the next window starts", () => {
    let now = 0;
    const counts = new CountsInWindow(1_000, () => now);
    expect([counts.add("a"), counts.add("a"), counts.add("b"), counts.add("a")]).toEqual([1, 2, 1, 3]);
    now = 999;
    expect(counts.add("a")).toBe(4);
    now = 1_000;
    expect([counts.add("a"), counts.add("b")]).toEqual([1, 1]);
  });

  it("drop a socket whose peer is already gone, without counting it under an empty address", async () => {
    const counted: RefusalReason[] = [];
    const listener = createListener(() => {}, {
      headersTimeoutMs: 60_000,
      requestTimeoutMs: 60_000,
      idleTimeoutMs: 60_000,
      maxConnections: 10,
      maxConnectionsPerAddress: 1,
      trustedProxies: parseTrustedProxies([]).proxies,
      maxConcurrentStreams: 10,
      log: pino({ enabled: false }),
      refused: (reason) => counted.push(reason),
    });
    // Unconnected, as a socket is whose peer reset it before it reached the listener: no remote address.
    const gone = [new net.Socket(), new net.Socket()];
    for (const socket of gone) {
      expect(socket.remoteAddress).toBeUndefined();
      listener.server.emit("connection", socket);
    }
    expect(gone.map((socket) => socket.destroyed)).toEqual([true, true]);
    expect(counted).toEqual([]); // not refused by a limit: there was nobody to refuse
    await listener.close(0);
  });
});
