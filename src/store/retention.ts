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
    const rows = await sql.query(
      `delete from ${table} where ctid = any(array(select ctid from ${table} where ${where} limit ${BATCH})) returning 1 as x`,
      params,
    );
    total += rows.length;
    if (rows.length < BATCH) return total;
  }
}

/** Deletes dead rows older than `keepMs`, events older than `eventsKeepMs`; ended rate-limit windows at once. */
export async function prune(sql: Sql, now: Date, keepMs: number, eventsKeepMs: number): Promise<Pruned> {
  const cutoff = new Date(now.getTime() - keepMs);
  return {
    codes: await deleteInBatches(sql, "code", "(dead_at is not null and dead_at < $1) or expires_at < $1", [cutoff]),
    mails: await deleteInBatches(sql, "courier_message", "status in ('sent', 'abandoned') and updated_at < $1", [cutoff]),
    rateLimits: await deleteInBatches(sql, "rate_limit", "expires_at < $1", [now]),
    events: await deleteInBatches(sql, "event", "occurred_at < $1", [new Date(now.getTime() - eventsKeepMs)]),
  };
}
