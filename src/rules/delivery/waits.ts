// The delivery API's waiting claims (ClaimRequest.wait): a claim that found nothing
// due waits for a message of the API's channels to be queued, by this server
// (wake) or by another on the database (its announcement, store/mail-queued.ts,
// heard on a connection opened for the first waiting claim), then claims again.
// Every wait ends, and leaves no timer or listener behind: when woken, at its
// time, when its call ends, or when the server stops.
import type { Logger } from "../../lib/log.ts";
import { listenMailQueued } from "../../store/mail-queued.ts";
import type { Orm } from "../../store/orm.ts";

export interface Hearing {
  close(): Promise<void>;
}

/** A wait for messages, taken before a look for them, so that one queued during the look is not missed. */
export interface WaitTicket {
  /**
   * Resolves true once woken since the ticket was taken (at once if it was
   * already), false after `ms`, once `signal` aborts, or once the waits stop.
   */
  wait(ms: number, signal: AbortSignal): Promise<boolean>;
  /** Gives the ticket up (a ticket that waited is given up already). */
  drop(): void;
}

export class DeliveryWaits {
  readonly #wakers = new Set<() => void>();
  /** Starts hearing of messages that other servers queue; it calls `wake` for each. */
  readonly #hear: ((wake: () => void) => Promise<Hearing>) | undefined;
  #hearing: Promise<Hearing> | undefined;
  #stopped = false;
  #waiting = 0;

  constructor(hear?: (wake: () => void) => Promise<Hearing>) {
    this.#hear = hear;
  }

  /** Resolves once messages queued by other servers are heard: the first waiting claim starts hearing them. */
  async ready(): Promise<void> {
    if (!this.#hear || this.#stopped) return;
    this.#hearing ??= this.#hear(() => this.wake());
    await this.#hearing.catch(() => {});
  }

  ticket(): WaitTicket {
    let woken = false;
    let settle: (() => void) | undefined;
    const waker = () => {
      woken = true;
      settle?.();
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
          if (woken || signal.aborted || this.#stopped || ms <= 0) return answer();
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

  /** Messages of the delivery API's channels were queued (and committed): every waiting claim looks again. */
  wake(): void {
    for (const waker of [...this.#wakers]) waker();
  }

  /** Ends every wait now, and any later one at once; stops hearing other servers. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.wake();
    const hearing = await this.#hearing?.catch(() => undefined);
    await hearing?.close();
  }

  /** The claims waiting now (having looked and found nothing). */
  get waiting(): number {
    return this.#waiting;
  }
}

/** Hearing the messages for the delivery API that other servers on the database queue (on PGlite, nothing to hear). */
export function hearQueuedMessages(orm: Orm, log: Logger): (wake: () => void) => Promise<Hearing> {
  return (wake) =>
    listenMailQueued(orm, {
      queued: (claimants) => {
        if (claimants.has("api")) wake();
      },
      error: (err) => log.warn({ err }, "the connection listening for queued messages broke; opening it again (meanwhile waiting claims hear only this server's)"),
    });
}
