// The TypeScript client package (clients/ts, @codegate/client) against the real
// server: every service over each of its transports (Connect JSON and gRPC-Web
// over fetch as in a browser; gRPC, Connect and gRPC-Web over HTTP/2 in Node),
// the admin token sent with admin calls only, the error details decoded
// (reason, field, violations, retry-after, request id), and the package as it is
// published: built with tsc and imported by plain Node, without its sources.
import { execFile } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, CodePurpose, codegateError, DeliveryChannel, IdentityState, type CodegateClients } from "@codegate/client";
import { createCodegateNodeClients, type NodeClientOptions } from "@codegate/client/node";
import { createCodegateWebClients, type WebClientOptions } from "@codegate/client/web";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { oneof, receipt } from "./support/results.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

const run = promisify(execFile);
const ROOT = new URL("..", import.meta.url).pathname;

let smtp: SmtpSink;
let server: TestServer;
const toClose: (() => void)[] = [];

beforeAll(async () => {
  smtp = await SmtpSink.create();
  // One send per username and purpose per 30 s: the rate limit's RetryInfo is decoded below.
  server = await startTestServer({ SMTP_URL: smtp.url, RATE_LIMIT_SEND_PER_USERNAME: "1/30s" });
});

afterAll(async () => {
  for (const close of toClose) close();
  await server?.close();
  await smtp?.stop();
});

type Transport = { name: string; clients: (opts: { adminToken?: string }) => CodegateClients };

const web = (extra: Partial<WebClientOptions>): Transport["clients"] => (opts) => createCodegateWebClients({ baseUrl: server.url, ...extra, ...opts });
const node = (extra: Partial<NodeClientOptions>): Transport["clients"] => (opts) => {
  const c = createCodegateNodeClients({ baseUrl: server.url, ...extra, ...opts });
  toClose.push(c.close);
  return c;
};

const TRANSPORTS: Transport[] = [
  { name: "web, Connect JSON", clients: web({}) },
  { name: "web, Connect binary", clients: web({ useBinaryFormat: true }) },
  { name: "web, gRPC-Web", clients: web({ protocol: "grpc-web" }) },
  { name: "node, gRPC", clients: node({}) },
  { name: "node, Connect JSON", clients: node({ protocol: "connect" }) },
  { name: "node, gRPC-Web", clients: node({ protocol: "grpc-web" }) },
];

let users = 0;
const newUser = (what: string) => `${what}-${++users}@example.com`;

/** The error a call fails with (the test fails if it succeeds). */
async function failure(call: Promise<unknown>) {
  return codegateError(
    await call.then(
      (ok) => {
        throw new Error(`expected the call to fail, it answered ${JSON.stringify(ok, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
      },
      (err: unknown) => err,
    ),
  );
}

describe.each(TRANSPORTS)("over $name", ({ clients }) => {
  it("reaches every service: admin with the token, code formats, and the login, registration and recovery round trips", async () => {
    const c = clients({ adminToken: ADMIN_TOKEN });
    const org = (await c.admin.createOrganization({ name: "Client Co" })).organization!;
    expect(org.id).toMatch(/^or-/);

    const format = await c.code.getCodeFormat({ tenantId: org.tenantId, purpose: CodePurpose.LOGIN });
    expect([format.length, format.alphabet]).toEqual([6, "0123456789"]);

    // Registration: the admin creates a pending identity, which is mailed a code.
    const username = newUser("client");
    const created = (await c.admin.createIdentity({ orgId: org.id, username })).identity!;
    expect(created.state).toBe(IdentityState.PENDING);
    const registered = await c.registration.completeRegistration({ username, orgId: org.id, code: codeFrom(await smtp.nextMailTo(username)) });
    expect(registered.identity?.state).toBe(IdentityState.ACTIVE);

    // Login.
    expect((await c.login.sendLoginCode({ username, orgId: org.id })).message).toBe("success");
    const login = await c.login.verifyLoginCode({ username, orgId: org.id, code: codeFrom(await smtp.nextMailTo(username, 1)) });
    expect(login.identity?.id).toBe(created.id);
    expect(login.token.split(".")).toHaveLength(3);

    // Recovery.
    expect((await c.recovery.sendRecoveryCode({ username, tenantId: org.tenantId })).message).toBe("success");
    const recovered = await c.recovery.verifyRecoveryCode({ username, tenantId: org.tenantId, code: codeFrom(await smtp.nextMailTo(username, 2)) });
    expect(recovered.identity?.id).toBe(created.id);

    expect((await c.admin.getIdentity({ identityId: created.id })).identity?.state).toBe(IdentityState.ACTIVE);

    // The delivery API, with the token: a text and a mail claimed, the text's code verified, both acked.
    const relay = (await c.admin.createOrganization({ name: "Relay Co", settings: { delivery: { login: DeliveryChannel.SMS, recovery: DeliveryChannel.MAIL_API } } })).organization!;
    const texted = newUser("texted");
    const phoneNumber = `+4179${1_000_000 + users}`;
    const withPhone = (await c.admin.createIdentity({ orgId: relay.id, username: texted, phoneNumber, skipRegistrationCode: true })).identity!;
    await c.admin.setIdentityState({ identityId: withPhone.id, state: IdentityState.ACTIVE });
    await c.login.sendLoginCode({ username: texted, orgId: relay.id });
    await c.recovery.sendRecoveryCode({ username: texted, orgId: relay.id });
    const claimed = (await c.delivery.claim({ channels: [DeliveryChannel.SMS, DeliveryChannel.MAIL_API] })).messages;
    expect(claimed.map((m) => [m.channel, m.recipient]).sort()).toEqual([
      [DeliveryChannel.MAIL_API, texted],
      [DeliveryChannel.SMS, phoneNumber],
    ]);
    const [mail, text] = claimed.sort((a, b) => a.channel - b.channel);
    expect(new TextDecoder().decode(oneof(mail.content, "mail").rfc822)).toContain(`To: ${texted}\r\n`);
    const texting = await c.login.verifyLoginCode({ username: texted, orgId: relay.id, code: oneof(text.content, "text").body });
    expect(texting.identity?.phoneNumber).toBe(phoneNumber);
    const receipts = claimed.map(receipt);
    expect((await c.delivery.ack({ messages: receipts })).ackedIds.sort()).toEqual(receipts.map((r) => r.id).sort());
  });

  it("decodes the errors: validation violations, the field of ErrorInfo, reasons, retry-after and the request id", async () => {
    const c = clients({ adminToken: ADMIN_TOKEN });
    const org = (await c.admin.createOrganization({ name: "Errors Co" })).organization!;

    const pattern = await failure(c.admin.getOrganization({ orgId: "org-123" }));
    expect(pattern).toMatchObject({ code: Code.InvalidArgument, codeName: "invalid_argument", reason: "INVALID_ARGUMENT", field: "org_id" });
    expect(pattern.violations).toEqual([{ field: "org_id", rule: "string.pattern", message: expect.stringContaining("^or-") }]);
    expect(pattern.requestId).toMatch(/^[0-9a-f-]{36}$/);

    const nested = await failure(c.admin.createOrganization({ name: "Nested", settings: { loginCode: { length: 2 } } }));
    expect(nested.field).toBe("settings.login_code.length");
    expect(nested.violations.map((v) => v.rule)).toEqual([expect.stringMatching(/^uint32\.gte/)]);

    const wholeMessage = await failure(c.login.sendLoginCode({ username: "x@example.com" }));
    expect(wholeMessage.violations).toEqual([{ field: "", rule: "org_id_or_tenant_id", message: "org_id or tenant_id is required" }]);
    expect(wholeMessage.field).toBeUndefined();

    const token = await failure(c.admin.listOrganizations({ pageToken: "not-a-token" }));
    expect(token).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "page_token", violations: [] });

    const unknown = await failure(c.admin.getOrganization({ orgId: "or-aaaaa-bbbbb-cccccccccccccccc" }));
    expect(unknown).toMatchObject({ code: Code.NotFound, codeName: "not_found", reason: "NOT_FOUND", retryAfterMs: undefined });

    const wrongCode = await failure(c.login.verifyLoginCode({ username: "nobody@example.com", orgId: org.id, code: "000000" }));
    expect(wrongCode).toMatchObject({ code: Code.Unauthenticated, reason: "INVALID_CODE" });

    const username = newUser("limited");
    await c.login.sendLoginCode({ username, orgId: org.id });
    const limited = await failure(c.login.sendLoginCode({ username, orgId: org.id }));
    expect(limited).toMatchObject({ code: Code.ResourceExhausted, codeName: "resource_exhausted", reason: "RATE_LIMITED" });
    expect(limited.retryAfterMs).toBeGreaterThanOrEqual(1000);
    expect(limited.retryAfterMs).toBeLessThanOrEqual(30_000);
    expect(limited.retryAfterMs! % 1000).toBe(0);

    const anonymous = clients({});
    const refused = await failure(anonymous.admin.listOrganizations({}));
    expect(refused).toMatchObject({ code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });
    expect(await failure(anonymous.delivery.claim({ channels: [DeliveryChannel.SMS] }))).toMatchObject({ code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });
  });
});

describe("the admin token", () => {
  it("goes with AdminService calls only", async () => {
    const seen: [string, string | null][] = [];
    const recording: typeof fetch = (input, init) => {
      const request = new Request(input, init);
      seen.push([new URL(request.url).pathname, request.headers.get("authorization")]);
      return fetch(request);
    };
    const c = createCodegateWebClients({ baseUrl: server.url, adminToken: () => ADMIN_TOKEN, fetch: recording });
    const org = (await c.admin.createOrganization({ name: "Token Co" })).organization!;
    await c.code.getCodeFormat({ orgId: org.id, purpose: CodePurpose.RECOVERY });
    await c.login.sendLoginCode({ username: newUser("token"), orgId: org.id });
    expect(seen).toEqual([
      ["/codegate.v1.AdminService/CreateOrganization", `Bearer ${ADMIN_TOKEN}`],
      ["/codegate.v1.CodeService/GetCodeFormat", null],
      ["/codegate.v1.LoginService/SendLoginCode", null],
    ]);
  });
});

describe("an error that is not the server's", () => {
  it("has its code and no reason, field or request id", async () => {
    // Nothing listens on the discard port: fetch fails, which connect-web reports as `unknown`.
    const c = createCodegateWebClients({ baseUrl: "http://127.0.0.1:9" });
    const e = await failure(c.code.getCodeFormat({ orgId: "or-aaaaa-bbbbb-cccccccccccccccc", purpose: CodePurpose.LOGIN }));
    expect(e).toMatchObject({ code: Code.Unknown, codeName: "unknown", reason: undefined, field: undefined, violations: [], retryAfterMs: undefined, requestId: undefined });
  });
});

describe("the package as published", () => {
  it("builds with tsc, and plain Node imports its build (no sources) and calls the server with it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "codegate-client-"));
    try {
      const pkg = join(dir, "node_modules", "@codegate", "client");
      mkdirSync(pkg, { recursive: true });
      cpSync(join(ROOT, "clients/ts/package.json"), join(pkg, "package.json"));
      // Its build, with the compiler and configuration it is published with.
      await run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", join(ROOT, "clients/ts/tsconfig.build.json"), "--outDir", join(pkg, "dist")]);
      // Its dependencies, as npm would install them beside it.
      for (const scope of ["@bufbuild", "@connectrpc"]) symlinkSync(join(ROOT, "node_modules", scope), join(dir, "node_modules", scope));
      writeFileSync(
        join(dir, "call.mjs"),
        `import { createCodegateNodeClients, CodePurpose, codegateError } from "@codegate/client/node";
const c = createCodegateNodeClients({ baseUrl: process.argv[2] });
const format = await c.code.getCodeFormat({ orgId: "or-aaaaa-bbbbb-cccccccccccccccc", purpose: CodePurpose.REGISTRATION });
const refused = await c.code.getCodeFormat({ orgId: "bad", purpose: CodePurpose.LOGIN }).catch(codegateError);
c.close();
console.log(JSON.stringify({ length: format.length, lifespanSeconds: String(format.lifespan.seconds), field: refused.field }));
`,
      );
      const { stdout } = await run(process.execPath, [join(dir, "call.mjs"), server.url], { cwd: dir });
      expect(JSON.parse(stdout)).toEqual({ length: 6, lifespanSeconds: "86400", field: "org_id" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
