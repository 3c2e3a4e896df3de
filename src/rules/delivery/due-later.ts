// Messages of the delivery API that become due later than now: a failed delivery's
// retry. Nothing is queued at that time to wake a waiting claim, so the server that
// recorded the failure rings for the message at its time, as for one it queues: its
// own waiting claims are woken, and other servers' through the announcement. Without
// it a retried text waited for the next Claim: up to a whole wait (about 9 s with the
// default RPC_TIMEOUT) after its time. One timer, for the earliest; stop() ends it,
// and what a server remembers is forgotten when it stops (the next Claim finds it).
import type { ApiChannel } from "../../domain/outbox.ts";
import type { Clock } from "../../domain/clock.ts";

/** Retries remembered at most; one past them (earlier or not) is found by the next claim, as without this. */
const MAX_PENDING = 10_000;
/** Rung at least this much after their time: a timer may fire early, and another server's clock may be a little behind. */
const LATE_MS = 20;
/** How long after the earliest the timer rings: those due within it of each other are rung together. */
const GATHER_MS = 20;

export class DueLater {
  /** By the process's monotonic clock (performance.now()): the server's clock may be a test's, standing still. */
  #pending: { channel: ApiChannel; at: number }[] = [];
  readonly #ring: (channels: ApiChannel[]) => void;
  readonly #clock: Clock;
  #timer: NodeJS.Timeout | undefined;
  #timerAt = Infinity;
  #stopped = false;

  /** `ring`: messages on these channels (one named per message) are due now. */
  constructor(ring: (channels: ApiChannel[]) => void, clock: Clock) {
    this.#ring = ring;
    this.#clock = clock;
  }

  /** A message on this channel becomes due at `at` (by the server's clock). */
  add(channel: ApiChannel, at: Date): void {
    if (this.#stopped || this.#pending.length >= MAX_PENDING) return;
    const due = performance.now() + Math.max(0, at.getTime() - this.#clock.now().getTime()) + LATE_MS;
    this.#pending.push({ channel, at: due });
    if (due + GATHER_MS < this.#timerAt) this.#arm(due + GATHER_MS);
  }

  /** Forgets every message and ends the timer; later ones are not remembered. */
  stop(): void {
    this.#stopped = true;
    this.#pending = [];
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  /** Messages remembered, not yet rung for. */
  get pending(): number {
    return this.#pending.length;
  }

  #arm(at: number): void {
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, at - performance.now()));
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = performance.now();
    const due = this.#pending.filter((p) => p.at <= now);
    this.#pending = this.#pending.filter((p) => p.at > now);
    const next = this.#pending.reduce((min, p) => Math.min(min, p.at), Infinity);
    if (next < Infinity) this.#arm(next + GATHER_MS);
    if (due.length) this.#ring(due.map((p) => p.channel));
  }
}
