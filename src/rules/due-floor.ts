// Where the courier and the delivery API start their looks for due mail.
//
// They look along partial indexes of courier_message's queued mail, oldest due
// first. Each mail that leaves the queue leaves a dead entry at the head of those
// indexes, which only a VACUUM of courier_message removes: on a table that keeps a
// week of mail, the default autovacuum comes after millions of changes. Every look
// walked them (2.5 more blocks per thousand mails sent since the last vacuum, 19
// with a snapshot held open elsewhere; 2,244 blocks per look in one bench run).
//
// So a look starts at a floor: the oldest due time of the queued mail, less a
// margin, read again every REFRESH_MS, or after MIN_REFRESH_MS when a look found
// nothing. Only that read walks the dead entries. Below the floor there is no
// queued mail: a send dates its mail when it starts, within the margin of now; a
// retry is due later; a claimed mail was above the floor and stays where it was. A
// mail due earlier still (a server whose clock is behind by more than the margin,
// a send that took longer, a row written by hand) is found at the next read.
import type { Clock } from "../domain/clock.ts";

/** How often the floor is read again while the looks find mail. */
export const REFRESH_MS = 5_000;
/** How soon after the last read a look that found nothing has the floor read again. */
export const MIN_REFRESH_MS = 1_000;
/** How far below the oldest queued mail's due time (or now, with none) the floor lies. */
export const MARGIN_MS = 2_000;

export class DueFloor {
  #floor: Date | undefined;
  /** When it was read, by the process's monotonic clock (the server's clock may be a test's, standing still). */
  #readAt = 0;
  #missed = false;
  #reading: Promise<Date> | undefined;

  readonly #oldest: () => Promise<Date | null>;
  readonly #clock: Clock;

  /** `oldest`: the earliest due time of the queued mail the looks are for, or null with none. */
  constructor(oldest: () => Promise<Date | null>, clock: Clock) {
    this.#oldest = oldest;
    this.#clock = clock;
  }

  /** The floor, read again when it is old, or was missed and not quite so old. */
  async get(): Promise<Date> {
    const age = performance.now() - this.#readAt;
    if (this.#floor && age < REFRESH_MS && !(this.#missed && age >= MIN_REFRESH_MS)) return this.#floor;
    this.#reading ??= this.read().finally(() => (this.#reading = undefined));
    return this.#reading;
  }

  /** A look from the floor found nothing: there may be mail below it. */
  missed(): void {
    this.#missed = true;
  }

  private async read(): Promise<Date> {
    const startedAt = performance.now();
    const now = this.#clock.now().getTime();
    this.#missed = false;
    const oldest = await this.#oldest();
    this.#floor = new Date(Math.min(oldest?.getTime() ?? now, now) - MARGIN_MS);
    this.#readAt = startedAt;
    return this.#floor;
  }
}
