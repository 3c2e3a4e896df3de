// Hostile connections never take Codegate down (issue 14): deadlines, slow and idle clients, HTTP/2 limits, and the database out of reach.
// The server runs as a process of its own, as in production: a crash is an exit,
// not a test error. Every test that sends something hostile waits past RPC_TIMEOUT
// before it checks that the same process still answers a login send and verify.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import http2 from "node:http2";
import net from "node:net";
import pg from "pg";
import { status } from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { HealthCheckRequestSchema, HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.ts";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { serverStream } from "./support/grpc-streams.ts";
import { pastDeadline, type ServerProcess } from "./support/process.ts";
import { hostileSetup, LOGIN, RPC_TIMEOUT_MS, VERIFY, type Hostile } from "./support/hostile.ts";
import { ADMIN_TOKEN, freshDatabase } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom } from "./support/smtp.ts";
import { TcpProxy } from "./support/tcp-proxy.ts";
import { envelope, h2Request, rawExchange } from "./support/wire.ts";

let h: Hostile;
let server: ServerProcess;
let orgId: string;
const stillServes = (s: ServerProcess = server, org = orgId) => h.stillServes(s, org);
const serverWith = (env: Record<string, string> = {}) => h.serverWith(env);
const cleanups: (() => unknown)[] = [];

/** Refused connections of one reason: the counter, and the (throttled) warning lines. */
async function refusals(s: ServerProcess, reason: string): Promise<{ counted: number; logged: Record<string, unknown>[] }> {
  const metrics = await (await fetch(`${s.opsUrl}/metrics`)).text();
  const counted = Number(new RegExp(`^codegate_connections_refused_total\\{reason="${reason}"\\} (\\d+)$`, "m").exec(metrics)?.[1]);
  return { counted, logged: s.logs.filter((l) => l.msg?.startsWith("connection refused") && l.reason === reason) };
}

/** A TCP connection to the server at `url`, once connected; destroyed at the end of the file if not before. */
async function rawConnection(url: string, opts: { allowHalfOpen?: boolean } = {}): Promise<net.Socket> {
  const socket = net.connect({ port: Number(new URL(url).port), host: "127.0.0.1", allowHalfOpen: opts.allowHalfOpen });
  cleanups.push(() => socket.destroy());
  socket.on("error", () => {});
  await new Promise((resolve) => socket.once("connect", resolve));
  return socket;
}

/** The HTTP/2 preface and an empty SETTINGS. (No SETTINGS ack: sent before the server's SETTINGS went out, it may be taken as a protocol error that ends the session at once.) */
const H2_HELLO = Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from("000000040000000000", "hex")]);

/**
 * An HTTP/2 connection the server took (its SETTINGS came), which then neither reads
 * nor closes. Opened again while refused: the connection of the fixtures that made
 * the server's organization may still count for a moment after it closed.
 */
async function heldConnection(url: string): Promise<net.Socket> {
  return vi.waitUntil(
    async () => {
      const socket = await rawConnection(url, { allowHalfOpen: true });
      socket.write(H2_HELLO);
      const taken = await new Promise<boolean>((resolve) => {
        socket.once("data", () => resolve(true));
        socket.once("close", () => resolve(false));
      });
      socket.pause();
      return taken && socket;
    },
    { timeout: 5_000 },
  );
}

beforeAll(async () => {
  h = await hostileSetup();
  ({ server, orgId } = await serverWith());
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await h?.close();
});

describe("the deadline", () => {
  it("answers deadline_exceeded at RPC_TIMEOUT and cancels the statement still running behind the answer", async () => {
    const { server: s, orgId: org } = await serverWith();
    const db = new pg.Client({ connectionString: s.databaseUrl });
    await db.connect();
    cleanups.push(() => db.end());
    const before = h.smtp.mailsTo("owner@example.com").length;
    expect((await postJson(s.url, LOGIN, { username: "owner@example.com", orgId: org })).status).toBe(200);
    const code = codeFrom(await h.smtp.nextMailTo("owner@example.com", before));
    // Another session holds the live code: the verification's first statement waits for its lock.
    await db.query("begin");
    await db.query("select * from code where dead_at is null for update");
    const started = performance.now();
    const answer = await postJson(s.url, VERIFY, { username: "owner@example.com", orgId: org, code });
    const took = performance.now() - started;
    expect(answer.status).toBe(504);
    expect(answer.body.code).toBe("deadline_exceeded");
    expect(took).toBeLessThan(RPC_TIMEOUT_MS + 4_000);
    // While the lock is still held, nothing of the server waits for it any more:
    // statement_timeout (DATABASE_STATEMENT_TIMEOUT, RPC_TIMEOUT by default) cancelled it.
    await vi.waitFor(
      async () => {
        const { rows } = await db.query(
          "select count(*)::int as n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock'",
        );
        expect(rows[0].n).toBe(0);
      },
      { timeout: 10_000, interval: 50 },
    );
    await db.query("rollback");
    // The cancelled verification counted nothing and consumed nothing: the code still works.
    const { rows } = await db.query("select attempts, dead_at from code where dead_at is null");
    expect(rows).toEqual([{ attempts: 0, dead_at: null }]);
    expect((await postJson(s.url, VERIFY, { username: "owner@example.com", orgId: org, code })).status).toBe(200);
    await stillServes(s, org);
  });
});

describe("HTTP/2 and slow clients", () => {
  it("closes an idle HTTP/2 session (GOAWAY) after IDLE_TIMEOUT, one that never asked and one idle since its answer", async () => {
    const { server: s, orgId: org } = await serverWith({ IDLE_TIMEOUT: "1s" });
    const idle = async (asksFirst: boolean) => {
      const session = http2.connect(s.url);
      cleanups.push(() => session.destroy());
      session.on("error", () => {});
      const goaway = new Promise<number>((resolve) => session.once("goaway", (code) => resolve(code)));
      const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
      if (asksFirst) {
        const stream = session.request({ ":path": "/healthz" });
        stream.resume();
        expect(await new Promise((resolve) => stream.once("response", (headers) => resolve(headers[":status"])))).toBe(200);
        await new Promise((resolve) => stream.once("close", resolve));
      }
      expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
      await closed;
    };
    await Promise.all([idle(false), idle(true)]);
    await stillServes(s, org);
  });

  it("advertises HTTP2_MAX_CONCURRENT_STREAMS", async () => {
    const session = http2.connect(server.url);
    session.on("error", () => {});
    const settings = await new Promise<http2.Settings>((resolve) => session.once("remoteSettings", resolve));
    session.destroy();
    expect(settings.maxConcurrentStreams).toBe(100);
  });

  it("answers a body that never finishes with deadline_exceeded and ends the stream, over every protocol", async () => {
    const wait = RPC_TIMEOUT_MS + 8_000;
    const partialJson = '{"username":';
    // All at once (each waits out RPC_TIMEOUT on its own): HTTP/1.1, Connect and REST with a
    // Content-Length the body never reaches; HTTP/2 Connect JSON and REST streams left open,
    // and a gRPC envelope shorter than it says.
    const [h1, h2, grpc] = await Promise.all([
      Promise.all([LOGIN, "/auth/login/code"].map((path) => rawExchange(server.url, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n${partialJson}`, wait))),
      Promise.all([LOGIN, "/auth/login/code"].map((path) => h2Request(server.url, { ":path": path, "content-type": "application/json" }, partialJson, { end: false, waitMs: wait }))),
      h2Request(server.url, { ":path": LOGIN, "content-type": "application/grpc", te: "trailers" }, envelope(Buffer.from([0x0a]), 0, 100), { end: false, waitMs: wait }),
    ]);
    for (const [i, answer] of h1.entries()) {
      expect(answer.status, `HTTP/1.1 #${i}`).toBe(504);
      expect(answer.bytes.toString(), `HTTP/1.1 #${i}`).toMatch(/deadline/i);
      expect(answer.closedByServer, `HTTP/1.1 #${i}`).toBe(true);
    }
    for (const [i, answer] of h2.entries()) {
      expect(answer.status, `HTTP/2 #${i}`).toBe(504);
      expect(answer.closed, `HTTP/2 #${i}`).toBe(true);
    }
    expect(grpc.trailers["grpc-status"] ?? grpc.headers["grpc-status"]).toBe(String(status.DEADLINE_EXCEEDED));
    expect(grpc.closed).toBe(true);
    await stillServes();
  });

  it("keeps an HTTP/2 session whose stream is open but quiet past IDLE_TIMEOUT: the stream ends at STREAM_MAX_LIFETIME", async () => {
    const { server: s, orgId: org } = await serverWith({ IDLE_TIMEOUT: "1s", STREAM_MAX_LIFETIME: "4s" });
    // A health Watch says SERVING once, then nothing while nothing changes.
    const watch = serverStream(s.url, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
    cleanups.push(() => watch.close());
    await watch.responses.nth(1);
    // Closed at IDLE_TIMEOUT, it would end with the connection, not with its own bound.
    expect(await watch.responses.ended).toMatchObject({ code: status.UNAVAILABLE, details: expect.stringContaining("maximum lifetime") });
    expect(watch.responses.messages).toHaveLength(1);
    await stillServes(s, org);
  });

  it("ends a stream outside the RPCs that the client never lets answer (a zero window) at the request bound, beside a streaming call that keeps its session", async () => {
    // The request bound: the larger of HEADERS_TIMEOUT and RPC_TIMEOUT plus the answer's 5 s.
    const { server: s, orgId: org } = await serverWith({ IDLE_TIMEOUT: "1s", RPC_TIMEOUT: "1s", HEADERS_TIMEOUT: "1s" });
    const session = http2.connect(s.url, { settings: { initialWindowSize: 0 } });
    cleanups.push(() => session.destroy());
    session.on("error", () => {});
    // A health Watch keeps the session from being closed as idle (it lives to STREAM_MAX_LIFETIME)...
    const watch = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Watch", "content-type": "application/grpc", te: "trailers" });
    watch.on("error", () => {});
    watch.end(envelope(new Uint8Array(0)));
    // ...so only its own bound ends a /healthz whose answer can never leave.
    const healthz = session.request({ ":path": "/healthz" });
    healthz.on("error", () => {});
    const ended = new Promise<number>((resolve) => healthz.once("close", () => resolve(healthz.rstCode ?? -1)));
    expect(await ended).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(watch.closed).toBe(false);
    watch.close();
    await stillServes(s, org);
  });

  it("lets go of HTTP/2 connections closed at IDLE_TIMEOUT whose clients never read nor close them", async () => {
    // IDLE_TIMEOUT leaves the refusal below time to happen on a loaded machine: the places come free a second after it.
    const { server: s, orgId: org } = await serverWith({ MAX_CONNECTIONS: "3", IDLE_TIMEOUT: "5s" });
    const held = [await heldConnection(s.url), await heldConnection(s.url), await heldConnection(s.url)];
    // Every place taken: a fresh client is refused.
    await expect(fetch(`${s.url}/healthz`)).rejects.toThrow();
    // At IDLE_TIMEOUT the server says GOAWAY and ends its side; a second later it drops the connections.
    await vi.waitFor(async () => expect((await fetch(`${s.url}/healthz`)).status).toBe(200), { timeout: 15_000, interval: 200 });
    expect(held.every((socket) => !socket.destroyed)).toBe(true); // the clients still hold theirs
    await stillServes(s, org);
  });

  it("refuses one address's connections past MAX_CONNECTIONS_PER_ADDRESS, but not a trusted proxy's", async () => {
    // Three: the checks after it (a pooled fetch, the admin client) stay clear of the limit.
    const { server: s, orgId: org } = await serverWith({ MAX_CONNECTIONS_PER_ADDRESS: "3", HEADERS_TIMEOUT: "60s" });
    const held = [await heldConnection(s.url), await heldConnection(s.url), await heldConnection(s.url)];
    const extra = await rawConnection(s.url);
    await new Promise<void>((resolve) => extra.once("close", () => resolve()));
    await expect(fetch(`${s.url}/healthz`)).rejects.toThrow();
    // Both refusals counted, and a warning naming the address.
    await vi.waitFor(async () => {
      const { counted, logged } = await refusals(s, "max_connections_per_address");
      expect(counted).toBeGreaterThanOrEqual(2);
      expect(logged).toEqual([expect.objectContaining({ level: "warn", address: "127.0.0.1", refusedSinceLastLine: 0 })]);
    });
    held[0].destroy();
    await vi.waitFor(async () => expect((await fetch(`${s.url}/healthz`)).status).toBe(200), { timeout: 5_000 });
    for (const socket of held) socket.destroy();
    await stillServes(s, org);
    // Seconds later, still that one warning: the next may come a minute after it.
    expect((await refusals(s, "max_connections_per_address")).logged).toHaveLength(1);

    // Behind a trusted proxy every client comes from its address: its connections are not capped.
    const { server: proxied } = await serverWith({ MAX_CONNECTIONS_PER_ADDRESS: "3", HEADERS_TIMEOUT: "60s", TRUSTED_PROXIES: "127.0.0.1,::1" });
    for (let i = 0; i < 4; i++) await rawConnection(proxied.url);
    expect((await fetch(`${proxied.url}/healthz`)).status).toBe(200);
  });

  it("refuses connections past MAX_CONNECTIONS, and serves again once they go", async () => {
    const { server: s, orgId: org } = await serverWith({ MAX_CONNECTIONS: "3", HEADERS_TIMEOUT: "60s" });
    const held = [await heldConnection(s.url), await heldConnection(s.url), await heldConnection(s.url)];
    const before = (await refusals(s, "max_connections")).counted;
    const extra = await rawConnection(s.url);
    await new Promise<void>((resolve) => extra.once("close", () => resolve()));
    await vi.waitFor(async () => expect(await refusals(s, "max_connections")).toEqual({ counted: before + 1, logged: [expect.objectContaining({ level: "warn", address: "127.0.0.1" })] }));
    for (const socket of held) socket.destroy();
    await vi.waitFor(async () => expect((await fetch(`${s.url}/healthz`)).status).toBe(200), { timeout: 5_000 });
    await stillServes(s, org);
  });

  it("counts the calls of a rapid reset (HTTP/2 streams opened and cancelled at once) without an info line each, and serves on", async () => {
    const metricOf = async () => Number(/^codegate_rpc_handled_total\{service="codegate.v1.LoginService",method="SendLoginCode",code="Canceled"\} (\d+)$/m.exec(await (await fetch(`${server.opsUrl}/metrics`)).text())?.[1] ?? 0);
    const before = await metricOf();
    const logsBefore = server.logs.length;
    const session = http2.connect(server.url);
    cleanups.push(() => session.destroy());
    session.on("error", () => {});
    await new Promise((resolve) => session.once("connect", resolve));
    for (let i = 0; i < 500 && !session.destroyed; i++) {
      const req = session.request({ ":method": "POST", ":path": LOGIN, "content-type": "application/json" });
      req.on("error", () => {});
      req.end(JSON.stringify({ username: "reset@example.com", orgId }));
      req.close(http2.constants.NGHTTP2_CANCEL);
      if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
    }
    // Some of them reached a call before their reset (the others ended in the HTTP/2 layer).
    await vi.waitFor(async () => expect(await metricOf()).toBeGreaterThan(before), { timeout: 5_000, interval: 50 });
    session.destroy();
    await stillServes();
    // Each counted (above); none written as an info line.
    expect(server.logs.slice(logsBefore).filter((l) => l.level === "info" && l.grpcCode === "Canceled")).toEqual([]);
  });

  it("takes a client that leaves a stream over HTTP/1.1 (Connect, gRPC-Web) as nothing wrong: no error in the log", async () => {
    const { server: s, orgId: org } = await serverWith();
    const { port } = new URL(s.url);
    const watch = (contentType: string, message: Buffer) =>
      new Promise<void>((resolve) => {
        const body = envelope(message);
        const socket = net.connect(Number(port), "127.0.0.1", () =>
          socket.write(`POST /grpc.health.v1.Health/Watch HTTP/1.1\r\nHost: x\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n\r\n`),
        );
        socket.once("connect", () => socket.write(body));
        socket.on("error", () => {});
        // Its first answer arrived: the stream is open and written to; the client leaves.
        socket.once("data", () => (socket.destroy(), resolve()));
      });
    await watch("application/connect+json", Buffer.from("{}"));
    await watch("application/grpc-web+proto", Buffer.alloc(0));
    await stillServes(s, org);
    expect(s.logs.filter((l) => l.level === "error" || l.level === "fatal")).toEqual([]);
  });

  it("caps streaming RPCs (MAX_STREAMS), those without an admin token at half, and ends each at STREAM_MAX_LIFETIME", async () => {
    const { server: s, orgId: org } = await serverWith({ MAX_STREAMS: "4", STREAM_MAX_LIFETIME: "2s" });
    const watch = () => serverStream(s.url, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
    const first = watch();
    const second = watch();
    await first.responses.nth(1);
    await second.responses.nth(1);
    // Half the slots held by streams anyone may open: another is refused, an administrator's still opens.
    const third = watch();
    expect(await third.responses.ended).toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: expect.stringContaining("without an admin token") });
    const fx = adminFixtures(s.url);
    cleanups.push(() => fx.close());
    const received: unknown[] = [];
    const adminEnd = (async () => {
      for await (const res of fx.clients.admin.watchEvents({ orgId: org })) received.push(...res.events);
    })().catch((e: unknown) => ConnectError.from(e));
    await vi.waitFor(() => expect(received.length).toBeGreaterThan(0), { timeout: 5_000 });
    const ends = await Promise.all([first.responses.ended, second.responses.ended]);
    for (const end of ends) expect(end.code).toBe(status.UNAVAILABLE);
    expect(await adminEnd).toMatchObject({ code: Code.Unavailable });
    for (const w of [first, second, third]) w.close();
    // The slots are free again.
    const fourth = watch();
    await fourth.responses.nth(1);
    fourth.cancel();
    fourth.close();
    await stillServes(s, org);
  });

  it("ends a server stream whose request never arrives at RPC_TIMEOUT, not at STREAM_MAX_LIFETIME, and gives its slot back", async () => {
    // Three anonymous slots (half of MAX_STREAMS), all taken by streams that never send their request whole.
    const { server: s, orgId: org } = await serverWith({ RPC_TIMEOUT: "1s", STREAM_MAX_LIFETIME: "60s", MAX_STREAMS: "6" });
    const wait = RPC_TIMEOUT_MS + 8_000;
    const watchPath = "/grpc.health.v1.Health/Watch";
    const [headersOnly, shortEnvelope, h1] = await Promise.all([
      h2Request(s.url, { ":path": watchPath, "content-type": "application/grpc", te: "trailers" }, "", { end: false, waitMs: wait }),
      h2Request(s.url, { ":path": watchPath, "content-type": "application/grpc", te: "trailers" }, envelope(Buffer.from([0x0a]), 0, 100), { end: false, waitMs: wait }),
      // Connect over HTTP/1.1, with a Content-Length the body never reaches.
      rawExchange(s.url, `POST ${watchPath} HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\nContent-Length: 100\r\n\r\n`, wait),
    ]);
    for (const [name, answer] of Object.entries({ headersOnly, shortEnvelope })) {
      expect(answer.closed, name).toBe(true);
      expect(answer.trailers["grpc-status"] ?? answer.headers["grpc-status"], name).toBe(String(status.DEADLINE_EXCEEDED));
      expect(decodeURIComponent(String(answer.trailers["grpc-message"] ?? answer.headers["grpc-message"])), name).toMatch(/did not start within 1000 ms/);
    }
    expect(h1.closedByServer).toBe(true);
    expect(h1.bytes.toString()).toMatch(/"code":"deadline_exceeded","message":"the stream did not start within 1000 ms: its request was not read whole by then"/);
    // The three slots are free again: two gRPC Watches and a Connect one over HTTP/1.1 open...
    const watches = [0, 1].map(() => serverStream(s.url, watchPath, HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" }));
    cleanups.push(() => watches.forEach((w) => (w.cancel(), w.close())));
    for (const w of watches) expect(await w.responses.nth(1)).toMatchObject({ status: HealthCheckResponse_ServingStatus.SERVING });
    const h1Watch = await rawConnection(s.url);
    let h1Answer = "";
    h1Watch.on("data", (chunk: Buffer) => (h1Answer += chunk.toString("latin1")));
    const body = envelope(Buffer.from("{}"));
    h1Watch.write(`POST ${watchPath} HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+json\r\nContent-Length: ${body.length}\r\n\r\n`);
    h1Watch.write(body);
    await vi.waitFor(() => expect(h1Answer).toContain('"status":"SERVING"'));
    // ...and, their requests read whole, live on past RPC_TIMEOUT.
    await pastDeadline(2_000);
    expect(h1Answer).not.toContain("error");
    expect(h1Watch.readableEnded).toBe(false);
    for (const w of watches) expect(await Promise.race([w.responses.ended, "open"])).toBe("open");
    await stillServes(s, org);
  });

  it("caps the streams one address opens without an admin token (MAX_STREAMS_PER_ADDRESS), not those of other addresses nor an administrator's", async () => {
    // The test's connections come from a trusted proxy: X-Forwarded-For names the client. Half of MAX_STREAMS
    // (6) is exactly the anonymous streams that open below: one slot a refused stream kept would refuse the last.
    const { server: s, orgId: org } = await serverWith({ MAX_STREAMS: "12", MAX_STREAMS_PER_ADDRESS: "2", TRUSTED_PROXIES: "127.0.0.1,::1" });
    const watchFrom = (client: string) => {
      const w = serverStream(s.url, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" }, { "x-forwarded-for": client });
      cleanups.push(() => (w.cancel(), w.close()));
      return w;
    };
    const attacker = [watchFrom("203.0.113.7"), watchFrom("203.0.113.7")];
    // Another address of the same IPv6 /64 is the same source.
    const attacker6 = [watchFrom("2001:db8:1:2::1"), watchFrom("2001:db8:1:2::ffff")];
    for (const w of [...attacker, ...attacker6]) await w.responses.nth(1);
    for (const w of [watchFrom("203.0.113.7"), watchFrom("2001:db8:1:2:abcd::9")]) {
      await expect(w.responses.nth(1)).rejects.toThrow(/the limit for one address/);
      expect((await w.responses.ended).code).toBe(status.RESOURCE_EXHAUSTED);
    }
    // Other sources still open theirs.
    for (const w of [watchFrom("198.51.100.1"), watchFrom("2001:db8:1:3::1")]) await w.responses.nth(1);

    // An administrator's streams count in neither limit: three more from the attacker's own address open.
    const fx = adminFixtures(s.url);
    cleanups.push(() => fx.close());
    const adminStreams = Array.from({ length: 3 }, () => {
      const leaving = new AbortController();
      cleanups.push(() => leaving.abort());
      const received: unknown[] = [];
      void (async () => {
        for await (const res of fx.clients.admin.watchEvents({ orgId: org }, { signal: leaving.signal, headers: { "x-forwarded-for": "203.0.113.7" } })) received.push(...res.events);
      })().catch(() => {}); // it ends, aborted, when the file's cleanups run
      return { received };
    });
    await vi.waitFor(() => expect(adminStreams.map((a) => a.received.length > 0)).toEqual([true, true, true]), { timeout: 5_000 });

    // A stream that ends gives its address's slot back.
    attacker[0].cancel();
    expect((await attacker[0].responses.ended).code).toBe(status.CANCELLED);
    // (The server hears of the cancel a moment after the client: until then, a new stream is refused.)
    await vi.waitFor(
      async () => expect(await watchFrom("203.0.113.7").responses.nth(1)).toMatchObject({ status: HealthCheckResponse_ServingStatus.SERVING }),
      { timeout: 5_000 },
    );
    await stillServes(s, org);
  });
  it("gives the slot of a stream a client cancels to the stream it opens next, whichever of the two reaches the server first", async () => {
    const { server: s, orgId: org } = await serverWith({ MAX_STREAMS_PER_ADDRESS: "2" });
    const session = http2.connect(s.url);
    cleanups.push(() => session.destroy());
    /** A health Watch over gRPC: "open" once its first answer came, else the grpc-status it ended with. */
    const watch = () => {
      const stream = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Watch", "content-type": "application/grpc", te: "trailers" });
      stream.on("error", () => {});
      stream.end(envelope(Buffer.alloc(0)));
      const outcome = new Promise<string>((resolve) => {
        stream.once("data", () => resolve("open"));
        stream.once("trailers", (t) => resolve(`grpc-status ${t["grpc-status"]}`));
        stream.once("response", (headers) => headers["grpc-status"] !== undefined && resolve(`grpc-status ${headers["grpc-status"]}`));
        stream.once("close", () => resolve("closed"));
      });
      return { stream, outcome };
    };
    const open = [watch(), watch()];
    expect(await Promise.all(open.map((w) => w.outcome))).toEqual(["open", "open"]);
    // The address holds both of its slots: each new stream is opened as an open one is reset, at
    // once (Node's client may even send the new stream's HEADERS before the reset).
    const outcomes: string[] = [];
    for (let i = 0; i < 100; i++) {
      open.shift()!.stream.close(http2.constants.NGHTTP2_CANCEL);
      const next = watch();
      open.push(next);
      outcomes.push(await next.outcome);
    }
    expect(outcomes.filter((o) => o !== "open")).toEqual([]);
    for (const w of open) w.stream.close(http2.constants.NGHTTP2_CANCEL);
    await stillServes(s, org);
  });
});

describe("waiting claims (the delivery API's long poll)", () => {
  it("end with a client that vanishes, over HTTP/1.1 and HTTP/2, or empty before RPC_TIMEOUT, leaving nothing waiting", async () => {
    // Waits of 5 s (cut before a 6 s RPC_TIMEOUT): all twenty are surely waiting at once before any ends.
    const { server: s, orgId: org } = await serverWith({ RPC_TIMEOUT: "6s" });
    const path = "/codegate.v1.DeliveryService/Claim";
    const body = JSON.stringify({ channels: ["DELIVERY_CHANNEL_SMS"], wait: "30s" });
    const headers = { "content-type": "application/json", ...bearer(ADMIN_TOKEN) };
    const waiting = async () => Number(/^codegate_delivery_claims_waiting (\d+)$/m.exec(await (await fetch(`${s.opsUrl}/metrics`)).text())?.[1]);

    // HTTP/1.1 clients that give up (their sockets close), and some that stay to the end.
    const leaving = Array.from({ length: 8 }, () => new AbortController());
    const left = leaving.map((c) => fetch(s.url + path, { method: "POST", headers, body, signal: c.signal }).catch((e: unknown) => e));
    const staying = Array.from({ length: 4 }, () => postJson(s.url, path, body, bearer(ADMIN_TOKEN)));
    // HTTP/2 streams reset by the client.
    const session = http2.connect(s.url);
    cleanups.push(() => session.destroy());
    const streams = Array.from({ length: 8 }, () => {
      const stream = session.request({ ":method": "POST", ":path": path, ...headers });
      stream.on("error", () => {});
      stream.end(body);
      return stream;
    });
    await vi.waitFor(async () => expect(await waiting()).toBe(20), { timeout: 5_000 });

    for (const c of leaving) c.abort();
    for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
    for (const e of await Promise.all(left)) expect(e).toBeInstanceOf(Error);
    // Ended with their calls, not at the end of their waits.
    await vi.waitFor(async () => expect(await waiting()).toBe(4), { timeout: 3_000 });
    // Cut to end before the deadline: an empty answer, not deadline_exceeded.
    for (const answer of await Promise.all(staying)) expect(answer).toMatchObject({ status: 200, body: {} });
    expect(await waiting()).toBe(0);
    session.close();
    await stillServes(s, org);
  });
});

describe("the database out of reach", () => {
  it("answers unavailable (not internal) within the deadline, turns not ready, and recovers without a restart", async () => {
    const { proxy, url } = await TcpProxy.to(await freshDatabase());
    cleanups.push(() => proxy.close());
    const { server: s, orgId: org } = await serverWith({ DATABASE_URL: url });
    await proxy.cut();
    const started = performance.now();
    const answer = await postJson(s.url, LOGIN, { username: "owner@example.com", orgId: org });
    expect(performance.now() - started).toBeLessThan(RPC_TIMEOUT_MS + 4_000);
    expect(answer.status).toBe(503);
    expect(answer.body.code).toBe("unavailable");
    const grpc = grpcClient(LoginService, s.url);
    const overGrpc = await grpc.call("sendLoginCode", { username: "owner@example.com", orgId: org });
    grpc.close();
    expect(overGrpc.ok === false && overGrpc.error.code).toBe(status.UNAVAILABLE);
    await vi.waitFor(async () => expect((await fetch(`${s.opsUrl}/readyz`)).status).toBe(503), { timeout: 10_000 });
    await proxy.open();
    await vi.waitFor(async () => expect((await fetch(`${s.opsUrl}/readyz`)).status).toBe(200), { timeout: 10_000 });
    await vi.waitFor(async () => expect((await postJson(s.url, LOGIN, { username: "owner@example.com", orgId: org })).status).toBe(200), { timeout: 10_000 });
    await stillServes(s, org);
  });
});

