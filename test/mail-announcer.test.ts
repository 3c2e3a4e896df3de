// The announcement of queued mail (rules/courier/announcer.ts) costs PostgreSQL one
// notification at a time however many sends queue mail, not one per login code; it
// leaves nothing running once closed; and an outage is logged once, not per send.
// The statements go to a stand-in Sql that answers when the test says: what is
// checked is how many the announcer issues, and when, not what PostgreSQL does with
// them (test/courier-wake.test.ts runs the real NOTIFY and LISTEN).
import { describe, expect, it, vi } from "vitest";
import { MailQueuedAnnouncer } from "../src/rules/courier/announcer.ts";
import { createLogger } from "../src/lib/log.ts";
import type { Row, Sql } from "../src/store/sql.ts";
import { announcementPayload, MAIL_QUEUED_CHANNEL, readAnnouncement } from "../src/store/mail-queued.ts";

/** An Sql whose statements are noted and settled by the test, one by one. */
function heldSql() {
  const statements: { text: string; params: readonly unknown[]; settle: (err?: Error) => void }[] = [];
  const sql: Sql = {
    query<T extends Row>(text: string, params: readonly unknown[] = []): Promise<T[]> {
      return new Promise<T[]>((resolve, reject) => statements.push({ text, params, settle: (err) => (err ? reject(err) : resolve([])) }));
    },
    transaction: () => Promise.reject(new Error("not used")),
  };
  return { sql, statements };
}

describe("announcing queued mail", () => {
  it("sends one notification for the mail of many sends, one more for those queued while it was out, then none", async () => {
    const { sql, statements } = heldSql();
    const announcer = new MailQueuedAnnouncer({ sql, log: createLogger("silent") });
    for (let i = 0; i < 100; i++) announcer.queued(["smtp"]);
    expect(statements).toHaveLength(1);
    expect(statements[0].params).toEqual([MAIL_QUEUED_CHANNEL, `${announcer.tag}:smtp`]);
    statements[0].settle();
    // The 99 sends queued while the first was out: one more notification, after the gap.
    await vi.waitFor(() => expect(statements).toHaveLength(2));
    statements[1].settle();
    // Nothing queued since: the loop ends, and the next send is announced at once.
    await vi.waitFor(async () => {
      announcer.queued(["smtp"]);
      expect(statements).toHaveLength(3);
    });
    statements[2].settle();
    await announcer.close();
    expect(statements).toHaveLength(3);
  });

  it("names itself and the channels messages were queued on, all those queued while one notification was out in the next", async () => {
    const { sql, statements } = heldSql();
    const announcer = new MailQueuedAnnouncer({ sql, log: createLogger("silent") });
    announcer.queued(["sms"]);
    announcer.queued(["sms"]);
    announcer.queued(["smtp", "mail_api"]);
    statements[0].settle();
    await vi.waitFor(() => expect(statements).toHaveLength(2));
    statements[1].settle();
    const closed = announcer.close();
    expect(statements.map((s) => readAnnouncement(s.params[1] as string))).toEqual([
      { from: announcer.tag, channels: new Set(["sms"]) },
      { from: announcer.tag, channels: new Set(["mail_api", "sms", "smtp"]) },
    ]);
    await closed;
  });

  it("once closed, announces nothing more, even for mail queued while its last notification was out", async () => {
    const { sql, statements } = heldSql();
    const announcer = new MailQueuedAnnouncer({ sql, log: createLogger("silent") });
    announcer.queued(["smtp"]);
    announcer.queued(["smtp"]);
    const closed = announcer.close();
    statements[0].settle();
    await closed;
    announcer.queued(["smtp"]);
    expect(statements).toHaveLength(1);
  });

  it("announces the next send at once once its loop is over, and ends its wait between two notifications when closed", async () => {
    const { sql, statements } = heldSql();
    const announcer = new MailQueuedAnnouncer({ sql, log: createLogger("silent") });
    // Only the announcer's own timers are faked: what is checked is which it leaves armed.
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      announcer.queued(["smtp"]);
      statements[0].settle();
      await vi.advanceTimersByTimeAsync(0);
      expect(vi.getTimerCount()).toBe(1); // its wait before another notification
      await vi.advanceTimersByTimeAsync(20);
      // Nothing was queued meanwhile: no notification, no timer, and the next send's goes out at once.
      expect(statements).toHaveLength(1);
      expect(vi.getTimerCount()).toBe(0);
      announcer.queued(["smtp"]);
      expect(statements).toHaveLength(2);
      statements[1].settle();
      await vi.advanceTimersByTimeAsync(0);
      expect(vi.getTimerCount()).toBe(1);
      // Fake time stands still: close resolves only because it ends the wait itself.
      await announcer.close();
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it("logs a failing database once, not at every announcement, and again after it recovered", async () => {
    const { sql, statements } = heldSql();
    const log = createLogger("silent");
    const warn = vi.spyOn(log, "warn");
    const announcer = new MailQueuedAnnouncer({ sql, log });
    const down = new Error("connection refused");
    announcer.queued(["smtp"]);
    for (let n = 1; n <= 3; n++) {
      statements[n - 1].settle(down);
      await vi.waitFor(async () => {
        announcer.queued(["smtp"]);
        expect(statements).toHaveLength(n + 1);
      });
    }
    expect(warn).toHaveBeenCalledTimes(1);
    statements[3].settle();
    await vi.waitFor(async () => {
      announcer.queued(["smtp"]);
      expect(statements).toHaveLength(5);
    });
    statements[4].settle(down);
    await vi.waitFor(() => expect(warn).toHaveBeenCalledTimes(2));
    // The sends the waits above made may have one more notification out: closing waits for it.
    const closed = announcer.close();
    for (const s of statements) s.settle();
    await closed;
  });

  it("reads an empty payload, from a server before payloads, as courier mail, and one it cannot read as every channel's", () => {
    expect(readAnnouncement("")).toEqual({ from: undefined, channels: new Set(["smtp"]) });
    expect(readAnnouncement(announcementPayload("0a1b2c", ["sms", "mail_api"]))).toEqual({ from: "0a1b2c", channels: new Set(["sms", "mail_api"]) });
    // A later version's channel, or format: waking too many costs a look; waking nobody, a message's wait.
    expect(readAnnouncement("0a1b2c:sms,push")).toEqual({ from: "0a1b2c", channels: new Set(["smtp", "mail_api", "sms"]) });
    expect(readAnnouncement('{"v":2}')).toEqual({ from: undefined, channels: new Set(["smtp", "mail_api", "sms"]) });
  });
});
