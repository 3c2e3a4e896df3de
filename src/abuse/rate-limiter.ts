// Rate limits kept in PostgreSQL, so that they hold across server instances.
// Fixed windows: a counter per (organization, key, window start); one statement
// counts a hit against every limit of a request and answers the counts.
import { Code } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
import type { RateLimit } from "../../gen/codegate/v1/types_pb.ts";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.ts";
import type { Clock } from "../clock.ts";
import type { Limit } from "../config/config.ts";
import type { Sql } from "../storage/sql.ts";
import { apiError, Reason } from "../transport/errors.ts";

export interface LimitedKey {
  key: string;
  limits: Limit[];
}

export interface Window {
  key: string;
  start: number;
  end: number;
  max: number;
}

/** The current window of every limit of every key. */
export function windows(keys: LimitedKey[], now: number): Window[] {
  return keys.flatMap((k) =>
    k.limits.map((l) => {
      const start = Math.floor(now / l.windowMs) * l.windowMs;
      return { key: `${k.key}|${l.windowMs}`, start, end: start + l.windowMs, max: l.max };
    }),
  );
}

/** An organization's override if it has one, else the server's limits. */
export function limitsOf(override: RateLimit[] | undefined, fallback: Limit[]): Limit[] {
  if (!override?.length) return fallback;
  return override.map((l) => ({ max: l.max, windowMs: l.window ? Number(durationMs(l.window)) : 1000 }));
}

export function rateLimited(retryAfterMs: number) {
  const err = apiError(Code.ResourceExhausted, Reason.rateLimited, `too many requests; try again in ${Math.ceil(retryAfterMs / 1000)} s`);
  err.details.push({ desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(Math.ceil(retryAfterMs / 1000) * 1000) }) });
  return err;
}

/** Windows as the JSON that the counting statements read with jsonb_to_recordset. */
export const windowsJson = (rows: Window[]) =>
  JSON.stringify(rows.map((r) => ({ key: r.key, start: new Date(r.start).toISOString(), end_at: new Date(r.end).toISOString(), max: r.max })));

/** Counts one hit per window; `$1` is the organization, `$n` the windows JSON. */
export const countHitsSql = (n: number) => `
  insert into rate_limit (org_id, key, window_start, hits, expires_at)
  select $1, r.key, r.start, 1, r.end_at from jsonb_to_recordset($${n}::jsonb) as r(key text, start timestamptz, end_at timestamptz)
  on conflict (org_id, key, window_start) do update set hits = rate_limit.hits + 1
  returning key, hits`;

export class RateLimiter {
  private readonly sql: Sql;
  private readonly clock: Clock;
  constructor(sql: Sql, clock: Clock) {
    this.sql = sql;
    this.clock = clock;
  }

  /**
   * Counts one hit on every key and answers how long until the request would be
   * within all limits: 0 when it is within them now. (The code sends and the
   * verifications count theirs inside their own statements; see codes/engine.ts.)
   */
  async hit(orgId: string, keys: LimitedKey[], sql: Sql = this.sql): Promise<number> {
    const now = this.clock.now().getTime();
    const rows = windows(keys, now);
    if (rows.length === 0) return 0;
    const counted = await sql.query<{ key: string; hits: number }>(countHitsSql(2), [orgId, windowsJson(rows)]);
    return this.wait(rows, counted, now);
  }

  private wait(
    rows: Window[],
    counted: { key: string; hits: number }[],
    now: number,
  ): number {
    const hits = new Map(counted.map((c) => [c.key, Number(c.hits)]));
    let waitMs = 0;
    for (const r of rows) if ((hits.get(r.key) ?? 0) > r.max) waitMs = Math.max(waitMs, r.end - now);
    return waitMs;
  }
}
