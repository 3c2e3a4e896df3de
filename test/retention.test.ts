// Every serving process runs the retention job on its timer, and each run scans the
// large tables; one run per interval serves the whole deployment. A process prunes
// only when it takes the job's turn, which one process at a time holds.
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, it, vi } from "vitest";
import { ManualClock } from "../src/domain/clock.ts";
import { createLogger } from "../src/lib/log.ts";
import type { RetentionOutcome } from "../src/rules/events.ts";
import { startRetention } from "../src/rules/retention.ts";
import { takeTurn } from "../src/store/job-turns.ts";
import { openOrm, type Orm } from "../src/store/orm.ts";
import { sqlOf, type Sql } from "../src/store/sql.ts";
import { freshDatabase } from "./support/server.ts";

const orms: Orm[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
  for (const orm of orms) await orm.close();
});

async function database(poolSize: number): Promise<Sql> {
  const orm = await openOrm({ databaseUrl: await freshDatabase(), dataDir: "", dbPoolSize: poolSize });
  orms.push(orm);
  return sqlOf(orm);
}

/** A code dead for a day: any prune takes it. */
async function deadCode(sql: Sql, now: Date): Promise<string> {
  const id = randomUUID();
  await sql.query(
    `insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, max_attempts, dead_at)
     values ('or-retention', $1, $2, 'login', '\\x00', 'k', $3, $3, 5, $3)`,
    [id, randomUUID(), new Date(now.getTime() - 86_400_000)],
  );
  return id;
}

const codeExists = async (sql: Sql, id: string) => (await sql.query(`select 1 from code where org_id = 'or-retention' and id = $1`, [id])).length === 1;

describe("the retention job's turn", () => {
  it("goes to one of the processes that ask for it at once, and to one again once it ends", async () => {
    const sql = await database(12);
    const now = new Date("2026-12-01T10:00:00Z");
    const until = new Date(now.getTime() + 60_000);
    const ask = (at: Date) => Promise.all(Array.from({ length: 12 }, (_, i) => takeTurn(sql, "retention", `process-${i}`, at, new Date(at.getTime() + 60_000))));

    const first = await ask(now);
    expect(first.filter(Boolean)).toHaveLength(1);
    const [row] = await sql.query(`select holder, until from job_turn where name = 'retention'`);
    expect(row.holder).toBe(`process-${first.indexOf(true)}`);
    expect(new Date(row.until)).toEqual(until);

    // Within the turn nobody takes it, not even its holder.
    expect((await ask(new Date(until.getTime() - 1))).filter(Boolean)).toHaveLength(0);
    // Once it ends, one process takes the next.
    expect((await ask(until)).filter(Boolean)).toHaveLength(1);
  });

  it("lets one of two processes prune per interval: the other's ticks skip, and its turn comes when the first one's ends", async () => {
    const sql = await database(4);
    const clock = new ManualClock(new Date("2026-12-01T10:00:00Z"));
    const intervalMs = 20;
    const outcomes: Record<string, RetentionOutcome[]> = { a: [], b: [] };
    for (const name of ["a", "b"] as const) {
      const loop = startRetention({
        sql,
        clock,
        log: createLogger("silent"),
        keepMs: 3_600_000,
        eventsKeepMs: 3_600_000,
        intervalMs,
        holder: name,
        events: { ran: (outcome) => outcomes[name].push(outcome) },
      });
      cleanups.push(() => loop.stop());
    }
    const all = () => [...outcomes.a, ...outcomes.b];
    const count = (outcome: RetentionOutcome) => all().filter((o) => o === outcome).length;

    const first = await deadCode(sql, clock.now());
    // Both processes tick many times; the clock stands still, so the turn never ends.
    await vi.waitFor(() => expect(count("skipped")).toBeGreaterThanOrEqual(10), { timeout: 10_000, interval: 10 });
    expect(count("pruned")).toBe(1);
    expect(count("failed")).toBe(0);
    expect(await codeExists(sql, first)).toBe(false);

    // The turn ends with the interval: one of them prunes again.
    const second = await deadCode(sql, clock.now());
    expect(await codeExists(sql, second)).toBe(true);
    clock.advance(intervalMs);
    await vi.waitFor(() => expect(count("pruned")).toBe(2), { timeout: 10_000, interval: 10 });
    expect(await codeExists(sql, second)).toBe(false);
    const skippedThen = count("skipped");
    await vi.waitFor(() => expect(count("skipped")).toBeGreaterThanOrEqual(skippedThen + 10), { timeout: 10_000, interval: 10 });
    expect(count("pruned")).toBe(2);
    expect(count("failed")).toBe(0);
  });
});
