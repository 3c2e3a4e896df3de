import { mkdirSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { MikroORM as PostgresORM, PostgreSqlDriver } from "@mikro-orm/postgresql";
import { MikroORM as PgliteORM } from "@mikro-orm/pglite";
import { Migrator } from "@mikro-orm/migrations";
import type { MikroORM } from "@mikro-orm/core";
import type { AbstractSqlDriver, SqlEntityManager } from "@mikro-orm/sql";
import type { Config } from "../config/config.ts";
import { entities } from "./entities.ts";
import { migrations } from "./migrations/index.ts";

/** The ORM on either driver; both speak PostgreSQL through the same SQL layer. */
export type Orm = MikroORM<AbstractSqlDriver, SqlEntityManager>;

const migrationOptions = {
  tableName: "codegate_migrations",
  migrationsList: migrations,
  transactional: true,
  allOrNothing: true,
  snapshot: false,
  silent: true,
} as const;

type OrmConfig = Pick<Config, "databaseUrl" | "dataDir" | "dbPoolSize"> & Partial<Pick<Config, "statementTimeoutMs">>;

/**
 * Connects to DATABASE_URL, or to PGlite kept in DATA_DIR/pglite when unset.
 * On PostgreSQL every statement is bounded by `statementTimeoutMs` when given,
 * so that the work of an RPC cannot outlive its deadline by long.
 */
export async function openOrm(config: OrmConfig): Promise<Orm> {
  const common = {
    entities,
    extensions: [Migrator],
    migrations: migrationOptions,
    discovery: { warnWhenNoEntities: false },
    debug: false,
    allowGlobalContext: true,
  };
  if (config.databaseUrl) {
    const orm = await PostgresORM.init({
      ...common,
      clientUrl: config.databaseUrl,
      pool: { min: 0, max: config.dbPoolSize },
      // node-postgres options: a connection (new or from the pool) waited for at most this long.
      driverOptions: {
        connectionTimeoutMillis: Math.min(5_000, config.statementTimeoutMs ?? 5_000),
        keepAlive: true,
        ...(config.statementTimeoutMs ? { statement_timeout: config.statementTimeoutMs } : {}),
      },
    });
    return orm as unknown as Orm;
  }
  const dir = join(config.dataDir, "pglite");
  mkdirSync(dir, { recursive: true });
  const orm = await PgliteORM.init({ ...common, dbName: dir });
  return orm as unknown as Orm;
}

/**
 * Applies pending migrations and opens the ORM to serve with. On PostgreSQL the
 * migrations run over a connection of their own, without the statement timeout
 * (a migration of a large table may take longer than any RPC).
 */
export async function openMigrated(config: OrmConfig): Promise<{ orm: Orm; applied: string[] }> {
  if (config.databaseUrl && config.statementTimeoutMs) {
    const migrator = await openOrm({ ...config, dbPoolSize: 1, statementTimeoutMs: undefined });
    let applied: string[];
    try {
      applied = await migrate(migrator);
    } finally {
      await migrator.close();
    }
    return { orm: await openOrm(config), applied };
  }
  const orm = await openOrm(config);
  return { orm, applied: await migrate(orm) };
}

/** Any fixed key: the processes that migrate one database take turns on it. */
const MIGRATION_LOCK = 7162587264224965733n;

/**
 * Applies the checked-in migrations that have not run yet; answers their names.
 * On PostgreSQL, servers that start together take turns under an advisory lock
 * held by a connection of its own (ending it releases the lock, however the
 * migration ends): the first applies the migrations, the others then find
 * nothing to do. Without it each would run the first migration, and all but one
 * fail on the tables it had made. PGlite serves one process.
 */
export async function migrate(orm: Orm): Promise<string[]> {
  if (!(orm.driver instanceof PostgreSqlDriver)) return (await orm.migrator.up()).map((m) => m.name);
  const lock = new pg.Client({ connectionString: orm.config.get("clientUrl") });
  await lock.connect();
  try {
    await lock.query(`select pg_advisory_lock(${MIGRATION_LOCK})`);
    return (await orm.migrator.up()).map((m) => m.name);
  } finally {
    await lock.end().catch(() => {});
  }
}

export async function pendingMigrations(orm: Orm): Promise<string[]> {
  return (await orm.migrator.getPending()).map((m) => m.name);
}
