// The slots of streaming calls (health Watch, reflection, WatchEvents): at most
// MAX_STREAMS open at once in this process, those without an admin token at most
// half of them and MAX_STREAMS_PER_ADDRESS from one client address. A stream that
// finds no slot free waits a moment for one: a client that cancels one Watch and
// opens the next may send the new stream's HEADERS before the old one's reset, and
// even in one read the old slot is given back only after that read's callbacks.
import { Code, ConnectError } from "@connectrpc/connect";
import { CountsByKey } from "../lib/counts.ts";
import { apiError, Reason } from "../services/errors.ts";

/** How long a stream that finds no slot free waits for one before it is refused (a stall of the event loop included). */
const SLOT_WAIT_MS = 250;
/**
 * Streams waiting at most, in all and from one address: past either, a stream is
 * refused at once, so that one source cannot fill the wait.
 */
const MAX_WAITING = 64;
const MAX_WAITING_PER_ADDRESS = 2;

type Refusal = "all" | "anonymous" | "address";

/** A take waiting for a slot; woken by a release it could use, its timeout, or its ending. */
interface Waiter {
  admin: boolean;
  address: string;
  wake(): void;
}

export class StreamSlots {
  #open = 0;
  #anonymous = 0;
  /** Streams open without an admin token, by client address (addressKey). */
  readonly #anonymousFrom = new CountsByKey();
  readonly max: number;
  /**
   * Streams opened without an admin token (health Watch, reflection) hold at most
   * half of the slots: however many anyone opens, the rest stay free for
   * administrators' streams (WatchEvents).
   */
  readonly anonymousMax: number;
  /** And one address at most this many of them, so that one source cannot hold that half. */
  readonly anonymousPerAddress: number;
  readonly #waitMs: number;
  readonly #ending = new AbortController();
  /** Takes waiting for a slot, in their order of arrival. */
  readonly #waiting = new Set<Waiter>();
  readonly #waitingFrom = new CountsByKey();

  constructor(max: number, perAddress: number, waitMs = SLOT_WAIT_MS) {
    this.max = max;
    this.anonymousMax = Math.ceil(max / 2);
    this.anonymousPerAddress = perAddress;
    this.#waitMs = waitMs;
  }

  /** Aborts when the server stops: streams, unlike unary calls, are not waited for. */
  get ending(): AbortSignal {
    return this.#ending.signal;
  }

  endAll(): void {
    this.#ending.abort(apiError(Code.Unavailable, Reason.unavailable, "the server is shutting down; open the stream again"));
  }

  /** Streams waiting for a slot now. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Streams from `address` waiting for a slot now. */
  waitingFrom(address: string): number {
    return this.#waitingFrom.of(address);
  }

  /**
   * Takes a slot for a caller (an admin token's, or anyone's from `address`) and answers its
   * release (idempotent). When none is free, waits up to SLOT_WAIT_MS for one, then throws
   * resource_exhausted; a caller that leaves meanwhile gets its signal's reason, and no slot,
   * and so does one still waiting when the server stops.
   */
  async take(admin: boolean, address: string, signal: AbortSignal): Promise<() => void> {
    const refusal = this.#refusal(admin, address);
    if (refusal) {
      this.#throwIfEnded(signal);
      if (this.#waiting.size >= MAX_WAITING || this.#waitingFrom.of(address) >= MAX_WAITING_PER_ADDRESS) throw this.#error(refusal);
      await this.#slotFreed(admin, address, signal);
    }
    // Gone while a slot came free: the slot stays for the next caller.
    this.#throwIfEnded(signal);
    this.#open++;
    if (!admin) this.#anonymous++;
    const releaseAddress = admin ? undefined : this.#anonymousFrom.add(address);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#open--;
      if (!admin) this.#anonymous--;
      releaseAddress?.();
      // Only those the freed slot may let in; of them, the first to run takes it and the others wait on.
      for (const waiter of this.#waiting) if (!this.#refusal(waiter.admin, waiter.address)) waiter.wake();
    };
  }

  /** Throws the reason of the caller's leaving, or of the server's stopping. */
  #throwIfEnded(signal: AbortSignal): void {
    for (const ended of [signal, this.#ending.signal]) {
      if (ended.aborted) throw ended.reason instanceof ConnectError ? ended.reason : new ConnectError("the call ended before a stream slot came free", Code.Canceled);
    }
  }

  /** Why a caller could not take a slot now; undefined when it can. */
  #refusal(admin: boolean, address: string): Refusal | undefined {
    if (this.#open >= this.max) return "all";
    if (!admin && this.#anonymous >= this.anonymousMax) return "anonymous";
    if (!admin && this.#anonymousFrom.of(address) >= this.anonymousPerAddress) return "address";
    return undefined;
  }

  #error(refusal: Refusal): ConnectError {
    const message = {
      all: `this server has ${this.max} streams open, its limit; try again later`,
      anonymous: `this server has ${this.anonymousMax} streams open without an admin token, its limit for them; try again later`,
      address: `your address has ${this.anonymousPerAddress} streams open without an admin token, the limit for one address; close one or try again later`,
    }[refusal];
    return apiError(Code.ResourceExhausted, Reason.rateLimited, message);
  }

  /**
   * Waits until a slot this caller may take is free; throws resource_exhausted once
   * SLOT_WAIT_MS have passed without one, or the reason of the caller's leaving or of
   * the server's stopping. Its timer and listeners are armed once for the whole wait,
   * however many releases wake it, and nothing stays armed after it.
   */
  async #slotFreed(admin: boolean, address: string, signal: AbortSignal): Promise<void> {
    let wake = () => {};
    let timedOut = false;
    // Wakes the waiter's current wait: a release it may use, or its caller or the server ending.
    const poke = () => wake();
    const waiter: Waiter = { admin, address, wake: poke };
    const timer = setTimeout(() => {
      timedOut = true;
      wake();
    }, this.#waitMs);
    const ending = this.#ending.signal;
    const unwait = this.#waitingFrom.add(address);
    this.#waiting.add(waiter);
    signal.addEventListener("abort", poke, { once: true });
    ending.addEventListener("abort", poke, { once: true });
    try {
      // Each wake is looked at after it: wakes that come before the waiter runs again are one.
      for (;;) {
        await new Promise<void>((resolve) => (wake = resolve));
        this.#throwIfEnded(signal);
        const refusal = this.#refusal(admin, address);
        if (!refusal) return;
        if (timedOut) throw this.#error(refusal);
      }
    } finally {
      clearTimeout(timer);
      this.#waiting.delete(waiter);
      unwait();
      signal.removeEventListener("abort", poke);
      ending.removeEventListener("abort", poke);
    }
  }
}
