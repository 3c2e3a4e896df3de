/** How the codes of one purpose look and live. */
export interface CodePolicy {
  length: number;
  alphabet: string;
  lifespanMs: number;
  /** Attempts (right or wrong) before a code dies. */
  maxAttempts: number;
}

/** At most `max` events per `windowMs` (fixed windows). */
export interface Limit {
  max: number;
  windowMs: number;
}
