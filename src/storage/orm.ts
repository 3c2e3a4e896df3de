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

/** Connects to DATABASE_URL, or to PGlite kept in DATA_DIR/pglite when unset. */
export async function openOrm(config: Pick<Config, "databaseUrl" | "dataDir" | "dbPoolSize">): Promise<Orm> {
  const common = {
    entities,
    extensions: [Migrator],
    migrations: migrationOptions,
    discovery: { warnWhenNoEntities: false },
    debug: false,
    allowGlobalContext: true,
  };
  if (config.databaseUrl) {
    const orm = await PostgresORM.init({ ...common, clientUrl: config.databaseUrl, pool: { min: 0, max: config.dbPoolSize } });
    return orm as unknown as Orm;
  }
  const dir = join(config.dataDir, "pglite");
  mkdirSync(dir, { recursive: true });
  const orm = await PgliteORM.init({ ...common, dbName: dir });
  return orm as unknown as Orm;
}

/** Applies the checked-in migrations that have not run yet; answers their names. */
export async function migrate(orm: Orm): Promise<string[]> {
  const applied = await orm.migrator.up();
  return applied.map((m) => m.name);
}

export async function pendingMigrations(orm: Orm): Promise<string[]> {
  return (await orm.migrator.getPending()).map((m) => m.name);
}
