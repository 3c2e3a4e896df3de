// What operators ask of the database: does it answer, are the migrations
// applied, how busy is this process's pool.
import { pgPoolOf, type Orm } from "./orm.ts";
import type { Sql } from "./sql.ts";

export { pendingMigrations } from "./orm.ts";

/** Resolves when the database answers a trivial statement. */
export async function ping(sql: Sql): Promise<void> {
  await sql.query("select 1");
}

export interface PoolStats {
  /** Open connections, in use or idle. */
  total: number;
  idle: number;
  /** Queries waiting for a connection. */
  waiting: number;
  max: number;
}

/** The connection pool of this process; undefined when the driver has none (PGlite). */
export async function poolStats(orm: Orm): Promise<PoolStats | undefined> {
  const pool = await pgPoolOf(orm);
  if (!pool) return undefined;
  return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: pool.options.max ?? Number.NaN };
}
