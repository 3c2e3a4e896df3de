// Hostile traffic never takes the server down (issue 14). The server runs as a
// process of its own, as in production: a crash is an exit. Every test that
// sends something hostile waits past RPC_TIMEOUT before it checks that the same
// process still answers a login send and verify.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import http2 from "node:http2";
import net from "node:net";
import { spawnSync } from "node:child_process";
import pg from "pg";
import { status } from "@grpc/grpc-js";
import { toBinary, create } from "@bufbuild/protobuf";
import { HealthCheckRequestSchema, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.ts";
import { LoginService, SendLoginCodeRequestSchema } from "../gen/codegate/v1/login_pb.ts";
import { grpcClient, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { serverStream } from "./support/grpc-streams.ts";
import { pastDeadline, startServerProcess, type ServerProcess } from "./support/process.ts";
import { freshDatabase } from "./support/server.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";
import { TcpProxy } from "./support/tcp-proxy.ts";
import { envelope, h2Request, rawExchange } from "./support/wire.ts";

const RPC_TIMEOUT_MS = 1_500;
const LOGIN = "/codegate.v1.LoginService/SendLoginCode";
const VERIFY = "/codegate.v1.LoginService/VerifyLoginCode";

let smtp: SmtpSink;
let server: ServerProcess;
let orgId: string;
const cleanups: (() => unknown)[] = [];

async function serverWith(env: Record<string, string> = {}): Promise<{ server: ServerProcess; orgId: string }> {
  const s = await startServerProcess({ RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms`, SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", ...env });
  cleanups.push(() => s.stop());
  const fx = adminFixtures(s.url);
  const org = (await fx.org("Hostile")).id;
  await fx.identity(org, "owner@example.com");
  fx.close();
  return { server: s, orgId: org };
}

beforeAll(async () => {
  smtp = await SmtpSink.create();
  ({ server, orgId } = await serverWith());
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await smtp?.stop();
});

/** The same process, past the deadline of whatever was sent, still logs a user in; nothing went unhandled. */
async function stillServes(s: ServerProcess = server, org = orgId): Promise<void> {
  await pastDeadline(RPC_TIMEOUT_MS + 500);
  expect(s.alive(), s.stderr.join("")).toBe(true);
  const before = smtp.mailsTo("owner@example.com").length;
  expect((await postJson(s.url, LOGIN, { username: "owner@example.com", orgId: org })).status).toBe(200);
  const code = codeFrom(await smtp.nextMailTo("owner@example.com", before));
  const verified = await postJson(s.url, VERIFY, { username: "owner@example.com", orgId: org, code });
  expect(verified.status).toBe(200);
  expect(verified.body.token).toBeTruthy();
  expect(s.logs.filter((l) => /unhandled|uncaught/.test(l.msg))).toEqual([]);
  const metrics = await (await fetch(`${s.opsUrl}/metrics`)).text();
  expect(metrics).toMatch(/^codegate_process_errors_total\{kind="unhandled_rejection"\} 0$/m);
  expect(metrics).toMatch(/^codegate_process_errors_total\{kind="uncaught_exception"\} 0$/m);
}

describe("a refused request leaves nothing behind", () => {
  it("the curl of the issue: 400, and the server is still up past RPC_TIMEOUT", async () => {
    const res = await fetch(`${server.url}/auth/login/code`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "x", orgId: "bad" }),
    });
    expect(res.status).toBe(400);
    expect((await res.json()).error.reason).toBe("INVALID_ARGUMENT");
    await stillServes();
  });

  it("over Connect, gRPC and gRPC-Web alike", async () => {
    expect((await postJson(server.url, LOGIN, { username: "x", orgId: "bad" })).status).toBe(400);
    const login = grpcClient(LoginService, server.url);
    const refused = await login.call("sendLoginCode", { username: "x", orgId: "bad" });
    login.close();
    expect(refused.ok === false && refused.error.code).toBe(status.INVALID_ARGUMENT);
    const web = await fetch(server.url + LOGIN, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto" },
      body: new Uint8Array(envelope(toBinary(SendLoginCodeRequestSchema, create(SendLoginCodeRequestSchema, { username: "x", orgId: "bad" })))),
    });
    expect(web.headers.get("grpc-status") ?? (await web.text())).toMatch(/^3$|grpc-status:\s*3/);
    await stillServes();
  });

  it("an HTTP/1.0 request without Host, and request targets that are not paths, are answered, not fatal", async () => {
    // Before: connect-node threw "unable to determine request authority" out of the request listener.
    const noHost = await rawExchange(server.url, `POST ${LOGIN} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`, 5_000);
    expect(noHost.status).toBe(400);
    for (const target of ["//x:99999/healthz", "*", "http://elsewhere.example/healthz", "/%zz%", "/healthz?%ff=%zz"]) {
      const answer = await rawExchange(server.url, `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 5_000);
      expect(answer.status, target).toBeGreaterThanOrEqual(200);
      expect(answer.status, target).toBeLessThan(500);
    }
    await stillServes();
  });
});

describe("the deadline", () => {
  it("answers deadline_exceeded at RPC_TIMEOUT and cancels the statement still running behind the answer", async () => {
    const { server: s, orgId: org } = await serverWith();
    const db = new pg.Client({ connectionString: s.databaseUrl });
    await db.connect();
    cleanups.push(() => db.end());
    const before = smtp.mailsTo("owner@example.com").length;
    expect((await postJson(s.url, LOGIN, { username: "owner@example.com", orgId: org })).status).toBe(200);
    const code = codeFrom(await smtp.nextMailTo("owner@example.com", before));
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
  it("closes an idle HTTP/2 session (GOAWAY) after IDLE_TIMEOUT", async () => {
    const { server: s, orgId: org } = await serverWith({ IDLE_TIMEOUT: "1s" });
    const session = http2.connect(s.url);
    session.on("error", () => {});
    const goaway = new Promise<number>((resolve) => session.once("goaway", (code) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    await closed;
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
    // HTTP/1.1, Connect and REST: a Content-Length the body never reaches.
    for (const path of [LOGIN, "/auth/login/code"]) {
      const answer = await rawExchange(server.url, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n${partialJson}`, wait);
      expect(answer.status, path).toBe(504);
      expect(answer.bytes.toString(), path).toMatch(/deadline/i);
      expect(answer.closedByServer, path).toBe(true);
    }
    // HTTP/2: Connect JSON and REST streams left open, and a gRPC envelope shorter than it says.
    for (const path of [LOGIN, "/auth/login/code"]) {
      const answer = await h2Request(server.url, { ":path": path, "content-type": "application/json" }, partialJson, { end: false, waitMs: wait });
      expect(answer.status, path).toBe(504);
      expect(answer.closed, path).toBe(true);
    }
    const grpc = await h2Request(server.url, { ":path": LOGIN, "content-type": "application/grpc", te: "trailers" }, envelope(Buffer.from([0x0a]), 0, 100), {
      end: false,
      waitMs: wait,
    });
    expect(grpc.trailers["grpc-status"] ?? grpc.headers["grpc-status"]).toBe(String(status.DEADLINE_EXCEEDED));
    expect(grpc.closed).toBe(true);
    await stillServes();
  });

  it("refuses connections past MAX_CONNECTIONS, and serves again once they go", async () => {
    const { server: s, orgId: org } = await serverWith({ MAX_CONNECTIONS: "3", HEADERS_TIMEOUT: "60s" });
    const { port } = new URL(s.url);
    const open = async () => {
      const socket = net.connect(Number(port), "127.0.0.1");
      socket.on("error", () => {});
      await new Promise((resolve) => socket.once("connect", resolve));
      return socket;
    };
    const held = [await open(), await open(), await open()];
    const extra = await open();
    await new Promise<void>((resolve) => extra.once("close", () => resolve()));
    for (const socket of held) socket.destroy();
    await vi.waitFor(async () => expect((await fetch(`${s.url}/healthz`)).status).toBe(200), { timeout: 5_000 });
    await stillServes(s, org);
  });

  it("caps streaming RPCs (MAX_STREAMS) and ends each at STREAM_MAX_LIFETIME", async () => {
    const { server: s, orgId: org } = await serverWith({ MAX_STREAMS: "2", STREAM_MAX_LIFETIME: "2s" });
    const watch = () => serverStream(s.url, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
    const first = watch();
    const second = watch();
    await first.responses.nth(1);
    await second.responses.nth(1);
    const third = watch();
    expect((await third.responses.ended).code).toBe(status.RESOURCE_EXHAUSTED);
    const ends = await Promise.all([first.responses.ended, second.responses.ended]);
    for (const end of ends) expect(end.code).toBe(status.UNAVAILABLE);
    for (const w of [first, second, third]) w.close();
    // The slots are free again.
    const fourth = watch();
    await fourth.responses.nth(1);
    fourth.cancel();
    fourth.close();
    await stillServes(s, org);
  });
});

describe("errors before the handler", () => {
  it("a body nested 30,000 levels deep is a 400 over REST and over Connect", async () => {
    const deep = '{"username":' + "[".repeat(30_000) + "]".repeat(30_000) + "}";
    for (const path of ["/auth/login/code", LOGIN]) {
      const res = await fetch(server.url + path, { method: "POST", headers: { "content-type": "application/json" }, body: deep });
      expect(res.status, path).toBe(400);
    }
    await stillServes();
  });

  it("a malformed protobuf body is invalid_argument with a generic message, not the parser's internal error", async () => {
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    const connect = await fetch(server.url + LOGIN, { method: "POST", headers: { "content-type": "application/proto" }, body: new Uint8Array(garbage) });
    expect(connect.status).toBe(400);
    const body = await connect.json();
    expect(body.code).toBe("invalid_argument");
    expect(body.message).not.toMatch(/premature|EOF|parse binary|recursion|tag/i);
    const grpc = await h2Request(server.url, { ":path": LOGIN, "content-type": "application/grpc", te: "trailers" }, envelope(garbage), { waitMs: 10_000 });
    expect(grpc.trailers["grpc-status"] ?? grpc.headers["grpc-status"]).toBe(String(status.INVALID_ARGUMENT));
    expect(String(grpc.trailers["grpc-message"] ?? grpc.headers["grpc-message"])).not.toMatch(/premature|EOF|parse binary/i);
    await stillServes();
  });

  it("a 500 is logged at error level with the request id it hands out, and says nothing internal", async () => {
    const { server: s, orgId: org } = await serverWith();
    const db = new pg.Client({ connectionString: s.databaseUrl });
    await db.connect();
    cleanups.push(() => db.end());
    await db.query("alter table code rename to code_elsewhere");
    try {
      const res = await fetch(`${s.url}/auth/login/code`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "owner@example.com", orgId: org }),
      });
      expect(res.status).toBe(500);
      const body = await res.json();
      const id = body.error.request;
      expect(id).toBeTruthy();
      expect(res.headers.get("x-request-id")).toBe(id);
      expect(body.error.message).toContain(id);
      expect(JSON.stringify(body)).not.toMatch(/code_elsewhere|relation|select|insert|at \w+ \(/i);
      await vi.waitFor(() => expect(s.logs.some((l) => l.level === "error" && l.requestId === id)).toBe(true));
    } finally {
      await db.query("alter table code_elsewhere rename to code");
    }
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

describe("errors nobody handled", () => {
  it("are logged at error level with their request id and counted; an uncaught exception stops the process with 1", () => {
    const run = spawnSync(process.execPath, ["test/fixtures/unhandled.ts"], { encoding: "utf8", timeout: 30_000 });
    const lines = run.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    const rejection = lines.find((l) => l.msg === "unhandled promise rejection");
    expect(rejection).toMatchObject({ level: "error", requestId: "req-rejected" });
    const exception = lines.find((l) => l.msg === "uncaught exception; shutting down");
    expect(exception).toMatchObject({ level: "error", requestId: "req-thrown" });
    // The rejection did not stop the process; the exception did, once the shutdown ran.
    expect(lines.find((l) => l.msg === "counted")).toMatchObject({ unhandled_rejection: 1, uncaught_exception: 1 });
    expect(lines.map((l) => l.msg)).toContain("still running after the rejection");
    expect(run.status).toBe(1);
  });
});
