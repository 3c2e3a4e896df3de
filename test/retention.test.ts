// Every serving process runs the retention job on its timer, and each run scans the
// large tables; one run per interval serves the whole deployment. A process prunes
// only when it takes the job's turn, which one process at a time holds.
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, it, vi } from "vitest";
import pg from "pg";
import { ManualClock } from "../src/domain/clock.ts";
import { createLogger } from "../src/lib/log.ts";
import type { RetentionOutcome } from "../src/rules/events.ts";
import { startRetention } from "../src/rules/retention.ts";
import { renewTurn, takeTurn } from "../src/store/job-turns.ts";
import { openOrm, type Orm } from "../src/store/orm.ts";
import { sqlOf, type Row, type Sql } from "../src/store/sql.ts";
import { freshDatabase } from "./support/server.ts";

const orms: Orm[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups) await c();
  for (const orm of orms) await orm.close();
});

async function database(poolSize: number): Promise<{ sql: Sql; databaseUrl: string }> {
  const databaseUrl = await freshDatabase();
  const orm = await openOrm({ databaseUrl, dataDir: "", dbPoolSize: poolSize });
  orms.push(orm);
  return { sql: await sqlOf(orm), databaseUrl };
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

/**
 * A dead code whose row the test keeps locked (in `holder`'s open transaction): a run that
 * prunes waits on it for as long as the test holds it. `holder.query("rollback")` lets it go.
 */
async function lockedDeadCode(sql: Sql, databaseUrl: string, clock: ManualClock): Promise<{ stuck: string; holder: pg.Client }> {
  const stuck = await deadCode(sql, clock.now());
  const holder = new pg.Client(databaseUrl);
  await holder.connect();
  cleanups.push(() => holder.end());
  await holder.query("begin");
  await holder.query(`select 1 from code where org_id = 'or-retention' and id = $1 for update`, [stuck]);
  return { stuck, holder };
}

/** How long the processes' timers wait between ticks. */
const INTERVAL_MS = 20;

const codeExists = async (sql: Sql, id: string) => (await sql.query(`select 1 from code where org_id = 'or-retention' and id = $1`, [id])).length === 1;

describe("the retention job's turn", () => {
  it("goes to one of the processes that ask for it at once, and to one again once it ends", async () => {
    const { sql } = await database(12);
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

  /** A retention timer ("process" `holder`) ticking every INTERVAL_MS on `clock`, stopped at the end of the file; `ran` hears each tick's outcome. */
  function retentionTimer(sql: Sql, clock: ManualClock, holder: string, ran: (outcome: RetentionOutcome) => void): void {
    const loop = startRetention({ sql, clock, log: createLogger("silent"), keepMs: 3_600_000, eventsKeepMs: 3_600_000, intervalMs: INTERVAL_MS, holder, events: { ran } });
    cleanups.push(() => loop.stop());
  }

  /** Two retention timers ("processes" a and b) on one database and one clock that moves when told; their ticks' outcomes. */
  function twoProcesses(sql: Sql, clock: ManualClock) {
    const outcomes: Record<"a" | "b", RetentionOutcome[]> = { a: [], b: [] };
    for (const name of ["a", "b"] as const) retentionTimer(sql, clock, name, (outcome) => outcomes[name].push(outcome));
    const count = (outcome: RetentionOutcome) => [...outcomes.a, ...outcomes.b].filter((o) => o === outcome).length;
    return { outcomes, count };
  }

  it("lets one of two processes prune per interval: the other's ticks skip, and its turn comes when the first one's ends", async () => {
    const { sql } = await database(4);
    const clock = new ManualClock(new Date("2026-12-01T10:00:00Z"));
    const first = await deadCode(sql, clock.now());
    const { outcomes, count } = twoProcesses(sql, clock);

    // Both processes tick many times; the clock stands still, so the turn never ends.
    await vi.waitFor(
      () => {
        expect(outcomes.a.length).toBeGreaterThanOrEqual(5);
        expect(outcomes.b.length).toBeGreaterThanOrEqual(5);
      },
      { timeout: 10_000, interval: 10 },
    );
    expect(count("pruned")).toBe(1);
    expect(count("failed")).toBe(0);
    expect(await codeExists(sql, first)).toBe(false);

    // The turn ends with the interval: one of them prunes again.
    const second = await deadCode(sql, clock.now());
    expect(await codeExists(sql, second)).toBe(true);
    clock.advance(INTERVAL_MS);
    await vi.waitFor(() => expect(count("pruned")).toBe(2), { timeout: 10_000, interval: 10 });
    expect(await codeExists(sql, second)).toBe(false);
    const skippedThen = count("skipped");
    await vi.waitFor(() => expect(count("skipped")).toBeGreaterThanOrEqual(skippedThen + 10), { timeout: 10_000, interval: 10 });
    expect(count("pruned")).toBe(2);
    expect(count("failed")).toBe(0);
  });

  it("keeps the turn of a run that outlasts it, renewing it as it goes, so that nobody prunes beside it", async () => {
    const { sql, databaseUrl } = await database(4);
    const clock = new ManualClock(new Date("2026-12-01T10:00:00Z"));
    const { stuck, holder } = await lockedDeadCode(sql, databaseUrl, clock);

    const { outcomes, count } = twoProcesses(sql, clock);
    await vi.waitFor(() => expect(count("skipped")).toBeGreaterThanOrEqual(5), { timeout: 10_000, interval: 10 });
    const [{ holder: running }] = await sql.query(`select holder from job_turn where name = 'retention'`);
    const other = running === "a" ? "b" : "a";

    // The clock moves on, past where the turn began and would have ended; each time the
    // running process renews it before the clock moves again.
    for (let step = 0; step < 5; step++) {
      clock.advance(INTERVAL_MS / 2);
      const until = clock.now().getTime() + INTERVAL_MS * 0.9;
      await vi.waitFor(
        async () => {
          const [turn] = await sql.query(`select holder, until from job_turn where name = 'retention'`);
          expect({ holder: turn.holder, until: new Date(turn.until).getTime() }).toEqual({ holder: running, until });
        },
        { timeout: 10_000, interval: 5 },
      );
    }
    const otherTicks = outcomes[other].length;
    await vi.waitFor(() => expect(outcomes[other].length).toBeGreaterThanOrEqual(otherTicks + 5), { timeout: 10_000, interval: 10 });
    expect(outcomes[other]).not.toContain("pruned");

    await holder.query("rollback");
    await vi.waitFor(() => expect(count("pruned")).toBe(1), { timeout: 10_000, interval: 10 });
    expect(await codeExists(sql, stuck)).toBe(false);
    expect(outcomes[running as "a" | "b"]).toContain("pruned");
    // Nobody else was pruning beside it: no second run finishes now that the row is free.
    const ticks = { a: outcomes.a.length, b: outcomes.b.length };
    await vi.waitFor(
      () => {
        expect(outcomes.a.length).toBeGreaterThanOrEqual(ticks.a + 5);
        expect(outcomes.b.length).toBeGreaterThanOrEqual(ticks.b + 5);
      },
      { timeout: 10_000, interval: 10 },
    );
    expect(count("pruned")).toBe(1);
    expect(count("failed")).toBe(0);
  });

  it("renews a run's turn one statement at a time: a renewal slow to commit is not overtaken by a later one, and none outlives the run", async () => {
    const { sql: plain, databaseUrl } = await database(4);
    const clock = new ManualClock(new Date("2026-12-01T10:00:00Z"));
    const { holder } = await lockedDeadCode(plain, databaseUrl, clock);
    // The turn's ends the renewals name, as they are sent and as they commit; the first is held until the test lets it go.
    const sent: number[] = [];
    const committed: number[] = [];
    let letGo!: () => void;
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const sql: Sql = {
      async query<T extends Row = Row>(text: string, params: readonly unknown[] = [], signal?: AbortSignal): Promise<T[]> {
        if (!text.startsWith("update job_turn")) return plain.query<T>(text, params, signal);
        const until = (params[2] as Date).getTime();
        sent.push(until);
        if (sent.length === 1) await held;
        const rows = await plain.query<T>(text, params, signal);
        committed.push(until);
        return rows;
      },
      transaction: (work) => plain.transaction(work),
    };
    const outcomes: RetentionOutcome[] = [];
    let renewalsDoneAtEnd: boolean | undefined;
    retentionTimer(sql, clock, "a", (outcome) => {
      if (outcome === "pruned") renewalsDoneAtEnd = committed.length === sent.length;
      outcomes.push(outcome);
    });
    await vi.waitFor(() => expect(sent).toHaveLength(1), { timeout: 10_000, interval: 5 });
    // Later renewals would name a later end. Several renewal periods pass (its ticks, skipped, show it)...
    clock.advance(INTERVAL_MS);
    const ticks = outcomes.length;
    await vi.waitFor(() => expect(outcomes.length).toBeGreaterThanOrEqual(ticks + 5), { timeout: 10_000, interval: 10 });
    // ...and none is sent while the first has not committed.
    expect(sent).toHaveLength(1);
    letGo();
    await vi.waitFor(() => expect(committed.length).toBeGreaterThanOrEqual(3), { timeout: 10_000, interval: 5 });
    expect(committed).toEqual(committed.toSorted((x, y) => x - y));
    await holder.query("rollback");
    await vi.waitFor(() => expect(outcomes).toContain("pruned"), { timeout: 10_000, interval: 10 });
    expect(renewalsDoneAtEnd).toBe(true);
  });

  it("never moves a turn's end back: a renewal that names an earlier end leaves it", async () => {
    const { sql } = await database(2);
    const now = new Date("2026-12-01T10:00:00Z");
    const at = (ms: number) => new Date(now.getTime() + ms);
    expect(await takeTurn(sql, "retention", "a", now, at(38))).toBe(true);
    await renewTurn(sql, "retention", "a", at(18));
    const [turn] = await sql.query(`select until from job_turn where name = 'retention'`);
    expect(new Date(turn.until)).toEqual(at(38));
    await renewTurn(sql, "retention", "a", at(58));
    const [later] = await sql.query(`select until from job_turn where name = 'retention'`);
    expect(new Date(later.until)).toEqual(at(58));
  });
});
