// What the rules report as they work, for whoever counts it (the server's
// metrics, server/ops/metrics.ts): the rules know nothing of Prometheus.
import type { Purpose } from "../domain/purpose.ts";

/** What the rate limits report. */
export interface LimitEvents {
  /**
   * A request refused after it counted its hits (it raced others past the check)
   * could not take them back: they count until their windows end.
   */
  takeBackFailed(err: Error): void;
}

export interface CodeEvents extends LimitEvents {
  issued(purpose: Purpose, mailed: boolean): void;
  verified(purpose: Purpose): void;
  /** A wrong guess, or a verification of an expired, used or unknown code. */
  failed(purpose: Purpose): void;
  /** A code that died of too many wrong guesses. */
  locked(purpose: Purpose): void;
}

/** Once per mail and attempt. */
export interface CourierEvents {
  sent(purpose: Purpose): void;
  /** A failed attempt that will be tried again. */
  retried(purpose: Purpose): void;
  /** A mail given up on after its last attempt. */
  abandoned(purpose: Purpose): void;
}

/** Once per tick of a process's retention timer. */
export interface RetentionEvents {
  /** pruned: this process took the turn and pruned; skipped: a run holds the turn (another process's, or this one's still going); failed: pruning failed. */
  ran(outcome: RetentionOutcome): void;
}

export const retentionOutcomes = ["pruned", "skipped", "failed"] as const;
export type RetentionOutcome = (typeof retentionOutcomes)[number];
