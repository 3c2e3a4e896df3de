// The outbox's outcome statements (the courier's sent, failed and renewed mails, the
// delivery API's acks and failures) each name a few mails of one organization by
// id. On statistics taken while that organization had no mail yet (a new one, or one
// the sample missed), the planner took all of the organization's mails for those few
// and read every one of them, on every call until the next ANALYZE. Whatever the
// statistics and the plan (custom or generic), each must read about as many buffers
// as it names mails. (test/plans.test.ts checks the plans on empty statistics.)
import { randomUUID, randomUUIDv7 } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { markFailed, markSent, renewClaims } from "../src/store/outbox.ts";
import { ackMessages, failMessages } from "../src/store/delivery.ts";
import type { Row, Sql } from "../src/store/sql.ts";
import { freshDatabase } from "./support/server.ts";

/** Mails of the organization the statistics never saw. */
const MAILS = 6000;
/** Mails per statement, as a courier's gather or a worker's ack names them: neighbours in time. */
const BATCH = 13;

let client: pg.Client | undefined;
afterAll(async () => {
  await client?.end();
});

/** Runs each statement under EXPLAIN ANALYZE instead, noting the buffers it read, in the plan mode given. */
function measuring(c: pg.Client, mode: "auto" | "force_generic_plan", buffers: { text: string; blocks: number }[]): Sql {
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = []): Promise<T[]> {
      await c.query(`set plan_cache_mode = ${mode}`);
      const { rows } = await c.query(`explain (analyze, buffers, format json) ${text}`, params as unknown[]);
      const plan = rows[0]["QUERY PLAN"][0].Plan;
      buffers.push({ text: `${mode}: ${text.replace(/\s+/g, " ").trim().slice(0, 60)}`, blocks: plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] });
      return [];
    },
    transaction: () => Promise.reject(new Error("not used")),
  };
}

describe("the outbox's outcome statements", () => {
  it("read about as many buffers as they name mails, on statistics that never saw the organization", async () => {
    const databaseUrl = await freshDatabase();
    client = new pg.Client(databaseUrl);
    await client.connect();
    const LEASE = randomUUID();
    const insert = (orgId: string, ids: string[]) =>
      client!.query(
        `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, claimed_until, lease_token, created_at, updated_at)
         select $1, id, 'sms', 'login', 'someone@example.com', 'Your code', decode(repeat('ab', 600), 'hex'), 'k1', 'queued', 0, now(), now() + interval '1 minute', $3::uuid, now(), now()
         from unnest($2::uuid[]) as m(id)`,
        [orgId, ids, LEASE],
      );
    // The statistics: taken while only another organization had mail, and kept so.
    await client.query("alter table courier_message set (autovacuum_enabled = false)");
    await insert("or-seen", Array.from({ length: 50 }, () => randomUUIDv7()));
    await client.query("analyze courier_message");
    // Then a new organization's mails, time-ordered ids as the server gives them. Made
    // here thousands to the millisecond, in whose random bits they are not in order:
    // sorted, a slice of them is a batch of neighbours, as a claim of the oldest mails is.
    const ids = Array.from({ length: MAILS }, () => randomUUIDv7()).sort();
    await insert("or-new", ids);

    const now = new Date();
    const buffers: { text: string; blocks: number }[] = [];
    // The newest mails, as a courier's are: the organization's older ones are its history.
    let next = MAILS - 2 * 6 * 5 * BATCH;
    const batch = () => {
      const mails = ids.slice(next, next + BATCH).map((id) => ({ orgId: "or-new", id, leaseToken: LEASE }));
      next += BATCH;
      return mails;
    };
    for (const mode of ["auto", "force_generic_plan"] as const) {
      // Six calls each, so that a prepared statement's choice between plans has been made.
      for (let i = 0; i < 6; i++) {
        const sql = measuring(client, mode, buffers);
        await markSent(sql, now, batch());
        await markFailed(sql, now, 40, batch().map((m) => ({ ...m, nextAt: now, error: "refused" })));
        await renewClaims(sql, now, new Date(now.getTime() + 60_000), batch());
        await ackMessages(sql, now, batch());
        await failMessages(sql, now, { maxAttempts: 40, backoffBaseMs: 1000, backoffMaxMs: 30_000 }, batch().map((m) => ({ ...m, error: "refused" })));
      }
    }
    expect(buffers).toHaveLength(2 * 6 * 5);
    // A few buffers per mail: its primary-key lookup, its row, and its event's insert.
    const over = buffers.filter((b) => b.blocks > 20 * BATCH);
    expect(over).toEqual([]);
  });
});
