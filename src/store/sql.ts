// Plain SQL with bind parameters, for the hot paths: one statement per step, no
// unit of work. (MikroORM's own execute() inlines parameters into the SQL text.)
// On PostgreSQL the statements go straight to the pg pool that MikroORM holds,
// as named prepared statements, so each connection parses and plans them once
// (but for those marked with planEachCall).
import { createHash } from "node:crypto";
import { CompiledQuery, type Kysely } from "kysely";
import type pg from "pg";
import { pgPoolOf, type Orm } from "./orm.ts";

export type Row = Record<string, any>;

export interface Sql {
  /**
   * Runs one statement with `$1`-style parameters and answers its rows. With a
   * signal, a statement is not started once it has aborted (its call is over);
   * one already running is bounded by the connection's statement_timeout.
   */
  query<T extends Row = Row>(text: string, params?: readonly unknown[], signal?: AbortSignal): Promise<T[]>;
  /** Runs `work` in one transaction. */
  transaction<T>(work: (tx: Sql) => Promise<T>): Promise<T>;
}

function overKysely(db: Kysely<any>): Sql {
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = [], signal?: AbortSignal) {
      signal?.throwIfAborted();
      const res = await db.executeQuery<T>(CompiledQuery.raw(text, params as unknown[]));
      return res.rows;
    },
    transaction(work) {
      return db.transaction().execute((trx) => work(overKysely(trx)));
    },
  };
}

const plannedEachCall = new Set<string>();

/**
 * Marks a statement to be planned at every call (sent unnamed, never prepared),
 * and answers its text. For the statements that read across organizations (the
 * looks for queued messages, their floors, the queue's metrics, the event trail's
 * poll) and also run while their table is empty. A prepared statement keeps the
 * plan it settled on: one made on a table that a VACUUM had found empty and cut
 * to no pages (every row pruned by retention; the bench between its phases) is a
 * sequential scan of the whole table, kept at every call until the next ANALYZE.
 * (A table never vacuumed is planned as ten pages: a new deployment gets the
 * index.) Planned at each call, they take their index once the table holds rows
 * (test/plans.test.ts). Their calls are few (a look per claim or poll, a floor
 * read per few seconds): planning is cheap.
 */
export function planEachCall(text: string): string {
  plannedEachCall.add(text);
  return text;
}

const names = new Map<string, string>();
/** A stable name per statement text: pg prepares it once per connection. None for those planned at each call. */
function statementName(text: string): string | undefined {
  if (plannedEachCall.has(text)) return undefined;
  let name = names.get(text);
  if (!name) {
    name = `cg_${createHash("sha1").update(text).digest("hex").slice(0, 16)}`;
    names.set(text, name);
  }
  return name;
}

function overPg(client: pg.Pool | pg.PoolClient): Sql {
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = [], signal?: AbortSignal) {
      signal?.throwIfAborted();
      const res = await client.query<T>({ name: statementName(text), text, values: params as unknown[] });
      return res.rows;
    },
    async transaction(work) {
      const conn = await (client as pg.Pool).connect();
      try {
        await conn.query("begin");
        const result = await work(overPg(conn));
        await conn.query("commit");
        return result;
      } catch (err) {
        await conn.query("rollback").catch(() => {});
        throw err;
      } finally {
        conn.release();
      }
    },
  };
}

export async function sqlOf(orm: Orm): Promise<Sql> {
  const pool = await pgPoolOf(orm);
  // PGlite has no pool: it goes through kysely.
  return pool ? overPg(pool) : overKysely(orm.em.getConnection().getClient());
}

/** bytea arrives as a Buffer from pg and as a Uint8Array from PGlite. */
export const bytes = (v: Uint8Array): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength));

/** PostgreSQL's unique_violation. */
export const isUniqueViolation = (err: unknown) => (err as { code?: string })?.code === "23505";
