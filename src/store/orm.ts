import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { MikroORM as PostgresORM } from "@mikro-orm/postgresql";
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

/** Applies the checked-in migrations that have not run yet; answers their names. */
export async function migrate(orm: Orm): Promise<string[]> {
  const applied = await orm.migrator.up();
  return applied.map((m) => m.name);
}

export async function pendingMigrations(orm: Orm): Promise<string[]> {
  return (await orm.migrator.getPending()).map((m) => m.name);
}
