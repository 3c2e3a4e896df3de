// The rate-limit counters, in PostgreSQL so that they hold across server
// instances. The code sends and verifications count theirs inside their own
// statements (store/codes.ts); this counts a request of any other kind.
import type { Window } from "../domain/rate-limits.ts";
import type { Sql } from "./sql.ts";

/** Windows as the JSON that the counting statements read with jsonb_to_recordset. */
export const windowsJson = (rows: readonly Window[]) =>
  JSON.stringify(rows.map((r) => ({ key: r.key, start: new Date(r.start).toISOString(), end_at: new Date(r.end).toISOString(), max: r.max })));

/** The hits of window `w` (a row with key and start) in the statement's snapshot, 0 when it has no counter yet. */
const snapshotHits = (org: string, w: string) =>
  `coalesce((select l.hits from rate_limit l where l.org_id = ${org} and l.key = ${w}.key and l.window_start = ${w}.start), 0)`;

/**
 * Counts `inc` hits (one unless told) in every window of the windows JSON `$n`,
 * under the organization `org` (`$1` unless told), when `when`; answers each
 * counted window's count after them. The upsert waits for a concurrent count of the
 * same window to commit and counts from its row, not from the statement's
 * snapshot: counts of one window are made, and read, one after another.
 *
 * A window the snapshot already shows at its maximum is not counted, and not
 * answered: a request is over it whatever it adds (a window's count only grows),
 * so a flood past a limit (guesses from one address, sends to one username) reads
 * its counter and neither writes it nor waits on its row lock. Callers that count
 * windows apart take a window missing from the answer as over; those that count
 * them `together` ask windowVerdictsSql which are. (The read is a scalar subquery, looked
 * up by the whole key for each window: as "not exists", on statistics that say the
 * table is empty, PostgreSQL joined it against every counter of the organization.)
 */
export const countHitsSql = (n: number, opts: { org?: string; inc?: string; when?: string; together?: boolean } = {}) => {
  const org = opts.org ?? "$1";
  const under = (r: string) => `${snapshotHits(org, r)} < ${r}.max`;
  // Together: no window is counted once one of them is over (a request refused
  // by one window must not spend the others: the sends an attacker was refused
  // would use up an owner's day).
  const within = opts.together ? `not exists (select from jsonb_to_recordset($${n}::jsonb) as o(key text, start timestamptz, max int) where not ${under("o")})` : under("r");
  return `
  insert into rate_limit (org_id, key, window_start, hits, expires_at)
  select ${org}, r.key, r.start, ${opts.inc ?? "1"}, r.end_at from jsonb_to_recordset($${n}::jsonb) as r(key text, start timestamptz, end_at timestamptz, max int)
  where ${opts.when ? `${opts.when} and ` : ""}${within}
  on conflict (org_id, key, window_start) do update set hits = rate_limit.hits + excluded.hits
  returning key, hits`;
};

/**
 * Each window of the windows JSON `$n` after a together count (a `counted` CTE of
 * countHitsSql before it): whether it was counted, and whether it is over: past its
 * maximum once counted, at it when not counted (it, or another window, was over
 * already in the statement's snapshot).
 */
export const windowVerdictsSql = (n: number, org = "$1") => `
  select w.key, w.end_at, c.hits is not null as counted,
    case when c.hits is not null then c.hits > w.max else ${snapshotHits(org, "w")} >= w.max end as over
  from jsonb_to_recordset($${n}::jsonb) as w(key text, start timestamptz, end_at timestamptz, max int) left join counted c on c.key = w.key`;

/**
 * Takes back one hit of each window named (`$2`, windows JSON) under `$1`: what a
 * request refused by another window counted when it raced past the snapshot's check.
 */
const UNCOUNT_HITS_SQL = `
update rate_limit l set hits = l.hits - 1
from jsonb_to_recordset($2::jsonb) as r(key text, start timestamptz)
where l.org_id = $1 and l.key = r.key and l.window_start = r.start`;

/**
 * Takes back the hits a refused request counted (`keys`, of `rows`), and answers
 * why it could not, if it could not. Its failure leaves them counted until their
 * windows end, as a refused request's hits were before they were taken back; the
 * refusal stands either way, and the caller reports the failure.
 */
export async function uncountHits(sql: Sql, orgId: string, rows: readonly Window[], keys: readonly string[]): Promise<Error | undefined> {
  if (keys.length === 0) return undefined;
  const counted = new Set(keys);
  return sql.query(UNCOUNT_HITS_SQL, [orgId, windowsJson(rows.filter((w) => counted.has(w.key)))]).then(
    () => undefined,
    (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
  );
}

const COUNT_HITS_SQL = `
with counted as (${countHitsSql(2, { together: true })}
) ${windowVerdictsSql(2)}`;

/**
 * Counts one hit in every window, together (in none once one is over), and answers
 * the keys of the windows that are over: none when the request is within them all.
 * A request refused after it counted (it raced others past the check) takes its
 * hits back; `takeBackError` when that failed.
 */
export async function countHits(sql: Sql, orgId: string, rows: readonly Window[]): Promise<{ over: Set<string>; takeBackError?: Error }> {
  if (rows.length === 0) return { over: new Set() };
  const windows = await sql.query<{ key: string; counted: boolean; over: boolean }>(COUNT_HITS_SQL, [orgId, windowsJson(rows)]);
  const over = new Set(windows.filter((w) => w.over).map((w) => w.key));
  if (over.size === 0) return { over };
  return { over, takeBackError: await uncountHits(sql, orgId, rows, windows.filter((w) => w.counted).map((w) => w.key)) };
}
