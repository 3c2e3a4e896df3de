// What operators ask of the database: does it answer, are the migrations
// applied, how busy is this process's pool.
import type { Orm } from "./orm.ts";
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

interface PgPoolLike {
  totalCount: number;
  idleCount: number;
  waitingCount: number;
  options: { max?: number };
}

function isPgPool(client: unknown): client is PgPoolLike {
  const c = client as Partial<PgPoolLike> | null;
  return typeof c?.totalCount === "number" && typeof c.idleCount === "number" && typeof c.waitingCount === "number";
}

/** The connection pool of this process; undefined when the driver has none (PGlite). */
export async function poolStats(orm: Orm): Promise<PoolStats | undefined> {
  const client = await orm.em.getConnection().getNativeClient();
  if (!isPgPool(client)) return undefined;
  return { total: client.totalCount, idle: client.idleCount, waiting: client.waitingCount, max: client.options.max ?? Number.NaN };
}
