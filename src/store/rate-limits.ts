// The rate-limit counters, in PostgreSQL so that they hold across server
// instances. The code sends and verifications count theirs inside their own
// statements (store/codes.ts); this counts a request of any other kind.
import type { Window } from "../domain/rate-limits.ts";
import type { Sql } from "./sql.ts";

/** Windows as the JSON that the counting statements read with jsonb_to_recordset. */
export const windowsJson = (rows: readonly Window[]) =>
  JSON.stringify(rows.map((r) => ({ key: r.key, start: new Date(r.start).toISOString(), end_at: new Date(r.end).toISOString(), max: r.max })));

/**
 * Counts `inc` hits (one unless told) in every window of the windows JSON `$n`,
 * under the organization `org` (`$1` unless told), when `when`; answers each
 * counted window's count after them. The upsert waits for a concurrent count of the
 * same window to commit and counts from its row, not from the statement's
 * snapshot: counts of one window are made, and read, one after another.
 */
export const countHitsSql = (n: number, opts: { org?: string; inc?: string; when?: string } = {}) => `
  insert into rate_limit (org_id, key, window_start, hits, expires_at)
  select ${opts.org ?? "$1"}, r.key, r.start, ${opts.inc ?? "1"}, r.end_at from jsonb_to_recordset($${n}::jsonb) as r(key text, start timestamptz, end_at timestamptz)${opts.when ? `
  where ${opts.when}` : ""}
  on conflict (org_id, key, window_start) do update set hits = rate_limit.hits + excluded.hits
  returning key, hits`;

const COUNT_HITS_SQL = countHitsSql(2);

/** Counts one hit in every window and answers the hits of each, by window key. */
export async function countHits(sql: Sql, orgId: string, rows: readonly Window[]): Promise<Map<string, number>> {
  if (rows.length === 0) return new Map();
  const counted = await sql.query<{ key: string; hits: number }>(COUNT_HITS_SQL, [orgId, windowsJson(rows)]);
  return new Map(counted.map((c) => [c.key, Number(c.hits)]));
}
