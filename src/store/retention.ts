// Prunes what is dead: codes that can never verify again, the metadata of mails
// that were sent or abandoned, rate-limit windows that have ended, and events of
// the trail past their own retention period. Deletes in
// batches so that no statement holds many locks for long; safe to run from many
// processes at once.
import type { Sql } from "./sql.ts";

const BATCH = 5000;

export interface Pruned {
  codes: number;
  mails: number;
  rateLimits: number;
  events: number;
}

async function deleteInBatches(sql: Sql, table: string, where: string, params: unknown[]): Promise<number> {
  let total = 0;
  for (;;) {
    const deleted = await sql.transaction(async (tx) => {
      // Planned for its cutoff each time: the generic plan a prepared statement settles
      // on rates "column < $1" as a third of the table, and reads it all to find a few.
      await tx.query("set local plan_cache_mode = force_custom_plan");
      const [{ n }] = await tx.query<{ n: number }>(
        `with deleted as (delete from ${table} where ctid = any(array(select ctid from ${table} where ${where} limit ${BATCH})) returning 1)
         select count(*)::int as n from deleted`,
        params,
      );
      return n;
    });
    total += deleted;
    if (deleted < BATCH) return total;
  }
}

// Each age is found by its index (20261207-retention-order.ts), partial on "< 'infinity'", stated here.
/** Deletes dead rows older than `keepMs`, events older than `eventsKeepMs`; ended rate-limit windows at once. */
export async function prune(sql: Sql, now: Date, keepMs: number, eventsKeepMs: number): Promise<Pruned> {
  const cutoff = new Date(now.getTime() - keepMs);
  return {
    codes: await deleteInBatches(
      sql,
      "code",
      "(dead_at < $1 and dead_at < 'infinity') or (expires_at < $1 and expires_at < 'infinity')",
      [cutoff],
    ),
    // By creation, which a claim does not change (an index on updated_at would make every claim's update write all of the table's indexes).
    mails: await deleteInBatches(sql, "courier_message", "status in ('sent', 'abandoned') and created_at < $1 and created_at < 'infinity' and updated_at < $1", [cutoff]),
    rateLimits: await deleteInBatches(sql, "rate_limit", "expires_at < $1", [now]),
    events: await deleteInBatches(sql, "event", "occurred_at < $1 and occurred_at < 'infinity'", [new Date(now.getTime() - eventsKeepMs)]),
  };
}
