// A public send answers the same for every username, and runs the same statement,
// but a send that queues no mail (an unknown, disabled or pending username, an
// unknown organization) writes no code and no mail, and so answered sooner: about
// 0.3 ms at the median in `npm run bench:enumeration`, which a few hundred sends
// tell apart. So every send of a kind is answered no sooner than the 90th
// percentile of the recent sends of that kind that queued mail, to within an
// event loop's turn (lib/abort.ts sleepUntil): both kinds of answer leave at the
// same moment, but for the slowest tenth of sends, and a username gets too few
// sends a day to tell that tail apart.
import { sleepUntil } from "../lib/abort.ts";

/** The durations kept for each kind of send: enough to follow the load, few enough to stay current. */
const KEPT = 256;
/** The percentile of those durations that every send of the kind waits for. */
const HELD_TO = 0.9;
/** How many new durations make the percentile be taken again (a sort of KEPT numbers). */
const RECOMPUTE_EVERY = 32;

const NEVER = new AbortController().signal;

export interface AnswerTimesOptions {
  /** Milliseconds, monotonic. */
  now?: () => number;
  /** Resolves at `due` (a `now()` time), or when `signal` aborts. */
  waitUntil?: (due: number, signal: AbortSignal) => Promise<void>;
}

interface Recent {
  ms: number[];
  next: number;
  sinceComputed: number;
  heldToMs: number;
}

export class AnswerTimes {
  readonly #recent = new Map<string, Recent>();
  readonly #waitUntil: (due: number, signal: AbortSignal) => Promise<void>;
  /** When a send starts: what `record` and `hold` are given back. */
  readonly now: () => number;

  constructor(opts: AnswerTimesOptions = {}) {
    this.now = opts.now ?? (() => performance.now());
    this.#waitUntil = opts.waitUntil ?? sleepUntil;
  }

  /** A send of `kind` that queued mail, started at `startedAt`, has done its work. */
  record(kind: string, startedAt: number): void {
    const ms = this.now() - startedAt;
    let recent = this.#recent.get(kind);
    if (!recent) this.#recent.set(kind, (recent = { ms: [], next: 0, sinceComputed: 0, heldToMs: 0 }));
    recent.ms[recent.next] = ms;
    recent.next = (recent.next + 1) % KEPT;
    // Every one of the first durations counts at once; then the percentile moves with the load.
    if (++recent.sinceComputed >= RECOMPUTE_EVERY || recent.ms.length < RECOMPUTE_EVERY) {
      recent.sinceComputed = 0;
      const sorted = recent.ms.toSorted((a, b) => a - b);
      recent.heldToMs = sorted[Math.floor(HELD_TO * (sorted.length - 1))]!;
    }
  }

  /**
   * A send of `kind`, started at `startedAt`, has done its work (and was recorded if it
   * queued mail): resolves once it has taken as long as the kind's percentile (at once
   * while no send of the kind queued mail yet), or when `signal` aborts.
   */
  hold(kind: string, startedAt: number, signal: AbortSignal = NEVER): Promise<void> {
    const due = startedAt + (this.#recent.get(kind)?.heldToMs ?? 0);
    return due > this.now() ? this.#waitUntil(due, signal) : Promise.resolve();
  }
}
