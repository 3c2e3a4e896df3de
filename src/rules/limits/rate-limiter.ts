// The limits of a request: an organization's overrides over the server's, and
// how long a request over them must wait.
import { jsonDurationMs, type LimitSettings } from "../../domain/organization.ts";
import type { Limit } from "../../domain/policy.ts";
import { windows, type LimitedKey } from "../../domain/rate-limits.ts";
import type { Clock } from "../../domain/clock.ts";
import { countHits } from "../../store/rate-limits.ts";
import type { Sql } from "../../store/sql.ts";
import type { LimitEvents } from "../events.ts";

/** An organization's override if it has one, else the server's limits. */
export function limitsOf(override: readonly LimitSettings[] | undefined, fallback: Limit[]): Limit[] {
  if (!override?.length) return fallback;
  return override.map((l) => ({ max: l.max, windowMs: jsonDurationMs(l.window) ?? 1000 }));
}

export class RateLimiter {
  private readonly sql: Sql;
  private readonly clock: Clock;
  private readonly events: LimitEvents;
  constructor(sql: Sql, clock: Clock, events: LimitEvents) {
    this.sql = sql;
    this.clock = clock;
    this.events = events;
  }

  /**
   * Counts one hit on every key and answers how long until the request would be
   * within all limits: 0 when it is within them now.
   */
  async hit(orgId: string, keys: LimitedKey[]): Promise<number> {
    const now = this.clock.now().getTime();
    const rows = windows(keys, now);
    const { over, takeBackError } = await countHits(this.sql, orgId, rows);
    if (takeBackError) this.events.takeBackFailed(takeBackError);
    let waitMs = 0;
    for (const r of rows) if (over.has(r.key)) waitMs = Math.max(waitMs, r.end - now);
    return waitMs;
  }
}
