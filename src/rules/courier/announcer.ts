// A server tells the other processes on the database that it queued messages
// (store/mail-queued.ts): the couriers elsewhere when it has none of its own, so
// that an idle one sends the mail now rather than at its next poll; the delivery
// API's claims waiting on other servers, so that one answers. One notification at
// a time, then at most one per GAP_MS however many sends queued messages
// meanwhile: under load a few dozen a second for PostgreSQL to pass on, not one
// per login code, for a message at most GAP_MS later.
import type { Channel } from "../../domain/outbox.ts";
import type { Logger } from "../../lib/log.ts";
import { announceMailQueued, newAnnouncerTag } from "../../store/mail-queued.ts";
import type { Sql } from "../../store/sql.ts";

const GAP_MS = 20;

export class MailQueuedAnnouncer {
  readonly #sql: Sql;
  readonly #log: Logger;
  /** The announcing loop, while one runs. */
  #running: Promise<void> | undefined;
  /** The channels messages were queued on since the loop's last announcement. */
  readonly #pending = new Set<Channel>();
  /** Its name in its announcements: its own server skips them (it told its claimants directly). */
  readonly tag = newAnnouncerTag();
  #closed = false;
  #gap: { timer: NodeJS.Timeout; end: () => void } | undefined;
  /** The last announcement failed: the next failure is not logged again. */
  #failing = false;

  constructor(deps: { sql: Sql; log: Logger }) {
    this.#sql = deps.sql;
    this.#log = deps.log;
  }

  /** Messages on these channels were queued, and their statement committed. */
  queued(channels: readonly Channel[]): void {
    if (this.#closed || !channels.length) return;
    for (const c of channels) this.#pending.add(c);
    this.#running ??= this.#announce().finally(() => (this.#running = undefined));
  }

  async #announce(): Promise<void> {
    while (this.#pending.size && !this.#closed) {
      const channels = [...this.#pending].sort();
      this.#pending.clear();
      try {
        await announceMailQueued(this.#sql, this.tag, channels);
        this.#failing = false;
      } catch (err) {
        if (!this.#failing) this.#log.warn({ err }, "could not tell the other processes that messages were queued: couriers find them at their next poll, waiting claims at their next claim");
        this.#failing = true;
      }
      if (this.#closed) return;
      await new Promise<void>((end) => (this.#gap = { timer: setTimeout(end, GAP_MS), end }));
      this.#gap = undefined;
    }
  }

  /** Announces nothing more; answers once an announcement in flight is done. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#gap) {
      clearTimeout(this.#gap.timer);
      this.#gap.end();
    }
    await this.#running;
  }
}
