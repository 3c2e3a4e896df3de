// The courier and the delivery API look for due mail from a floor (rules/due-floor.ts):
// every mail that has left the queue leaves a dead entry at the head of the partial
// indexes they look along, which only a VACUUM of courier_message removes, and a look
// from the start walked them all.
import { randomUUID, randomUUIDv7 } from "node:crypto";
import { afterAll, describe, expect, it, vi } from "vitest";
import pg from "pg";
import { systemClock } from "../src/domain/clock.ts";
import { DueFloor, MARGIN_MS } from "../src/rules/due-floor.ts";
import { ANY_TIME, claimMails, oldestDueMail } from "../src/store/outbox.ts";
import { claimMessages, oldestDueMessage } from "../src/store/delivery.ts";
import type { Row, Sql } from "../src/store/sql.ts";
import { explainingSql } from "./support/explain.ts";
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

/** Statements over `c`, as the server runs them. */
function plain(c: pg.Client): Sql {
  return {
    query: async <T extends Row>(text: string, params: readonly unknown[] = []) => (await c.query<T>(text, params as unknown[])).rows,
    transaction: () => Promise.reject(new Error("not used")),
  };
}

/** The courier's look for organizations with due mail (DUE_SQL). */
const DUE_LOOK = /^\s*select org_id from courier_message/;

/** Runs each statement under EXPLAIN ANALYZE, noting the buffers it read; answers the look for due mail's rows, which the claims need. */
function measuring(c: pg.Client, readings: number[]): Sql {
  return explainingSql(c, "custom", (r) => readings.push(r.blocks), { rerun: DUE_LOOK });
}

/** Queues mails as a send does, due a millisecond apart from `from` on: their ids. */
async function queue(c: pg.Client, channel: string, n: number, from: Date): Promise<string[]> {
  const ids = Array.from({ length: n }, () => randomUUIDv7()).sort();
  await c.query(
    `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
     select 'or-a', id, $2, 'login', 'someone@example.com', 'Your code', '\\x00', 'k1', 'queued', 0, $3::timestamptz + n * interval '1 millisecond', $3, $3
     from unnest($1::uuid[]) with ordinality as m(id, n)`,
    [ids, channel, from],
  );
  return ids;
}

describe("the looks for due mail", () => {
  it("read a few blocks from the floor, however many mails have left the queue since the last vacuum", async () => {
    const c = await connect();
    // As a large history's, not vacuumed for a long time.
    await c.query("alter table courier_message set (autovacuum_enabled = false)");
    // 40,000 mails of each kind gone through the queue, sent in batches as couriers and workers mark them.
    for (const channel of ["smtp", "sms"]) {
      const ids = await queue(c, channel, 40_000, new Date(Date.now() - 3_600_000));
      for (let i = 0; i < ids.length; i += 1000) {
        await c.query(`update courier_message set status = 'sent', body = null where org_id = 'or-a' and id = any($1::uuid[])`, [ids.slice(i, i + 1000)]);
      }
    }
    await c.query("analyze courier_message");
    // Then what is due now, after them: the SMTP mail, the SMS messages, and a message of
    // a channel the claims below do not take, due earlier than all.
    const dueAt = new Date(Date.now() - 1000);
    await queue(c, "smtp", 40, dueAt);
    await queue(c, "sms", 40, new Date(dueAt.getTime() - 100));
    await queue(c, "mail_api", 1, new Date(dueAt.getTime() - 3_600_000));

    const mailFloor = await new DueFloor(() => oldestDueMail(plain(c)), systemClock).get();
    const messageFloor = await new DueFloor(() => oldestDueMessage(plain(c), ["sms"]), systemClock).get();
    // The oldest due mail of the channels looked for, less the margin: below it, none of theirs queued.
    expect(mailFloor.getTime()).toBe(dueAt.getTime() + 1 - MARGIN_MS);
    expect(messageFloor.getTime()).toBe(dueAt.getTime() - 100 + 1 - MARGIN_MS);

    /** The buffers of each statement of a claim of 20 by the courier and by the delivery API: [look, claim, look, claim]. */
    const look = async (mailsFrom: Date, messagesFrom: Date) => {
      const readings: number[] = [];
      const sql = measuring(c, readings);
      const now = new Date();
      const claimed = await claimMails(sql, { lease: randomUUID(), at: now }, new Date(now.getTime() + 60_000), 20, 5, mailsFrom);
      await claimMessages(sql, now, new Date(now.getTime() + 60_000), 20, ["sms"], randomUUID(), 5, messagesFrom);
      expect(claimed).toEqual({ items: [], abandoned: [] }); // answered by the measuring wrapper; the claims ran under EXPLAIN ANALYZE
      expect(readings).toHaveLength(4);
      return readings;
    };
    const fromTheFloor = await look(mailFloor, messageFloor);
    const fromTheStart = await look(ANY_TIME, ANY_TIME);
    // From the start, each statement first walks the dead entries of the 40,000 mails sent
    // of its channel (here 153 and 991 blocks for the looks, 394 and 594 for the claims).
    expect(Math.min(...fromTheStart)).toBeGreaterThan(100);
    // From the floor, a few blocks for a look (3), a few per mail for a claim of 20 (328 and 374: the
    // index, each mail's row, its lock, and its update, whose row version each index notes).
    expect(fromTheFloor[0]).toBeLessThan(10);
    expect(fromTheFloor[2]).toBeLessThan(10);
    expect(fromTheFloor[1]).toBeLessThan(20 * 25);
    expect(fromTheFloor[3]).toBeLessThan(20 * 25);
  });

  it("find a mail due below the floor once the floor is read again", async () => {
    const c = await connect();
    const sql = plain(c);
    const floor = new DueFloor(() => oldestDueMail(sql), systemClock);
    const claim = async () => {
      const now = new Date();
      const { items: claimed } = await claimMails(sql, { lease: randomUUID(), at: now }, new Date(now.getTime() + 60_000), 20, 5, await floor.get());
      floor.looked(claimed.length > 0);
      return claimed.map((m) => m.id);
    };
    const [due] = await queue(c, "smtp", 1, new Date(Date.now() - 1000));
    expect(await claim()).toEqual([due]);
    // Queued by a server whose clock is an hour behind, after the floor was read, beside a mail due above it.
    const [behind] = await queue(c, "smtp", 1, new Date(Date.now() - 3_600_000));
    const [above] = await queue(c, "smtp", 1, new Date(Date.now() - 1000));
    expect(await claim()).toEqual([above]);
    expect(await claim()).toEqual([]);
    // A look that found nothing has the floor read again within MIN_REFRESH_MS.
    await vi.waitFor(async () => expect(await claim()).toEqual([behind]), { timeout: 3_000, interval: 100 });
  });

  it("read the floor every 5 s while they find mail, and back off from 1 s to 5 s while they find none", async () => {
    let at = 0;
    const monotonic = vi.spyOn(performance, "now").mockImplementation(() => at);
    try {
      const reads: number[] = [];
      const floor = new DueFloor(async () => {
        reads.push(at);
        return null;
      }, systemClock);
      /** Looks at each of these times, each finding mail or not; answers the times the floor was read. */
      const looks = async (times: number[], found: boolean) => {
        for (const t of times) {
          at = t;
          await floor.get();
          floor.looked(found);
        }
      };
      await looks([0, 999, 1000, 2999, 3000, 6999, 7000, 11_999, 12_000, 16_999, 17_000], false);
      expect(reads).toEqual([0, 1000, 3000, 7000, 12_000, 17_000]);
      await looks([17_500, 21_999, 22_000, 26_999, 27_000], true);
      expect(reads.slice(6)).toEqual([22_000, 27_000]);
    } finally {
      monotonic.mockRestore();
    }
  });

  it("read the floor again at the next look when a read failed", async () => {
    let fail = true;
    const oldest = new Date(Date.now() - 60_000);
    const floor = new DueFloor(async () => {
      if (fail) throw new Error("connection lost");
      return oldest;
    }, systemClock);
    await expect(floor.get()).rejects.toThrow("connection lost");
    fail = false;
    expect((await floor.get()).getTime()).toBe(oldest.getTime() - MARGIN_MS);
  });
});
