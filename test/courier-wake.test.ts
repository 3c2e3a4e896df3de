// A courier elsewhere (`codegate courier`, the courier worker of `serve`, or a
// `serve` with its courier on the same database) sends the mail that a server
// without a courier queued at once, not at its next poll: the server announces it
// (NOTIFY, rules/courier/announcer.ts) and the sleeping courier hears it
// (store/mail-queued.ts); after its listening connection broke, it looks for what
// it may have missed. Its poll interval here is a minute: a mail that waited for it
// would not arrive within the test's bounds. A code issued in a caller's
// transaction tells its claimants only once the caller says it committed.
import type { ChildProcess } from "node:child_process";
import { afterAll, describe, expect, it, vi } from "vitest";
import pg from "pg";
import { DeliveryChannel, IdentityState } from "@codegate/client/node";
import type { Channel } from "../src/domain/outbox.ts";
import { CodeEngine } from "../src/rules/codes/engine.ts";
import { AnswerTimes } from "../src/rules/answer-times.ts";
import { MAIL_QUEUED_CHANNEL } from "../src/store/mail-queued.ts";
import { postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { commandEnv, startCommand } from "./support/process.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Bounds for the mail's arrival: far below the courier's poll interval. */
const SOON_MS = 10_000;

function startCourier(databaseUrl: string, smtpUrl: string): { child: ChildProcess; exited: Promise<number | null> } {
  const { env, cleanup } = commandEnv(databaseUrl, { SMTP_URL: smtpUrl, COURIER_POLL_INTERVAL: "60s" });
  const courier = startCommand("courier", env);
  cleanups.push(async () => {
    await courier.kill();
    cleanup();
  });
  return courier;
}

/** A server without a courier, on a fresh database, with an organization and a user to mail. */
async function senderWithUser(): Promise<{ server: TestServer; db: pg.Client; orgId: string; fx: ReturnType<typeof adminFixtures> }> {
  const server = await startTestServer({ COURIER_ENABLED: "false" });
  cleanups.push(() => server.close());
  const db = new pg.Client(server.databaseUrl);
  await db.connect();
  cleanups.push(() => db.end());
  const fx = adminFixtures(server.url);
  cleanups.push(() => fx.close());
  const org = await fx.org("Woken");
  await fx.identity(org.id, "woken@example.com");
  return { server, db, orgId: org.id, fx };
}

/** The courier's connection listening for queued mail (by its statement, the connection's last). */
async function listeners(db: pg.Client): Promise<number[]> {
  return (await db.query<{ pid: number }>(`select pid from pg_stat_activity where datname = current_database() and query = $1`, [`listen ${MAIL_QUEUED_CHANNEL}`])).rows.map((r) => r.pid);
}

/** A finished look for due mail by the courier (the only process here that makes one), begun after `since` when given. */
async function looked(db: pg.Client, since?: Date): Promise<boolean> {
  const { rowCount } = await db.query(
    `select 1 from pg_stat_activity where datname = current_database() and state = 'idle' and query ~ '^\\s*select org_id from courier_message' and ($1::timestamptz is null or query_start > $1)`,
    [since ?? null],
  );
  return (rowCount ?? 0) > 0;
}

/**
 * The courier asleep: it listens, and its last look for due mail began after the outcome of
 * the last mail it sent (so not the look that claimed it, nor one a wake-up could still
 * follow with another 50 ms later: its first look after a batch, FILL_MS after the outcome).
 */
async function asleep(db: pg.Client, alive: () => boolean): Promise<void> {
  await vi.waitFor(
    async () => {
      expect(alive(), "the courier stopped").toBe(true);
      expect(await listeners(db)).toHaveLength(1);
      const { rows: [{ since }] } = await db.query<{ since: Date | null }>(`select max(updated_at) as since from courier_message where status = 'sent'`);
      expect(await looked(db, since ?? undefined)).toBe(true);
    },
    { timeout: 20_000, interval: 50 },
  );
}

async function sendLoginCode(server: TestServer, orgId: string, username = "woken@example.com"): Promise<void> {
  expect((await postJson(server.url, "/codegate.v1.LoginService/SendLoginCode", { username, orgId })).status).toBe(200);
}

describe("a courier elsewhere, sleeping out a minute-long poll interval", () => {
  it("(codegate courier) sends a login code and a new identity's registration code at once, woken by the server that queued them, and looks again once it listens after a break", async () => {
    const smtp = await SmtpSink.create();
    cleanups.push(() => smtp.stop());
    const { server, db, orgId, fx } = await senderWithUser();
    const courier = startCourier(server.databaseUrl, smtp.url);
    const alive = () => courier.child.exitCode === null;

    await asleep(db, alive);
    await sendLoginCode(server, orgId);
    const first = await smtp.nextMailTo("woken@example.com", 0, SOON_MS);
    expect(codeFrom(first)).toMatch(/^\d{6}$/);

    // Queued in the transaction that creates the identity: announced once that committed.
    await asleep(db, alive);
    await fx.clients.admin.createIdentity({ orgId, username: "registered@example.com" });
    expect(codeFrom(await smtp.nextMailTo("registered@example.com", 0, SOON_MS))).toMatch(/^\d{6}$/);

    // Its listening connection broken, the courier listens again on a new one, and looks for what it
    // may have missed meanwhile (nothing else would make it look within its poll interval).
    await asleep(db, alive);
    const [pid] = await listeners(db);
    const { rows: [{ now: broken }] } = await db.query<{ now: Date }>("select now()");
    await db.query("select pg_terminate_backend($1)", [pid]);
    await vi.waitFor(async () => {
      const now = await listeners(db);
      expect(now).toHaveLength(1);
      expect(now).not.toContain(pid);
      expect(await looked(db, broken)).toBe(true);
    }, { timeout: 20_000, interval: 50 });
    // Mail queued now may be found by the look that wake-up's look is followed by: the next one is heard on the new connection.
    await sendLoginCode(server, orgId);
    await smtp.nextMailTo("woken@example.com", 1, SOON_MS);
    await asleep(db, alive);
    await sendLoginCode(server, orgId);
    const third = await smtp.nextMailTo("woken@example.com", 2, SOON_MS);
    expect(codeFrom(third)).not.toBe(codeFrom(first));

    courier.child.kill("SIGTERM");
    expect(await courier.exited).toBe(0);
  });

  it("(serve with its courier) sends a login code another server queued at once", async () => {
    const smtp = await SmtpSink.create();
    cleanups.push(() => smtp.stop());
    const { server, db, orgId } = await senderWithUser();
    const withCourier = await startTestServer({ DATABASE_URL: server.databaseUrl, SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "60s" });
    cleanups.push(() => withCourier.close());

    await asleep(db, () => true);
    await sendLoginCode(server, orgId);
    expect(codeFrom(await smtp.nextMailTo("woken@example.com", 0, SOON_MS))).toMatch(/^\d{6}$/);
  });

  it("is not woken for a code that goes out as a text through the delivery API, which it never claims; its server announces the text, not its own mail", async () => {
    const smtp = await SmtpSink.create();
    cleanups.push(() => smtp.stop());
    const server = await startTestServer({ SMTP_URL: smtp.url });
    cleanups.push(() => server.close());
    const fx = adminFixtures(server.url);
    cleanups.push(() => fx.close());
    const texting = await fx.org("Texting", { delivery: { login: DeliveryChannel.SMS } });
    const texted = (await fx.clients.admin.createIdentity({ orgId: texting.id, username: "texted@example.com", phoneNumber: "+41446681800", skipRegistrationCode: true })).identity!;
    await fx.clients.admin.setIdentityState({ identityId: texted.id, state: IdentityState.ACTIVE });
    const mailing = await fx.org("Mailing");
    await fx.identity(mailing.id, "mailed@example.com");
    const wake = vi.spyOn(server.app.courier!, "wake");
    const announced = vi.spyOn(server.app.announcer!, "queued");
    await sendLoginCode(server, texting.id, "texted@example.com");
    await sendLoginCode(server, mailing.id, "mailed@example.com");
    // Wake-ups come in the order of the sends (setImmediate): once the mail's has come, the text's would have.
    await vi.waitFor(() => expect(wake).toHaveBeenCalled());
    expect(wake).toHaveBeenCalledTimes(1);
    // The text is for the delivery API's claims on other servers; the mail went to its own courier alone.
    expect(announced.mock.calls).toEqual([[["sms"]]]);
    const db = new pg.Client(server.databaseUrl);
    await db.connect();
    cleanups.push(() => db.end());
    const { rows } = await db.query<{ channel: string }>("select channel from courier_message order by channel");
    expect(rows.map((r) => r.channel)).toEqual(["sms", "smtp"]);
  });
});

describe("a code issued in a caller's transaction (a new identity's registration code)", () => {
  it("tells the claimants of its mail only once the caller says the transaction committed, not from inside it", async () => {
    const { server, orgId } = await senderWithUser();
    const app = server.app;
    const told: Channel[][] = [];
    // The engine as the server builds it, with its claimants told through a spy.
    const engine = new CodeEngine({ sql: app.sql, config: app.config, secrets: app.secrets, clock: app.clock, events: app.metrics.codes, onQueued: (channels) => told.push([...channels]), failureTimes: new AnswerTimes() });
    const org = (await app.orgs.resolve(orgId, ""))!;
    const issued = await app.sql.transaction(async (tx) => {
      const code = await engine.issue({ org, purpose: "login", target: { username: "woken@example.com" }, requiredState: "active", mail: "login" }, tx);
      // Told now, a courier could look before the mail is there to see, and sleep on.
      expect(told).toEqual([]);
      return code;
    });
    expect(issued).toMatchObject({ written: true, queuedOn: ["smtp"] });
    expect(told).toEqual([]);
    engine.mailCommitted(issued.queuedOn);
    expect(told).toEqual([["smtp"]]);
  });
});
