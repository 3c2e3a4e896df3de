import { afterAll, describe, expect, it, vi } from "vitest";
import { randomBytes, randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { startTestServer, freshDatabase, type TestServer } from "./support/server.ts";
import { createCodegateWebClients } from "@codegate/client/web";
import { postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";
import { ScriptedSmtp, type SmtpMisbehaviour } from "./support/scripted-smtp.ts";
import { simpleParser } from "mailparser";
import pg from "pg";
import { ManualClock } from "../src/domain/clock.ts";
import { seal } from "../src/rules/mail/seal.ts";
import { claimMails, LAPSED_ERROR, markFailed, markSent, renewClaims } from "../src/store/outbox.ts";
import { createCourier } from "../src/rules/courier/create.ts";
import { DeliveryDesk } from "../src/rules/delivery/delivery.ts";
import type { Purpose } from "../src/domain/purpose.ts";
import { createLogger } from "../src/lib/log.ts";
import type { Sql } from "../src/store/sql.ts";

const servers: TestServer[] = [];
const sinks: SmtpSink[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
  for (const s of sinks) await s.stop();
});

/** Closes a server now (its courier finishes the batch in hand), rather than after the file. */
async function closeNow(s: TestServer): Promise<void> {
  servers.splice(servers.indexOf(s), 1);
  await s.close();
}

/** Queues a mail as a row written by hand, or by an earlier version, would stand in the outbox: due, never tried. */
const queueRow = (s: TestServer, m: { orgId: string; id: string; recipient: string; subject?: string; body: Buffer | null; keyId?: string }) =>
  s.app.sql.query(
    `insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
     values ($1, $2, 'login', $3, $4, $5, $6, 'queued', 0, now() - interval '1 minute', now(), now())`,
    [m.orgId, m.id, m.recipient, m.subject ?? "Your code", m.body, m.keyId ?? "k1"],
  );

/** A server whose courier mails to an SMTP sink and gives up after one attempt, and an organization with one active identity. */
async function oneAttemptCourier(orgName: string, username: string) {
  const smtp = await SmtpSink.create();
  sinks.push(smtp);
  const s = await startTestServer({ SMTP_URL: smtp.url, COURIER_MAX_ATTEMPTS: "1", COURIER_POLL_INTERVAL: "50ms", LOG_LEVEL: "warn" });
  servers.push(s);
  const fx = adminFixtures(s.url);
  const org = await fx.org(orgName);
  await fx.identity(org.id, username);
  fx.close();
  return { smtp, s, org };
}

/**
 * A server whose courier mails to an SMTP sink through `instrument`ed SQL, and
 * `send`: a login code for a new identity of a new organization, answered, its
 * mail received.
 */
async function courierOver(instrument: (sql: Sql) => Sql) {
  const smtp = await SmtpSink.create();
  sinks.push(smtp);
  const s = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", LOG_LEVEL: "warn" }, { instrumentSql: instrument });
  servers.push(s);
  const send = async (username: string) => {
    const fx = adminFixtures(s.url);
    const org = await fx.org(`Org of ${username}`);
    await fx.identity(org.id, username);
    fx.close();
    expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username, orgId: org.id })).status).toBe(200);
    await smtp.nextMailTo(username);
  };
  return { s, smtp, send };
}

/**
 * A server whose courier gives up on a mail after one attempt and records that
 * failure through `around` (given the statement to run, and the database), and a
 * mail to `recipient` in its outbox whose attempt fails (it has no body).
 */
async function oneFailingMail(recipient: string, around: (run: () => Promise<any[]>, sql: Sql) => Promise<any[]>) {
  const s = await startTestServer(
    { COURIER_MAX_ATTEMPTS: "1", COURIER_POLL_INTERVAL: "50ms", LOG_LEVEL: "warn" },
    {
      instrumentSql: (sql) => ({
        // The failure's statement (a claim's records a lapsed mail's abandonment too).
        query: (text, params, signal) => (text.includes("with failed as (") ? around(() => sql.query(text, params, signal), sql) : sql.query(text, params, signal)),
        transaction: (work) => sql.transaction(work),
      }),
    },
  );
  servers.push(s);
  const fx = adminFixtures(s.url);
  const org = await fx.org(`Org of ${recipient}`);
  fx.close();
  await queueRow(s, { orgId: org.id, id: randomUUID(), recipient, body: null });
  return s;
}

/** A courier counter's value for login mails, as /metrics has it. */
async function loginMailMetric(s: TestServer, name: string): Promise<number> {
  const text = await (await fetch(`${s.app.opsUrl}/metrics`)).text();
  return Number(new RegExp(`^${name}\\{purpose="login"\\} (\\d+)$`, "m").exec(text)?.[1]);
}

/**
 * A server without a courier and one due mail of `orgId` in its outbox, for tests
 * that play couriers' claims and outcomes by hand at times `at(ms)` after `t0`.
 */
async function oneMailUnclaimed(orgId: string) {
  const s = await startTestServer({ COURIER_ENABLED: "false" });
  servers.push(s);
  const mail = { orgId, id: randomUUID() };
  await queueRow(s, { ...mail, recipient: "someone@example.com", body: Buffer.from([0]) });
  const t0 = Date.now();
  return { sql: s.app.sql, mail, t0, at: (ms: number) => new Date(t0 + ms) };
}

/** The outbox row of the one mail to `recipient`, once its status is `status`. */
const mailOnceIt = (s: TestServer, recipient: string, status: string) =>
  vi.waitFor(
    async () => {
      const rows = await s.app.orm.em.getConnection().execute("select status, send_count, last_error, body from courier_message where recipient = ?", [recipient]);
      expect(rows).toHaveLength(1);
      expect(rows[0].status).toBe(status);
      return rows[0];
    },
    { timeout: 10_000, interval: 20 },
  );

describe("the courier", () => {
  it("loses nothing while SMTP is down: 100 mails arrive once it is back, none twice, with two couriers at work", async () => {
    const smtp = await SmtpSink.create(false); // down
    sinks.push(smtp);
    const databaseUrl = await freshDatabase();
    const env = {
      DATABASE_URL: databaseUrl,
      // Both processes hold the same keys, as instances of one deployment must: either
      // courier can then open (and send) any mail, whichever process queued it.
      MAIL_ENCRYPTION_KEYS: `m1:${randomBytes(32).toString("base64")}`,
      CODE_HMAC_KEYS: `c1:${randomBytes(32).toString("base64")}`,
      SMTP_URL: smtp.url,
      COURIER_BACKOFF_BASE: "50ms",
      COURIER_BACKOFF_MAX: "400ms",
      COURIER_MAX_ATTEMPTS: "100",
      COURIER_POLL_INTERVAL: "100ms",
      COURIER_BATCH_SIZE: "20",
      LOG_LEVEL: "warn",
    };
    const a = await startTestServer(env);
    servers.push(a);
    const b = await startTestServer(env); // a second process on the same database
    servers.push(b);
    const fx = adminFixtures(a.url);
    const org = await fx.org("Outage");
    const users = Array.from({ length: 100 }, (_, i) => `user${i}@example.com`);
    await Promise.all(users.map((u) => fx.identity(org.id, u)));
    fx.close();

    const answers = await Promise.all(
      users.map((u, i) => postJson(i % 2 ? a.url : b.url, "/codegate.v1.LoginService/SendLoginCode", { username: u, orgId: org.id })),
    );
    expect(answers.every((r) => r.status === 200)).toBe(true);

    // Let both couriers fail a few rounds against the closed port.
    const conn = a.app.orm.em.getConnection();
    await vi.waitFor(
      async () => {
        const [f] = await conn.execute(
          "select count(*)::int as n, count(*) filter (where last_error not like '%ECONNREFUSED%')::int as other from courier_message where status = 'queued' and last_error is not null",
        );
        expect(f.n).toBeGreaterThanOrEqual(50);
        // Failed for the outage, and for nothing else.
        expect(f.other).toBe(0);
      },
      { timeout: 10_000, interval: 20 },
    );
    expect(smtp.mails).toHaveLength(0);

    await smtp.start();
    await smtp.waitFor((m) => m.length >= 100, 30_000);
    // Every mail is marked sent, its body wiped...
    await vi.waitFor(
      async () => {
        const [state] = await conn.execute(
          "select count(*) filter (where status = 'sent')::int as sent, count(*) filter (where body is not null)::int as bodies from courier_message",
        );
        expect(state).toEqual({ sent: 100, bodies: 0 });
      },
      { timeout: 10_000, interval: 20 },
    );
    // ...and once both couriers have stopped (each finishes the batch in hand first),
    // nothing more can arrive: a duplicate would be here by now.
    await closeNow(a);
    await closeNow(b);
    expect(smtp.mails).toHaveLength(100);
    expect(new Set(smtp.mails.map((m) => m.messageId)).size).toBe(100);
    expect(new Set(smtp.mails.map((m) => m.to)).size).toBe(100);
  });

  it("abandons a mail after the retry limit, keeping its last error", async () => {
    const smtp = await SmtpSink.create(false);
    sinks.push(smtp);
    const s = await startTestServer({
      SMTP_URL: smtp.url,
      COURIER_BACKOFF_BASE: "10ms",
      COURIER_BACKOFF_MAX: "20ms",
      COURIER_MAX_ATTEMPTS: "3",
      COURIER_POLL_INTERVAL: "20ms",
      LOG_LEVEL: "warn",
    });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Doomed");
    await fx.identity(org.id, "doomed@example.com");
    fx.close();
    await createCodegateWebClients({ baseUrl: s.url }).login.sendLoginCode({ username: "doomed@example.com", orgId: org.id });
    const row = await mailOnceIt(s, "doomed@example.com", "abandoned");
    expect(row.send_count).toBe(3);
    expect(row.last_error).toMatch(/ECONNREFUSED/);
    expect(row.body).toBeNull();
  });

  it("writes .eml files under DATA_DIR/mail when no SMTP_URL is set", async () => {
    const s = await startTestServer({ COURIER_POLL_INTERVAL: "50ms" });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Offline");
    await fx.identity(org.id, "offline@example.com");
    fx.close();
    await createCodegateWebClients({ baseUrl: s.url }).login.sendLoginCode({ username: "offline@example.com", orgId: org.id });
    // The courier writes the file, then marks the mail sent.
    await mailOnceIt(s, "offline@example.com", "sent");
    const files = readdirSync(join(s.dataDir, "mail")).filter((f) => f.endsWith(".eml"));
    expect(files).toHaveLength(1);
    const eml = readFileSync(join(s.dataDir, "mail", files[0]), "utf8");
    expect(eml).toContain("To: offline@example.com");
    expect(eml).toContain("Subject: Your Offline login code");
    expect(eml).toMatch(/Content-Type: text\/plain/);
    expect(eml).toMatch(/Content-Type: text\/html/);
    expect(s.logs.some((l) => l.includes(".eml files in"))).toBe(true);
  });
});

describe("the courier's SMTP connections", () => {
  it("carry many mails each, and are opened again after the SMTP server restarts", async () => {
    const smtp = await SmtpSink.create();
    sinks.push(smtp);
    const s = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", COURIER_SMTP_CONNECTIONS: "3", LOG_LEVEL: "warn" });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Pooled");
    const users = Array.from({ length: 40 }, (_, i) => `pooled${i}@example.com`);
    await Promise.all(users.map((u) => fx.identity(org.id, u)));
    fx.close();
    const send = (u: string) => postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: u, orgId: org.id });
    for (const r of await Promise.all(users.map(send))) expect(r.status).toBe(200);
    await smtp.waitFor((m) => m.length >= 40);
    // At most one connection per lane of the transport (COURIER_SMTP_CONNECTIONS), whatever the number of mails.
    expect(smtp.connections).toBeGreaterThan(0);
    expect(smtp.connections).toBeLessThanOrEqual(3);

    // The server goes away with the connections open, and comes back.
    await smtp.stop();
    await smtp.start();
    expect((await send(users[0])).status).toBe(200);
    await smtp.waitFor((m) => m.length >= 41);
    // Sent at its first attempt: the dropped connection was replaced, not tried and failed.
    const row = await latestMailSent(s, users[0]);
    expect(row.send_count).toBe(1);
    expect(row.last_error).toBeNull();
  });

  it("fails a mail whose recipient is not a mail address, without stopping the others", async () => {
    const { smtp, s, org } = await oneAttemptCourier("Addressless", "fine@example.com");
    // The API takes only mail addresses as usernames; a row from before that rule, or written by hand, may not be one.
    await s.app.orm.em.getConnection().execute(
      "insert into identity (org_id, id, username, username_normalized, state, created_at) values (?, ?, 'not an address', 'not an address', 'active', now())",
      [org.id, randomUUID()],
    );
    for (const u of ["not an address", "fine@example.com"]) {
      expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: u, orgId: org.id })).status).toBe(200);
    }
    const bad = await mailOnceIt(s, "not an address", "abandoned");
    expect(bad.last_error).toBe("the recipient is not a mail address");
    await smtp.waitFor((m) => m.some((x) => x.to === "fine@example.com"));
  });

  it("fails a queued mail that has no body, without stopping its batch", async () => {
    const { smtp, s, org } = await oneAttemptCourier("Bodiless", "fine@example.com");
    // Nothing the server writes queues a mail without its body; a row written by hand, or by a bug, might.
    await queueRow(s, { orgId: org.id, id: randomUUID(), recipient: "bodiless@example.com", body: null });
    expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "fine@example.com", orgId: org.id })).status).toBe(200);
    const bad = await mailOnceIt(s, "bodiless@example.com", "abandoned");
    expect(bad.last_error).toBe("the queued mail has no body");
    await smtp.waitFor((m) => m.some((x) => x.to === "fine@example.com"));
  });

  it("changes a mail only while its claim holds it: a courier whose lease ran out records nothing over the next one's", async () => {
    const { sql, mail, t0, at } = await oneMailUnclaimed("or-lease");
    const row = async () => {
      const [r] = await sql.query(`select status, send_count, lease_token, claimed_until, body from courier_message where org_id = $1 and id = $2`, [mail.orgId, mail.id]);
      return { ...r, claimed_until: r.claimed_until && new Date(r.claimed_until).getTime() };
    };
    const a = { lease: randomUUID(), at: at(0) };
    const b = { lease: randomUUID(), at: at(30_000) };

    expect((await claimMails(sql, a, at(20_000), 10, 5)).items.map((m) => m.id)).toEqual([mail.id]);
    // A loses the database past its lease while its send goes on; B takes the mail over.
    expect((await claimMails(sql, b, at(50_000), 10, 5)).items.map((m) => m.id)).toEqual([mail.id]);
    expect(await claimMails(sql, { lease: randomUUID(), at: at(30_000) }, at(50_000), 10, 5)).toEqual({ items: [], abandoned: [] });

    // A's late outcomes and renewal change nothing: B's claim stands.
    expect(await markFailed(sql, at(31_000), 5, a, [{ ...mail, nextAt: at(31_000), error: "refused" }])).toEqual([]);
    expect(await markSent(sql, at(31_000), a, [mail])).toBe(0);
    await renewClaims(sql, a, at(90_000), [mail]);
    // A's lapsed lease was an attempt: B's claim counted it.
    expect(await row()).toMatchObject({ status: "queued", send_count: 1, lease_token: b.lease, claimed_until: t0 + 50_000 });

    // B's outcome counts; A's failure after it does not put the sent mail, its body wiped, back in the queue.
    expect(await markSent(sql, at(32_000), b, [mail])).toBe(1);
    expect(await markFailed(sql, at(33_000), 5, a, [{ ...mail, nextAt: at(33_000), error: "refused" }])).toEqual([]);
    expect(await row()).toMatchObject({ status: "sent", send_count: 2, lease_token: null, claimed_until: null, body: null });
  });

  it("counts a lapsed lease as an attempt, and abandons a mail whose last attempt's lease lapsed rather than claim it for ever", async () => {
    const { sql, mail, at } = await oneMailUnclaimed("or-lapsing");
    const claimAt = (ms: number) => claimMails(sql, { lease: randomUUID(), at: at(ms) }, at(ms + 20_000), 10, 2);
    expect((await claimAt(0)).items.map((m) => [m.id, m.sendCount])).toEqual([[mail.id, 0]]);
    // Its courier died with it: the next claim, past the lease, counts that attempt.
    expect((await claimAt(30_000)).items.map((m) => [m.id, m.sendCount])).toEqual([[mail.id, 1]]);
    // The second attempt's lease lapses too: that was the last (at most 2).
    expect(await claimAt(60_000)).toEqual({ items: [], abandoned: ["login"] });
    const [row] = await sql.query(`select status, send_count, last_error, body, lease_token from courier_message where org_id = $1 and id = $2`, [mail.orgId, mail.id]);
    expect(row).toEqual({ status: "abandoned", send_count: 2, last_error: LAPSED_ERROR, body: null, lease_token: null });
    const events = await sql.query(`select type, details from event where org_id = $1 and mail_id = $2`, [mail.orgId, mail.id]);
    expect(events).toEqual([{ type: "mail.abandoned", details: { attempts: "2" } }]);
    expect(await claimAt(90_000)).toEqual({ items: [], abandoned: [] });
  });

  it("gives back the mails it claimed in one organization when its claim in the next fails: left claimed, they would wait out their lease", async () => {
    const { sql, mail, at } = await oneMailUnclaimed("or-claim-one");
    const other = { orgId: "or-claim-two", id: randomUUID() };
    await sql.query(
      `insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
       select $1, $2, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at from courier_message where org_id = $3 and id = $4`,
      [other.orgId, other.id, mail.orgId, mail.id],
    );
    let claims = 0;
    const failingSecond: Sql = {
      query: (text, params, signal) =>
        text.includes("), claimed as (\n  update courier_message m set") && ++claims === 2 ? Promise.reject(new Error("the claim statement failed (a test's)")) : sql.query(text, params, signal),
      transaction: (work) => sql.transaction(work),
    };
    await expect(claimMails(failingSecond, { lease: randomUUID(), at: at(0) }, at(60_000), 10, 5)).rejects.toThrow("a test's");
    expect(claims).toBe(2);
    const [leased] = await sql.query(`select count(*)::int as n from courier_message where org_id = any($1) and lease_token is not null`, [[mail.orgId, other.orgId]]);
    expect(leased.n).toBe(0);
    expect((await claimMails(sql, { lease: randomUUID(), at: at(1_000) }, at(60_000), 10, 5)).items.map((m) => m.id).sort()).toEqual([mail.id, other.id].sort());
  });

  it("counts what a claim abandoned in one organization when its statement in the next fails, courier and delivery API alike", async () => {
    const s = await startTestServer({ COURIER_ENABLED: "false", COURIER_MAX_ATTEMPTS: "3" });
    servers.push(s);
    const [first, second] = ["or-abandon-first", "or-abandon-second"];
    // In the first organization, a message whose last attempt's lease lapsed; in the second, one due just after it.
    const row = (orgId: string, channel: string, lapsed: boolean, dueMs: number) =>
      s.app.sql.query(
        `insert into courier_message (org_id, id, purpose, channel, recipient, subject, body, key_id, status, send_count, next_attempt_at, claimed_until, lease_token, created_at, updated_at)
         values ($1, $2, 'login', $3, 'someone@example.com', 'Your code', '\\x00', 'k1', 'queued', $4, now() - interval '1 hour' + $5 * interval '1 millisecond', $6, $7, now(), now())`,
        [orgId, randomUUID(), channel, lapsed ? 2 : 0, dueMs, lapsed ? new Date(Date.now() - 60_000) : null, lapsed ? randomUUID() : null],
      );
    const failingInSecond: Sql = {
      query: (text, params, signal) =>
        text.includes("(m.claimed_until is not null)::int") && params?.[3] === second ? Promise.reject(new Error("the claim statement failed (a test's)")) : s.app.sql.query(text, params, signal),
      transaction: (work) => s.app.sql.transaction(work),
    };
    const abandoned: Purpose[] = [];
    const events = { sent: () => {}, retried: () => {}, abandoned: (purpose: Purpose) => abandoned.push(purpose) };
    const deps = { config: s.app.config.courier, secrets: s.app.secrets, sql: failingInSecond, clock: s.app.clock, log: createLogger("silent"), events };

    await row(first, "smtp", true, 0);
    await row(second, "smtp", false, 1);
    const mail = createCourier({ ...deps, config: s.app.config });
    try {
      await expect(mail.courier.runOnce()).rejects.toThrow("the claim statement failed (a test's)");
    } finally {
      await mail.stop();
    }
    expect(abandoned).toEqual(["login"]);

    await row(first, "sms", true, 0);
    await row(second, "sms", false, 1);
    await expect(new DeliveryDesk(deps).claim(["sms"], 10, 60_000)).rejects.toThrow("the claim statement failed (a test's)");
    expect(abandoned).toEqual(["login", "login"]);
    // Both abandonments are in the trail, written by the claims that failed afterwards.
    const [trail] = await s.app.sql.query(`select count(*)::int as n from event where org_id = $1 and type = 'mail.abandoned'`, [first]);
    expect(trail.n).toBe(2);
  });

  it("keeps a claim apart from a courier of an earlier version's, which sets no token, in a rolling upgrade", async () => {
    const { sql, mail, at } = await oneMailUnclaimed("or-upgrade");
    const a = { lease: randomUUID(), at: at(0) };
    expect((await claimMails(sql, a, at(20_000), 10, 5)).items.map((m) => m.id)).toEqual([mail.id]);
    // A loses its lease; a courier of the earlier version claims the mail (its claim sets no token, A's stays), sends
    // it and marks it sent (leaving the token too), as that version's statements did.
    await sql.query(`update courier_message set claimed_until = $3, updated_at = $4 where org_id = $1 and id = $2`, [mail.orgId, mail.id, at(50_000), at(30_000)]);
    expect(await markSent(sql, at(31_000), a, [mail])).toBe(0);
    await sql.query(`update courier_message set status = 'sent', body = null, claimed_until = null, send_count = send_count + 1, updated_at = $3 where org_id = $1 and id = $2`, [
      mail.orgId,
      mail.id,
      at(32_000),
    ]);
    // A's late failure does not put the sent mail, its body wiped, back in the queue.
    expect(await markFailed(sql, at(33_000), 5, a, [{ ...mail, nextAt: at(33_000), error: "refused" }])).toEqual([]);
    const [r] = await sql.query(`select status, send_count, body from courier_message where org_id = $1 and id = $2`, [mail.orgId, mail.id]);
    expect(r).toMatchObject({ status: "sent", send_count: 1, body: null });
  });

  it("records a sent mail through failing outcome statements by trying again: left claimed, it would go out twice once its lease ran out", async () => {
    let failures = 2;
    // The database drops the courier's first two "sent" statements.
    const { s, smtp, send } = await courierOver((sql) => ({
      query: (text, params, signal) =>
        text.includes("set status = 'sent'") && failures-- > 0 ? Promise.reject(new Error("Connection terminated unexpectedly")) : sql.query(text, params, signal),
      transaction: (work) => sql.transaction(work),
    }));
    await send("blip@example.com");
    // Recorded well within the 20 s lease, on the third statement.
    expect(await mailOnceIt(s, "blip@example.com", "sent")).toMatchObject({ send_count: 1, body: null });
    expect(failures).toBe(-1);
    expect(s.logs.filter((l) => l.includes("courier could not record outcomes: trying again"))).toHaveLength(2);
    expect(smtp.mailsTo("blip@example.com")).toHaveLength(1);
  });

  it("tried again after a statement that committed but lost its answer, records nothing twice and warns of no lost claim", async () => {
    let tries = 0;
    // The first "sent" statement commits, then its connection drops before the answer.
    const { s, send } = await courierOver((sql) => ({
      query: async <T extends Record<string, any>>(text: string, params?: readonly unknown[], signal?: AbortSignal) => {
        const rows = await sql.query<T>(text, params, signal);
        if (text.includes("set status = 'sent'") && ++tries === 1) throw new Error("Connection terminated unexpectedly");
        return rows;
      },
      transaction: (work) => sql.transaction(work),
    }));
    await send("answer@example.com");
    expect(await mailOnceIt(s, "answer@example.com", "sent")).toMatchObject({ send_count: 1 });
    await vi.waitFor(() => expect(tries).toBe(2), { timeout: 5_000, interval: 10 });
    expect(s.logs.filter((l) => l.includes("trying again"))).toHaveLength(1);
    expect(s.logs.filter((l) => l.includes("claim it had lost"))).toEqual([]);
  });

  it("counts a failure whose statement committed but lost its answer once, though the try again finds it recorded", async () => {
    let tries = 0;
    // The first "failed" statement commits, then its connection drops before the answer.
    const s = await oneFailingMail("bodiless@example.com", async (run) => {
      const rows = await run();
      if (++tries === 1) throw new Error("Connection terminated unexpectedly");
      return rows;
    });
    await mailOnceIt(s, "bodiless@example.com", "abandoned");
    await vi.waitFor(() => expect(tries).toBe(2), { timeout: 5_000, interval: 10 });
    await vi.waitFor(async () => expect(await loginMailMetric(s, "codegate_courier_abandoned_total")).toBe(1), { timeout: 5_000, interval: 20 });
    expect(s.logs.filter((l) => l.includes("trying again"))).toHaveLength(1);
    expect(s.logs.filter((l) => l.includes("mail delivery failed"))).toHaveLength(1);
  });

  it("does not count a failure it could not record, its claim taken over: the mail's new courier counts it", async () => {
    // Another courier takes the mail over (its lease had run out) just before this one records its failure.
    const s = await oneFailingMail("taken@example.com", async (run, sql) => {
      await sql.query(`update courier_message set lease_token = gen_random_uuid() where recipient = 'taken@example.com'`);
      return run();
    });
    await vi.waitFor(() => expect(s.logs.filter((l) => l.includes("courier failed mails whose claim it had lost"))).toHaveLength(1), { timeout: 5_000, interval: 20 });
    const [row] = await s.app.sql.query(`select status, send_count from courier_message where recipient = 'taken@example.com'`);
    expect(row).toEqual({ status: "queued", send_count: 0 });
    expect(await loginMailMetric(s, "codegate_courier_abandoned_total")).toBe(0);
    expect(await loginMailMetric(s, "codegate_courier_retries_total")).toBe(0);
    expect(s.logs.filter((l) => l.includes("mail delivery failed"))).toEqual([]);
  });

  it("does not wait to record an outcome again once it is stopping: its mails go out again after their lease", async () => {
    let tries = 0;
    let stopped: Promise<void> | undefined;
    // Every "sent" statement fails; the second one as the courier is being stopped.
    const { s, send } = await courierOver((sql) => ({
      query: (text, params, signal) => {
        if (!text.includes("set status = 'sent'")) return sql.query(text, params, signal);
        if (++tries === 2) stopped = s.app.courier!.stop();
        return Promise.reject(new Error("Connection terminated unexpectedly"));
      },
      transaction: (work) => sql.transaction(work),
    }));
    await send("stopping@example.com");
    await vi.waitFor(() => expect(stopped).toBeDefined(), { timeout: 10_000, interval: 10 });
    await stopped;
    expect(tries).toBe(2);
    expect(s.logs.filter((l) => l.includes("courier could not record outcomes: trying again"))).toHaveLength(1);
    const [row] = await s.app.sql.query(`select status, claimed_until from courier_message where recipient = $1`, ["stopping@example.com"]);
    expect(row.status).toBe("queued");
    expect(row.claimed_until).not.toBeNull();
  });

  it("stopping, finishes the mail being sent and hands back those of its batch not yet started, untried", async () => {
    const smtp = await SmtpSink.create();
    sinks.push(smtp);
    // One SMTP connection: the batch's mails wait behind one another.
    const s = await startTestServer({ SMTP_URL: smtp.url, COURIER_SMTP_CONNECTIONS: "1", COURIER_POLL_INTERVAL: "50ms", LOG_LEVEL: "warn" });
    servers.push(s);
    const courier = s.app.courier!;
    await courier.stop();
    const fx = adminFixtures(s.url);
    const org = await fx.org("Handing back");
    const users = Array.from({ length: 5 }, (_, i) => `back${i}@example.com`);
    for (const u of users) await fx.identity(org.id, u);
    fx.close();
    for (const u of users) expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: u, orgId: org.id })).status).toBe(200);
    // The first mail's acceptance is held while the courier is asked to stop.
    let accept!: () => void;
    smtp.replyGate = new Promise((resolve) => (accept = resolve));
    const rows = () =>
      s.app.sql.query(`select status, send_count, last_error, claimed_until is null as free from courier_message where org_id = $1 order by status`, [org.id]);
    const untried = Array.from({ length: 4 }, () => ({ status: "queued", send_count: 0, last_error: null, free: true }));
    let stopped: Promise<void> | undefined;
    try {
      courier.start();
      await smtp.waitFor((m) => m.length === 1, 10_000);
      stopped = courier.stop();
      // While the first is still being sent, the four others are back in the queue, untried, free to claim now
      // rather than when the lease would run out.
      await vi.waitFor(async () => expect((await rows()).filter((r) => r.free)).toEqual(untried), { timeout: 5_000, interval: 20 });
    } finally {
      // Should anything above fail, the held mail must not keep the courier (and the teardown) waiting.
      accept();
    }
    await stopped;
    expect(smtp.mails).toHaveLength(1);
    expect(await rows()).toEqual([...untried, { status: "sent", send_count: 1, last_error: null, free: true }]);
    // Started again, it delivers them.
    smtp.replyGate = undefined;
    courier.start();
    await smtp.waitFor((m) => m.length === 5, 10_000);
    await courier.stop();
    expect(smtp.mails).toHaveLength(5);
    expect(new Set(smtp.mails.map((m) => m.to)).size).toBe(5);
  });

  it("delivers a mail queued by the version before (its parts sealed as JSON)", async () => {
    const smtp = await SmtpSink.create();
    sinks.push(smtp);
    const s = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", LOG_LEVEL: "warn" });
    servers.push(s);
    const id = randomUUID();
    const content = { subject: "Your Legacy login code", text: "Use this code to log in:\n\n    765432\n", html: "<p>765432</p>\n" };
    const { keyId, sealed } = seal(s.app.secrets.mailKeys, id, JSON.stringify({ ...content, from: '"Legacy" <legacy@example.com>' }));
    await queueRow(s, { orgId: "or-legacy", id, recipient: "old@example.com", subject: content.subject, body: sealed, keyId });
    const mail = await smtp.nextMailTo("old@example.com");
    expect(mail.subject).toBe(content.subject);
    expect(mail.text).toBe(content.text);
    expect(mail.from).toBe('"Legacy" <legacy@example.com>');
  });
});

/** The newest outbox row to `recipient`, once it is sent. */
async function latestMailSent(s: TestServer, recipient: string) {
  return vi.waitFor(
    async () => {
      const [row] = await s.app.orm.em.getConnection().execute(
        "select status, send_count, last_error from courier_message where recipient = ? order by created_at desc limit 1",
        [recipient],
      );
      expect(row.status).toBe("sent");
      return row;
    },
    { timeout: 10_000, interval: 20 },
  );
}

describe("a hostile SMTP server", () => {
  const scripted: ScriptedSmtp[] = [];
  afterAll(async () => {
    for (const smtp of scripted) await smtp.stop();
  });

  /** A server whose courier mails to a scripted server misbehaving so, after a login send to a new identity. */
  async function courierTo(mode: SmtpMisbehaviour, env: Record<string, string>) {
    const smtp = await ScriptedSmtp.start(mode);
    scripted.push(smtp);
    const s = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", COURIER_BACKOFF_BASE: "50ms", COURIER_BACKOFF_MAX: "100ms", LOG_LEVEL: "warn", ...env });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org(`SMTP that does ${mode}`);
    await fx.identity(org.id, "victim@example.com");
    await fx.clients.login.sendLoginCode({ orgId: org.id, username: "victim@example.com" });
    fx.close();
    return { s, smtp };
  }

  it("that drips its replies a byte at a time has each mail cut at COURIER_SEND_TIMEOUT, its connection closed, until the mail is abandoned", async () => {
    const { s, smtp } = await courierTo("drip", { COURIER_SEND_TIMEOUT: "1s", COURIER_MAX_ATTEMPTS: "2" });
    const row = await mailOnceIt(s, "victim@example.com", "abandoned");
    expect(row).toMatchObject({ send_count: 2, body: null });
    expect(row.last_error).toMatch(/^ESENDCUT the SMTP server took longer than COURIER_SEND_TIMEOUT \(1000 ms\)/);
    expect(smtp.opened).toBe(2);
    await vi.waitFor(() => expect(smtp.open.size).toBe(0));
  });

  it("that drips does not hold a stopping courier past SHUTDOWN_GRACE: the mail going out is cut, recorded as failed, and tried again later", async () => {
    const { s, smtp } = await courierTo("drip", { COURIER_SEND_TIMEOUT: "10m", SHUTDOWN_GRACE: "300ms" });
    await vi.waitFor(() => expect(smtp.open.size).toBe(1), { timeout: 5_000 }); // the mail is going out
    await closeNow(s); // would wait out the ten minutes without the cut
    await vi.waitFor(() => expect(smtp.open.size).toBe(0));
    const db = new pg.Client(s.databaseUrl);
    await db.connect();
    try {
      const { rows } = await db.query("select status, send_count, last_error, body is not null as sealed from courier_message where recipient = 'victim@example.com'");
      expect(rows).toEqual([{ status: "queued", send_count: 1, last_error: expect.stringMatching(/^ESENDCUT the mail transport was closed/), sealed: true }]);
    } finally {
      await db.end();
    }
  });

  it("that quotes the mail in its refusal never gets the code into the log, the outbox or ListCourierMessages", async () => {
    const { s, smtp } = await courierTo("quote", { COURIER_MAX_ATTEMPTS: "1" });
    const row = await mailOnceIt(s, "victim@example.com", "abandoned");
    // The server's refusal quoted the code (the end of the mail it was sent).
    const code = codeFrom({ ...(await simpleParser(smtp.bodies[0])), subject: "" } as never);
    expect(smtp.bodies[0].replace(/\r?\n/g, " ").slice(-400)).toContain(code);
    expect(row.last_error).toBe("EMESSAGE 554 5.7.1 at DATA (the SMTP server's reply is not kept: it may quote the mail)");
    const failures = s.logs.filter((l) => l.includes("mail delivery failed"));
    expect(failures).toHaveLength(1);
    expect(failures[0]).toContain("EMESSAGE 554 5.7.1");
    expect(s.logs.filter((l) => l.includes("rejected content"))).toEqual([]);
    const fx = adminFixtures(s.url);
    const orgId = (await fx.clients.admin.listOrganizations({})).organizations.find((o) => o.name === "SMTP that does quote")!.id;
    const listed = (await fx.clients.admin.listCourierMessages({ orgId })).messages;
    fx.close();
    expect(listed.map((m) => m.lastError)).toEqual([row.last_error]);
  });

  it("that puts a NUL in its reply has the failure recorded, and the mail abandoned at its last attempt, not tried for ever", async () => {
    const { s } = await courierTo("nul", { COURIER_MAX_ATTEMPTS: "2" });
    const row = await mailOnceIt(s, "victim@example.com", "abandoned");
    expect(row).toMatchObject({ send_count: 2, last_error: "EENVELOPE 550 5.1.1 at RCPT TO (the SMTP server's reply is not kept: it may quote the mail)" });
    expect(s.logs.filter((l) => /"level":"(error|fatal)"/.test(l))).toEqual([]);
  });
});

describe("a mail that fails", () => {
  it("is tried again only once its backoff has passed, doubling up to COURIER_BACKOFF_MAX, with jitter", async () => {
    const smtp = await SmtpSink.create();
    sinks.push(smtp);
    smtp.refuse = () => "4.3.0 try again later";
    const clock = new ManualClock();
    // A long poll: after the first attempt (woken by the send), the test makes every look itself.
    const s = await startTestServer(
      { SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "60s", COURIER_BACKOFF_BASE: "10s", COURIER_BACKOFF_MAX: "25s", COURIER_MAX_ATTEMPTS: "10", LOG_LEVEL: "warn" },
      { clock },
    );
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Backing off");
    await fx.identity(org.id, "backoff@example.com");
    await fx.clients.login.sendLoginCode({ orgId: org.id, username: "backoff@example.com" });
    fx.close();
    const row = async () =>
      (await s.app.orm.em.getConnection().execute("select send_count, next_attempt_at from courier_message where recipient = 'backoff@example.com'"))[0] as { send_count: number; next_attempt_at: string };
    for (const [attempt, backoff] of [[1, 10_000], [2, 20_000], [3, 25_000]]) {
      const failed = await vi.waitFor(async () => {
        const r = await row();
        expect(r.send_count).toBe(attempt);
        return r;
      });
      const wait = new Date(failed.next_attempt_at).getTime() - clock.now().getTime();
      expect(wait, `after attempt ${attempt}`).toBeGreaterThanOrEqual(0.75 * backoff);
      expect(wait, `after attempt ${attempt}`).toBeLessThanOrEqual(1.25 * backoff);
      clock.advance(wait - 1);
      expect(await s.app.courier!.runOnce(), `a millisecond before attempt ${attempt + 1} is due`).toBe(0);
      expect((await row()).send_count).toBe(attempt);
      clock.advance(1);
      // Due: tried by this look, or by the courier's own if it looked first.
      await s.app.courier!.runOnce();
    }
    await vi.waitFor(async () => expect((await row()).send_count).toBe(4));
  });
});
