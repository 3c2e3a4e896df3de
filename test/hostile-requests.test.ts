// Hostile requests never take Codegate down (issue 14): what is refused, what cannot be decoded, and what fails inside.
// The server runs as a process of its own, as in production: a crash is an exit,
// not a test error. Every test that sends something hostile waits past RPC_TIMEOUT
// before it checks that the same process still answers a login send and verify.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { spawnSync } from "node:child_process";
import pg from "pg";
import { status } from "@grpc/grpc-js";
import { toBinary, create } from "@bufbuild/protobuf";
import { LoginService, SendLoginCodeRequestSchema } from "../gen/codegate/v1/login_pb.ts";
import { grpcClient, postJson } from "./support/clients.ts";
import type { ServerProcess } from "./support/process.ts";
import { hostileSetup, LOGIN, type Hostile } from "./support/hostile.ts";
import { envelope, h2Request, rawExchange } from "./support/wire.ts";

let h: Hostile;
let server: ServerProcess;
let orgId: string;
const stillServes = (s: ServerProcess = server, org = orgId) => h.stillServes(s, org);
const serverWith = (env: Record<string, string> = {}) => h.serverWith(env);
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  h = await hostileSetup();
  ({ server, orgId } = await serverWith());
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await h?.close();
});

describe.concurrent("a refused request leaves nothing behind", () => {
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

describe.concurrent("errors before the handler", () => {
  it("a body that is not JSON is invalid_argument saying so, over REST and Connect, and not what the parser said of it", async () => {
    for (const path of ["/auth/login/code", LOGIN]) {
      const res = await postJson(server.url, path, '{"username":"a@example.com","orgId":"x"');
      expect(res.status, path).toBe(400);
      expect(JSON.stringify(res.body), path).toContain("the body is not valid JSON");
      expect(JSON.stringify(res.body), path).not.toMatch(/position|column|Expected/i);
    }
    await stillServes();
  });

  it("a body that is not UTF-8 is invalid_argument saying so, over REST and Connect (both its paths), not read with replacement characters", async () => {
    const body = Buffer.concat([Buffer.from('{"username":"a'), Buffer.from([0xff]), Buffer.from(`@example.com","orgId":"${orgId}"}`)]);
    for (const [path, headers] of [
      ["/auth/login/code", {}],
      [LOGIN, {}],
      [LOGIN, { "content-encoding": "identity" }],
    ] as const) {
      const res = await fetch(server.url + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
      expect(res.status, path).toBe(400);
      expect(await res.text(), path).toContain("the body is not valid UTF-8");
    }
    await stillServes();
  });

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
    // Found by the fuzz suite: a deadline already over (a timeout header of each protocol,
    // one of them 0) while the body was decoded made the decoder's error a 500 `internal`.
    const timeouts: Record<string, string>[] = [{ "connect-timeout-ms": "0", "grpc-timeout": "1n" }, { "connect-timeout-ms": "0" }, { "grpc-timeout": "1n" }, { "grpc-timeout": "1n", "connect-timeout-ms": "60000" }];
    for (const headers of timeouts) {
      const late = await fetch(server.url + "/codegate.v1.RegistrationService/CompleteRegistration", {
        method: "POST",
        headers: { "content-type": "application/proto", ...headers },
        body: new Uint8Array([154]),
      });
      const text = await late.text();
      expect(late.status, `${JSON.stringify(headers)}: ${text}`).toBeLessThan(500);
      expect(text).not.toMatch(/internal|premature|EOF|parse binary/i);
    }
    await stillServes();
  });

  it("gRPC unary framing faults get the same status as the same bytes over gRPC-Web (served by connect-es)", async () => {
    // gRPC unary calls take server/grpc-unary.ts, not connect-es: each fault must still be answered as connect-es answers it.
    const message = (username: string) => Buffer.from(toBinary(SendLoginCodeRequestSchema, create(SendLoginCodeRequestSchema, { username, orgId })));
    const cases: [string, Buffer, number][] = [
      ["a well-formed request", envelope(message("framing-ok@example.com")), status.OK],
      ["no message", Buffer.alloc(0), status.INVALID_ARGUMENT],
      ["a cut envelope head", envelope(message("a@example.com")).subarray(0, 3), status.INVALID_ARGUMENT],
      ["a message shorter than declared", envelope(message("a@example.com"), 0, 200), status.INVALID_ARGUMENT],
      ["two messages", Buffer.concat([envelope(message("a@example.com")), envelope(message("b@example.com"))]), status.INVALID_ARGUMENT],
      ["a second envelope cut short", Buffer.concat([envelope(message("a@example.com")), Buffer.from([0, 0])]), status.INVALID_ARGUMENT],
      ["the compressed flag without an encoding", envelope(message("a@example.com"), 1), status.INVALID_ARGUMENT],
      ["a declared size over the limit", envelope(message("a@example.com"), 0, 0x7fffffff), status.RESOURCE_EXHAUSTED],
    ];
    for (const [name, body, expected] of cases) {
      const grpc = await h2Request(server.url, { ":path": LOGIN, "content-type": "application/grpc", te: "trailers" }, body, { waitMs: 10_000 });
      expect(grpc.trailers["grpc-status"] ?? grpc.headers["grpc-status"], `gRPC: ${name}`).toBe(String(expected));
      expect(grpc.headers["x-request-id"], `gRPC: ${name}`).toBeTruthy();
      const web = await fetch(server.url + LOGIN, { method: "POST", headers: { "content-type": "application/grpc-web+proto" }, body: new Uint8Array(body) });
      const webTrailer = Buffer.from(await web.arrayBuffer()).toString("latin1");
      expect(web.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(webTrailer)?.[1], `gRPC-Web: ${name}`).toBe(String(expected));
      const webMessage = web.headers.get("grpc-message") ?? /grpc-message:\s*([^\r\n]*)/.exec(webTrailer)?.[1];
      const grpcMessage = grpc.trailers["grpc-message"] ?? grpc.headers["grpc-message"];
      expect(decodeURIComponent(String(grpcMessage ?? "")), `the same message: ${name}`).toBe(decodeURIComponent(webMessage ?? ""));
      if (expected === status.OK) {
        expect(grpc.headers["content-type"]).toBe("application/grpc+proto");
        expect(grpc.body[0], "an uncompressed message").toBe(0);
        expect(grpc.body.readUInt32BE(1)).toBe(grpc.body.length - 5);
      }
    }
    await stillServes();
  });

  it("Connect unary requests get the same answer as the same request with Content-Encoding: identity (served by connect-es)", async () => {
    // Connect unary calls without a Content-Encoding take server/connect-unary.ts, not connect-es: every answer must still be connect-es's.
    const json = (body: unknown) => JSON.stringify(body);
    const cases: [string, string, string, string | Uint8Array<ArrayBuffer>][] = [
      ["a well-formed send", LOGIN, "application/json", json({ username: "connect-ok@example.com", orgId })],
      ["a well-formed send in binary", LOGIN, "application/proto", new Uint8Array(toBinary(SendLoginCodeRequestSchema, create(SendLoginCodeRequestSchema, { username: "connect-ok@example.com", orgId })))],
      ["a field that breaks a rule", LOGIN, "application/json", json({ username: "x", orgId: "bad" })],
      ["an unknown field", LOGIN, "application/json", json({ username: "x@example.com", orgId, extra: 1 })],
      ["JSON that does not parse", LOGIN, "application/json", "{"],
      ["a malformed protobuf body", LOGIN, "application/proto", new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])],
      ["a body over MAX_REQUEST_BYTES", LOGIN, "application/json", json({ username: "x".repeat(70_000), orgId })],
      ["an admin call without a token", "/codegate.v1.AdminService/ListOrganizations", "application/json", "{}"],
      ["a streaming content type on a unary method", LOGIN, "application/connect+json", json({ username: "x@example.com", orgId })],
    ];
    for (const [name, path, contentType, body] of cases) {
      const answers = [];
      for (const encoding of [undefined, "identity"]) {
        const res = await fetch(server.url + path, { method: "POST", headers: { "content-type": contentType, ...(encoding ? { "content-encoding": encoding } : {}) }, body });
        const text = await res.text();
        answers.push({ status: res.status, contentType: res.headers.get("content-type"), requestId: res.headers.has("x-request-id"), body: text.startsWith("{") ? JSON.parse(text) : text });
      }
      expect(answers[0], name).toEqual(answers[1]);
    }
    await stillServes();
  });

  it("an error quoting the caller's lone surrogate is answered over gRPC and gRPC-Web (its trailer is percent-encoded), not a dropped connection", async () => {
    // JSON.parse makes "\ud800" a lone surrogate; the decoder's message quotes the unknown key.
    const body = envelope(Buffer.from('{"\\ud800": 1}'));
    const web = await fetch(server.url + LOGIN, { method: "POST", headers: { "content-type": "application/grpc-web+json" }, body: new Uint8Array(body) });
    const trailer = Buffer.from(await web.arrayBuffer()).toString("latin1");
    expect(web.headers.get("grpc-status") ?? trailer).toMatch(/^3$|grpc-status:\s*3/);
    const grpc = await h2Request(server.url, { ":path": LOGIN, "content-type": "application/grpc+json", te: "trailers" }, body, { waitMs: 10_000 });
    expect(grpc.rstCode).toBe(0);
    expect(grpc.trailers["grpc-status"] ?? grpc.headers["grpc-status"]).toBe(String(status.INVALID_ARGUMENT));
    expect(server.logs.filter((l) => l.level === "error" || l.level === "fatal")).toEqual([]);
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
