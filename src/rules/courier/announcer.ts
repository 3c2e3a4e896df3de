// A process without a courier of its own tells the couriers elsewhere that it
// queued mail (store/mail-queued.ts), so that an idle one sends it now rather than
// at its next poll. One notification at a time, then at most one per GAP_MS
// however many sends queued mail meanwhile: under load a few dozen a second for
// PostgreSQL to pass on, not one per login code, for a mail at most GAP_MS later.
import type { Logger } from "../../lib/log.ts";
import { announceMailQueued } from "../../store/mail-queued.ts";
import type { Sql } from "../../store/sql.ts";

const GAP_MS = 20;

export class MailQueuedAnnouncer {
  readonly #sql: Sql;
  readonly #log: Logger;
  /** The announcing loop, while one runs. */
  #running: Promise<void> | undefined;
  /** Mail was queued since the loop's last announcement. */
  #again = false;
  #closed = false;
  #gap: { timer: NodeJS.Timeout; end: () => void } | undefined;
  /** The last announcement failed: the next failure is not logged again. */
  #failing = false;

  constructor(deps: { sql: Sql; log: Logger }) {
    this.#sql = deps.sql;
    this.#log = deps.log;
  }

  /** Mail was queued, and its statement committed. */
  queued(): void {
    if (this.#closed) return;
    this.#again = true;
    this.#running ??= this.#announce().finally(() => (this.#running = undefined));
  }

  async #announce(): Promise<void> {
    while (this.#again && !this.#closed) {
      this.#again = false;
      try {
        await announceMailQueued(this.#sql);
        this.#failing = false;
      } catch (err) {
        if (!this.#failing) this.#log.warn({ err }, "could not tell the couriers that mail was queued: they find it at their next poll");
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
