// The outbox's statements that take a few mails of one organization: the claims of
// the courier and of the delivery API, and the outcomes (the courier's sent, failed
// and renewed mails, the delivery API's acks, failures and releases). On statistics taken while
// that organization had no mail yet (a new one, or one ANALYZE's sample missed), the
// planner believed it had one row: an outcome hashed all of its mails to find the few
// it names, and a claim ran its locking subquery once for every one of them. That
// lasts until the next ANALYZE, which on a large outbox may be a long way off.
// Whatever the statistics and the plan (custom, or the generic plan a prepared
// statement settles on), each must read a few buffers per mail it takes.
// (test/plans.test.ts checks the plans on empty statistics.)
import { randomUUID, randomUUIDv7 } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { claimMails, markFailed, markSent, releaseClaims, renewClaims } from "../src/store/outbox.ts";
import { ackMessages, claimMessages, failMessages, releaseMessages } from "../src/store/delivery.ts";
import type { Sql } from "../src/store/sql.ts";
import { explainingSql, type Explained, type PlanMode } from "./support/explain.ts";
import { freshDatabase } from "./support/server.ts";

/** The history of the organization the statistics never saw. */
const HISTORY = 6000;
/** Mails per outcome statement, as a courier's gather or a worker's ack names them: neighbours in time. */
const BATCH = 13;
/** Mails per claim. */
const CLAIM = 20;
const CALLS = 6;

let client: pg.Client | undefined;
afterAll(async () => {
  await client?.end();
});

/**
 * Runs each statement under EXPLAIN ANALYZE instead (support/explain.ts), noting the
 * buffers it read and the rows it gave. The courier's look for organizations with
 * due mail, which reads across them, runs as it is.
 */
function measuring(c: pg.Client, mode: PlanMode, readings: Explained[]): Sql {
  return explainingSql(c, mode, (r) => readings.push(r), { runAsIs: /^\s*select org_id from courier_message/ });
}

describe("the outbox's statements on a few mails of one organization", () => {
  it("read a few buffers per mail, on statistics that never saw the organization", async () => {
    const databaseUrl = await freshDatabase();
    client = new pg.Client(databaseUrl);
    await client.connect();
    const LEASE = randomUUID();
    /** The claim that holds the rows standing in for mails in flight: its token, and its time, their updated_at. */
    const HELD = { lease: LEASE, at: new Date(Date.now() - 5_000) };
    /** Time-ordered ids as the server gives them; made here thousands to the millisecond, sorted so that neighbours in the list are neighbours in time. */
    const newIds = (n: number) => Array.from({ length: n }, () => randomUUIDv7()).sort();
    const insert = (orgId: string, ids: string[], status: "sent" | "queued", channel: string) =>
      client!.query(
        `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, claimed_until, lease_token, created_at, updated_at)
         select $1, id, $4, 'login', 'someone@example.com', 'Your code', decode(repeat('ab', 600), 'hex'), 'k1', $5, 0, now() - interval '1 second',
           case when $5 = 'sent' then now() + interval '1 minute' end, case when $5 = 'sent' then $3::uuid end, now(), $6
         from unnest($2::uuid[]) as m(id)`,
        [orgId, ids, LEASE, channel, status, HELD.at],
      );
    // The statistics: taken while only another organization had mail, and kept so.
    await client.query("alter table courier_message set (autovacuum_enabled = false)");
    await insert("or-seen", newIds(50), "sent", "smtp");
    await client.query("analyze courier_message");
    // Then a new organization's history (its rows stand in for mails in flight: the
    // outcome statements name them by id and lease), and its due mail of each channel.
    const history = newIds(HISTORY);
    await insert("or-new", history, "sent", "smtp");
    await insert("or-new", newIds(2 * CALLS * CLAIM), "queued", "smtp");
    await insert("or-new", newIds(2 * CALLS * CLAIM), "queued", "sms");

    const now = new Date();
    const later = new Date(now.getTime() + 60_000);
    const readings: Explained[] = [];
    // The newest mails, as a courier's are: the organization's older ones are its history.
    let next = HISTORY - 2 * CALLS * 7 * BATCH;
    const named = { sent: [] as string[], failed: [] as string[], renewed: [] as string[], handedBack: [] as string[], acked: [] as string[], workerFailed: [] as string[], released: [] as string[] };
    const batch = (kind: keyof typeof named) => {
      const mails = history.slice(next, next + BATCH).map((id) => ({ orgId: "or-new", id, leaseToken: LEASE }));
      next += BATCH;
      named[kind].push(...mails.map((m) => m.id));
      return mails;
    };
    for (const mode of ["custom", "generic"] as const) {
      for (let i = 0; i < CALLS; i++) {
        const sql = measuring(client, mode, readings);
        await claimMails(sql, { lease: randomUUID(), at: now }, later, CLAIM, 40);
        await claimMessages(sql, now, later, CLAIM, ["sms"], randomUUID(), 40);
        await markSent(sql, now, HELD, batch("sent"));
        await markFailed(sql, now, 40, HELD, batch("failed").map((m) => ({ ...m, nextAt: now, error: "refused" })));
        await renewClaims(sql, HELD, later, batch("renewed"));
        await releaseClaims(sql, HELD, batch("handedBack"));
        await ackMessages(sql, now, batch("acked"));
        await failMessages(sql, now, { maxAttempts: 40, backoffBaseMs: 1000, backoffMaxMs: 30_000 }, batch("workerFailed").map((m) => ({ ...m, error: "refused" })));
        await releaseMessages(sql, batch("released"));
      }
    }
    expect(readings).toHaveLength(2 * CALLS * 9);
    // Each outcome changed every mail it named (EXPLAIN ANALYZE runs the statement), and only those.
    const changed = async (where: string, ids: string[]) =>
      (await client!.query(`select count(*)::int as n from courier_message where org_id = 'or-new' and id = any($1::uuid[]) and (${where})`, [ids])).rows[0].n;
    const outcomes = [
      ["sent", "body is null and claimed_until is null"],
      ["failed", "send_count = 1 and last_error = 'refused' and claimed_until is null"],
      ["renewed", `claimed_until = '${later.toISOString()}'`],
      ["handedBack", "claimed_until is null and lease_token is null and send_count = 0"],
      ["acked", "body is null and lease_token is null"],
      ["workerFailed", "send_count = 1 and last_error = 'refused' and lease_token is null"],
      ["released", "claimed_until is null and lease_token is null and send_count = 0"],
    ] as const;
    for (const [kind, where] of outcomes) expect(await changed(where, named[kind]), kind).toBe(2 * CALLS * BATCH);
    const untouched = history.slice(0, HISTORY - 2 * CALLS * 7 * BATCH);
    expect(await changed("body is null or last_error is not null or lease_token is null", untouched)).toBe(0);
    // A claim takes as many mails as it asks for, no more.
    const claims = readings.filter((r) => r.statement.includes("with c as"));
    expect(claims.map((r) => r.rows)).toEqual(Array(2 * 2 * CALLS).fill(CLAIM));
    // A few buffers per mail (its lookup, its row, its indexes, its event): 4 to 19 here, where
    // the plans these statements replaced read 60 to 70 per mail (outcomes) and 9,000 to 17,000 (claims).
    const over = readings.filter((r) => r.blocks > 25 * (claims.includes(r) ? CLAIM : BATCH));
    expect(over).toEqual([]);
  });
});
