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

/**
 * The current window of every limit of every key. Two limits of one key with the
 * same window length share its counter, under the smaller maximum: as two rows of
 * one counter, they made the statement that counts them fail (an upsert cannot
 * change a row twice), and a failed count let a wrong guess through uncounted.
 * The settings refuse such pairs; settings stored before that rule may hold one.
 */
export function windows(keys: readonly LimitedKey[], now: number): Window[] {
  const out = new Map<string, Window>();
  for (const k of keys) {
    for (const l of k.limits) {
      const key = `${k.key}|${l.windowMs}`;
      const same = out.get(key);
      if (same) {
        same.max = Math.min(same.max, l.max);
        continue;
      }
      const start = Math.floor(now / l.windowMs) * l.windowMs;
      out.set(key, { key, start, end: start + l.windowMs, max: l.max });
    }
  }
  // In one order whatever the settings' order: the statements that count them lock their counters in it.
  return [...out.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
