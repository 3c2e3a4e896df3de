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

/** Rows that stay, in each table, written first. */
const LIVE = 80_000;
/** Rows of each kind that a run prunes, written last, after the rows that stay. */
const OLD = 25;
/** What finding and deleting the fifty rows of a table costs, about three block visits a row, with room to spare; any table whole is three times more. */
const MOST_BLOCKS = 250;
const NOW = new Date("2026-12-01T12:00:00Z");
const KEEP_MS = 60_000;
const EVENTS_KEEP_MS = 3_600_000;

let client: pg.Client | undefined;
afterAll(async () => {
  await client?.end();
});

/**
 * Statements over `c`, each explained first (support/explain.ts) in a savepoint that
 * undoes what it changed, its buffers noted; and, per transaction, whether a
 * custom plan was asked for before its first other statement.
 */
function explaining(c: pg.Client, readings: Reading[], customPlanned: boolean[]): Sql {
  let asked = false;
  let first = true;
  const sql: Sql = {
    async query<T extends Row>(text: string, params: readonly unknown[] = []): Promise<T[]> {
      if (text === "set local plan_cache_mode = force_custom_plan") asked = true;
      else if (first) customPlanned.push(asked), (first = false);
      if (!text.startsWith("set ")) {
        await c.query("savepoint explained");
        const { blocks } = await explainedRead(c, text, params, "custom");
        await c.query("rollback to savepoint explained");
        readings.push({ statement: text.replace(/\s+/g, " ").trim().slice(0, 100), blocks });
      }
      return (await c.query<T>(text, params as unknown[])).rows;
    },
    async transaction(work) {
      await c.query("begin");
      [asked, first] = [false, true];
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
    // Codes: live; dead a moment ago; then dead long enough ago though not yet expired, and expired unused.
    const codes = (n: number, expiresAt: Date, deadAt: Date | null) =>
      c.query(
        `insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, max_attempts, dead_at)
         select 'or-retention', gen_random_uuid(), gen_random_uuid(), 'login', '\\x00', 'k', $2::timestamptz - interval '10 minutes', $2, 5, $3
         from generate_series(1, $1) g`,
        [n, expiresAt, deadAt],
      );
    await codes(LIVE, ago(-600_000), null);
    await codes(1_000, ago(-600_000), ago(10_000));
    await codes(OLD, ago(-480_000), ago(120_000));
    await codes(OLD, ago(120_000), null);
    // Mails: sent a moment ago; then sent and abandoned long ago, queued as long ago (never pruned), and
    // queued long ago but abandoned only a moment ago (kept: a mail's age is from its last attempt).
    const mails = (n: number, status: string, updatedAt: Date, createdAt = updatedAt) =>
      c.query(
        `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
         select 'or-retention', gen_random_uuid(), 'smtp', 'login', 'someone@example.com', 'Your code', null, 'k1', $2, 1, $3, $4, $3
         from generate_series(1, $1) g`,
        [n, status, updatedAt, createdAt],
      );
    await mails(LIVE, "sent", ago(10_000));
    await mails(OLD, "sent", ago(120_000));
    await mails(OLD, "abandoned", ago(120_000));
    await mails(OLD, "queued", ago(120_000));
    await mails(OLD, "abandoned", ago(10_000), ago(120_000));
    const windows = (n: number, expiresAt: Date) =>
      c.query(
        `insert into rate_limit (org_id, key, window_start, hits, expires_at)
         select 'or-retention', 'send:user' || g || '@example.com', $2::timestamptz - interval '1 minute', 1, $2 from generate_series(1, $1) g`,
        [n, expiresAt],
      );
    await windows(LIVE, ago(-60_000));
    await windows(OLD, ago(1_000));
    const events = (n: number, occurredAt: Date) =>
      c.query(`insert into event (org_id, type, purpose, occurred_at) select 'or-retention', 'code.issued', 'login', $2 from generate_series(1, $1) g`, [n, occurredAt]);
    await events(LIVE, ago(60_000));
    await events(OLD, ago(EVENTS_KEEP_MS + 60_000));
    await c.query("analyze code, courier_message, rate_limit, event");

    const pages = (await c.query(`select relname, relpages from pg_class where relname in ('code', 'courier_message', 'rate_limit', 'event')`)).rows;
    expect(pages).toHaveLength(4);
    for (const table of pages) expect(table.relpages, table.relname).toBeGreaterThan(3 * MOST_BLOCKS);

    const readings: Reading[] = [];
    const customPlanned: boolean[] = [];
    expect(await prune(explaining(c, readings, customPlanned), NOW, KEEP_MS, EVENTS_KEEP_MS)).toEqual({ codes: 2 * OLD, mails: 2 * OLD, rateLimits: OLD, events: OLD });
    expect(readings).toHaveLength(4);
    expect(readings.filter((r) => r.blocks > MOST_BLOCKS)).toEqual([]);
    expect(customPlanned).toEqual([true, true, true, true]);

    const left = (await c.query(`select
        (select count(*)::int from code) as codes,
        (select count(*)::int from courier_message) as mails,
        (select count(*)::int from courier_message where status = 'queued') as queued,
        (select count(*)::int from rate_limit) as windows,
        (select count(*)::int from event) as events`)).rows[0];
    expect(left).toEqual({ codes: LIVE + 1_000, mails: LIVE + 2 * OLD, queued: OLD, windows: LIVE, events: LIVE });
  });
});
