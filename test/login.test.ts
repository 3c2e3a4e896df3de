import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { status } from "@grpc/grpc-js";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";
import { IdentityState } from "../gen/codegate/v1/types_pb.ts";
import { ManualClock } from "../src/domain/clock.ts";
import { ownerCodeHash } from "../src/rules/codes/hash.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { grpcClient, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";
import { outboxCounts } from "./support/outbox.ts";
import { succeeded } from "./support/results.ts";

let smtp: SmtpSink;
let server: TestServer;
let login: ReturnType<typeof grpcClient<typeof LoginService>>;
let fx: ReturnType<typeof adminFixtures>;
let orgId: string;
const clock = new ManualClock();
/** Every code and token this file saw, to look for in the logs at the end. */
const secretsSeen = new Set<string>();
const send = (username: string, org = orgId) => postJson(server.url, "/codegate.v1.LoginService/SendLoginCode", { username, orgId: org });
const verify = (username: string, code: string, org = orgId) =>
  postJson(server.url, "/codegate.v1.LoginService/VerifyLoginCode", { username, orgId: org, code });

async function mailedCode(username: string, doSend = true): Promise<string> {
  const before = smtp.mailsTo(username).length;
  if (doSend) expect((await send(username)).status).toBe(200);
  const code = codeFrom(await smtp.nextMailTo(username, before));
  secretsSeen.add(code);
  return code;
}

/** A new mailed code for `username`, sent again in the (one in a million) case that it equals `other`. */
async function mailedCodeOtherThan(username: string, other: string): Promise<string> {
  for (let i = 0; i < 3; i++) {
    const code = await mailedCode(username);
    if (code !== other) return code;
  }
  throw new Error(`three new codes for ${username} in a row were equal to the old one`);
}

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer({ SMTP_URL: smtp.url }, { clock });
  login = grpcClient(LoginService, server.url);
  fx = adminFixtures(server.url);
  orgId = (await fx.org("Acme Login")).id;
});

afterAll(async () => {
  login?.close();
  fx?.close();
  await server?.close();
  await smtp?.stop();
});

describe("the login round trip", () => {
  it("works over grpc-js: the code from the mail gives the identity and a proof token", async () => {
    const alice = await fx.identity(orgId, "alice@example.com");
    const sent = await login.call("sendLoginCode", { username: "alice@example.com", orgId });
    expect(sent.ok && sent.value.message).toBe("success");
    const mail = await smtp.nextMailTo("alice@example.com");
    expect(mail.subject).toBe("Your Acme Login login code");
    expect(mail.from).toContain("Acme Login");
    const code = codeFrom(mail);
    secretsSeen.add(code);
    expect(code).toMatch(/^\d{6}$/);
    expect(mail.html).toContain(code);
    expect(mail.text).toContain("10 minutes");

    const verified = succeeded(await login.call("verifyLoginCode", { username: "ALICE@example.com", orgId, code }));
    secretsSeen.add(verified.token);
    expect(verified.identity?.id).toBe(alice.id);
    expect(verified.identity?.state).toBe(IdentityState.ACTIVE);

    // Any service can check the proof offline with the published JWKS.
    const jwks = createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`));
    const { payload, protectedHeader } = await jwtVerify(verified.token, jwks, {
      issuer: server.app.config.token.issuer,
      audience: "codegate",
      currentDate: clock.now(),
    });
    expect(protectedHeader.alg).toBe("EdDSA");
    expect(payload).toMatchObject({ sub: alice.id, org: orgId, purpose: "login", amr: ["otp"] });
    expect(payload.jti).toBeTruthy();
    expect((payload.exp! - payload.iat!) * 1000).toBe(server.app.config.token.ttlMs);
    expect(Number(verified.tokenExpiresAt!.seconds)).toBe(payload.exp);
  });

  it("works over HTTP/1.1 JSON, with the tenant naming the organization", async () => {
    const org = await fx.org("Tenant Co");
    await fx.identity(org.id, "tina@example.com");
    const sent = await postJson(server.url, "/codegate.v1.LoginService/SendLoginCode", { username: "tina@example.com", tenantId: org.tenantId });
    expect(sent.status).toBe(200);
    expect(sent.body).toEqual({ message: "success" });
    const code = codeFrom(await smtp.nextMailTo("tina@example.com"));
    secretsSeen.add(code);
    const res = await postJson(server.url, "/codegate.v1.LoginService/VerifyLoginCode", { username: "tina@example.com", tenantId: org.tenantId, code });
    expect(res.status).toBe(200);
    secretsSeen.add(res.body.token);
    expect(res.body.identity.username).toBe("tina@example.com");
    expect(res.body.token.split(".")).toHaveLength(3);
  });
});

describe("sending", () => {
  it("answers the same success for known, unknown, pending and disabled users, and mails only the active one", async () => {
    await fx.identity(orgId, "pending@example.com", "pending");
    await fx.identity(orgId, "disabled@example.com", "disabled");
    await fx.identity(orgId, "known@example.com", "active");
    const answers = [];
    for (const u of ["nobody@example.com", "pending@example.com", "disabled@example.com", "known@example.com"]) answers.push(await send(u));
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.body).toEqual({ message: "success" });
      expect(a.headers.get("content-length")).toBe(answers[0].headers.get("content-length"));
    }
    // A mail is queued in the statement that answers: the outbox says, with no waiting, who gets one.
    expect(await outboxCounts(server, ["nobody@example.com", "pending@example.com", "disabled@example.com", "known@example.com"])).toEqual({
      "nobody@example.com": 0,
      "pending@example.com": 0,
      "disabled@example.com": 0,
      "known@example.com": 1,
    });
    await smtp.nextMailTo("known@example.com");
    // The courier handles mails in order: by now the others would have arrived.
    expect(smtp.mailsTo("nobody@example.com")).toHaveLength(0);
    expect(smtp.mailsTo("pending@example.com")).toHaveLength(0);
    expect(smtp.mailsTo("disabled@example.com")).toHaveLength(0);
  });

  it("also answers success for an organization that does not exist", async () => {
    const r = await send("someone@example.com", "or-zzzzz-zzzzz-zzzzzzzzzzzzzzzz");
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ message: "success" });
  });

  it("invalidates the earlier code when a new one is sent", async () => {
    await fx.identity(orgId, "twice@example.com");
    const first = await mailedCode("twice@example.com");
    const second = await mailedCodeOtherThan("twice@example.com", first);
    expect((await verify("twice@example.com", first)).status).toBe(401);
    expect((await verify("twice@example.com", second)).status).toBe(200);
  });

  it("leaves exactly one live code after 20 concurrent sends, and it is one of the mailed ones", async () => {
    const who = await fx.identity(orgId, "burst@example.com");
    const answers = await Promise.all(Array.from({ length: 20 }, () => send("burst@example.com")));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const live = await server.app.orm.em
      .getConnection()
      .execute("select id, code_hash, key_id from code where identity_id = ? and purpose = 'login' and dead_at is null", [who.id]);
    expect(live).toHaveLength(1);
    await smtp.waitFor(() => smtp.mailsTo("burst@example.com").length === 20);
    const codes = smtp.mailsTo("burst@example.com").map(codeFrom);
    codes.forEach((c) => secretsSeen.add(c));
    const key = server.app.secrets.codeKeys.byId.get(live[0].key_id)!;
    const owner = { orgId, usernameNormalized: "burst@example.com", purpose: "login", binding: "" };
    const matching = codes.filter((c) => ownerCodeHash(key, owner, c).equals(Buffer.from(live[0].code_hash)));
    expect(matching.length).toBeGreaterThanOrEqual(1);
    expect((await verify("burst@example.com", matching[0])).status).toBe(200);
  });

  it("uses the organization's code policy overrides", async () => {
    const org = await fx.org("Letters", { loginCode: { length: 8, alphabet: "ABCDEFGH", maxAttempts: 2 } });
    await fx.identity(org.id, "letters@example.com");
    expect((await send("letters@example.com", org.id)).status).toBe(200);
    const code = codeFrom(await smtp.nextMailTo("letters@example.com"));
    secretsSeen.add(code);
    expect(code).toMatch(/^[A-H]{8}$/);
    // Its attempt limit is 2: two wrong guesses kill the code.
    for (let i = 0; i < 2; i++) expect((await verify("letters@example.com", "AAAAAAAA" === code ? "BBBBBBBB" : "AAAAAAAA", org.id)).status).toBe(401);
    expect((await verify("letters@example.com", code, org.id)).status).toBe(401);
  });
});

describe("verifying", () => {
  it("consumes a code exactly once under 50 concurrent verifications", async () => {
    await fx.identity(orgId, "race@example.com");
    const code = await mailedCode("race@example.com");
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        i % 2 === 0 ? verify("race@example.com", code) : login.call("verifyLoginCode", { username: "race@example.com", orgId, code }),
      ),
    );
    // Each answer as one word: "ok", or its error in the protocol's own terms (the JSON
    // error's code; a gRPC status named, when it is UNAUTHENTICATED).
    const outcomes = results.map((r) =>
      "ok" in r ? (r.ok ? "ok" : r.error.code === status.UNAUTHENTICATED ? "unauthenticated" : `grpc status ${r.error.code}`) : r.status === 200 ? "ok" : r.body.code,
    );
    expect(outcomes.filter((o) => o === "ok")).toHaveLength(1);
    // Every other one, over either protocol, is the one error of a code that does not work.
    expect(outcomes.filter((o) => o !== "ok")).toEqual(Array(49).fill("unauthenticated"));
  });

  it("kills a code after 5 wrong guesses, even for the right one after", async () => {
    const who = await fx.identity(orgId, "guess@example.com");
    const code = await mailedCode("guess@example.com");
    const wrong = code === "000000" ? "111111" : "000000";
    for (let i = 0; i < 5; i++) expect((await verify("guess@example.com", wrong)).status).toBe(401);
    expect((await verify("guess@example.com", code)).status).toBe(401);
    const rows = await server.app.orm.em.getConnection().execute("select attempts, dead_at from code where identity_id = ?", [who.id]);
    expect(rows[0].attempts).toBe(5);
    expect(rows[0].dead_at).not.toBeNull();
  });

  it("accepts the right code on the last allowed attempt", async () => {
    await fx.identity(orgId, "last@example.com");
    const code = await mailedCode("last@example.com");
    const wrong = code === "000000" ? "111111" : "000000";
    for (let i = 0; i < 4; i++) expect((await verify("last@example.com", wrong)).status).toBe(401);
    expect((await verify("last@example.com", code)).status).toBe(200);
  });

  it("refuses an expired code (the clock is driven, not slept)", async () => {
    await fx.identity(orgId, "late@example.com");
    await fx.identity(orgId, "ontime@example.com");
    const late = await mailedCode("late@example.com");
    const onTime = await mailedCode("ontime@example.com");
    clock.advance(10 * 60_000 - 1000);
    expect((await verify("ontime@example.com", onTime)).status).toBe(200);
    clock.advance(2000);
    expect((await verify("late@example.com", late)).status).toBe(401);
  });

  it("answers wrong, expired, used, locked and unknown-user codes with one and the same error", async () => {
    await fx.identity(orgId, "same@example.com");
    const answers = [];
    const used = await mailedCode("same@example.com");
    expect((await verify("same@example.com", used)).status).toBe(200);
    answers.push(await verify("same@example.com", used)); // used
    const live = await mailedCode("same@example.com");
    answers.push(await verify("same@example.com", live === "123456" ? "654321" : "123456")); // wrong
    answers.push(await verify("nobody-at-all@example.com", live)); // unknown user
    clock.advance(11 * 60_000);
    answers.push(await verify("same@example.com", live)); // expired
    answers.push(await verify("same@example.com", live, "or-zzzzz-zzzzz-zzzzzzzzzzzzzzzz")); // unknown org
    const locked = await mailedCode("same@example.com");
    const miss = locked === "123456" ? "654321" : "123456";
    for (let i = 0; i < 4; i++) expect((await verify("same@example.com", miss)).status).toBe(401);
    answers.push(await verify("same@example.com", miss)); // the guess that locks the code
    answers.push(await verify("same@example.com", locked)); // the right code, locked
    expect(answers).toHaveLength(7);
    for (const a of answers) {
      expect(a.status).toBe(401);
      expect(a.body.code).toBe(answers[0].body.code);
      expect(a.body.message).toBe(answers[0].body.message);
      expect(a.body.details?.[0]?.debug?.reason ?? a.body.details?.[0]?.value).toBe(answers[0].body.details?.[0]?.debug?.reason ?? answers[0].body.details?.[0]?.value);
    }
    expect(answers[0].body.message).not.toMatch(/expire|used|lock|unknown|exist/i);
  });
});

describe("storage of codes and mails", () => {
  it("keeps only a keyed hash of the code, with its key id", async () => {
    const who = await fx.identity(orgId, "stored@example.com");
    const code = await mailedCode("stored@example.com");
    const [row] = await server.app.orm.em.getConnection().execute("select * from code where identity_id = ? and dead_at is null", [who.id]);
    const asText = JSON.stringify(row);
    expect(asText).not.toContain(code);
    expect(Buffer.from(row.code_hash)).toHaveLength(32);
    expect(row.key_id).toBe(server.app.secrets.codeKeys.current.id);
  });

  it("wipes the mail body once it is sent", async () => {
    await fx.identity(orgId, "wiped@example.com");
    await mailedCode("wiped@example.com");
    // The SMTP server has it; the courier records that right after.
    await vi.waitFor(
      async () => {
        const rows = await server.app.orm.em.getConnection().execute("select status, body from courier_message where recipient = 'wiped@example.com'");
        expect(rows).toEqual([{ status: "sent", body: null }]);
      },
      { timeout: 5_000, interval: 20 },
    );
  });
});

describe("logs", () => {
  it("never contain a code or a token of this whole file's run", () => {
    expect(secretsSeen.size).toBeGreaterThan(20);
    expect(server.logs.length).toBeGreaterThan(20);
    const all = server.logs.join("\n");
    for (const s of secretsSeen) expect(all.includes(s), `log holds ${s.slice(0, 3)}…`).toBe(false);
  });
});
