// The documented REST routes, driven by the google.api.http annotations, and
// CORS: exactly the documented bodies over HTTP/1.1 (and once over h2c), every
// error status, and preflights from an allowed and a refused origin.
import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { AdminService } from "../gen/codegate/v1/admin_pb.ts";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";
import { RecoveryService } from "../gen/codegate/v1/recovery_pb.ts";
import { RegistrationService } from "../gen/codegate/v1/registration_pb.ts";
import { HttpRuleSchema } from "../gen/google/api/http_pb.ts";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.ts";
import { IdentityState } from "../gen/codegate/v1/types_pb.ts";
import { ConfigError } from "../src/config/env.ts";
import { loadConfig } from "../src/config/config.ts";
import { apiError, errorInfo, Reason } from "../src/services/errors.ts";
import { DEFAULT_RETRY_AFTER_SECONDS, renderRestError } from "../src/server/rest/handler.ts";
import { bindRequest, compileRule, matchRoute, restRoutes } from "../src/server/rest/routes.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient } from "./support/clients.ts";

const ALLOWED_ORIGIN = "https://app.example.com";
const DOCUMENTED_LOGIN = { username: "jdoe@example.co", orgId: "or-34513-nip9c-8bppvgqgj28dbodrc" };
const DOCUMENTED_TENANT = "acct-34513-nip9c-8bppvgqgj28dbodr";
let users = 0;
/** The documented body for another user each time: sends are rate limited per username. */
const anotherLogin = () => ({ ...DOCUMENTED_LOGIN, username: `jdoe${++users}@example.co` });
const auth = bearer(ADMIN_TOKEN);

let server: TestServer;
let admin: ReturnType<typeof grpcClient<typeof AdminService>>;

beforeAll(async () => {
  server = await startTestServer({ CORS_ORIGINS: `${ALLOWED_ORIGIN}, https://other.example.com:8443` });
  admin = grpcClient(AdminService, server.url);
});
afterAll(async () => {
  admin?.close();
  await server?.close();
});

interface Answer {
  status: number;
  headers: Headers;
  body: any;
  text: string;
}

async function rest(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(server.url + path, {
    method,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** The documented error shape, with the request id the response header carries. */
function expectError(a: Answer, status: number, statusText: string, reason: string) {
  expect(a.status).toBe(status);
  expect(a.headers.get("content-type")).toBe("application/json");
  expect(Object.keys(a.body)).toEqual(["error"]);
  expect(a.body.error).toEqual({ code: status, status: statusText, reason, message: expect.any(String), request: a.headers.get("x-request-id") });
  expect(a.body.error.request).toMatch(/\S/);
  expect(a.text).not.toMatch(/at .*\.(ts|js):\d+|node_modules/);
}

/** A raw HTTP/1.1 exchange, for bodies fetch will not send as written. */
function rawHttp(request: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const { port } = new URL(server.url);
    const socket = net.connect(Number(port), "127.0.0.1");
    let data = "";
    socket.on("data", (d) => (data += d.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => {
      const [head, body = ""] = data.split("\r\n\r\n", 2);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
      if (!status) reject(new Error(`no HTTP answer: ${JSON.stringify(data.slice(0, 200))}`));
      else resolve({ status, head, body });
    });
    socket.write(request);
    setTimeout(() => socket.destroy(), 5_000).unref();
  });
}

async function activeIdentity(username: string) {
  const org = await admin.call("createOrganization", { name: `REST ${username}` }, auth);
  if (!org.ok) throw org.error;
  const orgId = org.value.organization!.id;
  const created = await admin.call("createIdentity", { orgId, username, skipRegistrationCode: true }, auth);
  if (!created.ok) throw created.error;
  const id = created.value.identity!.id;
  const activated = await admin.call("setIdentityState", { identityId: id, state: IdentityState.ACTIVE }, auth);
  if (!activated.ok) throw activated.error;
  return { orgId, identityId: id };
}

describe("routes from the google.api.http annotations", () => {
  it("are exactly the documented ones, with their success statuses", () => {
    const routes = restRoutes([AdminService, LoginService, RegistrationService, RecoveryService].flatMap((s) => s.methods));
    const table = routes.map((r) => `${r.verb} ${r.template} ${r.method.parent.name}.${r.method.name} ${r.successStatus}`).sort();
    expect(table).toEqual([
      "DELETE /admin/organizations/{org_id}/mail-templates/{kind}/{locale} AdminService.DeleteMailTemplate 200",
      "GET /admin/organizations/{org_id}/mail-templates AdminService.ListMailTemplates 200",
      "POST /admin/organizations/{org_id}/mail-templates/{kind}/{locale}/preview AdminService.PreviewMailTemplate 200",
      "POST /admin/recovery/code AdminService.CreateRecoveryCode 201",
      "POST /auth/login/code LoginService.SendLoginCode 200",
      "POST /auth/recover/user/code RecoveryService.SendRecoveryCode 200",
      "POST /iam/recovery/code AdminService.CreateRecoveryCode 201",
      "PUT /admin/identities/{identity_id}/phone-number AdminService.SetIdentityPhoneNumber 200",
      "PUT /admin/organizations/{org_id}/mail-templates/{kind}/{locale} AdminService.SetMailTemplate 200",
      "PUT /admin/organizations/{org_id}/settings AdminService.UpdateOrganizationSettings 200",
      "PUT /auth/recover/user/code RecoveryService.SendRecoveryCode 200",
      "PUT /auth/registration/code RegistrationService.ResendRegistrationCode 200",
    ]);
  });

  it("bind path variables and query parameters of a rule without body", () => {
    const method = AdminService.method.listIdentities;
    const rule = create(HttpRuleSchema, { pattern: { case: "get", value: "/admin/organizations/{org_id}/identities" } });
    const route = compileRule(method, rule, 200);
    expect(matchRoute([route], "GET", "/admin/organizations/or-1/identities/x")).toBeUndefined();
    expect(matchRoute([route], "POST", "/admin/organizations/or-1/identities")).toEqual({ allow: ["GET"] });
    const match = matchRoute([route], "GET", "/admin/organizations/or-aaaaa-bbbbb-cccccccccccccccc/identities");
    if (!match || "allow" in match) throw new Error("no match");
    const query = new URLSearchParams("pageSize=3&page_token=abc");
    expect(bindRequest(match, query, undefined)).toEqual({ orgId: "or-aaaaa-bbbbb-cccccccccccccccc", pageSize: "3", pageToken: "abc" });
    expect(() => bindRequest(match, new URLSearchParams("colour=red"), undefined)).toThrow(/colour/);
    expect(() => bindRequest(match, new URLSearchParams("pageSize=1&pageSize=2"), undefined)).toThrow(/page_size/);
    for (const both of ["pageSize=1&page_size=2", "page_size=2&pageSize=1"]) expect(() => bindRequest(match, new URLSearchParams(both), undefined)).toThrow(/page_size: one name/);
    expect(() => bindRequest(match, new URLSearchParams("orgId=or-x"), undefined)).toThrow(/org_id.*path/);
  });

  it("refuse a path variable given again in the body, and a query beside a body", () => {
    const method = AdminService.method.setIdentityState;
    const rule = create(HttpRuleSchema, { pattern: { case: "patch", value: "/admin/identities/{identity_id}" }, body: "*" });
    const route = compileRule(method, rule, 200);
    const match = matchRoute([route], "PATCH", "/admin/identities/abc");
    if (!match || "allow" in match) throw new Error("no match");
    expect(bindRequest(match, new URLSearchParams(), { state: "IDENTITY_STATE_ACTIVE" })).toEqual({ identityId: "abc", state: "IDENTITY_STATE_ACTIVE" });
    expect(() => bindRequest(match, new URLSearchParams(), { identityId: "other" })).toThrow(/identity_id/);
    expect(() => bindRequest(match, new URLSearchParams("x=1"), {})).toThrow(/x: unknown query parameter/);
    expect(() => bindRequest(match, new URLSearchParams(), [1, 2])).toThrow(/JSON object/);
  });

  it("fail the start on a rule they would not serve as written", () => {
    const method = AdminService.method.getIdentity;
    const rule = (pattern: string, body = "") => create(HttpRuleSchema, { pattern: { case: "get", value: pattern }, body });
    expect(() => compileRule(method, rule("/admin/identities/{name}"), 200)).toThrow(/not a singular scalar or enum field/);
    expect(() => compileRule(method, rule("/admin/**"), 200)).toThrow(/not supported/);
    expect(() => compileRule(method, rule("/admin/identities", "*"), 200)).toThrow(/GET cannot have a body/);
    expect(() => compileRule(method, rule("/admin/identities"), 302)).toThrow(/2xx/);
  });
});

describe("the documented success answers", () => {
  it("POST /auth/login/code with the documented body answers 200 success", async () => {
    const a = await rest("POST", "/auth/login/code", DOCUMENTED_LOGIN);
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ message: "success" });
    expect(a.headers.get("x-request-id")).toMatch(/\S/);
  });

  it("POST /auth/login/code for an active identity answers the same, and runs the RPC", async () => {
    const { orgId } = await activeIdentity("rest.login@example.com");
    const before = server.logs.length;
    const a = await rest("POST", "/auth/login/code", { username: "rest.login@example.com", orgId }, { "x-request-id": "rest-login-1" });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ message: "success" });
    expect(a.headers.get("x-request-id")).toBe("rest-login-1");
    const rpcLines = server.logs.slice(before).map((l) => JSON.parse(l)).filter((l) => l.msg === "rpc" && l.requestId === "rest-login-1");
    expect(rpcLines).toHaveLength(1);
    expect(rpcLines[0].rpc).toMatch(/LoginService\/SendLoginCode$/);
    expect(rpcLines[0].level).toBe("info");
  });

  it("also serves REST over h2c", async () => {
    const session = http2.connect(server.url);
    try {
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ":path": "/auth/login/code", "content-type": "application/json" });
        let status = 0;
        let body = "";
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (d) => (body += d));
        stream.on("end", () => resolve({ status, body }));
        stream.on("error", reject);
        stream.end(JSON.stringify(anotherLogin()));
      });
      expect(answer).toEqual({ status: 200, body: '{"message":"success"}' });
    } finally {
      session.close();
    }
  });

  it("PUT /auth/registration/code with the documented body answers 200 success", async () => {
    const a = await rest("PUT", "/auth/registration/code", DOCUMENTED_LOGIN);
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ message: "success" });
  });

  it("PUT and POST /auth/recover/user/code answer 200 success, with orgId, tenantId or both", async () => {
    const cases: [string, object][] = [
      ["PUT", DOCUMENTED_LOGIN],
      ["POST", anotherLogin()],
      ["PUT", { username: anotherLogin().username, tenantId: DOCUMENTED_TENANT }],
      ["POST", { ...anotherLogin(), tenantId: DOCUMENTED_TENANT }],
    ];
    for (const [method, body] of cases) {
      const a = await rest(method, "/auth/recover/user/code", body);
      expect(a.status, `${method} ${JSON.stringify(body)}`).toBe(200);
      expect(a.body).toEqual({ message: "success" });
    }
  });

  it("POST /admin/recovery/code and /iam/recovery/code with the documented body answer 201 with the code", async () => {
    const { identityId } = await activeIdentity("rest.recovery@example.com");
    for (const path of ["/admin/recovery/code", "/iam/recovery/code"]) {
      const before = Date.now();
      const a = await rest("POST", path, { identity_id: identityId, expires_in: "1h" }, auth);
      expect(a.status, path).toBe(201);
      expect(Object.keys(a.body).sort()).toEqual(["expires_at", "recovery_code", "recovery_link"]);
      expect(a.body.recovery_code).toMatch(/^\S{4,}$/);
      expect(a.body.recovery_link).toMatch(/^http/);
      const expiresAt = Date.parse(a.body.expires_at);
      expect(expiresAt).toBeGreaterThanOrEqual(before + 3_600_000 - 1_000);
      expect(expiresAt).toBeLessThanOrEqual(Date.now() + 3_600_000 + 1_000);
    }
  });

  it("POST /admin/recovery/code for an unknown identity answers 404", async () => {
    const a = await rest("POST", "/admin/recovery/code", { identity_id: "00000000-0000-4000-8000-000000000000", expires_in: "1h" }, auth);
    expectError(a, 404, "Not Found", Reason.notFound);
  });
});

describe("errors in the documented shape", () => {
  it("400 for a malformed orgId on every public route, naming the field, before the RPC runs", async () => {
    for (const [method, path] of [
      ["POST", "/auth/login/code"],
      ["PUT", "/auth/registration/code"],
      ["PUT", "/auth/recover/user/code"],
      ["POST", "/auth/recover/user/code"],
    ]) {
      const a = await rest(method, path, { username: "jdoe@example.co", orgId: "org-123" });
      expectError(a, 400, "Bad Request", Reason.invalidArgument);
      expect(a.body.error.message, path).toContain("org_id");
    }
  });

  it("400 naming an unknown field; the documented names only", async () => {
    const a = await rest("POST", "/auth/login/code", { ...DOCUMENTED_LOGIN, colour: "red" });
    expectError(a, 400, "Bad Request", Reason.invalidArgument);
    expect(a.body.error.message).toContain("colour");
    const camel = await rest("POST", "/admin/recovery/code", { identityId: "00000000-0000-4000-8000-000000000000" }, auth);
    expectError(camel, 400, "Bad Request", Reason.invalidArgument);
    expect(camel.body.error.message).toContain("identityId");
  });

  it("400 for a key given twice in a body, however written, and for a field by both its names in a query: never the last one wins", async () => {
    const [a, b] = ["00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000001"];
    for (const body of [`{"identity_id":"${a}","identity_id":"${b}"}`, `{"identity_id":"${a}","identity\\u005fid":"${b}"}`]) {
      const twice = await rest("POST", "/admin/recovery/code", body, auth);
      expectError(twice, 400, "Bad Request", Reason.invalidArgument);
      expect(twice.body.error.message).toContain('duplicate object key "identity_id"');
    }
    const locale = await rest("POST", "/auth/login/code", `{"username":"${anotherLogin().username}","orgId":"${DOCUMENTED_LOGIN.orgId}","locale":"en","locale":"de"}`);
    expectError(locale, 400, "Bad Request", Reason.invalidArgument);
    expect(locale.body.error.message).toContain('duplicate object key "locale"');
    const query = await rest("GET", `/auth/code/format?orgId=${DOCUMENTED_LOGIN.orgId}&org_id=or-aaaaa-bbbbb-cccccccccccccccc&purpose=1`);
    expectError(query, 400, "Bad Request", Reason.invalidArgument);
    expect(query.body.error.message).toContain("org_id: one name");
  });

  it("400 for bad admin input: a non-uuid identity_id, an expires_in that is no duration", async () => {
    const id = await rest("POST", "/admin/recovery/code", { identity_id: "123", expires_in: "1h" }, auth);
    expectError(id, 400, "Bad Request", Reason.invalidArgument);
    expect(id.body.error.message).toContain("identity_id");
    const exp = await rest("POST", "/iam/recovery/code", { identity_id: "00000000-0000-4000-8000-000000000000", expires_in: "1 hour" }, auth);
    expectError(exp, 400, "Bad Request", Reason.invalidArgument);
    expect(exp.body.error.message).toContain("expires_in");
  });

  it("400 for malformed JSON and for a body that is not an object, without echoing it", async () => {
    const a = await rest("POST", "/auth/login/code", '{"username":"secret-123456",');
    expectError(a, 400, "Bad Request", Reason.invalidArgument);
    expect(a.text).not.toContain("secret-123456");
    const b = await rest("POST", "/auth/login/code", "[1,2]");
    expectError(b, 400, "Bad Request", Reason.invalidArgument);
    expect(b.body.error.message).toContain("JSON object");
  });

  it("401 on the admin routes without a valid token, the same for a wrong one, before the body is parsed", async () => {
    const body = { identity_id: "00000000-0000-4000-8000-000000000000", expires_in: "1h" };
    const missing = await rest("POST", "/admin/recovery/code", body);
    expectError(missing, 401, "Unauthorized", Reason.unauthenticated);
    expect(missing.body.error.message).toContain("Bearer");
    const wrong = await rest("POST", "/iam/recovery/code", body, bearer("cga_aaaaaaaaaaaa_" + "x".repeat(43)));
    expectError(wrong, 401, "Unauthorized", Reason.unauthenticated);
    expect(wrong.body.error.message).toBe(missing.body.error.message);
    const malformed = await rest("POST", "/admin/recovery/code", "{not json");
    expectError(malformed, 401, "Unauthorized", Reason.unauthenticated);
  });

  it("forwards the bearer token: an authorized admin request reaches the RPC", async () => {
    const body = { identity_id: "00000000-0000-4000-8000-000000000000", expires_in: "1h" };
    await rest("POST", "/admin/recovery/code", body, { ...auth, "x-request-id": "rest-admin-1" });
    const lines = server.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "rpc" && l.requestId === "rest-admin-1");
    // The request gate refuses an unauthenticated call before the RPC logs anything.
    expect(lines).toHaveLength(1);
    expect(lines[0].rpc).toMatch(/AdminService\/CreateRecoveryCode$/);
    expect(lines[0].reason).not.toBe(Reason.unauthenticated);
  });

  it("404 for a path that is no route, 405 with Allow for a wrong method", async () => {
    const none = await rest("POST", "/auth/login/codes", DOCUMENTED_LOGIN);
    expect(none.status).toBe(404);
    expect(none.body.error.code).toBe(404);
    const wrong = await rest("GET", "/auth/login/code");
    expectError(wrong, 405, "Method Not Allowed", "METHOD_NOT_ALLOWED");
    expect(wrong.headers.get("allow")).toBe("POST");
    const both = await rest("DELETE", "/auth/recover/user/code");
    expect(both.headers.get("allow")).toBe("PUT, POST");
  });

  it("415 for a body that is not JSON, or is compressed", async () => {
    const plain = await rest("POST", "/auth/login/code", undefined, { "content-type": "text/plain" });
    expectError(plain, 415, "Unsupported Media Type", "UNSUPPORTED_MEDIA_TYPE");
    const none = await fetch(server.url + "/auth/login/code", { method: "POST", body: new Uint8Array(Buffer.from(JSON.stringify(anotherLogin()))) });
    expect(none.status).toBe(415);
    const gzip = await rest("POST", "/auth/login/code", anotherLogin(), { "content-encoding": "gzip" });
    expectError(gzip, 415, "Unsupported Media Type", "UNSUPPORTED_MEDIA_TYPE");
    const charset = await rest("POST", "/auth/login/code", anotherLogin(), { "content-type": "application/json; charset=utf-8" });
    expect(charset.status).toBe(200);
  });

  it("413 for a body over MAX_REQUEST_BYTES, announced or streamed, and the server stays up", async () => {
    const max = server.app.config.maxRequestBytes;
    const announced = await rawHttp(
      `POST /auth/login/code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${max + 1}\r\n\r\n`,
    );
    expect(announced.status).toBe(413);
    expect(JSON.parse(announced.body).error).toMatchObject({ code: 413, status: "Payload Too Large", reason: "REQUEST_TOO_LARGE" });

    const chunk = `{"username":"${"x".repeat(max)}"}`;
    const streamed = await rawHttp(
      `POST /auth/login/code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n`,
    );
    expect(streamed.status).toBe(413);
    expect(JSON.parse(streamed.body).error.reason).toBe("REQUEST_TOO_LARGE");

    const fetched = await rest("POST", "/auth/login/code", { username: "x".repeat(max) });
    expect(fetched.status).toBe(413);
    expect((await rest("POST", "/auth/login/code", anotherLogin())).status).toBe(200);
  });

  it("413 over h2c too, and the connection goes on serving", async () => {
    const max = server.app.config.maxRequestBytes;
    const session = http2.connect(server.url);
    const post = (headers: http2.OutgoingHttpHeaders, body: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":method": "POST", ":path": "/auth/login/code", "content-type": "application/json", ...headers });
        let status = 0;
        let text = "";
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (d) => (text += d));
        stream.on("close", () => (status ? resolve({ status, body: text }) : reject(new Error(`stream closed, code ${stream.rstCode}`))));
        stream.on("error", () => {});
        stream.end(body);
      });
    try {
      const big = JSON.stringify({ username: "x".repeat(max) });
      expect((await post({ "content-length": big.length }, big)).status).toBe(413);
      const streamed = await post({}, big);
      expect(streamed.status).toBe(413);
      expect(JSON.parse(streamed.body).error.reason).toBe("REQUEST_TOO_LARGE");
      expect(await post({}, JSON.stringify(anotherLogin()))).toEqual({ status: 200, body: '{"message":"success"}' });
    } finally {
      session.close();
    }
  });

  it("carries the caller's request id", async () => {
    const a = await rest("POST", "/auth/login/code", { username: "", orgId: DOCUMENTED_LOGIN.orgId }, { "x-request-id": "caller-req-42" });
    expectError(a, 400, "Bad Request", Reason.invalidArgument);
    expect(a.body.error.request).toBe("caller-req-42");
  });
});

describe("the error renderer", () => {
  const status = (code: Code) => renderRestError(new ConnectError("m", code), "r").status;

  it("maps every gRPC code to its HTTP status", () => {
    expect([Code.InvalidArgument, Code.FailedPrecondition, Code.OutOfRange].map(status)).toEqual([400, 400, 400]);
    expect(status(Code.Unauthenticated)).toBe(401);
    expect(status(Code.PermissionDenied)).toBe(403);
    expect(status(Code.NotFound)).toBe(404);
    expect([Code.AlreadyExists, Code.Aborted].map(status)).toEqual([409, 409]);
    expect(status(Code.ResourceExhausted)).toBe(429);
    expect(status(Code.Canceled)).toBe(499);
    expect([Code.Internal, Code.Unknown, Code.DataLoss].map(status)).toEqual([500, 500, 500]);
    expect(status(Code.Unimplemented)).toBe(501);
    expect(status(Code.Unavailable)).toBe(503);
    expect(status(Code.DeadlineExceeded)).toBe(504);
  });

  it("409 with the reason of the error", () => {
    const a = renderRestError(apiError(Code.AlreadyExists, Reason.alreadyExists, "username: already taken"), "req-1");
    expect(a).toEqual({
      status: 409,
      headers: {},
      body: { error: { code: 409, status: "Conflict", reason: "ALREADY_EXISTS", message: "username: already taken", request: "req-1" } },
    });
  });

  it("429 with Retry-After from a RetryInfo detail, rounded up, else the default", () => {
    const retry = { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(29_500) }) };
    const err = new ConnectError("too many codes; try again later", Code.ResourceExhausted, undefined, [errorInfo(Reason.rateLimited), retry]);
    const a = renderRestError(err, "req-2");
    expect(a.status).toBe(429);
    expect(a.headers).toEqual({ "retry-after": "30" });
    expect(a.body.error).toEqual({ code: 429, status: "Too Many Requests", reason: "RATE_LIMITED", message: "too many codes; try again later", request: "req-2" });
    const bare = renderRestError(apiError(Code.ResourceExhausted, Reason.rateLimited, "slow down"), "req-3");
    expect(bare.headers).toEqual({ "retry-after": String(DEFAULT_RETRY_AFTER_SECONDS) });
  });

  it("500 keeps the pipeline's sanitized message, and hides any other", () => {
    const ours = renderRestError(apiError(Code.Internal, Reason.internal, "internal error; quote request req-4 when reporting it"), "req-4");
    expect(ours.body.error).toMatchObject({ code: 500, status: "Internal Server Error", reason: "INTERNAL", message: "internal error; quote request req-4 when reporting it" });
    const leaked = renderRestError(new ConnectError('relation "code" does not exist at /srv/app.ts:12', Code.Unknown), "req-5");
    expect(leaked.status).toBe(500);
    expect(leaked.body.error.message).toBe("internal error; quote request req-5 when reporting it");
  });

  it("501 for an RPC not implemented", () => {
    const a = renderRestError(new ConnectError("codegate.v1.X is not implemented", Code.Unimplemented), "req-6");
    expect(a.body.error).toMatchObject({ code: 501, status: "Not Implemented", reason: "UNIMPLEMENTED" });
  });
});

describe("CORS", () => {
  const preflight = (path: string, origin: string) =>
    fetch(server.url + path, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type, authorization" },
    });

  it("answers a preflight from an allowed origin, on REST and Connect routes", async () => {
    for (const path of ["/auth/login/code", "/codegate.v1.LoginService/SendLoginCode", "/admin/recovery/code"]) {
      const res = await preflight(path, ALLOWED_ORIGIN);
      expect(res.status, path).toBe(204);
      expect(res.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
      expect(res.headers.get("access-control-allow-methods")?.split(", ")).toEqual(expect.arrayContaining(["POST", "PUT", "GET"]));
      const allowed = res.headers.get("access-control-allow-headers")!.toLowerCase().split(", ");
      expect(allowed).toEqual(expect.arrayContaining(["content-type", "authorization", "connect-protocol-version", "x-request-id"]));
      expect(res.headers.get("access-control-max-age")).toBe("7200");
      expect(res.headers.get("access-control-allow-credentials")).toBeNull();
      expect(res.headers.get("vary")).toContain("Origin");
    }
    const other = await preflight("/auth/login/code", "https://other.example.com:8443");
    expect(other.headers.get("access-control-allow-origin")).toBe("https://other.example.com:8443");
  });

  it("gives a refused origin no allow-origin header", async () => {
    for (const origin of ["https://evil.example.com", "https://app.example.com.evil.com", "http://app.example.com"]) {
      const res = await preflight("/auth/login/code", origin);
      expect(res.headers.get("access-control-allow-origin"), origin).toBeNull();
      expect(res.headers.get("access-control-allow-methods")).toBeNull();
    }
  });

  it("lets an allowed origin read the answer and its request id, and not a refused one", async () => {
    const ok = await rest("POST", "/auth/login/code", anotherLogin(), { origin: ALLOWED_ORIGIN });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
    expect(ok.headers.get("access-control-expose-headers")!.split(", ")).toEqual(expect.arrayContaining(["X-Request-Id", "Retry-After", "Grpc-Status"]));
    const connect = await fetch(server.url + "/codegate.v1.LoginService/SendLoginCode", {
      method: "POST",
      headers: { origin: ALLOWED_ORIGIN, "content-type": "application/json" },
      body: JSON.stringify(anotherLogin()),
    });
    expect(connect.status).toBe(200);
    expect(connect.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
    const refused = await rest("POST", "/auth/login/code", anotherLogin(), { origin: "https://evil.example.com" });
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();
  });

  it("CORS_ORIGINS takes origins or *, and refuses anything else", () => {
    expect(loadConfig({ CORS_ORIGINS: "https://App.Example.com/, http://localhost:5173,*" }).corsOrigins).toEqual([
      "https://app.example.com",
      "http://localhost:5173",
      "*",
    ]);
    for (const bad of ["app.example.com", "https://app.example.com/path", "ftp://x.example.com"]) {
      expect(() => loadConfig({ CORS_ORIGINS: bad }), bad).toThrow(ConfigError);
    }
  });
});
