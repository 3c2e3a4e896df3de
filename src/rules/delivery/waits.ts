// The delivery API's waiting claims (ClaimRequest.wait): a claim that found nothing
// due waits for a message of its channels to be queued, by this server (wake) or by
// another on the database (its announcement, store/mail-queued.ts, heard on a
// connection opened for the first waiting claim), then claims again. A message
// wakes one claim, not all that wait on its channel; a claim that cannot look for
// it hands the wake-up on. Other servers are told (announced) only of the messages
// no claim waiting here took. Every wait ends, and leaves no timer or listener behind:
// when woken, at its time, when its call ends, or when the server stops.
import type { ApiChannel, Channel } from "../../domain/outbox.ts";
import { sleep } from "../../lib/abort.ts";
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
   * time is left): the caller then looks again. False after `ms`, once `signal`
   * aborts, or once the waits stop.
   */
  wait(ms: number, signal: AbortSignal): Promise<boolean>;
  /**
   * Gives the ticket up (a ticket that waited is given up already). One woken hands
   * its wake-up on to the next waiting claim, unless its caller looks again.
   */
  drop(looksAgain?: boolean): void;
  /** The channels it was woken for: what the caller's next look is for. */
  readonly wokenFor: readonly Channel[];
}

interface Waker {
  channels: readonly ApiChannel[];
  /** The channels it was woken for (none when the waits stop): handed on if it ends without looking again. */
  wokenFor: Channel[] | undefined;
  /** Ends its claim's wait; set while the claim waits (it has looked and found nothing), unset while it still looks. */
  settle: (() => void) | undefined;
  /** Woken while still looking, its messages were told to other servers too: a hand-on stays here. */
  announced: boolean;
  wake(channels: readonly Channel[]): void;
}

export class DeliveryWaits {
  /** In the order the tickets were taken: of the claims on a channel, the first waiting one is woken, else the first still looking. */
  readonly #wakers = new Set<Waker>();
  /** Starts hearing of messages that other servers queue; it calls `wake` for each announcement. */
  readonly #hear: ((wake: (channels: ReadonlySet<Channel>) => void) => Promise<Hearing>) | undefined;
  #hearing: Promise<Hearing> | undefined;
  #heard = false;
  /** Aborted by stop(): ends the waits for hearing, and says the waits have stopped. */
  readonly #stop = new AbortController();
  #waiting = 0;
  /** Tells other servers' claims of messages no claim waiting here took. */
  readonly #elsewhere: ((channels: Channel[]) => void) | undefined;

  constructor(hear?: (wake: (channels: ReadonlySet<Channel>) => void) => Promise<Hearing>, elsewhere?: (channels: Channel[]) => void) {
    this.#hear = hear;
    this.#elsewhere = elsewhere;
  }

  /**
   * Resolves once messages queued by other servers are heard, or their listening
   * connection's first try failed (it is tried again, and says so once it listens):
   * the first waiting claim starts hearing them. Never rejects.
   */
  async ready(): Promise<void> {
    const hear = this.#hear;
    if (!hear || this.#stopped) return;
    // A failure to start is tried again by the next waiting claim (meanwhile, only this server's messages are heard).
    // Announced messages wake claims here only: every other server heard them too.
    this.#hearing ??= (async () => hear((channels) => void this.#wakeHere([...channels])))().then(
      (hearing) => ((this.#heard = true), hearing),
      (err: unknown) => {
        this.#hearing = undefined;
        throw err;
      },
    );
    await this.#hearing.catch(() => {});
  }

  /** ready() has answered (or there is nothing to hear): a look from now on misses no announcement that reaches this server. */
  get hearing(): boolean {
    return !this.#hear || this.#heard;
  }

  /** Resolves true once hearing (see ready()), false after `ms`, once `signal` aborts, or once the waits stop. */
  async heard(ms: number, signal: AbortSignal): Promise<boolean> {
    const ready = this.ready();
    if (this.hearing) return true;
    if (ms <= 0 || signal.aborted || this.#stopped) return false;
    const over = new AbortController();
    const heard = await Promise.race([ready.then(() => true), sleep(ms, AbortSignal.any([signal, this.#stop.signal, over.signal])).then(() => false)]);
    over.abort();
    return heard && !this.#stopped;
  }

  /**
   * A ticket for messages of these channels. A ticket woken looks again through
   * its claim (wait() answers true); one that ends otherwise (its call ended, its
   * time was up, its look found other messages) hands its wake-up on to the next.
   */
  ticket(channels: readonly ApiChannel[]): WaitTicket {
    const waker: Waker = {
      channels,
      wokenFor: undefined,
      settle: undefined,
      announced: false,
      wake(woken) {
        (waker.wokenFor ??= []).push(...woken);
        waker.settle?.();
      },
    };
    let looksAgain = false;
    const end = () => {
      if (!this.#wakers.delete(waker)) return;
      if (!waker.wokenFor?.length || looksAgain || this.#stopped) return;
      if (waker.announced) this.#wakeHere(waker.wokenFor);
      else this.wake(waker.wokenFor);
    };
    this.#wakers.add(waker);
    return {
      wait: (ms, signal) =>
        new Promise<boolean>((resolve) => {
          const answer = () => {
            // Out of time, a wake-up that came during the look is handed on.
            looksAgain = ms > 0 && waker.wokenFor !== undefined && !signal.aborted && !this.#stopped;
            end();
            resolve(looksAgain);
          };
          if (ms <= 0 || waker.wokenFor || signal.aborted || this.#stopped) return answer();
          const timer = setTimeout(() => waker.settle!(), ms);
          this.#waiting++;
          waker.settle = () => {
            waker.settle = undefined;
            this.#waiting--;
            clearTimeout(timer);
            signal.removeEventListener("abort", onAbort);
            answer();
          };
          const onAbort = () => waker.settle?.();
          signal.addEventListener("abort", onAbort, { once: true });
        }),
      drop(again = false) {
        looksAgain ||= again;
        end();
      },
      get wokenFor() {
        return waker.wokenFor ?? [];
      },
    };
  }

  /**
   * Messages were queued (and committed) or given back here, one channel named
   * per message: for each, the claim waiting longest on that channel looks again.
   * With none waiting, the oldest still looking is woken (it looks again once done)
   * and other servers are told of the message as well.
   */
  wake(channels: readonly Channel[]): void {
    const untaken = this.#wakeHere(channels);
    if (untaken.length) this.#elsewhere?.(untaken);
  }

  /** Wakes a claim here for each channel named; answers those no waiting claim here took. */
  #wakeHere(channels: readonly Channel[]): Channel[] {
    const untaken: Channel[] = [];
    for (const channel of channels) {
      let waiting: Waker | undefined;
      let looking: Waker | undefined;
      for (const waker of this.#wakers) {
        if (waker.wokenFor || !waker.channels.includes(channel as ApiChannel)) continue;
        if (waker.settle) {
          waiting = waker;
          break;
        }
        looking ??= waker;
      }
      if (waiting) {
        waiting.wake([channel]);
      } else {
        untaken.push(channel);
        if (looking) {
          looking.announced = true;
          looking.wake([channel]);
        }
      }
    }
    return untaken;
  }

  /** Ends every wait now, and any later one at once; answers once it no longer hears other servers. */
  stop(): Promise<void> {
    this.#stop.abort();
    for (const waker of [...this.#wakers]) waker.wake([]);
    return (this.#hearing ?? Promise.resolve(undefined)).then(
      (hearing) => hearing?.close(),
      () => undefined,
    );
  }

  get #stopped(): boolean {
    return this.#stop.signal.aborted;
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
