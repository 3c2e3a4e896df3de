// The hot-path statements run as prepared statements, whose generic plans are made
// once per connection from the statistics of that moment. On statistics that say
// "empty" (a new or just-emptied table that autovacuum has not analyzed yet) a
// statement that leaves the planner a choice may scan a whole organization's rows on
// every call, and keep doing so. Each statement must find its rows by key whatever the
// statistics say: this is checked on the generic plans PostgreSQL makes for them.
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, it, vi } from "vitest";
import pg from "pg";
import { CodeEngine } from "../src/rules/codes/engine.ts";
import { AnswerTimes } from "../src/rules/answer-times.ts";
import { DeliveryDesk } from "../src/rules/delivery/delivery.ts";
import { createCourier } from "../src/rules/courier/create.ts";
import { claimMails, oldestDueMail, queueStats, renewClaims } from "../src/store/outbox.ts";
import { claimMessages, oldestDueMessage } from "../src/store/delivery.ts";
import { eventsAfter } from "../src/store/events.ts";
import { openOrm } from "../src/store/orm.ts";
import { sqlOf } from "../src/store/sql.ts";
import { createLogger } from "../src/lib/log.ts";
import type { Sql } from "../src/store/sql.ts";
import { freshDatabase, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";

const TABLES = new Set(["code", "rate_limit", "identity", "courier_message"]);

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Index Cond"?: string;
  Plans?: PlanNode[];
}

/**
 * Scans of our tables that are not a key lookup: sequential, bitmap, an index scan
 * by organization alone, or one that leaves out the organization (a skip scan over
 * every organization's rows, which PostgreSQL 18 can make of a later index column).
 */
function unkeyedScans(node: PlanNode, out: string[] = []): string[] {
  const table = node["Relation Name"];
  const type = node["Node Type"];
  if (table && TABLES.has(table) && type.endsWith("Scan")) {
    const cond = node["Index Cond"] ?? "";
    // By organization and more, or by a row's own id (an admin's recovery code, named by its flow id).
    const byKey = (/\borg_id = /.test(cond) && !/^\(org_id = \$\d+\)$/.test(cond)) || /^\(id = \$\d+\)$/.test(cond);
    const keyed = (type === "Index Scan" || type === "Index Only Scan") && byKey;
    if (!keyed) out.push(`${type} on ${table}${node["Index Name"] ? ` using ${node["Index Name"]}` : ""}${cond ? ` (${cond})` : ""}`);
  }
  for (const child of node.Plans ?? []) unkeyedScans(child, out);
  return out;
}

let server: TestServer | undefined;
let client: pg.Client | undefined;
const closing: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closing) await close();
  await client?.end();
  await server?.close();
});

describe("hot-path statements", () => {
  it("find their rows by key on statistics that say the tables are empty", async () => {
    const databaseUrl = await freshDatabase();
    server = await startTestServer({ DATABASE_URL: databaseUrl, COURIER_ENABLED: "false" });
    client = new pg.Client(databaseUrl);
    await client.connect();
    // Statistics of empty tables, kept so while the tables fill.
    for (const t of TABLES) await client.query(`alter table ${t} set (autovacuum_enabled = false)`);
    await client.query(`vacuum analyze ${[...TABLES].join(", ")}`);

    const fx = adminFixtures(server.url);
    const created = await fx.org("Plans");
    fx.close();
    await client.query(
      `insert into identity (org_id, id, username, username_normalized, state, created_at)
       select $1, gen_random_uuid(), 'user' || g || '@example.com', 'user' || g || '@example.com', 'active', now() from generate_series(1, 2000) g`,
      [created.id],
    );

    // The engine as the server builds it, over a Sql that notes every statement.
    const app = server.app;
    const texts = new Set<string>();
    const recording = (sql: Sql): Sql => ({
      query: (text, params) => (texts.add(text), sql.query(text, params)),
      transaction: (work) => sql.transaction((tx) => work(recording(tx))),
    });
    const engine = new CodeEngine({
      sql: recording(app.sql),
      config: app.config,
      secrets: app.secrets,
      clock: app.clock,
      events: app.metrics.codes,
      onQueued: () => {},
      failureTimes: new AnswerTimes(),
    });
    const org = (await app.orgs.resolve(created.id, ""))!;
    const limits = (username: string) => [{ key: `send:${username}`, limits: [{ max: 1000, windowMs: 60_000 }] }];
    const failureLimits = (username: string) => [{ key: `fail:${username}`, limits: [{ max: 100, windowMs: 3_600_000 }] }];
    const codes = new Map<string, string>();
    for (let i = 1; i <= 2000; i++) {
      const username = `user${i}@example.com`;
      const issued = await engine.issue({ org, purpose: "login", target: { username }, requiredState: "active", mail: "login", limits: limits(username) });
      expect(issued.written).toBe(true);
      codes.set(username, issued.code);
    }
    const verify = (username: string, code: string) =>
      engine.verify({ org, purpose: "login", target: { username }, requiredState: "active", code, failureLimits: failureLimits(username) });
    const wrong = (code: string) => (code === "000000" ? "000001" : "000000");
    // Every statement of a verification: right code, wrong code, and a code locked by wrong ones.
    await expect(verify("user1@example.com", codes.get("user1@example.com")!)).resolves.toMatchObject({ username: "user1@example.com" });
    await expect(verify("user2@example.com", wrong(codes.get("user2@example.com")!))).rejects.toThrow();
    for (let i = 0; i < 5; i++) await expect(verify("user3@example.com", wrong(codes.get("user3@example.com")!))).rejects.toThrow();
    // A code bound to an application's flow, and its verification with the binding.
    const binding = "flow-binding-of-the-application";
    const bound = await engine.issue({ org, purpose: "login", target: { username: "user5@example.com" }, requiredState: "active", mail: "login", limits: limits("user5@example.com"), binding });
    await expect(engine.verify({ org, purpose: "login", target: { username: "user5@example.com" }, requiredState: "active", code: bound.code, binding })).resolves.toMatchObject({
      username: "user5@example.com",
    });
    // An admin recovery link, verified by its flow id.
    const [{ id: identityId }] = (await client.query(`select id from identity where username_normalized = 'user4@example.com'`)).rows;
    const link = await engine.issue({ org, purpose: "recovery", target: { identityId, username: "user4@example.com" }, requiredState: "active", adminIssued: true });
    await expect(engine.verify({ purpose: "recovery", target: { flowId: link.id }, requiredState: "active", code: link.code })).resolves.toMatchObject({ id: identityId });

    // The delivery API's claim, ack and failure, on texts of an organization that hands its login codes to it.
    const texting = { ...org, settings: { ...org.settings, delivery: { login: "DELIVERY_CHANNEL_SMS" } } };
    await client.query(`update identity set phone_number = '+4179' || (1000000 + substr(username, 5, 2)::int) where org_id = $1 and username like 'user1_@example.com'`, [created.id]);
    for (let i = 10; i <= 19; i++) {
      const username = `user${i}@example.com`;
      expect((await engine.issue({ org: texting, purpose: "login", target: { username }, requiredState: "active", mail: "login", limits: limits(username) })).written).toBe(true);
    }
    const desk = new DeliveryDesk({ sql: recording(app.sql), config: app.config.courier, secrets: app.secrets, clock: app.clock, log: createLogger("silent"), events: app.metrics.courier });
    const claimed = await desk.claim(["sms"], 10, 60_000);
    expect(claimed).toHaveLength(10);
    expect(await desk.ack(claimed.slice(0, 5))).toHaveLength(5);
    expect(await desk.fail(claimed.slice(5).map((m) => ({ ...m, error: "refused" })))).toHaveLength(5);
    // The courier's claim, lease renewal, and outcomes: sent, and failed (a recipient that is
    // not a mail address, as a row from before that rule may hold), over the embedded
    // transport (.eml files in the data directory).
    await client.query(
      `insert into identity (org_id, id, username, username_normalized, state, created_at) values ($1, gen_random_uuid(), 'not an address', 'not an address', 'active', now())`,
      [created.id],
    );
    expect((await engine.issue({ org, purpose: "login", target: { username: "not an address" }, requiredState: "active", mail: "login" })).written).toBe(true);
    const mail = createCourier({ config: app.config, secrets: app.secrets, sql: recording(app.sql), clock: app.clock, log: createLogger("silent"), events: app.metrics.courier });
    // Oldest first, a batch at a time, until nothing is due: the failing mail waits for its retry.
    while ((await mail.courier.runOnce()) > 0);
    await mail.stop();
    const { rows: left } = await client.query(`select recipient, send_count, last_error from courier_message where channel = 'smtp' and status <> 'sent'`);
    expect(left).toEqual([{ recipient: "not an address", send_count: 1, last_error: "the recipient is not a mail address" }]);
    const renewal = (await client.query(`select org_id, id from courier_message where channel = 'smtp' limit 3`)).rows.map((r) => ({ orgId: r.org_id, id: r.id }));
    await renewClaims(recording(app.sql), { lease: randomUUID(), at: new Date() }, new Date(Date.now() + 60_000), renewal);

    // Whose messages are due, and where the due ones start, are read across organizations, by the index of due messages, as the courier reads them (test/distribution.test.ts).
    const acrossOrganizations = ["select org_id from courier_message where status = 'queued'", "select min(next_attempt_at) as oldest from courier_message where status = 'queued'"];
    for (const text of texts) if (acrossOrganizations.some((start) => text.replace(/\s+/g, " ").trim().startsWith(start))) texts.delete(text);

    expect(texts.size).toBeGreaterThanOrEqual(6);
    const findings: string[] = [];
    for (const text of texts) {
      const { rows } = await client.query(`explain (generic_plan, format json) ${text}`);
      const scans = unkeyedScans(rows[0]["QUERY PLAN"][0].Plan);
      if (scans.length) findings.push(`${text.replace(/\s+/g, " ").trim().slice(0, 120)}…: ${scans.join("; ")}`);
    }
    expect(findings).toEqual([]);
  });

  /**
   * A fresh database whose `table` is empty and vacuumed to no pages (every row pruned by
   * retention), its statistics kept so while it fills; the store's statements over the pool
   * as the server runs them, on one connection, and that backend's scans of the table.
   */
  async function emptiedTable(table: "courier_message" | "event") {
    const databaseUrl = await freshDatabase();
    const db = new pg.Client(databaseUrl);
    await db.connect();
    closing.push(() => db.end());
    await db.query(`alter table ${table} set (autovacuum_enabled = false)`);
    await db.query(`vacuum analyze ${table}`);
    const orm = await openOrm({ databaseUrl, dataDir: "", dbPoolSize: 1 });
    closing.push(() => orm.close(true));
    const sql = await sqlOf(orm);
    const scans = async () => {
      // This backend's counts, flushed at its next transaction's end: the pool's one connection.
      await sql.query("select pg_stat_force_next_flush()");
      const { rows } = await db.query("select seq_scan::int as seq, idx_scan::int as idx from pg_stat_user_tables where relname = $1", [table]);
      return rows[0] as { seq: number; idx: number };
    };
    /** Runs `calls` and checks that they scanned the table `indexScans` times by an index and never whole. */
    const scansOf = async (calls: () => Promise<unknown>, indexScans: number) => {
      const before = await scans();
      await calls();
      await vi.waitFor(async () => expect((await scans()).idx - before.idx).toBeGreaterThanOrEqual(indexScans), { timeout: 5_000 });
      expect((await scans()).seq - before.seq).toBe(0);
    };
    return { db, sql, scansOf };
  }

  it("read across organizations by the indexes of queued messages, also after their first calls met an empty table", async () => {
    const { db, sql, scansOf } = await emptiedTable("courier_message");
    const looks = async () => {
      const now = new Date();
      const floor = new Date(now.getTime() - 7_000);
      expect(await claimMails(sql, { lease: randomUUID(), at: now }, new Date(now.getTime() + 60_000), 10, 40, floor)).toEqual({ items: [], abandoned: [] });
      expect(await claimMessages(sql, now, new Date(now.getTime() + 60_000), 10, ["sms"], randomUUID(), 40, floor)).toEqual({ items: [], abandoned: [] });
      await oldestDueMail(sql);
      await oldestDueMessage(sql, ["sms"]);
      await queueStats(sql);
    };
    // Past the five calls after which a prepared statement may settle on the plan it made (here: for an empty table).
    for (let i = 0; i < 6; i++) await looks();

    // A week of mail: 20,000 sent, and some queued, due in an hour (no look claims any).
    await db.query(
      `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
       select 'or-aaaaa-aaaaa-aaaaaaaaaaaaaaaa', gen_random_uuid(), case when g % 2 = 0 then 'smtp' else 'sms' end, 'login', 'someone@example.com', 'Your code',
         decode(repeat('ab', 600), 'hex'), 'k1', case when g % 50 = 0 then 'queued' else 'sent' end, 0,
         now() - interval '7 days' * random() + case when g % 50 = 0 then interval '7 days 1 hour' else interval '0' end, now(), now()
       from generate_series(1, 20000) g`,
    );
    // Five looks, each by an index; not one walks the table.
    await scansOf(looks, 5);
  });

  it("follow the event trail across organizations by its index, also after the poll's first calls met an empty trail", async () => {
    const { db, sql, scansOf } = await emptiedTable("event");
    // A WatchEvents of every organization polls so while nothing happens.
    for (let i = 0; i < 6; i++) expect(await eventsAfter(sql, "", undefined, 10)).toEqual([]);
    await db.query(
      `insert into event (org_id, type, occurred_at) select 'or-aaaaa-aaaaa-aaaaaaaaaaaaaaa' || (g % 10), 'code.issued', now() from generate_series(1, 20000) g`,
    );
    // Settled once no transaction older than the insert runs, anywhere on the suite's shared server: polled until then.
    await scansOf(() => vi.waitFor(async () => expect(await eventsAfter(sql, "", undefined, 10)).toHaveLength(10), { timeout: 10_000 }), 1);
  });
});
