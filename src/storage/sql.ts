// Plain SQL with bind parameters, for the hot paths: one statement per step, no
// unit of work. (MikroORM's own execute() inlines parameters into the SQL text.)
import { CompiledQuery, type Kysely } from "kysely";
import type { Orm } from "./orm.ts";

export type Row = Record<string, any>;

export interface Sql {
  /** Runs one statement with `$1`-style parameters and answers its rows. */
  query<T extends Row = Row>(text: string, params?: readonly unknown[]): Promise<T[]>;
  /** Runs `work` in one transaction. */
  transaction<T>(work: (tx: Sql) => Promise<T>): Promise<T>;
}

function over(db: Kysely<any>): Sql {
  return {
    async query<T extends Row>(text: string, params: readonly unknown[] = []) {
      const res = await db.executeQuery<T>(CompiledQuery.raw(text, params as unknown[]));
      return res.rows;
    },
    transaction(work) {
      return db.transaction().execute((trx) => work(over(trx)));
    },
  };
}

export function sqlOf(orm: Orm): Sql {
  return over(orm.em.getConnection().getClient());
}

/** bytea arrives as a Buffer from pg and as a Uint8Array from PGlite. */
export const bytes = (v: Uint8Array): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength));

/** PostgreSQL's unique_violation. */
export const isUniqueViolation = (err: unknown) => (err as { code?: string })?.code === "23505";
