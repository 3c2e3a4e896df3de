// The delivery API's waiting claims (ClaimRequest.wait): a claim that found nothing
// due waits for a message of its channels to be queued, by this server (wake) or by
// another on the database (its announcement, store/mail-queued.ts, heard on a
// connection opened for the first waiting claim), then claims again. Every wait
// ends, and leaves no timer or listener behind: when woken, at its time, when its
// call ends, or when the server stops.
import type { ApiChannel, Channel } from "../../domain/outbox.ts";
import type { Logger } from "../../lib/log.ts";
import { listenMailQueued } from "../../store/mail-queued.ts";
import type { Orm } from "../../store/orm.ts";

export interface Hearing {
  close(): Promise<void>;
}

/** A wait for messages, taken before a look for them, so that one queued during the look is not missed. */
export interface WaitTicket {
  /**
   * Resolves true once woken since the ticket was taken (at once if it was and
   * time is left), false after `ms`, once `signal` aborts, or once the waits stop.
   */
  wait(ms: number, signal: AbortSignal): Promise<boolean>;
  /** Gives the ticket up (a ticket that waited is given up already). */
  drop(): void;
}

interface Waker {
  channels: readonly ApiChannel[];
  wake(): void;
}

export class DeliveryWaits {
  readonly #wakers = new Set<Waker>();
  /** Starts hearing of messages that other servers queue; it calls `wake` for each announcement. */
  readonly #hear: ((wake: (channels: ReadonlySet<Channel>) => void) => Promise<Hearing>) | undefined;
  #hearing: Promise<Hearing> | undefined;
  #stopped = false;
  #waiting = 0;

  constructor(hear?: (wake: (channels: ReadonlySet<Channel>) => void) => Promise<Hearing>) {
    this.#hear = hear;
  }

  /** Resolves once messages queued by other servers are heard: the first waiting claim starts hearing them. */
  async ready(): Promise<void> {
    if (!this.#hear || this.#stopped) return;
    // A failure to start is tried again by the next waiting claim (meanwhile, only this server's messages are heard).
    this.#hearing ??= this.#hear((channels) => this.wake([...channels])).catch((err: unknown) => {
      this.#hearing = undefined;
      throw err;
    });
    await this.#hearing.catch(() => {});
  }

  /** A ticket for messages of these channels. */
  ticket(channels: readonly ApiChannel[]): WaitTicket {
    let woken = false;
    let settle: (() => void) | undefined;
    const waker: Waker = {
      channels,
      wake() {
        woken = true;
        settle?.();
      },
    };
    const drop = () => void this.#wakers.delete(waker);
    this.#wakers.add(waker);
    return {
      wait: (ms, signal) =>
        new Promise<boolean>((resolve) => {
          const answer = () => {
            drop();
            resolve(woken && !signal.aborted && !this.#stopped);
          };
          // Out of time, a wake-up that came during the look is for the next claim.
          if (ms <= 0) return void (drop(), resolve(false));
          if (woken || signal.aborted || this.#stopped) return answer();
          const timer = setTimeout(() => settle!(), ms);
          this.#waiting++;
          settle = () => {
            settle = undefined;
            this.#waiting--;
            clearTimeout(timer);
            signal.removeEventListener("abort", onAbort);
            answer();
          };
          const onAbort = () => settle?.();
          signal.addEventListener("abort", onAbort, { once: true });
        }),
      drop,
    };
  }

  /** Messages on these channels were queued (and committed), or given back: the claims waiting for any of them look again. */
  wake(channels: readonly Channel[]): void {
    for (const waker of [...this.#wakers]) if (waker.channels.some((c) => channels.includes(c))) waker.wake();
  }

  /** Ends every wait now, and any later one at once; answers once it no longer hears other servers. */
  stop(): Promise<void> {
    this.#stopped = true;
    for (const waker of [...this.#wakers]) waker.wake();
    return (this.#hearing ?? Promise.resolve(undefined)).then(
      (hearing) => hearing?.close(),
      () => undefined,
    );
  }

  /** The claims waiting now (having looked and found nothing). */
  get waiting(): number {
    return this.#waiting;
  }
}

/**
 * Hearing the messages that other servers on the database queue, for the delivery
 * API's channels (on PGlite, nothing to hear); `self` names this server's own
 * announcer, whose announcements it skips (it woke its claims directly).
 */
export function hearQueuedMessages(orm: Orm, log: Logger, self?: string): (wake: (channels: ReadonlySet<Channel>) => void) => Promise<Hearing> {
  return (wake) =>
    listenMailQueued(orm, {
      self,
      // Courier mail too: wake() wakes only the claims waiting on a channel announced.
      queued: wake,
      error: (err) => log.warn({ err }, "the connection listening for queued messages broke; opening it again (meanwhile waiting claims hear only this server's)"),
    }).catch((err: unknown) => {
      log.warn({ err }, "could not listen for queued messages: waiting claims hear only this server's until the next one tries again");
      throw err;
    });
}
