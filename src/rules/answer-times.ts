// A public send answers the same for every username, and runs the same statement,
// but a send that queues no mail (an unknown, disabled or pending username, an
// unknown organization) writes no code and no mail, and so answered sooner: about
// 0.3 ms at the median in `npm run bench:enumeration`, which a few hundred sends
// tell apart. A wrong guess that no live code takes, likewise, writes no attempt.
// So every call of a kind is held until the 90th percentile of the recent calls of
// that kind that did the work: both kinds of answer leave together, but for the
// slowest tenth, and a username gets too few sends a day to tell that tail apart.
// The calls that did work are timed in groups by what they did (a code or only a
// notice, bound or not), and a call is held to the slowest group's percentile: a
// caller who sends many of the cheaper kind cannot pull the hold below the dearer.
//
// The wait is armed when the call starts, not once its work is done: a timer waits
// at least a millisecond, counted from the event loop's cached millisecond, so a
// wait of "what is left" would keep a gap smaller than that. Armed at the start, for
// the same time whatever the account, it ends at the same moment for both.

/** The durations kept for each kind of call: enough to follow the load, few enough to stay current. */
const KEPT = 256;
/** The percentile of those durations that every call of the kind is held to. */
const HELD_TO = 0.9;
/** How many new durations make the percentile be taken again (a sort of KEPT numbers). */
const RECOMPUTE_EVERY = 32;
/**
 * Added to every wait: a timer counts from the event loop's cached time, which may be
 * most of a millisecond old when it is armed, so it can end that much early.
 */
const TIMER_SLACK_MS = 1;
/**
 * No call is held longer: a stretch of slow database work (a failover, or someone's
 * load) must not make every send wait for as long, until newer samples push it out.
 */
const MAX_HELD_MS = 250;

/** A wait of some milliseconds: `passed` resolves when they have; `cancel` clears it (and `passed` then never resolves). */
export interface Armed {
  passed: Promise<void>;
  cancel(): void;
}

const armTimer = (ms: number): Armed => {
  let timer: NodeJS.Timeout | undefined;
  const passed = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return { passed, cancel: () => clearTimeout(timer) };
};

/** One call's hold, armed at its start. */
export interface Hold {
  /** The call did the work (queued mail; a live code took the guess): its time so far joins its kind's, in the group of what it did. */
  record(group?: string): void;
  /** Resolves once the call has taken its kind's held time (at once when nothing was held). */
  passed(): Promise<void>;
  /** Clears the wait; idempotent. Every call's hold is cancelled when the call ends, however it ends. */
  cancel(): void;
}

interface Recent {
  ms: number[];
  next: number;
  sinceComputed: number;
  heldToMs: number;
}

export interface AnswerTimesOptions {
  /** Milliseconds, monotonic. */
  now?: () => number;
  arm?: (ms: number) => Armed;
}

export class AnswerTimes {
  /** By kind, then by group. */
  readonly #recent = new Map<string, Map<string, Recent>>();
  readonly #now: () => number;
  readonly #arm: (ms: number) => Armed;

  constructor(opts: AnswerTimesOptions = {}) {
    this.#now = opts.now ?? (() => performance.now());
    this.#arm = opts.arm ?? armTimer;
  }

  /** Starts a call of `kind`: held to the percentile of its slowest group, and to the longest hold while no call of the kind did the work yet. */
  hold(kind: string): Hold {
    const startedAt = this.#now();
    const groups = this.#recent.get(kind);
    // With no time to hold to yet (a process that just started; a kind that is seldom sent), a call held
    // to nothing would tell the first that does the work (a known username's) from the others.
    let heldToMs = groups ? 0 : MAX_HELD_MS;
    for (const group of groups?.values() ?? []) heldToMs = Math.max(heldToMs, group.heldToMs);
    const armed = heldToMs > 0 ? this.#arm(Math.min(heldToMs + TIMER_SLACK_MS, MAX_HELD_MS)) : undefined;
    return {
      record: (group = "") => this.#record(kind, group, this.#now() - startedAt),
      passed: () => armed?.passed ?? Promise.resolve(),
      cancel: () => armed?.cancel(),
    };
  }

  #record(kind: string, group: string, ms: number): void {
    let groups = this.#recent.get(kind);
    if (!groups) this.#recent.set(kind, (groups = new Map()));
    let recent = groups.get(group);
    if (!recent) groups.set(group, (recent = { ms: [], next: 0, sinceComputed: 0, heldToMs: 0 }));
    recent.ms[recent.next] = ms;
    recent.next = (recent.next + 1) % KEPT;
    // Every one of the first durations counts at once; then the percentile moves with the load.
    if (++recent.sinceComputed >= RECOMPUTE_EVERY || recent.ms.length <= RECOMPUTE_EVERY) {
      recent.sinceComputed = 0;
      const sorted = recent.ms.toSorted((a, b) => a - b);
      recent.heldToMs = sorted[Math.floor(HELD_TO * (sorted.length - 1))]!;
    }
  }
}
