// Rate limits as fixed windows: a counter per (organization, key, window start).
import type { Limit } from "./policy.ts";

/** What one request counts against: a key (`send:login:jdoe@…`) and its limits. */
export interface LimitedKey {
  key: string;
  limits: Limit[];
}

/** The current window of one limit of one key. */
export interface Window {
  key: string;
  /** Milliseconds since the epoch. */
  start: number;
  end: number;
  max: number;
}

/** The current window of every limit of every key. */
export function windows(keys: readonly LimitedKey[], now: number): Window[] {
  return keys.flatMap((k) =>
    k.limits.map((l) => {
      const start = Math.floor(now / l.windowMs) * l.windowMs;
      return { key: `${k.key}|${l.windowMs}`, start, end: start + l.windowMs, max: l.max };
    }),
  );
}
