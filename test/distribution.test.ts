// Past one PostgreSQL primary, Citus distributes the tables by organization (see
// README, "Scaling"). That works without a schema change only if every table's
// primary key and unique indexes lead with the organization id (or the table is a
// small reference table, copied to every node), and if every statement of the hot
// paths names the organization of every distributed row it touches: Citus then
// routes each to one node. Both are checked here, on the migrated schema and on the
// statements a server runs for sends, verifications and deliveries.
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import type { Sql } from "../src/store/sql.ts";
import { ADMIN_TOKEN, freshDatabase, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { DeliveryChannel, IdentityState } from "@codegate/client/node";
import { bearer, postJson } from "./support/clients.ts";
import { SmtpSink, codeFrom } from "./support/smtp.ts";
import { receipt } from "./support/results.ts";

/** Copied to every node: few rows, read by everything. */
const REFERENCE_TABLES: Record<string, string> = {
  organization: "one row per organization, read by every call (and cached)",
  admin_token: "a handful of administrators' tokens",
  job_turn: "a row per periodic job (retention): who holds its turn",
  codegate_migrations: "the applied migrations",
};
const DISTRIBUTED = new Set(["identity", "code", "courier_message", "rate_limit", "mail_template", "event"]);

/**
 * Statements that may read across organizations: none takes a lock, and Citus runs
 * each on every node at once. The courier finds the organizations with due mail this
 * way, then claims each one's mail by organization; and every few seconds it reads
 * where the due mail starts (rules/due-floor.ts).
 */
const ACROSS_ORGANIZATIONS = [/^select org_id from courier_message where status = 'queued'/, /^select min\(next_attempt_at\) as oldest from courier_message where status = 'queued'/];

let server: TestServer | undefined;
let client: pg.Client | undefined;
let smtp: SmtpSink | undefined;
afterAll(async () => {
  await client?.end();
  await server?.close();
  await smtp?.stop();
});

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  Alias?: string;
  "Index Cond"?: string;
  "Recheck Cond"?: string;
  Filter?: string;
  Plans?: PlanNode[];
}

/** Scans of distributed tables whose conditions do not pin the organization. */
function unroutedScans(node: PlanNode, out: string[] = []): string[] {
  const table = node["Relation Name"];
  if (table && DISTRIBUTED.has(table) && node["Node Type"].endsWith("Scan")) {
    const conditions = [node["Index Cond"], node["Recheck Cond"], node.Filter].filter(Boolean).join(" and ");
    if (!/\borg_id = /.test(conditions)) out.push(`${node["Node Type"]} on ${table}${conditions ? ` (${conditions})` : ""}`);
  }
  for (const child of node.Plans ?? []) unroutedScans(child, out);
  return out;
}

describe("distribution by organization", () => {
  it("every table's primary key and unique indexes lead with org_id, but for small reference tables", async () => {
    const databaseUrl = await freshDatabase();
    server = await startTestServer({ DATABASE_URL: databaseUrl, COURIER_ENABLED: "false" });
    client = new pg.Client(databaseUrl);
    await client.connect();
    const { rows: tables } = await client.query<{ table: string }>(
      "select c.relname as table from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind = 'r' order by 1",
    );
    expect(tables.map((t) => t.table).sort()).toEqual([...Object.keys(REFERENCE_TABLES), ...DISTRIBUTED].sort());
    const { rows: keys } = await client.query<{ table: string; index: string; first: string; definition: string }>(
      `select c.relname as table, ic.relname as index, a.attname as first, pg_get_indexdef(i.indexrelid) as definition
       from pg_index i
       join pg_class c on c.oid = i.indrelid
       join pg_class ic on ic.oid = i.indexrelid
       join pg_namespace n on n.oid = c.relnamespace
       left join pg_attribute a on a.attrelid = c.oid and a.attnum = i.indkey[0]
       where n.nspname = 'public' and (i.indisprimary or i.indisunique)`,
    );
    const distributedKeys = keys.filter((k) => DISTRIBUTED.has(k.table));
    expect(distributedKeys.length).toBeGreaterThanOrEqual(DISTRIBUTED.size);
    for (const table of DISTRIBUTED) expect(distributedKeys.some((k) => k.table === table && k.index.endsWith("_pkey")), table).toBe(true);
    for (const k of distributedKeys) expect(k.first, k.definition).toBe("org_id");
  });

  it("every statement of a send, a verification and a delivery names the organization of the rows it touches", async () => {
    smtp = await SmtpSink.create();
    const recorded = new Set<string>();
    const recording = (sql: Sql): Sql => ({
      query: (text, params, signal) => (recorded.add(text), sql.query(text, params, signal)),
      transaction: (work) => sql.transaction((tx) => work(recording(tx))),
    });
    const databaseUrl = await freshDatabase();
    const s = await startTestServer(
      { DATABASE_URL: databaseUrl, SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", RATE_LIMIT_SEND_PER_USERNAME: "5/1m", RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "50/1m" },
      { instrumentSql: recording },
    );
    const fx = adminFixtures(s.url);
    const org = await fx.org("Distributed", { selfServiceSignup: true, notifyUnknownRecovery: true });
    await fx.identity(org.id, "jdoe@example.com");
    // An organization whose login codes go to the delivery API as texts.
    const smsOrg = await fx.org("Distributed SMS", { delivery: { login: DeliveryChannel.SMS } });
    const texted = await fx.clients.admin.createIdentity({ orgId: smsOrg.id, username: "sms@example.com", phoneNumber: "+41791234567", skipRegistrationCode: true });
    await fx.clients.admin.setIdentityState({ identityId: texted.identity!.id, state: IdentityState.ACTIVE });
    fx.close();
    const call = (path: string, body: Record<string, string>) => postJson(s.url, path, { orgId: org.id, ...body });
    // Sends of every kind (bound and not, a known and an unknown username), a
    // registration, recoveries, wrong and right codes, and the courier's deliveries.
    expect((await call("/codegate.v1.LoginService/SendLoginCode", { username: "jdoe@example.com" })).status).toBe(200);
    expect((await call("/codegate.v1.LoginService/SendLoginCode", { username: "jdoe@example.com", binding: "a-flow-binding-0123456789" })).status).toBe(200);
    expect((await call("/codegate.v1.LoginService/SendLoginCode", { username: "nobody@example.com" })).status).toBe(200);
    expect((await call("/codegate.v1.RegistrationService/Register", { username: "new@example.com" })).status).toBe(200);
    expect((await call("/codegate.v1.RecoveryService/SendRecoveryCode", { username: "ghost@example.com" })).status).toBe(200);
    expect((await call("/codegate.v1.LoginService/VerifyLoginCode", { username: "jdoe@example.com", code: "000000" })).status).toBe(401);
    await smtp.waitFor((m) => m.length >= 4);
    // The delivery API's claims, ack and failure.
    for (let i = 0; i < 2; i++) expect((await call("/codegate.v1.LoginService/SendLoginCode", { username: "sms@example.com", orgId: smsOrg.id })).status).toBe(200);
    const claimed = await postJson(s.url, "/codegate.v1.DeliveryService/Claim", { channels: ["DELIVERY_CHANNEL_SMS"] }, bearer(ADMIN_TOKEN));
    const [sent, failed] = claimed.body.messages.map(receipt);
    expect((await postJson(s.url, "/codegate.v1.DeliveryService/Ack", { messages: [sent] }, bearer(ADMIN_TOKEN))).body.ackedIds).toEqual([sent.id]);
    expect((await postJson(s.url, "/codegate.v1.DeliveryService/Fail", { failures: [{ message: failed, error: "x" }] }, bearer(ADMIN_TOKEN))).status).toBe(200);
    const code = codeFrom(smtp.mailsTo("jdoe@example.com")[0]);
    const verified = await call("/codegate.v1.LoginService/VerifyLoginCode", { username: "jdoe@example.com", code });
    expect([200, 401]).toContain(verified.status); // the unbound code, or the bound one's mail came first
    await s.close();

    expect(recorded.size).toBeGreaterThanOrEqual(6);
    const findings: string[] = [];
    for (const text of recorded) {
      const flat = text.replace(/\s+/g, " ").trim();
      if (ACROSS_ORGANIZATIONS.some((r) => r.test(flat))) continue;
      const { rows } = await client!.query(`explain (generic_plan, format json) ${text}`);
      const scans = unroutedScans(rows[0]["QUERY PLAN"][0].Plan);
      if (scans.length) findings.push(`${flat.slice(0, 100)}…: ${scans.join("; ")}`);
    }
    expect(findings).toEqual([]);
  });
});
