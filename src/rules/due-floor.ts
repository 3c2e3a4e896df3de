// Where the courier and the delivery API start their looks for due mail.
//
// They look along partial indexes of courier_message's queued mail, oldest due
// first. Each mail that leaves the queue leaves a dead entry at the head of those
// indexes, which only a VACUUM of courier_message removes: on a table that keeps a
// week of mail, the default autovacuum comes after millions of changes. Every look
// walked them (2.5 more blocks per thousand mails sent since the last vacuum, 19
// with a snapshot held open elsewhere; 2,244 blocks per look in one bench run).
//
// So a look starts at a floor: the oldest due time of the queued mail it is for,
// less a margin, read again every REFRESH_MS, and sooner after looks that found
// nothing (MIN_REFRESH_MS after the first, twice as long after each next one, up to
// REFRESH_MS: an idle courier does not walk the dead entries at every poll). The
// reads walk the dead entries; the looks between them, only those of the mail sent
// since the oldest one queued then. Below the floor no mail is queued, short of the
// margin: a retry is due later than now, a claimed mail stays queued where it was
// (the read counts it), and a send dates its mail shortly before it commits. A mail
// dated below it (a send that took longer than the margin from its start to its
// commit, a server whose clock is behind by more, a row written by hand) waits for
// the next read: it is late, never lost.
import type { Clock } from "../domain/clock.ts";

/** How often the floor is read again while the looks find mail. */
const REFRESH_MS = 5_000;
/** How soon after the last read a look that found nothing has the floor read again (doubled for each further such look). */
const MIN_REFRESH_MS = 1_000;
/** How far below the oldest queued mail's due time (or now, with none) the floor lies. */
export const MARGIN_MS = 2_000;

export class DueFloor {
  #floor: Date | undefined;
  /** When it was read, by the process's monotonic clock (the server's clock may be a test's, standing still). */
  #readAt = 0;
  /** A look since the last read found nothing. */
  #missed = false;
  /** Reads in a row that a look finding nothing brought about, with no look finding mail since. */
  #quietReads = 0;
  #reading: Promise<Date> | undefined;
  readonly #oldest: () => Promise<Date | null>;
  readonly #clock: Clock;

  /** `oldest`: the earliest due time of the queued mail the looks are for, or null with none. */
  constructor(oldest: () => Promise<Date | null>, clock: Clock) {
    this.#oldest = oldest;
    this.#clock = clock;
  }

  /** The floor, read again when it is old enough for the looks' luck. */
  async get(): Promise<Date> {
    const age = performance.now() - this.#readAt;
    const refreshMs = this.#missed ? Math.min(MIN_REFRESH_MS * 2 ** this.#quietReads, REFRESH_MS) : REFRESH_MS;
    if (this.#floor && age < refreshMs) return this.#floor;
    this.#reading ??= this.read().finally(() => (this.#reading = undefined));
    return this.#reading;
  }

  /** What a look from the floor found: nothing (there may be mail below it), or some. */
  looked(found: boolean): void {
    this.#missed = !found;
    if (found) this.#quietReads = 0;
  }

  private async read(): Promise<Date> {
    const startedAt = performance.now();
    const now = this.#clock.now().getTime();
    const afterMiss = this.#missed;
    const oldest = await this.#oldest();
    this.#floor = new Date(Math.min(oldest?.getTime() ?? now, now) - MARGIN_MS);
    this.#readAt = startedAt;
    if (afterMiss) this.#quietReads++;
    this.#missed = false;
    return this.#floor;
  }
}
