// Retention prunes by age. Without an index in that order each run read the whole
// code and courier_message tables at least once however little it found (and the
// event table's BRIN index, as pruning and reuse widened its ranges, came to the
// same): a week of history, read every ten minutes. A run that finds a few rows
// among many must read about those rows, and prune exactly what is dead.
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { prune } from "../src/store/retention.ts";
import type { Row, Sql } from "../src/store/sql.ts";
import { explainedRead, type Reading } from "./support/explain.ts";
import { freshDatabase } from "./support/server.ts";

/** Rows in each table. */
const ROWS = 80_000;
/** One row in SPREAD is one of a kind below: 10 of each. */
const SPREAD = 8_000;
const OLD = ROWS / SPREAD;
/**
 * What finding and deleting a table's twenty rows (and passing over ten more mails) costs, some four block
 * visits a row on pages of their own, with room to spare. Any table whole is many times more; so is even
 * an index that leads with the organization, which a plan without retention's own skips through.
 */
const MOST_BLOCKS = 120;
const NOW = new Date("2026-12-01T12:00:00Z");
const KEEP_MS = 60_000;
const EVENTS_KEEP_MS = 3_600_000;

let client: pg.Client | undefined;
afterAll(async () => {
  await client?.end();
});

/**
 * Statements over `c`, each explained first (support/explain.ts) in a savepoint that
 * undoes what it changed, its buffers noted with the plan cache mode it ran under.
 */
function explaining(c: pg.Client, readings: (Reading & { planCacheMode: string })[]): Sql {
  const sql: Sql = {
    async query<T extends Row>(text: string, params: readonly unknown[] = []): Promise<T[]> {
      if (!text.startsWith("set ")) {
        const [{ plan_cache_mode: planCacheMode }] = (await c.query("select current_setting('plan_cache_mode') as plan_cache_mode")).rows;
        await c.query("savepoint explained");
        const { blocks } = await explainedRead(c, text, params, "custom");
        await c.query("rollback to savepoint explained");
        readings.push({ statement: text.replace(/\s+/g, " ").trim().slice(0, 100), blocks, planCacheMode });
      }
      return (await c.query<T>(text, params as unknown[])).rows;
    },
    async transaction(work) {
      await c.query("begin");
      try {
        const result = await work(sql);
        await c.query("commit");
        return result;
      } catch (err) {
        await c.query("rollback");
        throw err;
      }
    },
  };
  return sql;
}

describe("retention", () => {
  it("reads about the rows it prunes, not the tables, and prunes exactly the dead", async () => {
    client = new pg.Client(await freshDatabase());
    const c = client;
    await c.connect();
    const ago = (ms: number) => new Date(NOW.getTime() - ms);
    // Rows of 2,000 organizations. Of each table's ROWS, one in SPREAD (a few of each kind below) is one that retention prunes, spread
    // among the rest as rows are when pruning has freed space that later rows filled (and as no BRIN
    // index of an age stays useful for).
    const kind = (cases: Record<number, string>, otherwise: string) =>
      `case ${Object.entries(cases).map(([at, then]) => `when g % ${SPREAD} = ${at} then ${then}`).join(" ")} else ${otherwise} end`;
    const t = (ms: number) => `timestamptz '${ago(ms).toISOString()}'`;
    // Codes: dead long enough ago though not yet expired, and expired unused (pruned); dead a moment ago (one in 80), and live.
    await c.query(
      `insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, max_attempts, dead_at)
       select 'or-retention-' || g % 2000, gen_random_uuid(), gen_random_uuid(), 'login', '\\x00', 'k', now(),
         ${kind({ 0: t(-480_000), [SPREAD / 2]: t(120_000) }, t(-600_000))}, 5,
         ${kind({ 0: t(120_000) }, `case when g % 80 = 7 then ${t(10_000)} end`)}
       from generate_series(1, ${ROWS}) g`,
    );
    // Mails: sent and abandoned long ago (pruned); queued as long ago, and abandoned a moment ago though
    // queued long ago (kept: a mail's age is from its last attempt); and sent a moment ago.
    const mailCases = { 0: "'sent'", [SPREAD / 4]: "'abandoned'", [SPREAD / 2]: "'queued'", [(3 * SPREAD) / 4]: "'abandoned'" };
    await c.query(
      `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
       select 'or-retention-' || g % 2000, gen_random_uuid(), 'smtp', 'login', 'someone@example.com', 'Your code', null, 'k1', ${kind(mailCases, "'sent'")}, 1, now(),
         ${kind({ 0: t(120_000), [SPREAD / 4]: t(120_000), [SPREAD / 2]: t(120_000), [(3 * SPREAD) / 4]: t(120_000) }, t(10_000))},
         ${kind({ 0: t(120_000), [SPREAD / 4]: t(120_000), [SPREAD / 2]: t(120_000) }, t(10_000))}
       from generate_series(1, ${ROWS}) g`,
    );
    // Rate-limit windows that have ended, and live ones.
    await c.query(
      `insert into rate_limit (org_id, key, window_start, hits, expires_at)
       select 'or-retention-' || g % 2000, 'send:user' || g || '@example.com', now(), 1, ${kind({ 0: t(1_000) }, t(-60_000))} from generate_series(1, ${ROWS}) g`,
    );
    // Events past their retention period, and recent ones.
    await c.query(
      `insert into event (org_id, type, purpose, occurred_at)
       select 'or-retention-' || g % 2000, 'code.issued', 'login', ${kind({ 0: t(EVENTS_KEEP_MS + 60_000) }, t(60_000))} from generate_series(1, ${ROWS}) g`,
    );
    await c.query("analyze code, courier_message, rate_limit, event");

    const pages = (await c.query(`select relname, relpages from pg_class where relname in ('code', 'courier_message', 'rate_limit', 'event')`)).rows;
    expect(pages).toHaveLength(4);
    for (const table of pages) expect(table.relpages, table.relname).toBeGreaterThan(3 * MOST_BLOCKS);

    const readings: (Reading & { planCacheMode: string })[] = [];
    expect(await prune(explaining(c, readings), NOW, KEEP_MS, EVENTS_KEEP_MS)).toEqual({ codes: 2 * OLD, mails: 2 * OLD, rateLimits: OLD, events: OLD });
    expect(readings).toHaveLength(4);
    expect(readings.filter((r) => r.blocks > MOST_BLOCKS)).toEqual([]);
    // The server prepares its statements, and a generic plan (unlike this test's custom ones) read the code table whole.
    expect(readings.map((r) => r.planCacheMode)).toEqual(Array(4).fill("force_custom_plan"));

    const left = (await c.query(`select
        (select count(*)::int from code) as codes,
        (select count(*)::int from courier_message) as mails,
        (select count(*)::int from courier_message where status = 'queued') as queued,
        (select count(*)::int from rate_limit) as windows,
        (select count(*)::int from event) as events`)).rows[0];
    expect(left).toEqual({ codes: ROWS - 2 * OLD, mails: ROWS - 2 * OLD, queued: OLD, windows: ROWS - OLD, events: ROWS - OLD });
    expect((await c.query(`select count(*)::int as n from code where dead_at is not null`)).rows[0].n).toBe(ROWS / 80);
  });
});
