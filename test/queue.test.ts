// The courier and the delivery API find due messages in courier_queue, the queued
// messages only, which triggers keep in step with courier_message
// (20261208-courier-queue.ts). Along partial indexes of courier_message, every
// message that had left the queue left a dead entry at the head of the index that
// each look for due mail walked, until a VACUUM of the whole history.
import { randomUUID, randomUUIDv7 } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import pg from "pg";
import { claimMails } from "../src/store/outbox.ts";
import { claimMessages } from "../src/store/delivery.ts";
import type { Row, Sql } from "../src/store/sql.ts";
import { explainedRead } from "./support/explain.ts";
import { freshDatabase } from "./support/server.ts";

const clients: pg.Client[] = [];
afterAll(async () => {
  for (const c of clients) await c.end();
});

async function connect(): Promise<pg.Client> {
  const c = new pg.Client(await freshDatabase());
  await c.connect();
  clients.push(c);
  return c;
}

/** Queues mails as a send does, due a second apart from `from` on: their ids. */
async function queue(c: pg.Client, orgId: string, channel: string, n: number, from: Date): Promise<string[]> {
  const ids = Array.from({ length: n }, () => randomUUIDv7()).sort();
  await c.query(
    `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
     select $1, id, $3, 'login', 'someone@example.com', 'Your code', '\\x00', 'k1', 'queued', 0, $4::timestamptz + n * interval '1 millisecond', $4, $4
     from unnest($2::uuid[]) with ordinality as m(id, n)`,
    [orgId, ids, channel, from],
  );
  return ids;
}

/** Runs each statement under EXPLAIN ANALYZE, noting the buffers it read; answers the look for due mail's rows, which the claims need. */
function measuring(c: pg.Client, readings: { statement: string; blocks: number }[]): Sql {
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = []): Promise<T[]> {
      const { blocks } = await explainedRead(c, text, params, "custom");
      readings.push({ statement: text.replace(/\s+/g, " ").trim().slice(0, 40), blocks });
      return /^\s*select org_id from courier_queue/.test(text) ? (await c.query(text, params as unknown[])).rows : [];
    },
    transaction: () => Promise.reject(new Error("not used")),
  };
}

describe("the queue", () => {
  it("holds the queued messages only, as every writer leaves courier_message", async () => {
    const c = await connect();
    const t0 = new Date(Date.now() - 60_000);
    const [a, b, d, e, f] = await queue(c, "or-a", "smtp", 5, t0);
    const [s] = await queue(c, "or-a", "sms", 1, t0);
    // As a server of an earlier version, or an operator, would write them.
    await c.query(`update courier_message set status = 'sent', body = null where id = $1`, [a]);
    await c.query(`update courier_message set status = 'abandoned', body = null where id = $1`, [b]);
    await c.query(`update courier_message set claimed_until = now() + interval '1 minute', lease_token = gen_random_uuid() where id = $1`, [d]);
    await c.query(`update courier_message set next_attempt_at = now() + interval '1 hour', send_count = 1 where id = $1`, [e]);
    await c.query(`delete from courier_message where id = $1`, [f]);
    await c.query(`update courier_message set channel = 'mail_api' where id = $1`, [s]);
    // A mail put back in the queue (an operator's retry of an abandoned one).
    await c.query(`update courier_message set status = 'queued', next_attempt_at = now() where id = $1`, [b]);
    const fields = "org_id, id::text, channel, next_attempt_at, claimed_until";
    const queued = (await c.query(`select ${fields}, created_at as queued_at from courier_message where status = 'queued' order by id`)).rows;
    const inQueue = (await c.query(`select ${fields}, queued_at from courier_queue order by id`)).rows;
    expect(inQueue).toEqual(queued);
    expect(inQueue.map((r) => r.id)).toEqual([b, d, e, s].sort());
  });

  it("keeps its head short however many mails have left it: its own vacuum clears it, not one of the whole history", async () => {
    const c = await connect();
    // The history is not vacuumed here, as a large table's is not for a long time; the queue's is, when the test says.
    await c.query("alter table courier_message set (autovacuum_enabled = false)");
    await c.query("alter table courier_queue set (autovacuum_enabled = false)");
    const t0 = new Date(Date.now() - 3_600_000);
    // 40,000 mails of each kind gone through the queue, sent in batches as couriers and workers mark them.
    for (const channel of ["smtp", "sms"]) {
      const ids = await queue(c, "or-a", channel, 40_000, t0);
      for (let i = 0; i < ids.length; i += 1000) {
        await c.query(`update courier_message set status = 'sent', body = null where org_id = 'or-a' and id = any($1::uuid[])`, [ids.slice(i, i + 1000)]);
      }
    }
    await c.query("analyze courier_message, courier_queue");
    // Then what is due now, after them.
    await queue(c, "or-a", "smtp", 40, new Date(Date.now() - 1000));
    await queue(c, "or-a", "sms", 40, new Date(Date.now() - 1000));

    const look = async () => {
      const readings: { statement: string; blocks: number }[] = [];
      const sql = measuring(c, readings);
      const now = new Date();
      await claimMails(sql, { lease: randomUUID(), at: now }, new Date(now.getTime() + 60_000), 20);
      await claimMessages(sql, now, new Date(now.getTime() + 60_000), 20, ["sms"], randomUUID());
      expect(readings.map((r) => r.statement)).toEqual([
        "select org_id from courier_queue where c",
        "with c as materialized ( select l.id fro",
        "select org_id from courier_queue where c",
        "with c as materialized ( select l.id fro",
      ]);
      return readings.map((r) => r.blocks);
    };
    // Each look first walks the dead entries of the 40,000 mails sent of its channel.
    const before = await look();
    expect(Math.min(...before)).toBeGreaterThan(100);
    await c.query("vacuum courier_queue");
    const after = await look();
    // A few buffers for the look; a few per mail for the claim of 20 (its queue entry, its
    // lookup and lock, its update, and its queue row's): here 2 to 3 and 250 to 335, against 595 and 1,045 before.
    expect(after[0]).toBeLessThan(10);
    expect(after[2]).toBeLessThan(10);
    expect(after[1]).toBeLessThan(20 * 25);
    expect(after[3]).toBeLessThan(20 * 25);
    // And the history still holds every dead version it had.
    await c.query("select pg_stat_force_next_flush()");
    const { rows: [history] } = await c.query(`select n_dead_tup::int as dead from pg_stat_user_tables where relname = 'courier_message'`);
    expect(history.dead).toBeGreaterThanOrEqual(80_000);
  });
});
