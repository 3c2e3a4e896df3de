// The event trail (issue 20): every change that matters is written as an event
// in the transaction of the change, listed by AdminService.ListEvents and
// followed by WatchEvents from a cursor, and pruned by the retention job.
//
// What is proved here, over the real server and its PostgreSQL:
// - each kind of event appears after its action, with ids, the purpose, the
//   admin token and the request id, and never a code, token or address (raw rows);
// - an event exists if and only if its change committed: sends refused by a limit
//   or by validation, a transaction rolled back, a duplicate identity and a lost
//   race leave none, a committed change exactly one;
// - ListEvents pages newest first with filters, every event once;
// - WatchEvents hands out every event once, in order, also when resumed from a
//   cursor under concurrent sends, and never an event before one whose
//   transaction is still open (an event that commits late with a lower id);
// - the retention job deletes events past EVENT_RETENTION_PERIOD, and only those.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { createCodegateNodeClients, IdentityState, MailKind, CodePurpose } from "@codegate/client/node";
import { EventType, type Event } from "../gen/codegate/v1/admin_pb.ts";
import { ManualClock } from "../src/domain/clock.ts";
import type { EventPosition } from "../src/domain/events.ts";
import { eventsAfter, listEvents } from "../src/store/events.ts";
import { prune } from "../src/store/retention.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { bearer, postJson } from "./support/clients.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

let smtp: SmtpSink;
let server: TestServer;
let db: pg.Client;
let fx: ReturnType<typeof adminFixtures>;
const clock = new ManualClock();

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer(
    // Three quick attempts per mail: a mail to a username that is no address is abandoned within milliseconds.
    { SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "20ms", COURIER_MAX_ATTEMPTS: "3", COURIER_BACKOFF_BASE: "10ms", COURIER_BACKOFF_MAX: "20ms", EVENTS_POLL_INTERVAL: "20ms" },
    { clock },
  );
  db = new pg.Client({ connectionString: server.databaseUrl });
  await db.connect();
  fx = adminFixtures(server.url);
});

afterAll(async () => {
  fx?.close();
  await db?.end();
  await server?.close();
  await smtp?.stop();
});

interface EventRow {
  org_id: string;
  id: string;
  tx: string;
  type: string;
  purpose: string | null;
  identity_id: string | null;
  code_id: string | null;
  mail_id: string | null;
  actor: string | null;
  request_id: string | null;
  details: Record<string, string> | null;
  occurred_at: Date;
}

/** The raw rows of the event table, in the trail's order. */
async function rows(where = "true", params: unknown[] = []): Promise<EventRow[]> {
  const columns = "org_id, id::text as id, tx::text as tx, type, purpose, identity_id, code_id, mail_id, actor, request_id, details, occurred_at";
  return (await db.query(`select ${columns} from event where ${where} order by event.tx, event.id`, params)).rows;
}

/** Calls an RPC over Connect JSON with a request id of its own, so that its events can be found. */
async function call(path: string, body: unknown, admin = false) {
  const requestId = `ev-${randomUUID()}`;
  const res = await postJson(server.url, path, body, { "x-request-id": requestId, ...(admin ? bearer(ADMIN_TOKEN) : {}) });
  return { ...res, requestId };
}

const byRequest = (requestId: string) => rows("request_id = $1", [requestId]);

/** Every event of an organization through ListEvents, newest first, page by page. */
async function listAll(orgId: string, pageSize: number, filter: { type?: EventType; identityId?: string } = {}): Promise<{ events: Event[]; pages: number }> {
  const events: Event[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await fx.clients.admin.listEvents({ orgId, pageSize, pageToken, ...filter });
    expect(page.events.length).toBeLessThanOrEqual(pageSize);
    events.push(...page.events);
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken !== "");
  return { events, pages };
}

/** A WatchEvents stream collecting what it receives, until stopped. */
function watch(orgId: string, after = "") {
  const controller = new AbortController();
  const received: Event[] = [];
  const done = (async () => {
    try {
      for await (const res of fx.clients.admin.watchEvents({ orgId, after }, { signal: controller.signal })) received.push(...res.events);
    } catch (err) {
      // Ended by stop(); anything else is the test's failure.
      if (!controller.signal.aborted) throw err;
    }
  })();
  // Awaited by stop(); a test that failed before stopping must not leave an unhandled rejection.
  done.catch(() => {});
  return {
    received,
    async stop() {
      controller.abort();
      await done;
    },
  };
}

const typesOf = (events: EventRow[]) => events.map((e) => e.type);

describe("every change that matters is an event", () => {
  it("codes issued, verified, failed and locked out, mails sent and abandoned, and every admin action", async () => {
    const created = await call("/codegate.v1.AdminService/CreateOrganization", { name: "Trail Co" }, true);
    expect(created.status).toBe(200);
    const orgId: string = created.body.organization.id;
    expect(await byRequest(created.requestId)).toMatchObject([{ org_id: orgId, type: "organization.created", actor: "env" }]);

    // An identity with its registration code (mailed), then made active.
    const identity = await call("/codegate.v1.AdminService/CreateIdentity", { orgId, username: "trail@example.com" }, true);
    expect(identity.status).toBe(200);
    const identityId: string = identity.body.identity.id;
    const registration = await byRequest(identity.requestId);
    expect(typesOf(registration)).toEqual(["identity.created", "code.issued"]);
    expect(registration[1]).toMatchObject({ purpose: "registration", identity_id: identityId, actor: "env" });
    const activated = await call("/codegate.v1.AdminService/SetIdentityState", { identityId, state: "IDENTITY_STATE_ACTIVE" }, true);
    expect(await byRequest(activated.requestId)).toMatchObject([
      { type: "identity.state_changed", identity_id: identityId, actor: "env", details: { from: "pending", to: "active", invalidated: "0" } },
    ]);
    // A phone number set, then removed: whether one is set, never the number.
    const phoned = await call("/codegate.v1.AdminService/SetIdentityPhoneNumber", { identityId, phoneNumber: "+41446681800" }, true);
    expect(await byRequest(phoned.requestId)).toMatchObject([{ type: "identity.phone_number_set", identity_id: identityId, actor: "env", details: { set: "true" } }]);
    const unphoned = await call("/codegate.v1.AdminService/SetIdentityPhoneNumber", { identityId, phoneNumber: "" }, true);
    expect(await byRequest(unphoned.requestId)).toMatchObject([{ type: "identity.phone_number_set", details: { set: "false" } }]);

    // A login code, its mail delivered, a wrong guess, and the right one.
    const sent = await call("/codegate.v1.LoginService/SendLoginCode", { orgId, username: "trail@example.com" });
    const [issued] = await byRequest(sent.requestId);
    expect(issued).toMatchObject({ type: "code.issued", purpose: "login", identity_id: identityId, actor: null });
    expect(issued.code_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(issued.mail_id).toMatch(/^[0-9a-f-]{36}$/);
    const code = codeFrom(await smtp.nextMailTo("trail@example.com", 1));
    await vi.waitFor(
      async () => {
        clock.advance(100); // a retry, should the first attempt fail, comes due on the server's clock
        expect(await rows("type = 'mail.sent' and mail_id = $1", [issued.mail_id])).toHaveLength(1);
      },
      { timeout: 10_000, interval: 20 },
    );
    const wrong = await call("/codegate.v1.LoginService/VerifyLoginCode", { orgId, username: "trail@example.com", code: code === "000000" ? "000001" : "000000" });
    expect(wrong.status).toBe(401);
    expect(await byRequest(wrong.requestId)).toMatchObject([
      { type: "code.failed", purpose: "login", identity_id: identityId, code_id: issued.code_id, details: { reason: "wrong_code" } },
    ]);
    const right = await call("/codegate.v1.LoginService/VerifyLoginCode", { orgId, username: "trail@example.com", code });
    expect(right.status).toBe(200);
    expect(await byRequest(right.requestId)).toMatchObject([{ type: "code.verified", purpose: "login", identity_id: identityId, code_id: issued.code_id }]);
    // A guess that no live code takes (the code is used): failed, costing nothing.
    const late = await call("/codegate.v1.LoginService/VerifyLoginCode", { orgId, username: "trail@example.com", code });
    expect(await byRequest(late.requestId)).toMatchObject([{ type: "code.failed", identity_id: identityId, code_id: null, details: { reason: "no_attempt" } }]);
    const unknown = await call("/codegate.v1.LoginService/VerifyLoginCode", { orgId, username: "nobody@example.com", code: "123456" });
    expect(await byRequest(unknown.requestId)).toMatchObject([{ type: "code.failed", identity_id: null, code_id: null }]);

    // A code locked out by its fifth wrong guess.
    const again = await call("/codegate.v1.LoginService/SendLoginCode", { orgId, username: "trail@example.com" });
    const [second] = await byRequest(again.requestId);
    const fresh = codeFrom(await smtp.nextMailTo("trail@example.com", 2));
    const guess = fresh === "000000" ? "000001" : "000000";
    const guesses = [];
    for (let i = 0; i < 5; i++) guesses.push(await call("/codegate.v1.LoginService/VerifyLoginCode", { orgId, username: "trail@example.com", code: guess }));
    for (const g of guesses.slice(0, 4)) expect(typesOf(await byRequest(g.requestId))).toEqual(["code.failed"]);
    expect(typesOf(await byRequest(guesses[4].requestId)).sort()).toEqual(["code.failed", "code.locked"]);
    expect(await rows("type = 'code.locked' and code_id = $1", [second.code_id])).toHaveLength(1);

    // An administrator's recovery code, redeemed through its flow id (the two-statement path).
    const recovery = await call("/codegate.v1.AdminService/CreateRecoveryCode", { identity_id: identityId }, true);
    const flowId = new URL(recovery.body.recovery_link).searchParams.get("flow");
    // It kills the identity's earlier recovery codes first (none here), in the same transaction.
    expect(await byRequest(recovery.requestId)).toMatchObject([
      { type: "codes.invalidated", purpose: "recovery", identity_id: identityId, actor: "env", details: { count: "0" } },
      { type: "code.issued", purpose: "recovery", identity_id: identityId, code_id: flowId, actor: "env", mail_id: null },
    ]);
    const redeemed = await call("/codegate.v1.RecoveryService/VerifyRecoveryCode", { flowId, code: recovery.body.recovery_code });
    expect(redeemed.status).toBe(200);
    expect(await byRequest(redeemed.requestId)).toMatchObject([{ org_id: orgId, type: "code.verified", purpose: "recovery", identity_id: identityId, code_id: flowId }]);

    // Codes invalidated, and an identity disabled with its live codes (a new login code, and the registration code never used).
    await call("/codegate.v1.LoginService/SendLoginCode", { orgId, username: "trail@example.com" });
    const invalidated = await call("/codegate.v1.AdminService/InvalidateCodes", { identityId, purpose: "CODE_PURPOSE_RECOVERY" }, true);
    expect(await byRequest(invalidated.requestId)).toMatchObject([{ type: "codes.invalidated", purpose: "recovery", identity_id: identityId, actor: "env", details: { count: "0" } }]);
    const disabled = await call("/codegate.v1.AdminService/SetIdentityState", { identityId, state: "IDENTITY_STATE_DISABLED" }, true);
    expect(await byRequest(disabled.requestId)).toMatchObject([
      { type: "identity.state_changed", identity_id: identityId, details: { from: "active", to: "disabled", invalidated: "2" } },
    ]);

    // Settings and templates.
    const settings = await call("/codegate.v1.AdminService/UpdateOrganizationSettings", { orgId, settings: { selfServiceSignup: true } }, true);
    expect(await byRequest(settings.requestId)).toMatchObject([{ type: "organization.settings_updated", org_id: orgId, actor: "env" }]);
    const template = { subject: "Code", text: "{{code}}", html: "<p>{{code}}</p>" };
    const set = await call("/codegate.v1.AdminService/SetMailTemplate", { orgId, kind: "MAIL_KIND_LOGIN", locale: "de", ...template }, true);
    expect(await byRequest(set.requestId)).toMatchObject([{ type: "mail_template.set", details: { kind: "login", locale: "de" } }]);
    const deleted = await call("/codegate.v1.AdminService/DeleteMailTemplate", { orgId, kind: "MAIL_KIND_LOGIN", locale: "de" }, true);
    expect(await byRequest(deleted.requestId)).toMatchObject([{ type: "mail_template.deleted", details: { kind: "login", locale: "de" } }]);

    // A self-service sign-up: the new identity and its code, in the send's one statement.
    const signup = await call("/codegate.v1.RegistrationService/Register", { orgId, username: "newcomer@example.com" });
    const signedUp = await byRequest(signup.requestId);
    expect(typesOf(signedUp).sort()).toEqual(["code.issued", "identity.created"]);
    expect(signedUp[0].identity_id).toBe(signedUp[1].identity_id);

    // A mail abandoned: its recipient is no mail address (a row from before that rule).
    await db.query(`insert into identity (org_id, id, username, username_normalized, state, created_at) values ($1, $2, 'no address', 'no address', 'active', now())`, [
      orgId,
      randomUUID(),
    ]);
    const doomed = await call("/codegate.v1.LoginService/SendLoginCode", { orgId, username: "no address" });
    const [doomedCode] = await byRequest(doomed.requestId);
    // Its retries come due on the server's clock, which the test moves.
    await vi.waitFor(
      async () => {
        clock.advance(100);
        expect(await rows("mail_id = $1 and type like 'mail.%'", [doomedCode.mail_id])).toMatchObject([{ type: "mail.abandoned", details: { attempts: "3" } }]);
      },
      { timeout: 10_000, interval: 20 },
    );

    // Every mail settled (sent or abandoned, each with its event), so that the courier writes no more events.
    await vi.waitFor(
      async () => {
        clock.advance(100);
        expect((await db.query("select id from courier_message where org_id = $1 and status = 'queued'", [orgId])).rows).toEqual([]);
      },
      { timeout: 10_000, interval: 20 },
    );
    // All of them through ListEvents, as the raw rows have them, newest first.
    const raw = await rows("org_id = $1", [orgId]);
    // (The trail lists a transaction's events once no older transaction is still open.)
    await vi.waitFor(async () => expect((await listAll(orgId, 500)).events.map((e) => e.id)).toEqual(raw.map((r) => BigInt(r.id)).reverse()), { timeout: 5000, interval: 20 });
    const listed = (await listAll(orgId, 500)).events;
    // Every type of event, each as its enum value.
    expect(new Set(listed.map((e) => e.type))).toEqual(new Set(Object.values(EventType).filter((t) => t !== EventType.UNSPECIFIED)));
    const verified = listed.find((e) => e.type === EventType.CODE_VERIFIED && e.purpose === CodePurpose.LOGIN)!;
    expect(verified).toMatchObject({ orgId, identityId, codeId: issued.code_id, requestId: right.requestId, actor: "" });
    expect(verified.cursor).toBe(`${raw.find((r) => r.request_id === right.requestId)!.tx}-${verified.id}`);

    // Nothing in any row is a code, a token, a username or an address.
    const secrets = [code, fresh, recovery.body.recovery_code, right.body.token, "trail@example.com", "newcomer@example.com", "nobody@example.com", "no address", "127.0.0.1", "+41446681800", "41446681800"];
    const text = JSON.stringify(raw);
    for (const secret of secrets) expect(text, secret).not.toContain(secret);
    expect(Object.keys(raw[0]).sort()).toEqual(["actor", "code_id", "details", "id", "identity_id", "mail_id", "occurred_at", "org_id", "purpose", "request_id", "tx", "type"]);
  });
});

describe("an event exists if and only if its change committed", () => {
  it("a send refused by a limit or by validation leaves none; a committed one exactly one", async () => {
    // At most one send per username and hour, in this organization.
    const org = await fx.org("Limited", { rateLimits: { sendPerUsername: [{ max: 1, window: { seconds: 3600n } }] } });
    const identity = await fx.identity(org.id, "limited@example.com");
    const first = await call("/codegate.v1.LoginService/SendLoginCode", { orgId: org.id, username: "limited@example.com" });
    expect(first.status).toBe(200);
    const refused = await call("/codegate.v1.LoginService/SendLoginCode", { orgId: org.id, username: "limited@example.com" });
    expect(refused.status).toBe(429);
    const invalid = await call("/codegate.v1.LoginService/SendLoginCode", { orgId: "not-an-org", username: "limited@example.com" });
    expect(invalid.status).toBe(400);
    expect(await byRequest(first.requestId)).toMatchObject([{ type: "code.issued", identity_id: identity.id }]);
    expect(await byRequest(refused.requestId)).toEqual([]);
    expect(await byRequest(invalid.requestId)).toEqual([]);
    const codes = await db.query("select id from code where org_id = $1 and identity_id = $2", [org.id, identity.id]);
    expect((await rows("type = 'code.issued' and identity_id = $1", [identity.id])).map((e) => e.code_id)).toEqual(codes.rows.map((c) => c.id));
    // A send for an unknown username changes nothing and records nothing.
    const unknown = await call("/codegate.v1.LoginService/SendLoginCode", { orgId: org.id, username: "stranger@example.com" });
    expect(unknown.status).toBe(200);
    expect(await byRequest(unknown.requestId)).toEqual([]);
  });

  it("a transaction rolled back leaves none, nor does a duplicate identity", async () => {
    const created = await fx.org("Rolled Back");
    await fx.identity(created.id, "rollback@example.com");
    const org = (await server.app.orgs.resolve(created.id, ""))!;
    const requestId = `rb-${randomUUID()}`;
    let codeId = "";
    await expect(
      server.app.sql.transaction(async (tx) => {
        const issued = await server.app.codes.issue(
          { org, purpose: "login", target: { username: "rollback@example.com" }, requiredState: "active", mail: "login", audit: { requestId } },
          tx,
        );
        codeId = issued.id;
        // Written in the transaction, so visible in it; then it is rolled back.
        expect((await tx.query("select type from event where request_id = $1", [requestId])).map((r) => r.type)).toEqual(["code.issued"]);
        throw new Error("rolled back on purpose");
      }),
    ).rejects.toThrow("rolled back on purpose");
    expect(codeId).not.toBe("");
    expect(await byRequest(requestId)).toEqual([]);
    expect((await db.query("select 1 from code where id = $1", [codeId])).rows).toEqual([]);

    const duplicate = await call("/codegate.v1.AdminService/CreateIdentity", { orgId: created.id, username: "ROLLBACK@example.com" }, true);
    expect(duplicate.status).toBe(409);
    expect(await byRequest(duplicate.requestId)).toEqual([]);
  });

  it("of concurrent sends for one account, each issued code has one event and each send that lost its race none", async () => {
    const org = await fx.org("Racing");
    const identity = await fx.identity(org.id, "racer@example.com");
    const sends = await Promise.all(Array.from({ length: 20 }, () => call("/codegate.v1.LoginService/SendLoginCode", { orgId: org.id, username: "racer@example.com" })));
    for (const s of sends) expect(s.status).toBe(200);
    const issued = await rows("type = 'code.issued' and identity_id = $1", [identity.id]);
    // Each event names a send of this batch, once.
    expect(new Set(issued.map((e) => e.request_id)).size).toBe(issued.length);
    expect(issued.every((e) => sends.some((s) => s.requestId === e.request_id))).toBe(true);
    // Each issued code was mailed: as many mails queued as events, each named by one.
    const mails = await db.query("select id from courier_message where org_id = $1 and recipient = 'racer@example.com'", [org.id]);
    expect(issued.map((e) => e.mail_id).sort()).toEqual(mails.rows.map((m) => m.id).sort());
    expect(issued.length).toBeGreaterThanOrEqual(1);
    // The one live code is the code of the last event's send that replaced it.
    const live = await db.query("select id from code where org_id = $1 and identity_id = $2 and dead_at is null", [org.id, identity.id]);
    expect(live.rows).toHaveLength(1);
    expect(issued.map((e) => e.code_id)).toContain(live.rows[0].id);
  });
});

describe("ListEvents", () => {
  it("pages newest first, every event once, with filters; refuses a bad token and callers without an admin token", async () => {
    const org = await fx.org("Paged");
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await fx.identity(org.id, `paged${i}@example.com`)).id);
    await vi.waitFor(async () => expect((await listAll(org.id, 500)).events).toHaveLength(9), { timeout: 5000, interval: 20 }); // created, 4 identities, 4 activations
    const raw = await rows("org_id = $1", [org.id]);
    const { events, pages } = await listAll(org.id, 2);
    expect(pages).toBe(5);
    expect(events.map((e) => e.cursor)).toEqual(raw.map((r) => `${r.tx}-${r.id}`).reverse());

    const stateChanges = await listAll(org.id, 3, { type: EventType.IDENTITY_STATE_CHANGED });
    expect(stateChanges.events.map((e) => e.identityId)).toEqual([...ids].reverse());
    const ofOne = await listAll(org.id, 10, { identityId: ids[2] });
    expect(ofOne.events.map((e) => e.type)).toEqual([EventType.IDENTITY_STATE_CHANGED, EventType.IDENTITY_CREATED]);
    // Across organizations: this one's events among them.
    const all = await fx.clients.admin.listEvents({ pageSize: 500 });
    expect(all.events.some((e) => e.orgId !== org.id)).toBe(true);

    await expect(fx.clients.admin.listEvents({ orgId: org.id, pageToken: "99999999999999999999-1" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    await expect(fx.clients.admin.listEvents({ orgId: "or-bad" })).rejects.toMatchObject({ code: Code.InvalidArgument });
    const anonymous = createCodegateNodeClients({ baseUrl: server.url });
    await expect(anonymous.admin.listEvents({ orgId: org.id })).rejects.toMatchObject({ code: Code.Unauthenticated });
    const stream = anonymous.admin.watchEvents({ orgId: org.id });
    await expect((async () => { for await (const _ of stream) void _; })()).rejects.toSatisfy((e) => ConnectError.from(e).code === Code.Unauthenticated);
    anonymous.close();
  });
});

describe("WatchEvents", () => {
  it("hands out every event once and in order, resumed from a cursor, under concurrent sends", async () => {
    const org = await fx.org("Watched");
    const users = Array.from({ length: 12 }, (_, i) => `watched${i}@example.com`);
    for (const u of users) await fx.identity(org.id, u);
    const first = watch(org.id);
    // Concurrent sends while the first watcher follows.
    const wave = () => Promise.all(users.map((u) => call("/codegate.v1.LoginService/SendLoginCode", { orgId: org.id, username: u }).then((r) => expect(r.status).toBe(200))));
    await wave();
    await vi.waitFor(() => expect(first.received.length).toBeGreaterThanOrEqual(30), { timeout: 10_000, interval: 20 });
    await first.stop();
    const cursor = first.received[first.received.length - 1].cursor;
    // More sends while nobody watches, and while the second watcher starts.
    const more = wave();
    const second = watch(org.id, cursor);
    await more;
    await wave();
    // Every event of the organization, the mails' outcomes included, arrives exactly once over the two watchers.
    await vi.waitFor(
      async () => {
        clock.advance(100); // retries of mails, should an attempt fail, come due on the server's clock
        const raw = await rows("org_id = $1", [org.id]);
        expect(raw.filter((r) => r.type.startsWith("mail."))).toHaveLength(36);
        expect([...first.received, ...second.received].map((e) => e.cursor)).toEqual(raw.map((r) => `${r.tx}-${r.id}`));
      },
      // 36 mails delivered and their events handed out: on a loaded machine (the whole suite beside it), more than 15 s once.
      { timeout: 40_000, interval: 50 },
    );
    await second.stop();
    expect(new Set(second.received.map((e) => e.orgId))).toEqual(new Set([org.id]));
  });

  it("never hands out an event before one whose transaction has not committed, though the later one has", async () => {
    const org = await fx.org("Late");
    await vi.waitFor(async () => expect((await fx.clients.admin.listEvents({ orgId: org.id })).events).toHaveLength(1), { timeout: 5000, interval: 20 });
    const start = (await fx.clients.admin.listEvents({ orgId: org.id })).events[0].cursor;
    const watcher = watch(org.id, start);
    const slow = new pg.Client({ connectionString: server.databaseUrl });
    await slow.connect();
    try {
      // The slow transaction takes its id first and commits last.
      await slow.query("begin");
      const [early] = (await slow.query(`insert into event (org_id, type, occurred_at) values ($1, 'codes.invalidated', now()) returning id::text as id`, [org.id])).rows;
      const [later] = (await db.query(`insert into event (org_id, type, occurred_at) values ($1, 'codes.invalidated', now()) returning id::text as id`, [org.id])).rows;
      expect(BigInt(early.id)).toBeLessThan(BigInt(later.id));
      // The later event has committed, but an event could still commit before it: neither is listed nor handed out.
      expect((await rows("org_id = $1", [org.id])).map((r) => r.id)).toContain(later.id);
      expect((await fx.clients.admin.listEvents({ orgId: org.id })).events.map((e) => String(e.id))).not.toContain(later.id);
      expect(watcher.received.map((e) => String(e.id))).not.toContain(later.id);
      await slow.query("commit");
      await vi.waitFor(() => expect(watcher.received.map((e) => String(e.id))).toEqual([early.id, later.id]), { timeout: 5000, interval: 20 });
    } finally {
      await slow.end();
      await watcher.stop();
    }
  });

  it("refuses a malformed cursor", async () => {
    const stream = fx.clients.admin.watchEvents({ after: "12-x" });
    await expect((async () => { for await (const _ of stream) void _; })()).rejects.toSatisfy((e) => ConnectError.from(e).code === Code.InvalidArgument);
  });
});

describe("the order of events", () => {
  it("is by number across a power of ten, in listings and in what is handed out, each event once", async () => {
    // Written as by transactions long settled (any test cluster is past its first hundred), their ids and
    // transaction ids each crossing powers of ten.
    const orgId = `or-order-${randomUUID()}`;
    const positions = [[8, 1], [9, 2], [10, 3], [11, 8], [11, 9], [11, 10], [99, 11], [99, 99], [100, 100], [100, 101]];
    for (const [tx, id] of positions) {
      await db.query(`insert into event (org_id, id, tx, type, occurred_at) values ($1, $2, $3, 'identity.created', now())`, [orgId, id, tx]);
    }
    const inOrder = positions.map(([tx, id]) => `${tx}-${id}`);
    const sql = server.app.sql;
    const newestFirst: string[] = [];
    for (let before: EventPosition | undefined; ; ) {
      const page = await listEvents(sql, { orgId }, before, 3);
      newestFirst.push(...page.slice(0, 3).map((e) => `${e.tx}-${e.id}`));
      if (page.length <= 3) break;
      before = page[2];
    }
    expect(newestFirst).toEqual([...inOrder].reverse());
    const handedOut: string[] = [];
    for (let after: EventPosition | undefined; ; ) {
      const batch = await eventsAfter(sql, orgId, after, 3);
      if (batch.length === 0) break;
      handedOut.push(...batch.map((e) => `${e.tx}-${e.id}`));
      after = batch.at(-1);
    }
    expect(handedOut).toEqual(inOrder);
  });
});

describe("a WatchEvents stream", () => {
  /** Reads a stream to its end; answers the code it ended with (undefined: ended cleanly). */
  async function endOf(it: AsyncIterator<unknown>): Promise<Code | undefined> {
    try {
      while (!(await it.next()).done);
      return undefined;
    } catch (err) {
      return ConnectError.from(err).code;
    }
  }

  it("takes one of MAX_STREAMS, and ends at STREAM_MAX_LIFETIME and at shutdown, its slot given back", async () => {
    const s = await startTestServer({ MAX_STREAMS: "1", STREAM_MAX_LIFETIME: "1s", EVENTS_POLL_INTERVAL: "20ms", COURIER_ENABLED: "false" });
    const c = createCodegateNodeClients({ baseUrl: s.url, adminToken: ADMIN_TOKEN });
    try {
      const org = (await c.admin.createOrganization({ name: "Bounded" })).organization!;
      const open = async () => {
        const it = c.admin.watchEvents({ orgId: org.id })[Symbol.asyncIterator]();
        const first = await it.next();
        expect(first.done).toBe(false);
        return it;
      };
      const first = await open();
      expect(await endOf(c.admin.watchEvents({ orgId: org.id })[Symbol.asyncIterator]())).toBe(Code.ResourceExhausted);
      expect(await endOf(first)).toBe(Code.Unavailable);
      // Its slot is free again; the next one ends when the server stops.
      const second = await open();
      const ended = endOf(second);
      await s.close();
      expect(await ended).toBeDefined();
    } finally {
      c.close();
    }
  });
});

describe("retention", () => {
  it("deletes events older than EVENT_RETENTION_PERIOD and keeps the rest", async () => {
    const org = await fx.org("Kept");
    const old = (await rows("org_id = $1", [org.id])).map((r) => r.id);
    expect(old).toHaveLength(1);
    clock.advance(31 * 24 * 3_600_000);
    await fx.identity(org.id, "kept@example.com");
    const keep = (await rows("org_id = $1", [org.id])).map((r) => r.id).filter((id) => !old.includes(id));
    expect(keep).toHaveLength(2);
    const pruned = await prune(server.app.sql, clock.now(), server.app.config.retention.keepMs, server.app.config.retention.eventsKeepMs);
    expect(pruned.events).toBeGreaterThanOrEqual(1);
    expect((await rows("org_id = $1", [org.id])).map((r) => r.id)).toEqual(keep);
    expect(server.app.config.retention.eventsKeepMs).toBe(30 * 24 * 3_600_000);
  });
});

// Referenced so that the enum imports stay honest about what the fixtures use.
void IdentityState;
void MailKind;
