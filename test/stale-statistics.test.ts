// The statements of sends and verifications on statistics taken before the
// organization had rows (a new organization, or one ANALYZE's sample missed, until
// the next ANALYZE, which on large tables may be a long way off). The planner then
// believes the organization has one row, and a statement that leaves it a choice
// may scan all of the organization's rows: a verification read every identity of
// the organization to answer the one it had found by username. Whatever the
// statistics and the plan (custom, or the generic plan a prepared statement settles
// on), each statement must read a few dozen buffers. (test/plans.test.ts checks the
// plans on empty statistics; test/outbox-plans.test.ts the outbox's statements.)
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { CodeEngine } from "../src/rules/codes/engine.ts";
import { AnswerTimes } from "../src/rules/answer-times.ts";
import type { Row, Sql } from "../src/store/sql.ts";
import { explainedRead, type PlanMode, type Reading } from "./support/explain.ts";
import { freshDatabase, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";

const TABLES = ["code", "rate_limit", "identity", "courier_message", "event"];
/** The new organization's identities, each with this many dead codes of history. */
const IDENTITIES = 2000;
const DEAD_CODES = 10;

let server: TestServer | undefined;
let client: pg.Client | undefined;
afterAll(async () => {
  await client?.end();
  await server?.close();
});

/** Explains a statement on `on` (support/explain.ts) and notes the buffers it read. */
async function note(on: pg.Client, text: string, params: readonly unknown[], mode: PlanMode, readings: Reading[]): Promise<void> {
  const { blocks } = await explainedRead(on, text, params, mode);
  readings.push({ statement: `${mode}: ${text.replace(/\s+/g, " ").trim().slice(0, 80)}`, blocks });
}

/**
 * Each statement first runs under EXPLAIN ANALYZE in a transaction rolled back,
 * noting the buffers it read (as a custom plan, or as the generic plan of a
 * prepared statement), then for real.
 */
function measuring(c: pg.Client, sql: Sql, mode: PlanMode, readings: Reading[]): Sql {
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = [], signal?: AbortSignal): Promise<T[]> {
      await c.query("begin");
      await note(c, text, params, mode, readings).finally(() => c.query("rollback"));
      return sql.query<T>(text, params, signal);
    },
    transaction: (work) => sql.transaction((tx) => work(measuringWithin(c, tx, mode, readings))),
  };
}

/**
 * The same within a transaction (the two-statement verification's): on its own
 * connection, in a savepoint rolled back, since a statement explained on another
 * would wait for the locks the transaction holds.
 */
function measuringWithin(c: pg.Client, tx: Sql, mode: PlanMode, readings: Reading[]): Sql {
  const on = { query: async (text: string, params: unknown[] = []) => ({ rows: await tx.query(text, params) }), escapeLiteral: (v: string) => c.escapeLiteral(v) } as unknown as pg.Client;
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = [], signal?: AbortSignal): Promise<T[]> {
      await tx.query("savepoint measuring");
      await note(on, text, params, mode, readings).finally(() => tx.query("rollback to savepoint measuring"));
      return tx.query<T>(text, params, signal);
    },
    transaction: () => Promise.reject(new Error("no transaction within a transaction")),
  };
}

describe("the statements of sends and verifications", () => {
  it("read a few dozen buffers, on statistics that never saw the organization", async () => {
    const databaseUrl = await freshDatabase();
    server = await startTestServer({ DATABASE_URL: databaseUrl, COURIER_ENABLED: "false" });
    client = new pg.Client(databaseUrl);
    await client.connect();
    const c = client;
    for (const t of TABLES) await c.query(`alter table ${t} set (autovacuum_enabled = false)`);
    const fx = adminFixtures(server.url);
    const seen = await fx.org("Seen");
    const fresh = await fx.org("Fresh", { selfServiceSignup: true, notifyUnknownRecovery: true });
    fx.close();
    const people = (orgId: string, n: number) =>
      c.query(
        `insert into identity (org_id, id, username, username_normalized, state, created_at)
         select $1, gen_random_uuid(), 'user' || g || '@example.com', 'user' || g || '@example.com', 'active', now() from generate_series(1, $2::int) g`,
        [orgId, n],
      );
    const history = (orgId: string, perIdentity: number) =>
      c.query(
        `insert into code (org_id, id, identity_id, purpose, binding, code_hash, hash_input, key_id, created_at, expires_at, attempts, max_attempts, dead_at)
         select i.org_id, gen_random_uuid(), i.id, 'login', '', '\\x00', 2, 'k', now(), now(), 0, 5, now() from identity i, generate_series(1, $2::int) where i.org_id = $1`,
        [orgId, perIdentity],
      );
    const counters = (orgId: string, n: number) =>
      c.query(`insert into rate_limit (org_id, key, window_start, hits, expires_at) select $1, 'k' || g, now(), 1, now() + interval '1 hour' from generate_series(1, $2::int) g`, [orgId, n]);
    // The statistics: taken while only another organization had rows, and kept so.
    await people(seen.id, 50);
    await history(seen.id, 2);
    await counters(seen.id, 50);
    await c.query(`vacuum analyze ${TABLES.join(", ")}`);
    // Then the new organization's rows.
    await people(fresh.id, IDENTITIES);
    await history(fresh.id, DEAD_CODES);
    await counters(fresh.id, 10 * IDENTITIES);

    const app = server.app;
    const org = (await app.orgs.resolve(fresh.id, ""))!;
    const limits = (key: string) => [{ key, limits: [{ max: 1000, windowMs: 60_000 }] }];
    const readings: Reading[] = [];
    let n = 0;
    for (const mode of ["custom", "generic"] as const) {
      const engine = new CodeEngine({
        sql: measuring(c, app.sql, mode, readings),
        config: app.config,
        secrets: app.secrets,
        clock: app.clock,
        events: app.metrics.codes,
        onQueued: () => {},
        failureTimes: new AnswerTimes(),
      });
      for (let i = 0; i < 3; i++) {
        const username = `user${++n}@example.com`;
        // A login: sent unbound and bound, a wrong guess, the right one.
        const sent = await engine.issue({ org, purpose: "login", target: { username }, requiredState: "active", mail: "login", limits: limits(`send:${username}`) });
        expect(sent.written).toBe(true);
        const binding = "flow-binding-of-the-application";
        const bound = await engine.issue({ org, purpose: "login", target: { username }, requiredState: "active", mail: "login", limits: limits(`send:${username}`), binding });
        const verify = (code: string, b?: string) =>
          engine.verify({ org, purpose: "login", target: { username }, requiredState: "active", code, binding: b, failureLimits: limits(`failed:${username}`), addressLimits: limits("failed-from:a") });
        await expect(verify(sent.code === "000000" ? "000001" : "000000")).rejects.toThrow();
        await expect(verify(sent.code)).resolves.toMatchObject({ username });
        await expect(verify(bound.code, binding)).resolves.toMatchObject({ username });
        // A self-service registration of a new username, and its verification.
        const newcomer = `new${n}@example.com`;
        const registration = await engine.issue({ org, purpose: "registration", target: { username: newcomer }, requiredState: "pending", mail: "registration", createPending: true, limits: limits(`send:${newcomer}`) });
        await expect(engine.verify({ org, purpose: "registration", target: { username: newcomer }, requiredState: "pending", code: registration.code, activate: true })).resolves.toMatchObject({ state: "active" });
        // A recovery for a username without an account (a notice), and an administrator's recovery link.
        await engine.issue({ org, purpose: "recovery", target: { username: `ghost${n}@example.com` }, requiredState: "active", mail: "recovery", notice: { kind: "unknown_recovery", when: "unknown" } });
        const [{ id: identityId }] = (await c.query(`select id from identity where org_id = $1 and username_normalized = $2`, [fresh.id, username])).rows;
        const link = await engine.issue({ org, purpose: "recovery", target: { identityId, username }, requiredState: "active", adminIssued: true });
        await expect(engine.verify({ purpose: "recovery", target: { flowId: link.id }, requiredState: "active", code: link.code })).resolves.toMatchObject({ id: identityId });
        await engine.invalidate(fresh.id, identityId, undefined);
      }
    }
    // Every statement of the rounds above, 12 a round: six sends, four verifications
    // by username, an attempt and its settling by flow id, an invalidation.
    expect(readings).toHaveLength(2 * 3 * 12);
    // 33 to 40 buffers, now and then 64 (a page split, an extension); the plans these
    // statements replaced read 450 (an identity by id) and 2,000 (a verification's).
    const over = readings.filter((r) => r.blocks > 150);
    expect(over).toEqual([]);
  });
});
