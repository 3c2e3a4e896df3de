import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { AdminService } from "../gen/codegate/v1/admin_pb.ts";
import { RegistrationService } from "../gen/codegate/v1/registration_pb.ts";
import { IdentityState } from "../gen/codegate/v1/types_pb.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";
import { outboxCounts } from "./support/outbox.ts";
import { succeeded } from "./support/results.ts";

let smtp: SmtpSink;
let server: TestServer;
let fx: ReturnType<typeof adminFixtures>;
let admin: ReturnType<typeof grpcClient<typeof AdminService>>;
let registration: ReturnType<typeof grpcClient<typeof RegistrationService>>;
let orgId: string;
const auth = bearer(ADMIN_TOKEN);
const rpc = (m: string, body: unknown) => postJson(server.url, `/codegate.v1.RegistrationService/${m}`, body);

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms" });
  fx = adminFixtures(server.url);
  admin = grpcClient(AdminService, server.url);
  registration = grpcClient(RegistrationService, server.url);
  orgId = (await fx.org("Regco")).id;
});
afterAll(async () => {
  fx?.close();
  admin?.close();
  registration?.close();
  await server?.close();
  await smtp?.stop();
});

/**
 * A new code from the mail that `send` triggers (the `after`-th mail to `username` on),
 * sent again in the (one in a million) case that it equals `other`: a test of the old
 * code failing then needs no `if`.
 */
async function codeOtherThan(other: string, username: string, after: number, send: () => Promise<unknown>): Promise<string> {
  for (let i = 0; i < 3; i++) {
    await send();
    const code = codeFrom(await smtp.nextMailTo(username, after + i));
    if (code !== other) return code;
  }
  throw new Error(`three new codes for ${username} in a row were equal to the old one`);
}

describe("registration by an administrator", () => {
  it("CreateIdentity mails a registration code; CompleteRegistration makes the identity active", async () => {
    const created = succeeded(await admin.call("createIdentity", { orgId, username: "new@example.com" }, auth));
    expect(created.identity?.state).toBe(IdentityState.PENDING);
    const mail = await smtp.nextMailTo("new@example.com");
    expect(mail.subject).toBe("Complete your Regco registration");
    expect(mail.text).toContain("valid for 1 day");
    const code = codeFrom(mail);

    const done = succeeded(await registration.call("completeRegistration", { username: "new@example.com", orgId, code }));
    expect(done.identity?.state).toBe(IdentityState.ACTIVE);
    expect(done.identity?.registeredAt).toBeDefined();
    const { payload } = await jwtVerify(done.token, createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`)), { audience: "codegate" });
    expect(payload).toMatchObject({ sub: created.identity!.id, purpose: "registration", org: orgId });

    const got = succeeded(await admin.call("getIdentity", { identityId: created.identity!.id }, auth));
    expect(got.identity?.state).toBe(IdentityState.ACTIVE);
    expect(got.identity?.registeredAt).toBeDefined();
    // Single use.
    expect((await rpc("CompleteRegistration", { username: "new@example.com", orgId, code })).status).toBe(401);
  });

  it("skip_registration_code creates the identity without a mail", async () => {
    succeeded(await admin.call("createIdentity", { orgId, username: "quiet@example.com", skipRegistrationCode: true }, auth));
    succeeded(await admin.call("createIdentity", { orgId, username: "marker1@example.com" }, auth));
    // The mail of a created identity is queued before CreateIdentity answers.
    expect(await outboxCounts(server, ["quiet@example.com", "marker1@example.com"])).toEqual({ "quiet@example.com": 0, "marker1@example.com": 1 });
  });
});

describe("ResendRegistrationCode", () => {
  it("gives a pending identity a new code and the previous one stops working", async () => {
    await admin.call("createIdentity", { orgId, username: "resend@example.com" }, auth);
    const first = codeFrom(await smtp.nextMailTo("resend@example.com"));
    const second = await codeOtherThan(first, "resend@example.com", 1, async () => {
      const res = await rpc("ResendRegistrationCode", { username: "resend@example.com", orgId });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ message: "success" });
    });
    expect((await rpc("CompleteRegistration", { username: "resend@example.com", orgId, code: first })).status).toBe(401);
    expect((await rpc("CompleteRegistration", { username: "resend@example.com", orgId, code: second })).status).toBe(200);
  });

  it("does nothing for a registered or unknown identity, and answers success all the same", async () => {
    await fx.identity(orgId, "active-reg@example.com", "active");
    const a = await rpc("ResendRegistrationCode", { username: "active-reg@example.com", orgId });
    const b = await rpc("ResendRegistrationCode", { username: "ghost@example.com", orgId });
    for (const r of [a, b]) expect([r.status, r.body]).toEqual([200, { message: "success" }]);
    // Beside one that does get a code, the outbox holds nothing for them.
    await admin.call("createIdentity", { orgId, username: "marker2@example.com" }, auth);
    expect(await outboxCounts(server, ["active-reg@example.com", "ghost@example.com", "marker2@example.com"])).toEqual({
      "active-reg@example.com": 0,
      "ghost@example.com": 0,
      "marker2@example.com": 1,
    });
  });
});

describe("self-service Register", () => {
  it("is refused where the organization does not allow it", async () => {
    const r = await rpc("Register", { username: "self@example.com", orgId });
    expect(r.status).toBe(403);
    expect(r.body.code).toBe("permission_denied");
  });

  it("registers a free username, and answers the same for a taken one (with a notice to an active owner)", async () => {
    const open = await fx.org("Open Signup", { selfServiceSignup: true });
    const free = await rpc("Register", { username: "fresh@example.com", orgId: open.id });
    const code = codeFrom(await smtp.nextMailTo("fresh@example.com"));
    const done = await rpc("CompleteRegistration", { username: "fresh@example.com", orgId: open.id, code });
    expect(done.status).toBe(200);
    expect(done.body.identity.state).toBe("IDENTITY_STATE_ACTIVE");

    const taken = await rpc("Register", { username: "Fresh@Example.com", orgId: open.id });
    expect(taken.status).toBe(free.status);
    expect(taken.body).toEqual(free.body);
    const notice = await smtp.nextMailTo("fresh@example.com", 1);
    expect(notice.subject).toBe("You already have a Open Signup account");
    expect(notice.text).not.toMatch(/^ {4}\S+$/m);
  });

  it("mails a pending owner a fresh code instead", async () => {
    const open = await fx.org("Pending Signup", { selfServiceSignup: true });
    await rpc("Register", { username: "halfway@example.com", orgId: open.id });
    const first = codeFrom(await smtp.nextMailTo("halfway@example.com"));
    const second = await codeOtherThan(first, "halfway@example.com", 1, () => rpc("Register", { username: "halfway@example.com", orgId: open.id }));
    expect((await rpc("CompleteRegistration", { username: "halfway@example.com", orgId: open.id, code: first })).status).toBe(401);
    expect((await rpc("CompleteRegistration", { username: "halfway@example.com", orgId: open.id, code: second })).status).toBe(200);
  });
});
