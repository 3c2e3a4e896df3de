// Runs every flow with logging at debug and fails if any log line holds a code,
// a token, a secret or a mail body.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { createLogger } from "../src/lib/log.ts";
import { createAdminToken } from "../src/rules/admin-tokens.ts";
import { DeliveryChannel } from "@codegate/client/node";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";
import { receipt } from "./support/results.ts";

let smtp: SmtpSink;
let server: TestServer;
let closed = false;
const secrets = new Set<string>();
const keep = (s: string) => (secrets.add(s), s);
const CODE_KEYS = `c1:${randomBytes(32).toString("base64")}`;
const MAIL_KEYS = `m1:${randomBytes(32).toString("base64")}`;

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer({
    SMTP_URL: smtp.url,
    LOG_LEVEL: "debug",
    CODE_HMAC_KEYS: CODE_KEYS,
    MAIL_ENCRYPTION_KEYS: MAIL_KEYS,
    COURIER_POLL_INTERVAL: "50ms",
  });
});
afterAll(async () => {
  if (!closed) await server?.close();
  await smtp?.stop();
});

const call = (path: string, body: unknown, headers: Record<string, string> = {}) => postJson(server.url, path, body, headers);

describe("logs at debug level", () => {
  it("hold no code, token, secret or mail body after every flow has run", async () => {
    keep(ADMIN_TOKEN);
    keep(CODE_KEYS.split(":")[1]);
    keep(MAIL_KEYS.split(":")[1]);
    const pem = server.app.secrets.signingKeyPem;
    keep(pem.split("\n").find((l) => l.length > 20 && !l.startsWith("-----"))!);
    const stored = await createAdminToken(server.app.orm, "logged", new Date());
    keep(stored.token);
    keep(stored.token.slice("cga_".length + 12 + 1));

    const fx = adminFixtures(server.url);
    const org = await fx.org("Logco", { selfServiceSignup: true });
    const auth = bearer(stored.token);

    // Registration by an admin, then completed.
    await call("/codegate.v1.AdminService/CreateIdentity", { orgId: org.id, username: "reg@example.com" }, auth);
    const regCode = keep(codeFrom(await smtp.nextMailTo("reg@example.com")));
    const reg = await call("/codegate.v1.RegistrationService/CompleteRegistration", { username: "reg@example.com", orgId: org.id, code: regCode });
    expect(reg.status).toBe(200);
    keep(reg.body.token);

    // Self-service sign-up, and a resend.
    await call("/codegate.v1.RegistrationService/Register", { username: "self@example.com", orgId: org.id });
    keep(codeFrom(await smtp.nextMailTo("self@example.com")));
    await call("/auth/registration/code", { username: "self@example.com", orgId: org.id });

    // Login, with a wrong guess first.
    await call("/auth/login/code", { username: "reg@example.com", orgId: org.id });
    const loginCode = keep(codeFrom(await smtp.nextMailTo("reg@example.com", 1)));
    await call("/codegate.v1.LoginService/VerifyLoginCode", { username: "reg@example.com", orgId: org.id, code: loginCode === "999999" ? "111111" : "999999" });
    const login = await call("/codegate.v1.LoginService/VerifyLoginCode", { username: "reg@example.com", orgId: org.id, code: loginCode });
    expect(login.status).toBe(200);
    keep(login.body.token);

    // Recovery by mail, and by an admin's code.
    await call("/auth/recover/user/code", { username: "reg@example.com", orgId: org.id });
    const recCode = keep(codeFrom(await smtp.nextMailTo("reg@example.com", 2)));
    const rec = await call("/codegate.v1.RecoveryService/VerifyRecoveryCode", { username: "reg@example.com", orgId: org.id, code: recCode });
    keep(rec.body.token);
    const adminCode = await call("/admin/recovery/code", { identity_id: reg.body.identity.id, expires_in: "10m" }, auth);
    expect(adminCode.status).toBe(201);
    keep(adminCode.body.recovery_code);
    const flowId = new URL(adminCode.body.recovery_link).searchParams.get("flow");
    const byFlow = await call("/codegate.v1.RecoveryService/VerifyRecoveryCode", { flowId, code: adminCode.body.recovery_code });
    keep(byFlow.body.token);

    // An organization's template in its locale, with the link beside the code (which holds the code), and a state.
    const linked = await fx.org("Linkco", { mailLinks: { login: true }, returnUrl: "https://app.example/back", defaultLocale: "de" });
    const template = { subject: "Anmelden", text: "{{link}}\n    {{code}}\n", html: '<a href="{{link}}">{{code}}</a>' };
    expect((await call("/codegate.v1.AdminService/SetMailTemplate", { orgId: linked.id, kind: "MAIL_KIND_LOGIN", locale: "de", ...template }, auth)).status).toBe(200);
    expect((await call("/codegate.v1.AdminService/PreviewMailTemplate", { orgId: linked.id, kind: "MAIL_KIND_LOGIN", locale: "de" }, auth)).status).toBe(200);
    await fx.identity(linked.id, "linked@example.com");
    await call("/auth/login/code", { username: "linked@example.com", orgId: linked.id, state: keep("state-of-the-application") });
    const linkedMail = await smtp.nextMailTo("linked@example.com");
    keep(codeFrom(linkedMail));
    keep(linkedMail.text.split("\n")[0]);

    // A code handed to the delivery API as a text, claimed (its body decrypted) and acked.
    const texting = await fx.org("Textco", { delivery: { login: DeliveryChannel.SMS } });
    const texted = await call("/codegate.v1.AdminService/CreateIdentity", { orgId: texting.id, username: "text@example.com", phoneNumber: "+41791234567", skipRegistrationCode: true }, auth);
    await call("/codegate.v1.AdminService/SetIdentityState", { identityId: texted.body.identity.id, state: "IDENTITY_STATE_ACTIVE" }, auth);
    await call("/auth/login/code", { username: "text@example.com", orgId: texting.id });
    const claimed = await call("/codegate.v1.DeliveryService/Claim", { channels: ["DELIVERY_CHANNEL_SMS"] }, auth);
    expect(claimed.body.messages).toHaveLength(1);
    const [text] = claimed.body.messages;
    keep(text.text.body);
    expect((await call("/codegate.v1.DeliveryService/Ack", { messages: [receipt(text)] }, auth)).status).toBe(200);

    // Errors with secrets in the request must not echo them into the logs either.
    await call("/codegate.v1.AdminService/ListOrganizations", {}, bearer("cga_aaaaaaaaaaaa_" + "s".repeat(43)));
    keep("s".repeat(43));
    fx.close();

    // Every mail has gone out (so the courier has logged its sends)...
    await vi.waitFor(
      async () => {
        const [row] = await server.app.orm.em.getConnection().execute("select count(*) filter (where status <> 'sent')::int as unsent, count(*) filter (where channel = 'smtp')::int as mails from courier_message");
        expect(row).toEqual({ unsent: 0, mails: smtp.mails.length });
      },
      { timeout: 10_000, interval: 20 },
    );
    // ...and once the server has closed (requests finished, courier stopped), it writes no more lines.
    await server.close();
    closed = true;
    for (const mail of smtp.mails) {
      secrets.add(mail.text.trim());
      secrets.add(mail.html.trim());
    }
    expect(server.logs.length).toBeGreaterThan(12);
    expect(server.logs.some((l) => l.includes('"level":"debug"') || l.includes('"level":"info"'))).toBe(true);
    const all = server.logs.join("\n");
    for (const s of secrets) {
      expect(s.length).toBeGreaterThanOrEqual(6);
      expect(all.includes(s), `a log line holds a secret starting ${s.slice(0, 2)}`).toBe(false);
      // Nor as pino writes a Buffer holding it (its bytes, as a list of numbers), nor in hex.
      const bytes = Buffer.from(s);
      for (const [how, written] of [["bytes", bytes.toJSON().data.join(",")], ["hex", bytes.toString("hex")]] as const) {
        expect(all.includes(written), `a log line holds a secret starting ${s.slice(0, 2)}, as ${how}`).toBe(false);
      }
    }
    // Admin calls are logged by token id, never the token.
    expect(all).toContain(`"admin":"${stored.id}"`);
  });
});

describe("an error that carries its statement's parameters", () => {
  it("is logged without them: PGlite's errors hold the bind values (usernames, code hashes, sealed mail)", async () => {
    const lines: string[] = [];
    const log = createLogger("info", new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
    const err = Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), { code: "22021", query: "select $1::text", params: ["victim@example.com", "123456"] });
    log.error({ err }, "courier batch failed");
    log.warn({ params: ["victim@example.com"] }, "a statement failed");
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).not.toContain("victim@example.com");
    expect(JSON.parse(lines[0]).err).toMatchObject({ code: "22021", query: "select $1::text", params: "[redacted]" });
  });
});
