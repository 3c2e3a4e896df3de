import { afterAll, beforeAll, describe, expect, it } from "vitest";
import crypto from "node:crypto";
import { syncBuiltinESMExports } from "node:module";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { status } from "@grpc/grpc-js";
import { AdminService } from "../gen/codegate/v1/admin_pb.ts";
import { RecoveryService } from "../gen/codegate/v1/recovery_pb.ts";
import { CodePurpose } from "../gen/codegate/v1/types_pb.ts";
import { ManualClock } from "../src/domain/clock.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";
import { outboxCounts } from "./support/outbox.ts";
import { failed, succeeded } from "./support/results.ts";

let smtp: SmtpSink;
let server: TestServer;
let fx: ReturnType<typeof adminFixtures>;
let admin: ReturnType<typeof grpcClient<typeof AdminService>>;
let recovery: ReturnType<typeof grpcClient<typeof RecoveryService>>;
let org: { id: string; tenantId: string };
const clock = new ManualClock();
const auth = bearer(ADMIN_TOKEN);
const PUBLIC_URL = "https://id.example.test";
const rpc = (m: string, body: unknown) => postJson(server.url, `/codegate.v1.RecoveryService/${m}`, body);
const createCode = (body: unknown) => postJson(server.url, "/codegate.v1.AdminService/CreateRecoveryCode", body, auth);

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", PUBLIC_URL }, { clock });
  fx = adminFixtures(server.url);
  admin = grpcClient(AdminService, server.url);
  recovery = grpcClient(RecoveryService, server.url);
  org = await fx.org("Recoverly");
});
afterAll(async () => {
  fx?.close();
  admin?.close();
  recovery?.close();
  await server?.close();
  await smtp?.stop();
});

describe("SendRecoveryCode and VerifyRecoveryCode", () => {
  it("mails an active identity a recovery code, found by org_id, tenant_id or both", async () => {
    const who = await fx.identity(org.id, "lost@example.com");
    for (const [i, body] of [
      { username: "lost@example.com", orgId: org.id },
      { username: "lost@example.com", tenantId: org.tenantId },
      { username: "lost@example.com", orgId: org.id, tenantId: org.tenantId },
    ].entries()) {
      const res = await rpc("SendRecoveryCode", body);
      expect([res.status, res.body]).toEqual([200, { message: "success" }]);
      const mail = await smtp.nextMailTo("lost@example.com", i);
      expect(mail.subject).toBe("Your Recoverly account recovery code");
      expect(mail.text).toContain("1 hour");
    }
    const code = codeFrom(smtp.mailsTo("lost@example.com")[2]);
    const ok = succeeded(await recovery.call("verifyRecoveryCode", { username: "lost@example.com", orgId: org.id, code }));
    expect(ok.identity?.id).toBe(who.id);
    const { payload } = await jwtVerify(ok.token, createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`)), {
      audience: "codegate",
      currentDate: clock.now(),
    });
    expect(payload).toMatchObject({ sub: who.id, purpose: "recovery" });
  });

  it("sends nothing when org_id and tenant_id disagree, or for unknown and disabled users, answering success", async () => {
    const other = await fx.org("Other");
    await fx.identity(org.id, "mismatch@example.com");
    await fx.identity(org.id, "off@example.com", "disabled");
    const answers = [
      await rpc("SendRecoveryCode", { username: "mismatch@example.com", orgId: org.id, tenantId: other.tenantId }),
      await rpc("SendRecoveryCode", { username: "nobody@example.com", orgId: org.id }),
      await rpc("SendRecoveryCode", { username: "off@example.com", orgId: org.id }),
    ];
    for (const a of answers) expect([a.status, a.body]).toEqual([200, { message: "success" }]);
    // Beside one that does get a code, the outbox holds nothing for them.
    await fx.identity(org.id, "marker@example.com");
    await rpc("SendRecoveryCode", { username: "marker@example.com", orgId: org.id });
    expect(await outboxCounts(server, ["mismatch@example.com", "nobody@example.com", "off@example.com", "marker@example.com"])).toEqual({
      "mismatch@example.com": 0,
      "nobody@example.com": 0,
      "off@example.com": 0,
      "marker@example.com": 1,
    });
  });

  it("mails an 'access attempted' notice to an address without an account when the organization asks for it", async () => {
    const noisy = await fx.org("Noisy", { notifyUnknownRecovery: true });
    await fx.identity(noisy.id, "disabled-noisy@example.com", "disabled");
    expect((await rpc("SendRecoveryCode", { username: "stranger@example.com", orgId: noisy.id })).status).toBe(200);
    const notice = await smtp.nextMailTo("stranger@example.com");
    expect(notice.subject).toBe("Noisy account access attempted");
    expect(notice.text).not.toMatch(/^ {4}\S+$/m);
    // Only for addresses with no account at all, and never by default.
    expect((await rpc("SendRecoveryCode", { username: "disabled-noisy@example.com", orgId: noisy.id })).status).toBe(200);
    expect((await rpc("SendRecoveryCode", { username: "stranger2@example.com", orgId: org.id })).status).toBe(200);
    expect(await outboxCounts(server, ["disabled-noisy@example.com", "stranger2@example.com", "stranger@example.com"])).toEqual({
      "disabled-noisy@example.com": 0,
      "stranger2@example.com": 0,
      "stranger@example.com": 1,
    });
  });
});

describe("CreateRecoveryCode", () => {
  it("answers the documented fields; the code is not mailed and works once through the link's flow id", async () => {
    const who = await fx.identity(org.id, "admin-reset@example.com");
    const before = clock.now().getTime();
    const res = await createCode({ identity_id: who.id, expires_in: "1h30m" });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(["expires_at", "recovery_code", "recovery_link"]);
    expect(new Date(res.body.expires_at).getTime()).toBe(before + 90 * 60_000);
    expect(res.body.recovery_code).toMatch(/^\d{6}$/);
    const link = new URL(res.body.recovery_link);
    expect(`${link.origin}${link.pathname}`).toBe(`${PUBLIC_URL}/recovery`);
    const flowId = link.searchParams.get("flow")!;
    expect(flowId).toMatch(/^[0-9a-f-]{36}$/);

    const wrong = await rpc("VerifyRecoveryCode", { flowId, code: res.body.recovery_code === "000000" ? "111111" : "000000" });
    expect(wrong.status).toBe(401);
    const ok = await rpc("VerifyRecoveryCode", { flowId, code: res.body.recovery_code });
    expect(ok.status).toBe(200);
    expect(ok.body.identity.id).toBe(who.id);
    expect((await rpc("VerifyRecoveryCode", { flowId, code: res.body.recovery_code })).status).toBe(401);
    // Nothing was queued for the user, then or since.
    expect(await outboxCounts(server, ["admin-reset@example.com"])).toEqual({ "admin-reset@example.com": 0 });
  });

  it("compares a guess through the flow id with the stored hash in constant time, wrong or right", async () => {
    const who = await fx.identity(org.id, "constant-time@example.com");
    const res = await createCode({ identity_id: who.id });
    const flowId = new URL(res.body.recovery_link).searchParams.get("flow")!;
    // crypto.timingSafeEqual watched: the server's named import of it follows (node:module's syncBuiltinESMExports).
    const original = crypto.timingSafeEqual;
    const compared: { equal: boolean; length: number }[] = [];
    crypto.timingSafeEqual = (a, b) => {
      const equal = original(a, b);
      compared.push({ equal, length: a.byteLength });
      return equal;
    };
    syncBuiltinESMExports();
    try {
      expect((await rpc("VerifyRecoveryCode", { flowId, code: res.body.recovery_code === "000000" ? "111111" : "000000" })).status).toBe(401);
      expect(compared).toEqual([{ equal: false, length: 32 }]);
      expect((await rpc("VerifyRecoveryCode", { flowId, code: res.body.recovery_code })).status).toBe(200);
      expect(compared).toEqual([
        { equal: false, length: 32 },
        { equal: true, length: 32 },
      ]);
    } finally {
      crypto.timingSafeEqual = original;
      syncBuiltinESMExports();
    }
  });

  it("answers every failure through the flow id alike: a wrong code, the guess that locks the code, and the right code once it is locked", async () => {
    clock.advance(3_600_000); // windows of wrong guesses per address that no earlier test has touched
    const who = await fx.identity(org.id, "locked-flow@example.com");
    const res = await createCode({ identity_id: who.id });
    const flowId = new URL(res.body.recovery_link).searchParams.get("flow")!;
    const wrong = res.body.recovery_code === "000000" ? "111111" : "000000";
    const answers = [];
    for (let guess = 1; guess <= 5; guess++) answers.push(await rpc("VerifyRecoveryCode", { flowId, code: wrong })); // the fifth locks it
    answers.push(await rpc("VerifyRecoveryCode", { flowId, code: res.body.recovery_code }));
    const [first] = answers;
    expect(first.status).toBe(401);
    for (const [i, a] of answers.entries()) expect({ status: a.status, body: a.body }, `answer ${i + 1}`).toEqual({ status: first.status, body: first.body });
  });

  it("defaults to 1 hour, and the code expires then", async () => {
    const who = await fx.identity(org.id, "default-ttl@example.com");
    const now = clock.now().getTime();
    const res = await createCode({ identity_id: who.id });
    expect(new Date(res.body.expires_at).getTime()).toBe(now + 3_600_000);
    clock.advance(3_600_000 + 1000);
    const flowId = new URL(res.body.recovery_link).searchParams.get("flow");
    expect((await rpc("VerifyRecoveryCode", { flowId, code: res.body.recovery_code })).status).toBe(401);
  });

  it("keeps an administrator's code apart: only the next one replaces it, a public send never does, and it is redeemed through its flow id only", async () => {
    const who = await fx.identity(org.id, "both-kinds@example.com");
    await rpc("SendRecoveryCode", { username: "both-kinds@example.com", orgId: org.id });
    const mailed = codeFrom(await smtp.nextMailTo("both-kinds@example.com"));
    const first = await createCode({ identity_id: who.id, expires_in: "10m" });
    const second = await createCode({ identity_id: who.id, expires_in: "10m" });
    const flow = (r: typeof first) => new URL(r.body.recovery_link).searchParams.get("flow");
    // The second admin code replaced the first.
    expect((await rpc("VerifyRecoveryCode", { flowId: flow(first), code: first.body.recovery_code })).status).toBe(401);
    // The admin's code is not found by username: guessing by username never reaches it.
    expect((await rpc("VerifyRecoveryCode", { username: "both-kinds@example.com", orgId: org.id, code: second.body.recovery_code })).status).toBe(401);
    // A public send replaces the mailed code only.
    await rpc("SendRecoveryCode", { username: "both-kinds@example.com", orgId: org.id });
    const mailed2 = codeFrom(await smtp.nextMailTo("both-kinds@example.com", 1));
    expect((await rpc("VerifyRecoveryCode", { username: "both-kinds@example.com", orgId: org.id, code: mailed })).status).toBe(401);
    expect((await rpc("VerifyRecoveryCode", { flowId: flow(second), code: second.body.recovery_code })).status).toBe(200);
    expect((await rpc("VerifyRecoveryCode", { username: "both-kinds@example.com", orgId: org.id, code: mailed2 })).status).toBe(200);
  });

  it("kills the identity's earlier recovery codes, mailed or bound to an application's flow, in the trail under the administrator's call; its other codes live on", async () => {
    const who = await fx.identity(org.id, "handed-over@example.com");
    const username = "handed-over@example.com";
    await rpc("SendRecoveryCode", { username, orgId: org.id });
    const mailed = codeFrom(await smtp.nextMailTo(username));
    expect(await rpc("SendRecoveryCode", { username, orgId: org.id, binding: "app-flow-0123456789" })).toMatchObject({ status: 200 });
    const bound = codeFrom(await smtp.nextMailTo(username, 1));
    await postJson(server.url, "/codegate.v1.LoginService/SendLoginCode", { username, orgId: org.id });
    const login = codeFrom(await smtp.nextMailTo(username, 2));

    const handed = await createCode({ identity_id: who.id });
    expect(handed.status).toBe(200);
    // The mailed and the bound code: in one entry of the trail, with the call's actor and request id.
    const trail = await server.app.sql.query(`select type, purpose, actor, details from event where identity_id = $1 and request_id = $2 order by id`, [who.id, handed.headers.get("x-request-id")]);
    expect(trail).toEqual([
      { type: "codes.invalidated", purpose: "recovery", actor: "env", details: { count: "2" } },
      { type: "code.issued", purpose: "recovery", actor: "env", details: null },
    ]);
    expect((await rpc("VerifyRecoveryCode", { username, orgId: org.id, code: mailed })).status).toBe(401);
    expect((await rpc("VerifyRecoveryCode", { username, orgId: org.id, code: bound, binding: "app-flow-0123456789" })).status).toBe(401);
    expect((await postJson(server.url, "/codegate.v1.LoginService/VerifyLoginCode", { username, orgId: org.id, code: login })).status).toBe(200);
    expect((await rpc("VerifyRecoveryCode", { flowId: new URL(handed.body.recovery_link).searchParams.get("flow"), code: handed.body.recovery_code })).status).toBe(200);
  });

  it("refuses a bad expires_in, saying what was expected", async () => {
    const who = await fx.identity(org.id, "bad-ttl@example.com");
    for (const expires_in of ["0s", "721h", "1d", "abc", "-1h", "1h-"]) {
      const res = await createCode({ identity_id: who.id, expires_in });
      expect(res.status, expires_in).toBe(400);
      expect(res.body.code).toBe("invalid_argument");
      expect(res.body.message, expires_in).toContain("expires_in");
    }
    expect((await createCode({ identity_id: who.id, expires_in: "720h" })).status).toBe(200);
    expect((await createCode({ identity_id: who.id, expires_in: "1500ms" })).status).toBe(200);
  });

  it("answers failed_precondition for a pending or a disabled identity, naming its state, and issues nothing", async () => {
    for (const state of ["pending", "disabled"] as const) {
      const who = await fx.identity(org.id, `not-active-${state}@example.com`, state);
      const res = await createCode({ identity_id: who.id });
      expect(res.status, state).toBe(400);
      expect(res.body.code, state).toBe("failed_precondition");
      expect(res.body.message, state).toContain(`is ${state}`);
      const [codes] = await server.app.sql.query(`select count(*)::int as n from code where identity_id = $1 and purpose = 'recovery'`, [who.id]);
      expect(codes.n, state).toBe(0);
    }
  });

  it("answers not_found for an unknown identity, and needs the admin token", async () => {
    const unknown = await admin.call("createRecoveryCode", { identityId: "00000000-0000-4000-8000-000000000000", expiresIn: "1h" }, auth);
    expect(failed(unknown).code).toBe(status.NOT_FOUND);
    const anonymous = await postJson(server.url, "/codegate.v1.AdminService/CreateRecoveryCode", { identity_id: "00000000-0000-4000-8000-000000000000" });
    expect(anonymous.status).toBe(401);
  });
});

describe("InvalidateCodes and ListCourierMessages", () => {
  it("kills an identity's live codes of one purpose or all", async () => {
    const who = await fx.identity(org.id, "kill@example.com");
    const r1 = await createCode({ identity_id: who.id });
    const killed = await admin.call("invalidateCodes", { identityId: who.id, purpose: CodePurpose.LOGIN }, auth);
    expect(killed.ok && killed.value.invalidatedCount).toBe(0);
    const all = await admin.call("invalidateCodes", { identityId: who.id }, auth);
    expect(all.ok && all.value.invalidatedCount).toBe(1);
    const flowId = new URL(r1.body.recovery_link).searchParams.get("flow");
    expect((await rpc("VerifyRecoveryCode", { flowId, code: r1.body.recovery_code })).status).toBe(401);
  });

  it("lists the organization's mail queue with status, newest first, without bodies", async () => {
    const list = succeeded(await admin.call("listCourierMessages", { orgId: org.id, pageSize: 3 }, auth));
    expect(list.messages).toHaveLength(3);
    expect(list.nextPageToken).not.toBe("");
    const times = list.messages.map((m) => Number(m.createdAt!.seconds) * 1e9 + m.createdAt!.nanos);
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    const json = await postJson(server.url, "/codegate.v1.AdminService/ListCourierMessages", { orgId: org.id, status: "COURIER_MESSAGE_STATUS_SENT" }, auth);
    expect(json.status).toBe(200);
    expect(json.body.messages.length).toBeGreaterThan(3);
    for (const m of json.body.messages) {
      expect(m.status).toBe("COURIER_MESSAGE_STATUS_SENT");
      expect(JSON.stringify(m)).not.toMatch(/body|html/);
    }
    const next = succeeded(await admin.call("listCourierMessages", { orgId: org.id, pageSize: 3, pageToken: list.nextPageToken }, auth));
    expect(next.messages[0].id).not.toBe(list.messages[0].id);
  });
});

describe("an administrator's code named by its flow id alone", () => {
  it("counts a wrong guess against the client address under the organization its check reads: past the limit, no more guesses", async () => {
    const s = await startTestServer({ RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "3/1h", PUBLIC_URL }, { clock: new ManualClock(new Date("2026-12-01T10:00:05Z")) });
    const f = adminFixtures(s.url);
    try {
      const o = await f.org("Flow-limited");
      const who = await f.identity(o.id, "flow-limited@example.com");
      const res = await postJson(s.url, "/codegate.v1.AdminService/CreateRecoveryCode", { identity_id: who.id, expires_in: "1h" }, auth);
      const flowId = new URL(res.body.recovery_link).searchParams.get("flow");
      const guess = (code: string) => postJson(s.url, "/codegate.v1.RecoveryService/VerifyRecoveryCode", { flowId, code });
      const wrong = res.body.recovery_code === "000000" ? "111111" : "000000";
      // The code takes 5 wrong guesses; the address, 3 an hour.
      for (let i = 0; i < 3; i++) expect((await guess(wrong)).status).toBe(401);
      const blocked = await guess(res.body.recovery_code);
      expect(blocked.status).toBe(429);
      expect(blocked.body.code).toBe("resource_exhausted");
    } finally {
      f.close();
      await s.close();
    }
  });
});
