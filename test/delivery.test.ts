// The delivery API (DeliveryService) against a real PostgreSQL: organizations hand
// a purpose's codes to the operator's own delivery service, which claims them under
// a lease, gets their bodies decrypted, and acks or fails each one; the SMTP
// courier never takes them, nor the API the courier's. Identities carry an E.164
// phone number. Time runs on a ManualClock: leases and backoffs pass when the test
// moves it, never by waiting.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { simpleParser } from "mailparser";
import { CodePurpose, CourierMessageStatus, createCodegateNodeClients, DeliveryChannel, IdentityState, MailKind } from "@codegate/client/node";
import { createAdminToken } from "../src/rules/admin-tokens.ts";
import { LAPSED_ERROR } from "../src/store/outbox.ts";
import { ManualClock } from "../src/domain/clock.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { bearer, postJson } from "./support/clients.ts";
import { oneof, receipt } from "./support/results.ts";
import { SmtpSink } from "./support/smtp.ts";

const clock = new ManualClock();
let smtp: SmtpSink;
let server: TestServer;
let fx: ReturnType<typeof adminFixtures>;

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer(
    { SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", COURIER_MAX_ATTEMPTS: "3", COURIER_BACKOFF_BASE: "1s", COURIER_BACKOFF_MAX: "4s" },
    { clock },
  );
  fx = adminFixtures(server.url);
});
afterAll(async () => {
  fx?.close();
  await server?.close();
  await smtp?.stop();
});

interface OutboxRow {
  id: string;
  org_id: string;
  channel: string;
  recipient: string;
  status: string;
  send_count: number;
  last_error: string | null;
  body: Buffer | null;
  claimed_until: Date | null;
  lease_token: string | null;
}

const outbox = (where: string, params: unknown[]): Promise<OutboxRow[]> =>
  server.app.orm.em
    .getConnection()
    .execute(`select id, org_id, channel, recipient, status, send_count, last_error, body, claimed_until, lease_token from courier_message where ${where} order by created_at`, params);
const rowsTo = (recipient: string) => outbox("recipient = ?", [recipient]);
const rowById = async (id: string) => (await outbox("id = ?", [id]))[0];
/** The event trail's entries about one message: written in the statement of its ack or failure. */
const mailEvents = (id: string): Promise<{ type: string; details: Record<string, string> | null }[]> =>
  server.app.orm.em.getConnection().execute("select type, details from event where mail_id = ? and type like 'mail.%' order by id", [id]);

/** A courier counter's value for login messages, as /metrics has it (0 before its first). */
async function loginMetric(name: string): Promise<number> {
  const text = await (await fetch(`${server.app.opsUrl}/metrics`)).text();
  return Number(new RegExp(`^${name}\\{purpose="login"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
}

let n = 0;
/** A phone number no other test uses. */
const phone = () => `+4179${String(1_000_000 + ++n).slice(1)}0`;

const claim = (channels: DeliveryChannel[] = [DeliveryChannel.SMS], opts: { maxMessages?: number; leaseMs?: number } = {}) =>
  fx.clients.delivery.claim({ channels, maxMessages: opts.maxMessages ?? 100, lease: opts.leaseMs ? durationFromMs(opts.leaseMs) : undefined }).then((r) => r.messages);
/** The claimed messages to these recipients (other tests' messages may be due too; they are left to their leases). */
const claimFor = async (recipients: string[], channels?: DeliveryChannel[], opts?: { leaseMs?: number }) =>
  (await claim(channels, opts)).filter((m) => recipients.includes(m.recipient));

async function smsOrg(name: string) {
  return fx.org(name, { delivery: { login: DeliveryChannel.SMS, recovery: DeliveryChannel.SMS } });
}
async function identityWithPhone(orgId: string, username: string, phoneNumber: string) {
  const created = (await fx.clients.admin.createIdentity({ orgId, username, phoneNumber, skipRegistrationCode: true })).identity!;
  return (await fx.clients.admin.setIdentityState({ identityId: created.id, state: IdentityState.ACTIVE })).identity!;
}

describe("identities' phone numbers", () => {
  it("are E.164, set at creation or later (also by the REST route), and removed when empty", async () => {
    const org = await fx.org("Phones");
    const created = (await fx.clients.admin.createIdentity({ orgId: org.id, username: "phone@example.com", phoneNumber: "+41446681800", skipRegistrationCode: true })).identity!;
    expect(created.phoneNumber).toBe("+41446681800");
    expect((await fx.clients.admin.getIdentity({ identityId: created.id })).identity?.phoneNumber).toBe("+41446681800");

    for (const bad of ["0041446681800", "+0446681800", "+41 44 668 18 00", "+12345", "+1234567890123456"]) {
      const err = await fx.clients.admin.createIdentity({ orgId: org.id, username: "bad-phone@example.com", phoneNumber: bad }).catch((e: unknown) => ConnectError.from(e));
      expect(err, bad).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code, bad).toBe(Code.InvalidArgument);
      expect((err as ConnectError).message, bad).toContain("phone_number");
    }

    const path = `/admin/identities/${created.id}/phone-number`;
    const put = (body: unknown, headers = bearer(ADMIN_TOKEN)) =>
      fetch(server.url + path, { method: "PUT", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, body: await r.json() }));
    const changed = await put({ phoneNumber: "+15551234567" });
    expect(changed).toMatchObject({ status: 200, body: { identity: { id: created.id, phoneNumber: "+15551234567" } } });
    expect((await put({ phoneNumber: "5551234567" })).status).toBe(400);
    expect((await put({ phoneNumber: "+15551234567" }, {} as ReturnType<typeof bearer>)).status).toBe(401);
    const removed = await put({ phoneNumber: "" });
    expect(removed.status).toBe(200);
    expect(removed.body.identity.phoneNumber).toBeUndefined();
    expect((await fx.clients.admin.getIdentity({ identityId: created.id })).identity?.phoneNumber).toBe("");
    // Over gRPC too.
    const again = await fx.clients.admin.setIdentityPhoneNumber({ identityId: created.id, phoneNumber: "+4915112345678" });
    expect(again.identity?.phoneNumber).toBe("+4915112345678");
  });
});

describe("an organization's channels", () => {
  it("are chosen per purpose, kept in its settings, and checked", async () => {
    const org = await fx.org("Channels", { delivery: { login: DeliveryChannel.SMS, recovery: DeliveryChannel.MAIL_API } });
    const got = (await fx.clients.admin.getOrganization({ orgId: org.id })).organization!;
    expect(got.settings?.delivery).toMatchObject({ login: DeliveryChannel.SMS, registration: DeliveryChannel.UNSPECIFIED, recovery: DeliveryChannel.MAIL_API });
    const refused = await fx.clients.admin
      .updateOrganizationSettings({ orgId: org.id, settings: { delivery: { login: 9 as DeliveryChannel } } })
      .catch((e: unknown) => ConnectError.from(e));
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.InvalidArgument);
    expect((refused as ConnectError).message).toContain("settings.delivery.login");
  });
});

describe("the SMS channel", () => {
  it("queues the code alone for the phone number; the courier never takes it; a claim hands it out decrypted and an ack marks it sent and wipes it", async () => {
    const org = await smsOrg("SMS Login");
    const number = phone();
    const alice = await identityWithPhone(org.id, "sms-alice@example.com", number);
    const mailOrg = await fx.org("Mail Login");
    await fx.identity(mailOrg.id, "mail-bob@example.com");

    await fx.clients.login.sendLoginCode({ orgId: org.id, username: "sms-alice@example.com" });
    // Queued after the text: once its mail has arrived, the courier has had its chance at both.
    await fx.clients.login.sendLoginCode({ orgId: mailOrg.id, username: "mail-bob@example.com" });
    await smtp.nextMailTo("mail-bob@example.com");
    const [queued] = await rowsTo(number);
    expect(queued).toMatchObject({ org_id: org.id, channel: "sms", status: "queued", send_count: 0, claimed_until: null });
    expect(smtp.mailsTo("sms-alice@example.com")).toHaveLength(0);
    expect(await rowsTo("sms-alice@example.com")).toHaveLength(0);

    const [m] = await claimFor([number]);
    expect(m).toMatchObject({ id: queued.id, orgId: org.id, channel: DeliveryChannel.SMS, purpose: CodePurpose.LOGIN, recipient: number, attempt: 1 });
    expect(timestampDate(m.leaseExpiresAt!).getTime()).toBe(clock.now().getTime() + 60_000);
    const code = oneof(m.content, "text").body;
    expect(code).toMatch(/^\d{6}$/); // the code, and nothing else
    // Sealed at rest: the row never holds the code in clear.
    const held = await rowById(m.id);
    expect(held.body).not.toBeNull();
    expect(held.body!.toString("latin1")).not.toContain(code);
    expect(held.lease_token).toBe(m.leaseToken);
    // Leased: nobody else gets it meanwhile.
    expect(await claimFor([number])).toEqual([]);

    expect((await fx.clients.delivery.ack({ messages: [receipt(m)] })).ackedIds).toEqual([m.id]);
    expect(await rowById(m.id)).toMatchObject({ status: "sent", body: null, send_count: 1, claimed_until: null, lease_token: null });
    expect((await fx.clients.delivery.ack({ messages: [receipt(m)] })).ackedIds).toEqual([]);
    // One event for the one ack that took: the second changed nothing and recorded nothing.
    expect(await mailEvents(m.id)).toEqual([{ type: "mail.sent", details: { channel: "sms" } }]);
    const listed = (await fx.clients.admin.listCourierMessages({ orgId: org.id })).messages;
    expect(listed.map((l) => ({ id: l.id, channel: l.channel, status: l.status }))).toEqual([{ id: m.id, channel: DeliveryChannel.SMS, status: CourierMessageStatus.SENT }]);

    // The delivered code works, and the answer carries the phone number.
    const verified = await fx.clients.login.verifyLoginCode({ orgId: org.id, username: "sms-alice@example.com", code });
    expect(verified.identity).toMatchObject({ id: alice.id, phoneNumber: number });
  });

  it("mails an identity without a phone number over SMTP", async () => {
    const org = await smsOrg("SMS Fallback");
    await fx.identity(org.id, "no-phone@example.com");
    await fx.clients.recovery.sendRecoveryCode({ orgId: org.id, username: "no-phone@example.com" });
    await smtp.nextMailTo("no-phone@example.com");
    await vi.waitFor(async () => expect(await rowsTo("no-phone@example.com")).toMatchObject([{ channel: "smtp", status: "sent" }]), { timeout: 10_000, interval: 20 });
  });

  it("never hands out the courier's mails", async () => {
    const courier = server.app.courier!;
    await courier.stop();
    try {
      const org = await fx.org("Courier Only");
      await fx.identity(org.id, "courier-only@example.com");
      await fx.clients.login.sendLoginCode({ orgId: org.id, username: "courier-only@example.com" });
      const [row] = await rowsTo("courier-only@example.com");
      expect(row).toMatchObject({ channel: "smtp", status: "queued" });
      // Every message of the API's channels from earlier tests is done: nothing is due but the courier's mail.
      expect(await claim([DeliveryChannel.SMS, DeliveryChannel.MAIL_API])).toEqual([]);
    } finally {
      courier.start();
    }
    await smtp.nextMailTo("courier-only@example.com");
  });
});

describe("the mail API channel", () => {
  it("hands out the whole mail with its recipient, and the notices of its purpose too", async () => {
    const org = await fx.org("Relay", { selfServiceSignup: true, delivery: { registration: DeliveryChannel.MAIL_API } });
    await fx.identity(org.id, "relay-owner@example.com");
    await fx.clients.registration.register({ orgId: org.id, username: "relay-new@example.com" });
    await fx.clients.registration.register({ orgId: org.id, username: "relay-owner@example.com" }); // taken: a notice to its owner

    const claimed = await claimFor(["relay-new@example.com", "relay-owner@example.com"], [DeliveryChannel.MAIL_API]);
    expect(claimed.map((m) => [m.recipient, m.channel, m.purpose]).sort()).toEqual([
      ["relay-new@example.com", DeliveryChannel.MAIL_API, CodePurpose.REGISTRATION],
      ["relay-owner@example.com", DeliveryChannel.MAIL_API, CodePurpose.REGISTRATION],
    ]);
    const codeMail = claimed.find((m) => m.recipient === "relay-new@example.com")!;
    const { from, rfc822 } = oneof(codeMail.content, "mail");
    expect(from).toBe(server.app.config.mailFrom);
    const parsed = await simpleParser(Buffer.from(rfc822));
    expect(parsed.to).toMatchObject({ text: "relay-new@example.com" });
    expect(parsed.messageId).toBe(`<${codeMail.id}@codegate>`);
    const code = /^ {4}(\S+)$/m.exec(parsed.text ?? "")![1];
    expect((await fx.clients.delivery.ack({ messages: claimed.map(receipt) })).ackedIds.sort()).toEqual(claimed.map((m) => m.id).sort());

    const done = await fx.clients.registration.completeRegistration({ orgId: org.id, username: "relay-new@example.com", code });
    expect(done.identity?.state).toBe(IdentityState.ACTIVE);
    expect(smtp.mailsTo("relay-new@example.com")).toHaveLength(0);
    expect(smtp.mailsTo("relay-owner@example.com")).toHaveLength(0);
  });
});

describe("a claim's answer", () => {
  it("carries what fits in one answer and gives the rest back at once, for the next claim: past 4 MiB it failed and its messages were never handed out", async () => {
    const org = await fx.org("Heavy", { delivery: { login: DeliveryChannel.MAIL_API } });
    // Nearly the largest template a request may carry (64 KiB), of characters of three bytes and nine quoted-printable ones each:
    // ~185 kB a mail, so that 25 of them (a claim may ask for 100) are more than 4 MiB.
    await fx.clients.admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "en", subject: "Code", text: "{{code}}", html: "<p>{{code}}</p>" + "漢".repeat(20_000) });
    clock.advance(60_000); // past the per-address send limit's window of earlier tests' sends
    const users = Array.from({ length: 25 }, (_, i) => `heavy-${i}@example.com`);
    for (const u of users) {
      await fx.identity(org.id, u);
      await fx.clients.login.sendLoginCode({ orgId: org.id, username: u });
    }
    const first = await claimFor(users, [DeliveryChannel.MAIL_API]);
    expect(first.length).toBeGreaterThan(0);
    expect(first.length).toBeLessThan(users.length);
    // The rest were given back, not held for the lease: the next claim takes them now.
    const second = await claimFor(users, [DeliveryChannel.MAIL_API]);
    expect(new Set([...first, ...second].map((m) => m.id)).size).toBe(first.length + second.length);
    const rest = second.length < users.length - first.length ? await claimFor(users, [DeliveryChannel.MAIL_API]) : [];
    expect([...first, ...second, ...rest].map((m) => m.recipient).sort()).toEqual([...users].sort());
    expect((await fx.clients.delivery.ack({ messages: [...first, ...second, ...rest].map(receipt) })).ackedIds).toHaveLength(users.length);
  });
});

describe("failures and leases", () => {
  it("retries a failed delivery after the backoff, then abandons it at the retry limit and wipes it", async () => {
    const org = await smsOrg("SMS Failing");
    const number = phone();
    await identityWithPhone(org.id, "sms-fail@example.com", number);
    await fx.clients.login.sendLoginCode({ orgId: org.id, username: "sms-fail@example.com" });

    const ids = new Set<string>();
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [m] = await claimFor([number]);
      expect(m.attempt).toBe(attempt);
      ids.add(m.id);
      const failed = await fx.clients.delivery.fail({ failures: [{ message: receipt(m), error: `provider said 503 (${attempt})` }] });
      const row = await rowById(m.id);
      expect(row).toMatchObject({ send_count: attempt, last_error: `provider said 503 (${attempt})`, claimed_until: null, lease_token: null });
      expect(failed.messages).toHaveLength(1);
      expect(failed.messages[0].id).toBe(m.id);
      expect({ status: failed.messages[0].status, row: row.status, wiped: row.body === null }).toEqual(
        attempt < 3
          ? { status: CourierMessageStatus.QUEUED, row: "queued", wiped: false }
          : { status: CourierMessageStatus.ABANDONED, row: "abandoned", wiped: true },
      );
      // Not due again before its backoff (at least 0.75 of 1s, 2s, …); due after the largest (4s and its jitter).
      expect(await claimFor([number])).toEqual([]);
      clock.advance(5_000);
    }
    expect(ids.size).toBe(1);
    expect(await claimFor([number])).toEqual([]);
    // Retries are not in the trail; the abandonment is, without the worker's error.
    expect(await mailEvents([...ids][0])).toEqual([{ type: "mail.abandoned", details: { attempts: "3", channel: "sms" } }]);
  });

  it("abandons a message at once, its body wiped, when the worker says the failure is permanent", async () => {
    const org = await smsOrg("SMS Nowhere");
    const number = phone();
    await identityWithPhone(org.id, "sms-nowhere@example.com", number);
    await fx.clients.login.sendLoginCode({ orgId: org.id, username: "sms-nowhere@example.com" });
    const [m] = await claimFor([number]);
    const failed = await fx.clients.delivery.fail({ failures: [{ message: receipt(m), error: "no such number", permanent: true }] });
    expect(failed.messages.map((f) => ({ id: f.id, status: f.status }))).toEqual([{ id: m.id, status: CourierMessageStatus.ABANDONED }]);
    expect(await rowById(m.id)).toMatchObject({ status: "abandoned", send_count: 1, last_error: "no such number", body: null, lease_token: null });
    expect(await mailEvents(m.id)).toEqual([{ type: "mail.abandoned", details: { attempts: "1", channel: "sms" } }]);
    clock.advance(3_600_000);
    expect(await claimFor([number])).toEqual([]);
  });

  it("claims a message again, with the same id and its lapsed attempt counted, once its lease has lapsed; the lapsed lease can neither ack nor fail it", async () => {
    const org = await smsOrg("SMS Leases");
    const number = phone();
    await identityWithPhone(org.id, "sms-lease@example.com", number);
    await fx.clients.login.sendLoginCode({ orgId: org.id, username: "sms-lease@example.com" });

    const [first] = await claimFor([number], undefined, { leaseMs: 10_000 });
    clock.advance(9_000);
    expect(await claimFor([number])).toEqual([]);
    clock.advance(2_000);
    const [second] = await claimFor([number]);
    expect(second.id).toBe(first.id);
    expect(second.leaseToken).not.toBe(first.leaseToken);
    expect(second.attempt).toBe(2);
    expect(oneof(second.content, "text").body).toBe(oneof(first.content, "text").body);

    expect((await fx.clients.delivery.ack({ messages: [receipt(first)] })).ackedIds).toEqual([]);
    expect((await fx.clients.delivery.fail({ failures: [{ message: receipt(first), error: "late" }] })).messages).toEqual([]);
    expect(await rowById(first.id)).toMatchObject({ status: "queued", send_count: 1, lease_token: second.leaseToken });
    expect((await fx.clients.delivery.ack({ messages: [receipt(second)] })).ackedIds).toEqual([first.id]);
    expect(await rowById(first.id)).toMatchObject({ status: "sent", body: null });
  });

  it("abandons a message whose lease lapsed at every attempt (a message that kills its worker), rather than hand it out for ever", async () => {
    const org = await smsOrg("SMS Lapsing");
    const number = phone();
    await identityWithPhone(org.id, "sms-lapsing@example.com", number);
    await fx.clients.login.sendLoginCode({ orgId: org.id, username: "sms-lapsing@example.com" });
    const abandonedBefore = await loginMetric("codegate_courier_abandoned_total");
    const ids = new Set<string>();
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [m] = await claimFor([number], undefined, { leaseMs: 10_000 });
      expect(m.attempt).toBe(attempt);
      ids.add(m.id);
      clock.advance(11_000); // the worker never answers
    }
    expect(ids.size).toBe(1);
    const [id] = ids;
    // The claim that finds its third lease lapsed abandons it: not handed out, its body wiped.
    expect(await claimFor([number])).toEqual([]);
    expect(await rowById(id)).toMatchObject({ status: "abandoned", send_count: 3, last_error: LAPSED_ERROR, body: null, claimed_until: null, lease_token: null });
    expect(await mailEvents(id)).toEqual([{ type: "mail.abandoned", details: { attempts: "3", channel: "sms" } }]);
    expect(await loginMetric("codegate_courier_abandoned_total")).toBe(abandonedBefore + 1);
    clock.advance(3_600_000);
    expect(await claimFor([number])).toEqual([]);
  });

  it("never hands one message to two concurrent claims", async () => {
    const org = await smsOrg("SMS Concurrent");
    const numbers: string[] = [];
    for (let i = 0; i < 12; i++) {
      const number = phone();
      numbers.push(number);
      await identityWithPhone(org.id, `sms-c${i}@example.com`, number);
      await fx.clients.login.sendLoginCode({ orgId: org.id, username: `sms-c${i}@example.com` });
    }
    const [a, b] = await Promise.all([claim([DeliveryChannel.SMS], { maxMessages: 6 }), claim([DeliveryChannel.SMS], { maxMessages: 6 })]);
    const ids = [...a, ...b].map((m) => m.id);
    expect(new Set(ids).size).toBe(ids.length);
    const all = [...a, ...b, ...(await claim([DeliveryChannel.SMS]))].filter((m) => numbers.includes(m.recipient));
    expect(all.map((m) => m.recipient).sort()).toEqual([...numbers].sort());
    expect((await fx.clients.delivery.ack({ messages: all.map(receipt) })).ackedIds).toHaveLength(12);
  });
});

describe("DeliveryService's requests", () => {
  it("take a delivery token (admin-token create --delivery), which may call nothing else: every admin call is permission_denied, logged, and changes nothing", async () => {
    const org = await smsOrg("Delivery Token");
    const number = phone();
    const alice = await identityWithPhone(org.id, "token-alice@example.com", number);
    const { id: tokenId, token } = await createAdminToken(server.app.orm, "sms worker", new Date(), "delivery");
    const worker = createCodegateNodeClients({ baseUrl: server.url, adminToken: token });
    try {
      await fx.clients.login.sendLoginCode({ orgId: org.id, username: "token-alice@example.com" });
      const [m] = (await worker.delivery.claim({ channels: [DeliveryChannel.SMS], maxMessages: 100 })).messages.filter((c) => c.recipient === number);
      expect(m).toBeDefined();
      expect((await worker.delivery.ack({ messages: [receipt(m)] })).ackedIds).toEqual([m.id]);

      const denied = { code: Code.PermissionDenied };
      await expect(worker.admin.createRecoveryCode({ identityId: alice.id })).rejects.toMatchObject(denied);
      await expect(worker.admin.setIdentityState({ identityId: alice.id, state: IdentityState.DISABLED })).rejects.toMatchObject(denied);
      await expect(worker.admin.listOrganizations({})).rejects.toMatchObject(denied);
      const stream = worker.admin.watchEvents({ orgId: org.id });
      await expect((async () => { for await (const _ of stream) void _; })()).rejects.toSatisfy((e) => ConnectError.from(e).code === Code.PermissionDenied);
      const rest = await fetch(`${server.url}/admin/recovery/code`, { method: "POST", headers: { "content-type": "application/json", ...bearer(token) }, body: JSON.stringify({ identity_id: alice.id }) });
      expect(rest.status).toBe(403);
      const json = await postJson(server.url, "/codegate.v1.AdminService/CreateRecoveryCode", { identityId: alice.id }, bearer(token));
      expect([json.status, json.body.code]).toEqual([403, "permission_denied"]);
      expect(json.body.message).toContain("DeliveryService only");

      const recoveryCodes = await server.app.orm.em
        .getConnection()
        .execute("select count(*)::int as n from code where identity_id = ? and purpose = 'recovery'", [alice.id]);
      expect(recoveryCodes).toEqual([{ n: 0 }]);
      expect((await fx.clients.admin.getIdentity({ identityId: alice.id })).identity!.state).toBe(IdentityState.ACTIVE);
      const refusals = server.logs.filter((l) => l.includes("delivery token refused outside DeliveryService"));
      expect(refusals).toHaveLength(6);
      expect(refusals.every((l) => l.includes(`"tokenId":"${tokenId}"`) && l.includes('"level":"warn"'))).toBe(true);
    } finally {
      worker.close();
    }
  });

  it("need the admin token, and name the API's channels only, over Connect JSON as over gRPC", async () => {
    const path = "/codegate.v1.DeliveryService/Claim";
    const body = { channels: ["DELIVERY_CHANNEL_SMS"], maxMessages: 1 };
    expect((await postJson(server.url, path, body)).status).toBe(401);
    expect((await postJson(server.url, path, body, bearer("cga_not-a-token"))).status).toBe(401);
    const ok = await postJson(server.url, path, { ...body, lease: "30s" }, bearer(ADMIN_TOKEN));
    expect(ok).toMatchObject({ status: 200, body: {} }); // nothing due
    for (const bad of [
      { channels: ["DELIVERY_CHANNEL_SMTP"] },
      { channels: [] },
      { channels: ["DELIVERY_CHANNEL_SMS", "DELIVERY_CHANNEL_SMS"] },
      { channels: ["DELIVERY_CHANNEL_SMS"], lease: "1s" },
      { channels: ["DELIVERY_CHANNEL_SMS"], maxMessages: 101 },
    ]) {
      const r = await postJson(server.url, path, bad, bearer(ADMIN_TOKEN));
      expect(r.status, JSON.stringify(bad)).toBe(400);
    }
    const ack = await postJson(server.url, "/codegate.v1.DeliveryService/Ack", { messages: [{ id: "nope", orgId: "or-nope", leaseToken: "x" }] }, bearer(ADMIN_TOKEN));
    expect(ack.status).toBe(400);
    await expect(fx.clients.delivery.claim({ channels: [DeliveryChannel.SMTP] })).rejects.toMatchObject({ code: Code.InvalidArgument });
  });
});
